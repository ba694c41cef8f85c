#!/usr/bin/env bash
# Installs every real component the e2e harness runs, at pinned versions, into a
# cache directory (default: <repo>/.cache/e2e). Each tool is built only when missing,
# so a second run costs nothing. Debian packages come from apt; Go tools from the
# Go module proxy. Needs root (apt-get).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${CRIGUARD_E2E_CACHE:-$repo/.cache/e2e}
bin=$cache/bin
mkdir -p "$bin" "$cache/src"

CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
CRANE_VERSION=v0.22.1
COSIGN_VERSION=v3.1.3
KUBERNETES_VERSION=1.34.4

log() { printf '[install] %s\n' "$*" >&2; }

need_apt=()
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/bin/containerd ] || need_apt+=(containerd)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v openssl >/dev/null || need_apt+=(openssl) # keys of testdata/cosign/regenerate.sh
command -v systemd-analyze >/dev/null || need_apt+=(systemd) # the unit file's check in the unit tests
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Each tool records the version it was built at; a changed pin rebuilds it.
fresh() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { printf '%s\n' "$2" >"$bin/.$1.version"; }

goinstall() { # name pkg@version [tags]
  local name=$1 pkg=$2 tags=${3:-}
  if fresh "$name" "$pkg"; then return; fi
  log "go install $pkg"
  GOBIN=$bin GOFLAGS=-buildvcs=false go install ${tags:+-tags "$tags"} "$pkg"
  stamp "$name" "$pkg"
}

goinstall containerd "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" "no_btrfs no_devmapper no_zfs"
goinstall containerd-shim-runc-v2 "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
goinstall crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
goinstall crane "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"

if ! fresh kubelet "v$KUBERNETES_VERSION"; then
  # kubelet is not packaged in Debian 12: build it as a dependency of a throwaway
  # module, replacing each staging repository with its published version.
  src=$cache/src/kubelet
  mkdir -p "$src"
  {
    echo "module criguard.local/kubelet-build"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes v$KUBERNETES_VERSION"
    echo
    echo "replace ("
    for r in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
      kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils; do
      echo "  k8s.io/$r => k8s.io/$r v0.${KUBERNETES_VERSION#1.}"
    done
    echo ")"
  } >"$src/go.mod"
  printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kubelet/app"\n\nfunc main() {}\n' >"$src/main.go"
  log "building kubelet v$KUBERNETES_VERSION (several minutes the first time)"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
   cd "$src" && GOFLAGS=-mod=mod go build -o "$bin/kubelet" k8s.io/kubernetes/cmd/kubelet)
  stamp kubelet "v$KUBERNETES_VERSION"
fi

goinstall cosign "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION"
log "tools ready in $bin"
