#!/usr/bin/env bash
# criguard end to end on a real kind cluster (needs Docker and network; not run
# by `make test`; run with `make e2e-kind`). It:
#   1. starts a local registry (localhost:5001) and a two-node kind cluster whose
#      nodes pull from it, and reach it on their own localhost:5001 too (criguard
#      runs on each node's host network and reads signatures from there);
#   2. builds criguard with ko (no Dockerfile, no docker build) and installs it
#      through the DaemonSet in daemonset/, with the starter policy plus a
#      Verify rule for localhost:5001/e2e/* and a fresh cosign key;
#   3. proves on the real nodes: the control plane stays healthy (a kube-system
#      pod recreated through criguard); a signed pod runs; an unsigned pod fails
#      with SignatureValidationFailed; an unsigned static pod on the worker never
#      gets a container; an unsigned pod in a namespace excluded from admission
#      webhooks is still refused;
#   4. uninstalls through daemonset/uninstall and checks every node's kubelet
#      files, units and binaries are as they were before the install.
# Environment: KEEP=1 keeps the cluster and registry; CLUSTER, REG_PORT,
# KIND_NODE_IMAGE (a kindest/node image) override defaults.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/e2e/kind
CLUSTER=${CLUSTER:-criguard-e2e}
REG_NAME=${REG_NAME:-criguard-e2e-registry}
REG_PORT=${REG_PORT:-5001}
REG=localhost:$REG_PORT
NS=criguard-system
KEEP=${KEEP:-0}
cache=${CRIGUARD_E2E_CACHE:-$repo/.cache/e2e}
bin=$cache/bin
work=$(mktemp -d /tmp/criguard-kind.XXXXXX)
export PATH=$bin:$PATH

KIND_VERSION=v0.33.0
KO_VERSION=v0.18.1
KUSTOMIZE_VERSION=v5.8.1
CRANE_VERSION=v0.22.1
COSIGN_VERSION=v3.1.3

