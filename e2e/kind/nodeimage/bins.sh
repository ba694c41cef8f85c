#!/usr/bin/env bash
# Builds every Go binary the offline kind node image and the kind e2e need, from
# the Go module proxy, at the versions pinned in pins.env. Each lands in
# $KIND_CACHE/<name>-<version>/ and is built once per pin.
# Usage: bins.sh [k8s|etcd|coredns|cni|containerd|tools|ko|kyverno|all]...
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../../.." && pwd)}
. "$REPO/e2e/kind/nodeimage/lib.sh"

build_k8s() {
  local out=$KIND_CACHE/k8s-$K8S_VERSION src
  done_once "$out" && return 0
  src=$KIND_CACHE/src/k8s-$K8S_VERSION
  log "building Kubernetes $K8S_VERSION binaries (about 16 min cold)"
  mkdir -p "$src" "$out"
  # kubernetes' own go.mod replaces its staging repos with ./staging/...; a
  # module requiring it must replace every one with the published version.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || die "go mod download k8s.io/kubernetes@$K8S_VERSION gave no go.mod"
  {
    echo "module criguard.local/kindk8s"
    echo "go 1.24.0"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$K8S_STAGING_VERSION"'#p' "$gomod"
  } >"$src/go.mod"
  grep -q 'pod-security-admission' "$src/go.mod" || die "no staging replaces found in $gomod"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local x="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  x+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  x+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
  x+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitTreeState=clean"
  local cmd pkgs=()
  for cmd in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    pkgs+=("k8s.io/kubernetes/cmd/$cmd")
  done
  pkgs[2]=k8s.io/kubernetes/cmd/kubectl
  # -mod=mod fills go.sum from the pinned requirements (no tidy: the only
  # "imports" are main packages).
  (cd "$src" && CGO_ENABLED=0 "${NICE[@]}" go build -mod=mod -trimpath -ldflags "-s -w $x" -o "$out/" "${pkgs[@]}")
  mark_done "$out"
}

build_etcd() {
  local out=$KIND_CACHE/etcd-$ETCD_VERSION src
  done_once "$out" && return 0
  src=$KIND_CACHE/src/etcd-$ETCD_VERSION
  log "building etcd $ETCD_VERSION (about 6 min cold)"
  mkdir -p "$src" "$out"
  printf 'module criguard.local/kindetcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$src/go.mod"
  cat >"$src/main.go" <<'GO'
// Command etcd is etcd's own server main, built from the pinned module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$src" && go mod tidy >/dev/null && CGO_ENABLED=0 "${NICE[@]}" go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
  mark_done "$out"
}

build_coredns() {
  local out=$KIND_CACHE/coredns-$COREDNS_VERSION
  done_once "$out" && return 0
  log "building CoreDNS $COREDNS_VERSION (about 9 min cold)"
  gobin "$out" -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mark_done "$out"
}

build_cni() {
  local out=$KIND_CACHE/cni-$CNI_PLUGINS_VERSION m=github.com/containernetworking/plugins/plugins
  done_once "$out" && return 0
  log "building CNI plugins $CNI_PLUGINS_VERSION"
  gobin "$out" -trimpath -ldflags "-s -w" "$m/main/bridge@$CNI_PLUGINS_VERSION" "$m/main/loopback@$CNI_PLUGINS_VERSION" \
    "$m/main/ptp@$CNI_PLUGINS_VERSION" "$m/ipam/host-local@$CNI_PLUGINS_VERSION" "$m/meta/portmap@$CNI_PLUGINS_VERSION"
  mark_done "$out"
}

build_containerd() {
  local out=$KIND_CACHE/containerd-$CONTAINERD_VERSION m=github.com/containerd/containerd/v2/cmd
  done_once "$out" && return 0
  log "building containerd $CONTAINERD_VERSION and crictl $CRICTL_VERSION"
  gobin "$out" -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    "$m/containerd@$CONTAINERD_VERSION" "$m/ctr@$CONTAINERD_VERSION" "$m/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  gobin "$out" -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  mark_done "$out"
}

# Tools run on the host by the e2e: kind, crane, kustomize.
build_tools() {
  local out=$KIND_CACHE/tools-$KIND_VERSION-$CRANE_VERSION-$KUSTOMIZE_VERSION
  done_once "$out" && return 0
  log "building kind $KIND_VERSION, crane $CRANE_VERSION, kustomize $KUSTOMIZE_VERSION"
  gobin "$out" "sigs.k8s.io/kind@$KIND_VERSION"
  gobin "$out" "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
  gobin "$out" "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  mark_done "$out"
}

# ko: `ko resolve` is the documented install path (daemonset/kustomization.yaml).
build_ko() {
  local out=$KIND_CACHE/ko-$KO_VERSION
  done_once "$out" && return 0
  log "building ko $KO_VERSION"
  gobin "$out" "github.com/google/ko@$KO_VERSION"
  mark_done "$out"
}

# Kyverno's admission controller, for the cosign-plus-Kyverno story (not in
# `all`). `go install` refuses the module (its go.mod has a replace), so a
# throwaway module requires it and copies that one replace.
build_kyverno() {
  local out=$KIND_CACHE/kyverno-$KYVERNO_VERSION src=$KIND_CACHE/src/kyverno-$KYVERNO_VERSION gomod rep
  done_once "$out" && return 0
  log "building Kyverno $KYVERNO_VERSION (about 6 min cold, a 260 MB binary)"
  mkdir -p "$src" "$out"
  gomod=$(go mod download -json "github.com/kyverno/kyverno@$KYVERNO_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
  rep=$(grep '^replace ' "$gomod")
  printf 'module criguard.local/kindkyverno\n\ngo 1.25.0\n\nrequire github.com/kyverno/kyverno %s\n\n%s\n' "$KYVERNO_VERSION" "$rep" >"$src/go.mod"
  (cd "$src" && CGO_ENABLED=0 "${NICE[@]}" go build -mod=mod -trimpath -ldflags "-s -w" -o "$out/kyverno" github.com/kyverno/kyverno/cmd/kyverno)
  mark_done "$out"
}

main() {
  local what=("$@"); [[ ${#what[@]} -gt 0 ]] || what=(all)
  [[ ${what[0]} == all ]] && what=(tools ko containerd cni k8s etcd coredns)
  local w; for w in "${what[@]}"; do "build_$w"; done
}
main "$@"