log() { printf '\n[kind-e2e] %s\n' "$*" >&2; }
die() { printf '\n[kind-e2e] FAIL: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
command -v docker >/dev/null || die "docker is required"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
mkdir -p "$bin"
goinstall() { # name pkg@version
  command -v "$1" >/dev/null && return 0
  log "go install $2"
  GOBIN=$bin GOFLAGS=-buildvcs=false go install "$2"
}
goinstall kind "sigs.k8s.io/kind@$KIND_VERSION"
goinstall ko "github.com/google/ko@$KO_VERSION"
goinstall kustomize "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
goinstall crane "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
goinstall cosign "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION"

CP=$CLUSTER-control-plane
WORKER=$CLUSTER-worker
# kubectl: the host's if present, else the control-plane node's own.
k() {
  if command -v kubectl >/dev/null; then
    kubectl --context "kind-$CLUSTER" "$@"
  else
    docker exec -i "$CP" kubectl --kubeconfig=/etc/kubernetes/admin.conf "$@"
  fi
}
nodes() { kind get nodes --name "$CLUSTER"; }

cleanup() {
  rc=$?
  if [ $rc -ne 0 ]; then
    log "diagnostics (exit $rc)"
    k get nodes -o wide || true
    k get pods -A -o wide || true
    k -n "$NS" logs -l app.kubernetes.io/name=criguard --tail=80 --prefix || true
    for n in $(nodes 2>/dev/null); do
      echo "--- $n: journalctl -u criguard -u kubelet (tail)"
      docker exec "$n" journalctl -u criguard --no-pager -n 60 || true
      docker exec "$n" journalctl -u kubelet --no-pager -n 40 || true
    done
  fi
  if [ "$KEEP" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
    rm -rf "$work"
  else
    log "KEEP=1: cluster $CLUSTER and registry $REG_NAME kept; work dir $work"
  fi
  exit $rc
}
trap cleanup EXIT

# poll SECONDS WHAT CMD...: run CMD until it succeeds or time runs out.
poll() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "timed out after ${limit}s waiting for: $what"
    sleep 3
  done
  log "ok: $what"
}

# --- registry and cluster ------------------------------------------------------
log "local registry $REG_NAME on 127.0.0.1:$REG_PORT"
if [ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != true ]; then
  docker run -d --restart=always -p "127.0.0.1:$REG_PORT:5000" --name "$REG_NAME" registry:2 >/dev/null
fi

log "kind cluster $CLUSTER"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --config "$here/kind-config.yaml" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 3m
docker network connect kind "$REG_NAME" 2>/dev/null || true
REG_IP=$(docker inspect -f '{{(index .NetworkSettings.Networks "kind").IPAddress}}' "$REG_NAME")
[ -n "$REG_IP" ] || die "registry has no address on the kind network"

for n in $(nodes); do
  # containerd pulls localhost:5001 over plain HTTP...
  docker exec "$n" mkdir -p "/etc/containerd/certs.d/$REG"
  printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REG" "$REG" |
    docker exec -i "$n" tee "/etc/containerd/certs.d/$REG/hosts.toml" >/dev/null
  # ...and localhost:5001 on the node's host network (containerd's and
  # criguard's) is the registry: DNAT loopback traffic to its kind address.
  docker exec "$n" sh -euc "
    sysctl -qw net.ipv4.conf.all.route_localnet=1
    iptables -t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport $REG_PORT -j DNAT --to-destination $REG_IP:5000
    iptables -t nat -A POSTROUTING -p tcp -s 127.0.0.1 -d $REG_IP --dport 5000 -j MASQUERADE"
done

# What uninstall must give back, per node: kubelet's files, units, binaries.
node_state() {
  docker exec "$1" sh -c '
    for f in /var/lib/kubelet/config.yaml /var/lib/kubelet/instance-config.yaml /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet; do
      [ -e "$f" ] && sha256sum "$f" || echo "absent $f"
    done
    ls -A /etc/systemd/system /etc/systemd/system/kubelet.service.wants /usr/local/bin 2>&1
    if [ -e /var/lib/criguard ]; then echo "/var/lib/criguard present"; fi
    echo "kubelet $(systemctl is-active kubelet)"
    echo "criguard unit: $(systemctl list-unit-files criguard.service --no-legend | wc -l)"'
}
for n in $(nodes); do node_state "$n" >"$work/before-$n"; done

# --- images: one signed, one not -------------------------------------------------
log "test images in $REG"
arch=$(docker exec "$CP" uname -m); case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
crane pull --platform "linux/$arch" registry.k8s.io/pause:3.10 "$work/pause.tar"
crane push "$work/pause.tar" "$REG/e2e/base:v1" >/dev/null
signed=$(crane mutate "$REG/e2e/base:v1" --label criguard.e2e=signed -t "$REG/e2e/signed:v1")
crane mutate "$REG/e2e/base:v1" --label criguard.e2e=unsigned -t "$REG/e2e/unsigned:v1" >/dev/null
signed_digest=${signed#*@}
(cd "$work" && COSIGN_PASSWORD='' cosign generate-key-pair >/dev/null)
COSIGN_PASSWORD='' cosign sign --yes --key "$work/cosign.key" --tlog-upload=false --use-signing-config=false \
  "$REG/e2e/signed@$signed_digest"

# --- install ---------------------------------------------------------------------
log "install criguard through the DaemonSet"
mkdir -p "$work/overlay"
cp "$work/cosign.pub" "$work/overlay/e2e.pub"
{
  cat "$repo/daemonset/policy/policy.yaml"
  cat <<POLICY
  - name: e2e-signed
    images: ["$REG/e2e/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: /etc/criguard/keys/e2e.pub}
POLICY
} >"$work/overlay/policy.yaml"
# kustomize takes a base by relative path only.
cat >"$work/overlay/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $NS
resources:
- $(realpath --relative-to="$work/overlay" "$repo/daemonset")
configMapGenerator:
- name: criguard-policy
  behavior: replace
  files: [policy.yaml]
  options: {disableNameSuffixHash: true}
- name: criguard-keys
  files: [e2e.pub]
  options: {disableNameSuffixHash: true}
KUST
kustomize build "$work/overlay" >"$work/install.yaml"
(cd "$repo" && KO_DOCKER_REPO=$REG ko resolve --preserve-import-paths --platform "linux/$arch" -f "$work/install.yaml") >"$work/install.resolved.yaml"
grep -q "image: $REG/github.com/criguard/criguard/cmd/criguard@sha256:" "$work/install.resolved.yaml" || die "ko did not resolve the criguard image"
k apply -f - <"$work/install.resolved.yaml"
k -n "$NS" rollout status daemonset/criguard-installer --timeout=6m

for n in $(nodes); do
  docker exec "$n" systemctl is-active --quiet criguard || die "$n: criguard.service not active"
  docker exec "$n" sh -c 'grep -hs criguard.sock /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet' |
    grep -q 'unix:///run/criguard/criguard.sock' || die "$n: kubelet does not point at criguard"
  docker exec "$n" crictl --runtime-endpoint unix:///run/criguard/criguard.sock version >/dev/null || die "$n: no CRI through criguard"
done
log "ok: criguard installed and kubelet repointed on $(nodes | wc -l) nodes"

# The control plane stays healthy, and a system pod recreated now goes
# through criguard (the starter policy's Allow rules).
k wait --for=condition=Ready nodes --all --timeout=3m
old_dns=$(k -n kube-system get pod -l k8s-app=kube-dns -o name)
[ -n "$old_dns" ] || die "no CoreDNS pods"
# shellcheck disable=SC2086 # one word per pod
k -n kube-system delete $old_dns --wait=false
# shellcheck disable=SC2086
k -n kube-system wait --for=delete $old_dns --timeout=2m
poll 180 "coredns recreated through criguard and Ready" \
  k -n kube-system wait --for=condition=Ready pod -l k8s-app=kube-dns --timeout=10s
k -n kube-system wait --for=condition=Ready pod --all --timeout=3m

# --- enforcement -----------------------------------------------------------------
# refused NS POD: the pod's container waits with SignatureValidationFailed (kubelet's
# reason for the prefix criguard puts on its errors), seen in its status or events.
refused() {
  local ns=$1 pod=$2
  k -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[*].state.waiting.reason} {.status.containerStatuses[*].state.waiting.message}' | grep -q SignatureValidationFailed ||
    k -n "$ns" get events --field-selector "involvedObject.name=$pod" -o jsonpath='{.items[*].message}' | grep -q SignatureValidationFailed
}
never_ran() {
  local ns=$1 pod=$2
  [ -z "$(k -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[*].containerID}')" ]
}

log "a signed pod runs"
k run signed --image="$REG/e2e/signed:v1" --restart=Never
poll 180 "signed pod Ready" k wait --for=condition=Ready pod/signed --timeout=10s

log "an unsigned pod fails with SignatureValidationFailed"
k run unsigned --image="$REG/e2e/unsigned:v1" --restart=Never
poll 180 "unsigned pod refused with SignatureValidationFailed" refused default unsigned
never_ran default unsigned || die "the unsigned pod got a container"

log "an unsigned static pod on $WORKER is refused"
sed "s|IMAGE|$REG/e2e/unsigned:v1|" <<'POD' | docker exec -i "$WORKER" tee /etc/kubernetes/manifests/unsigned-static.yaml >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: unsigned-static
  namespace: default
spec:
  containers:
  - name: main
    image: IMAGE
POD
poll 180 "static pod refused with SignatureValidationFailed" refused default "unsigned-static-$WORKER"
[ -z "$(docker exec "$WORKER" crictl ps -a --name '^main$' --label io.kubernetes.pod.name="unsigned-static-$WORKER" -q)" ] ||
  die "the unsigned static pod got a container on $WORKER"
docker exec "$WORKER" journalctl -u criguard --no-pager | grep -q "unsigned" || die "criguard logged no decision for the unsigned image"
docker exec "$WORKER" rm -f /etc/kubernetes/manifests/unsigned-static.yaml

log "an unsigned pod in a namespace admission webhooks skip is still refused"
# Admission webhooks (Kyverno, sigstore policy-controller) are commonly scoped
# away from namespaces by label; criguard judges at the node and never sees
# admission at all, so no label or namespace opts a pod out.
k create namespace e2e-excluded
k label namespace e2e-excluded policy.sigstore.dev/include=false kyverno.io/exclude=true
k -n e2e-excluded run unsigned --image="$REG/e2e/unsigned:v1" --restart=Never
poll 180 "unsigned pod in e2e-excluded refused" refused e2e-excluded unsigned
never_ran e2e-excluded unsigned || die "the unsigned pod in e2e-excluded got a container"
k delete pod signed unsigned --wait=false
k delete namespace e2e-excluded --wait=false

# --- uninstall -------------------------------------------------------------------
log "uninstall through daemonset/uninstall"
k -n "$NS" delete daemonset/criguard-installer configmap/criguard-policy configmap/criguard-keys
k -n "$NS" wait --for=delete pod -l app.kubernetes.io/component=installer --timeout=2m || true
kustomize build "$repo/daemonset/uninstall" >"$work/uninstall.yaml"
(cd "$repo" && KO_DOCKER_REPO=$REG ko resolve --preserve-import-paths --platform "linux/$arch" -f "$work/uninstall.yaml") >"$work/uninstall.resolved.yaml"
k apply -f - <"$work/uninstall.resolved.yaml"
k -n "$NS" rollout status daemonset/criguard-uninstall --timeout=6m
k delete namespace "$NS" --timeout=3m

for n in $(nodes); do
  node_state "$n" >"$work/after-$n"
  diff -u "$work/before-$n" "$work/after-$n" || die "$n differs after uninstall (above)"
  docker exec "$n" test ! -e /run/criguard/criguard.sock || die "$n: criguard's socket remains"
done
k wait --for=condition=Ready nodes --all --timeout=3m
k -n kube-system wait --for=condition=Ready pod --all --timeout=3m
log "ok: every node is as it was before the install"

log "PASS"
