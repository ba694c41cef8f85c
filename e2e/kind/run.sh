#!/usr/bin/env bash
# criguard end to end on a real two-node kind cluster, offline (`make e2e-kind`;
# root; not part of `make test`). Everything comes from Debian packages and the
# Go module proxy: the node image is built by nodeimage/build.sh (cached under
# $CRIGUARD_KIND_CACHE, default .cache/kind), dockerd is started here when none
# answers and stopped afterwards with the host restored (lib/dockerd.sh).
#
# Every check below is one criguard makes true: each asserts a refusal with
# SignatureValidationFailed, or a decision in criguard's own journal, so with
# criguard taken out of kubelet's path each one fails.
#
# Environment: KYVERNO=1 (make e2e-kind-kyverno) runs lib/kyverno.sh, a real
# Kyverno beside criguard, after the signed Deployment; BENCH=1 (make bench-kind) runs lib/bench.sh after the signed
# Deployment instead of the checks; DEMO=1 (make demo-kind) stops after the signed Deployment and the
# refused unsigned pod, showing kubectl's output; KEEP=1 keeps the cluster, registry and dockerd; CRIGUARD_E2E_CACHE
# (default .cache/e2e) holds cosign from `make tools`.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
export REPO
. "$REPO/e2e/kind/nodeimage/lib.sh"
. "$REPO/e2e/kind/lib/dockerd.sh"
. "$REPO/e2e/kind/lib/cluster.sh"
. "$REPO/e2e/kind/lib/k8s.sh"

CLUSTER=criguard-e2e
CP=$CLUSTER-control-plane
WORKER=$CLUSTER-worker
REG_NAME=criguard-e2e-registry
REG_PORT=5001
REG=localhost:$REG_PORT
NS=criguard-system
KEEP=${KEEP:-0}
COSIGN=${CRIGUARD_E2E_CACHE:-$REPO/.cache/e2e}/bin/cosign
work=$(mktemp -d /tmp/criguard-kind.XXXXXX)
export KUBECONFIG=$work/kubeconfig # never the user's ~/.kube/config
start=$SECONDS
timings=()

took() { timings+=("$1: $(( SECONDS - $2 ))s"); log "took $(( SECONDS - $2 ))s: $1"; }

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "diagnostics (exit $rc)"
    k get nodes -o wide 2>&1 || true
    k get pods -A -o wide 2>&1 || true
    k get events -A --sort-by=.lastTimestamp 2>&1 | tail -40 || true
    k -n "$NS" logs -l app.kubernetes.io/name=criguard --tail=60 --prefix 2>&1 || true
    for n in $(nodes 2>/dev/null); do
      echo "--- $n: journalctl -u criguard -u kubelet (tail)"
      docker exec "$n" journalctl -u criguard --no-pager -n 40 2>&1 || true
      docker exec "$n" journalctl -u kubelet --no-pager -n 30 2>&1 || true
    done
  fi
  if [[ $KEEP != 1 ]]; then
    local t=$SECONDS
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
    docker rmi "$REG/e2e/preloaded:v1" >/dev/null 2>&1 || true
    docker_down
    rm -rf "$work"
    took "clean-up (cluster, registry, dockerd, host state)" "$t"
  else
    log "KEEP=1: cluster $CLUSTER, registry $REG_NAME and dockerd kept (DOCKER_HOST=$DOCKER_HOST KUBECONFIG=$KUBECONFIG)"
  fi
  log "timings:"; printf '  %s\n' "${timings[@]}" >&2
  exit $rc
}

static_pod() { # NAME IMAGE: a static pod in $WORKER's manifest directory
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: default}\nspec:\n  containers:\n  - {name: main, image: "%s"}\n' "$1" "$2" |
    docker exec -i "$WORKER" tee "/etc/kubernetes/manifests/$1.yaml" >/dev/null
}
criguard_logged() { # NODE PATTERN...: criguard's journal on NODE has a line matching every PATTERN
  local n=$1; shift
  # only the running criguard's lines: a check after a restart or an upgrade
  # must see the new process decide.
  local pid lines
  pid=$(docker exec "$n" systemctl show -p MainPID --value criguard)
  lines=$(docker exec "$n" journalctl -u criguard "_PID=$pid" --no-pager -o cat)
  local p; for p in "$@"; do lines=$(grep -F -- "$p" <<<"$lines") || return 1; done
}

# ---------------------------------------------------------------------------
step "tools and node image"
[[ $(id -u) == 0 ]] || die "run as root (dockerd, iptables, sysctls)"
[[ -x $COSIGN ]] || die "cosign missing at $COSIGN: run \`make tools\` (it builds cosign at a pinned version)"
kind_lock
ensure_packages
t=$SECONDS
bash "$REPO/e2e/kind/nodeimage/bins.sh" all
took "Go binaries (cached after the first run)" "$t"
export PATH=$KIND_CACHE/tools-$KIND_VERSION-$CRANE_VERSION-$KUSTOMIZE_VERSION:$KIND_CACHE/ko-$KO_VERSION:$KIND_CACHE/k8s-$K8S_VERSION:$PATH
docker_up
trap cleanup EXIT
t=$SECONDS
NODE_IMAGE=$(KEEP_DOCKERD=1 bash "$REPO/e2e/kind/nodeimage/build.sh" | tail -1)
took "node image $NODE_IMAGE (cached after the first run)" "$t"

step "registry image (crane registry serve) and test images"
kind_test_roots

step "kind cluster $CLUSTER (control plane + worker)"
t=$SECONDS
kind_cluster_up "$NODE_IMAGE"
took "kind cluster, registry, nodes and kube-system Ready" "$t"

# Test images: signed, unsigned, and an unsigned one outside every rule that a
# policy change allows later; busybox base for ko.
crane append -f "$work/busybox.tar" -t "$REG/e2e/busybox:1" >/dev/null
crane mutate "$REG/e2e/busybox:1" --set-platform linux/amd64 --entrypoint /bin/sleep --cmd 3600 -t "$REG/e2e/busybox:1" >/dev/null
img() { crane mutate "$REG/e2e/busybox:1" --label "criguard.e2e=$1" -t "$REG/e2e/$1:v1"; }
signed_ref=$(img signed); signed_digest=${signed_ref#*@}
img unsigned >/dev/null
crane mutate "$REG/e2e/busybox:1" --label criguard.e2e=later -t "$REG/later/app:v1" >/dev/null
(cd "$work" && COSIGN_PASSWORD='' "$COSIGN" generate-key-pair >/dev/null 2>&1)
COSIGN_PASSWORD='' "$COSIGN" sign --yes --key "$work/cosign.key" --tlog-upload=false --use-signing-config=false \
  "$REG/e2e/signed@$signed_digest" 2>&1 | tail -2
"$COSIGN" verify --key "$work/cosign.pub" --insecure-ignore-tlog "$REG/e2e/signed@$signed_digest" >/dev/null 2>&1 ||
  die "cosign cannot verify its own signature of $REG/e2e/signed@$signed_digest"
# An unsigned image only on the nodes (kind load), never in any registry.
tar -C "$bb" -c . | docker import -c 'ENTRYPOINT ["/bin/sleep","3600"]' - "$REG/e2e/preloaded:v1" >/dev/null
kind load docker-image --name "$CLUSTER" "$REG/e2e/preloaded:v1"

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

# ---------------------------------------------------------------------------
step "install: kustomize build | ko resolve | kubectl apply"
t=$SECONDS
mkdir -p "$work/overlay"
cp "$work/cosign.pub" "$work/overlay/e2e.pub"
policy_with() { # extra rules appended to the starter policy
  cat "$REPO/daemonset/policy/policy.yaml"
  cat <<POLICY
  - name: e2e-signed
    images: ["$REG/e2e/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: /etc/criguard/keys/e2e.pub}
POLICY
  cat
}
if [[ ${KYVERNO:-0} == 1 ]]; then # Kyverno's image is side-loaded: it can only be allowed
  policy_with >"$work/overlay/policy.yaml" <<POLICY
  - name: e2e-kyverno
    images: ["criguard.local/kyverno:*"]
    action: Allow
POLICY
else
  policy_with </dev/null >"$work/overlay/policy.yaml"
fi
cat >"$work/overlay/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $NS
resources:
- $(realpath --relative-to="$work/overlay" "$REPO/daemonset")
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
export KO_DOCKER_REPO=$REG KO_DEFAULTBASEIMAGE=$REG/e2e/busybox:1
(cd "$REPO" && ko resolve --preserve-import-paths --platform linux/amd64 -f "$work/install.yaml") >"$work/install.resolved.yaml"
criguard_image=$(sed -n 's#^ *image: \(.*/github.com/criguard/criguard/cmd/criguard@sha256:.*\)$#\1#p' "$work/install.resolved.yaml" | head -1)
[[ -n $criguard_image ]] || die "ko did not resolve the criguard image"
kustomize build "$REPO/daemonset/uninstall" >"$work/uninstall.yaml"
(cd "$REPO" && ko resolve --preserve-import-paths --platform linux/amd64 -f "$work/uninstall.yaml") >"$work/uninstall.resolved.yaml"
install_criguard() {
  k apply -f "$work/install.resolved.yaml"
  k -n "$NS" rollout status daemonset/criguard-installer --timeout=6m
}
# The documented uninstall: stop the installer, run daemonset/uninstall on every node.
uninstall_criguard() {
  k -n "$NS" delete daemonset/criguard-installer configmap/criguard-policy configmap/criguard-keys
  k -n "$NS" wait --for=delete pod -l app.kubernetes.io/component=installer --timeout=2m || true
  k apply -f "$work/uninstall.resolved.yaml"
  k -n "$NS" rollout status daemonset/criguard-uninstall --timeout=6m
  k delete namespace "$NS" --timeout=3m
}
install_criguard
for n in $(nodes); do
  docker exec "$n" systemctl is-active --quiet criguard || die "$n: criguard.service not active"
  docker exec "$n" sh -c 'grep -hs criguard.sock /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet' |
    grep -q 'unix:///run/criguard/criguard.sock' || die "$n: kubelet does not point at criguard"
  docker exec "$n" crictl --runtime-endpoint unix:///run/criguard/criguard.sock version >/dev/null || die "$n: no CRI through criguard"
done
took "install and rollout on $(nodes | wc -l) nodes" "$t"

k wait --for=condition=Ready nodes --all --timeout=3m
old_dns=$(k -n kube-system get pod -l k8s-app=kube-dns -o name)
# shellcheck disable=SC2086 # one word per pod
k -n kube-system delete $old_dns --wait=true --timeout=2m
poll 180 "CoreDNS recreated through criguard and Ready" \
  k -n kube-system wait --for=condition=Ready pod -l k8s-app=kube-dns --timeout=10s

# ---------------------------------------------------------------------------
step "a signed Deployment (one pod per node) becomes Ready"
cat <<YAML | k apply -f -
apiVersion: apps/v1
kind: Deployment
metadata: {name: signed, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: signed}}
  template:
    metadata: {labels: {app: signed}}
    spec:
      tolerations: [{operator: Exists}]
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: signed}}}
      containers:
      - {name: main, image: "$REG/e2e/signed:v1"}
YAML
k rollout status deployment/signed --timeout=4m
for n in $(nodes); do
  poll 30 "$n: criguard's journal allows $signed_digest" criguard_logged "$n" "$signed_digest" allow
done

if [[ ${KYVERNO:-0} == 1 ]]; then # make e2e-kind-kyverno
  . "$REPO/e2e/kind/lib/kyverno.sh"
  kyverno_main
  took "Kyverno story" "$start"
  log "PASS"
  exit 0
fi
if [[ ${BENCH:-0} == 1 ]]; then # make bench-kind
  . "$REPO/e2e/kind/lib/bench.sh"
  bench_main
  took "benchmark" "$start"
  exit 0
fi

step "an unsigned pod is refused at pull"
pod unsigned "$REG/e2e/unsigned:v1"
expect_refused default unsigned "unsigned pod"
k get pod unsigned -o wide

if [[ ${DEMO:-0} == 1 ]]; then # make demo-kind: show it and stop here
  step "demo: kubectl get pods -o wide"
  k get pods -o wide
  step "demo: kubectl describe pod unsigned (events)"
  k describe pod unsigned | sed -n '/^Events:/,$p'
  took "demo" "$start"
  log "DEMO DONE"
  exit 0
fi

step "the unsigned image preloaded with kind load, imagePullPolicy Never, is refused at create"
pod preloaded "$REG/e2e/preloaded:v1" "$WORKER" Never
expect_refused default preloaded "preloaded unsigned pod (Never)"
k get pod preloaded -o jsonpath='{.status.containerStatuses[0].state.waiting}{"\n"}'

step "an unsigned static pod in $WORKER's manifest directory never runs"
static_pod unsigned-static "$REG/e2e/unsigned:v1"
poll 180 "static pod refused with SignatureValidationFailed" refused default "unsigned-static-$WORKER"
[[ -z "$(docker exec "$WORKER" crictl ps -a --name '^main$' --label io.kubernetes.pod.name="unsigned-static-$WORKER" -q)" ]] ||
  die "the unsigned static pod got a container on $WORKER"
docker exec "$WORKER" rm -f /etc/kubernetes/manifests/unsigned-static.yaml # the mirror pod goes with it

step "an unsigned ephemeral container (kubectl debug) is refused"
target=$(k get pod -l app=signed -o jsonpath='{.items[0].metadata.name}')
k debug "$target" --image="$REG/e2e/unsigned:v1" --container=debugger -- sleep 600 >/dev/null
poll 180 "ephemeral container refused with SignatureValidationFailed" sh -c \
  "kubectl get pod $target -o jsonpath='{.status.ephemeralContainerStatuses[?(@.name==\"debugger\")].state.waiting.message}' | grep -q SignatureValidationFailed"
[[ -z "$(k get pod "$target" -o jsonpath='{.status.ephemeralContainerStatuses[?(@.name=="debugger")].containerID}')" ]] ||
  die "the unsigned ephemeral container was created"

step "an unsigned image volume is refused"
cat <<YAML | k apply -f -
apiVersion: v1
kind: Pod
metadata: {name: imagevolume, namespace: default}
spec:
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: "$REG/e2e/signed:v1"
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    image: {reference: "$REG/e2e/unsigned:v1", pullPolicy: IfNotPresent}
YAML
expect_refused default imagevolume "pod with an unsigned image volume"

step "an unsigned pod in a namespace admission webhooks skip is still refused"
k create namespace e2e-excluded >/dev/null
k label namespace e2e-excluded policy.sigstore.dev/include=false kyverno.io/exclude=true >/dev/null
POD_NS=e2e-excluded pod unsigned "$REG/e2e/unsigned:v1"
expect_refused e2e-excluded unsigned "unsigned pod in e2e-excluded"
k delete namespace e2e-excluded --wait=false >/dev/null

# ---------------------------------------------------------------------------
step "a policy change through the ConfigMap reaches every node without restarting kubelet"
kubelet_pids=$(for n in $(nodes); do docker exec "$n" systemctl show -p MainPID --value kubelet; done)
for n in $(nodes); do pod "later-$n" "$REG/later/app:v1" "$n"; done
for n in $(nodes); do expect_refused default "later-$n" "later/app:v1 on $n before the policy change"; done
policy_with >"$work/policy-later.yaml" <<POLICY
  - name: e2e-later
    images: ["$REG/later/*"]
    action: Allow
POLICY
k -n "$NS" create configmap criguard-policy --from-file=policy.yaml="$work/policy-later.yaml" --dry-run=client -o yaml | k apply -f -
t=$SECONDS
later_runs() { # recreate the pod until it runs: kubelet's pull back-off would otherwise dominate
  local n=$1
  k get pod "later-$n" -o jsonpath='{.status.containerStatuses[0].state.running}' | grep -q startedAt && return 0
  k delete pod "later-$n" --wait=true --timeout=30s >/dev/null 2>&1 || true
  pod "later-$n" "$REG/later/app:v1" "$n"
  sleep 8
  k get pod "later-$n" -o jsonpath='{.status.containerStatuses[0].state.running}' | grep -q startedAt
}
for n in $(nodes); do poll 300 "later/app:v1 runs on $n under the new policy" later_runs "$n"; done
took "policy change to effect on every node" "$t"
[[ $kubelet_pids == "$(for n in $(nodes); do docker exec "$n" systemctl show -p MainPID --value kubelet; done)" ]] ||
  die "kubelet was restarted by the policy change"
k delete pod unsigned preloaded imagevolume "later-$CP" "later-$WORKER" --wait=false >/dev/null

# ---------------------------------------------------------------------------
step "node restart: docker restart $WORKER"
t=$SECONDS
docker restart "$WORKER" >/dev/null
# The API server still shows the node Ready from before the restart: wait on the
# node's own units, then for its pods to come back.
poll 120 "$WORKER: criguard and kubelet active after the restart" \
  docker exec "$WORKER" systemctl is-active --quiet criguard kubelet
cg=$(docker exec "$WORKER" systemctl show -p ActiveEnterTimestampMonotonic --value criguard)
kl=$(docker exec "$WORKER" systemctl show -p ExecMainStartTimestampMonotonic --value kubelet)
(( cg > 0 && cg <= kl )) || die "criguard (active at $cg us) did not start before kubelet (started at $kl us)"
log "ok: criguard active at ${cg}us, kubelet started at ${kl}us after boot (systemd ordering)"
signed_on_worker() {
  [[ "$(k get pod -l app=signed --field-selector spec.nodeName="$WORKER" -o jsonpath='{.items[0].status.containerStatuses[0].ready}')" == true ]] &&
    criguard_logged "$WORKER" CreateContainer "$signed_digest" allow
}
poll 240 "the signed pod on $WORKER is back, recreated through the restarted criguard" signed_on_worker
took "worker restart to pods back" "$t"
pod unsigned-after-restart "$REG/e2e/unsigned:v1" "$WORKER"
expect_refused default unsigned-after-restart "unsigned pod on the restarted worker"

# ---------------------------------------------------------------------------
step "upgrade: a new criguard image rolled out; unsigned pods created throughout never run"
new_image=$(crane mutate "$criguard_image" --label criguard.e2e/build=2)
[[ $new_image != "$criguard_image" ]] || die "the upgrade image has the old digest"
touch "$work/probing"
( i=0
  while [[ -f $work/probing ]]; do
    for n in $(nodes); do pod "upgrade-probe-$i" "$REG/e2e/unsigned:v1" "$n" || true; i=$((i + 1)); done
    sleep 4
  done ) &
prober=$!
t=$SECONDS
k -n "$NS" set image daemonset/criguard-installer "installer=$new_image"
k -n "$NS" rollout status daemonset/criguard-installer --timeout=6m
took "upgrade rollout" "$t"
sleep 20
rm -f "$work/probing"; wait "$prober"
probes=$(k get pods -o name | grep -c upgrade-probe- || true)
(( probes >= 4 )) || die "only $probes probe pods were created during the upgrade"
for p in $(k get pods -o name | grep upgrade-probe-); do
  # judged and refused (not merely not yet seen by kubelet), and never created
  poll 180 "${p#pod/} refused" refused default "${p#pod/}"
  never_ran default "${p#pod/}" || die "$p ran during the upgrade"
done
for n in $(nodes); do
  docker exec "$n" systemctl is-active --quiet criguard || die "$n: criguard.service not active after the upgrade"
done
log "ok: none of $probes unsigned pods created during the upgrade got a container"
k get pods -o name | grep -E 'upgrade-probe-|unsigned' | xargs -r kubectl delete --wait=false >/dev/null

# ---------------------------------------------------------------------------
step "uninstall through daemonset/uninstall"
t=$SECONDS
uninstall_criguard
for n in $(nodes); do
  node_state "$n" >"$work/after-$n"
  diff -u "$work/before-$n" "$work/after-$n" || die "$n differs after uninstall (above)"
  docker exec "$n" test ! -e /run/criguard/criguard.sock || die "$n: criguard's socket remains"
done
k wait --for=condition=Ready nodes --all --timeout=3m
took "uninstall" "$t"
log "ok: every node is as it was before the install"
for n in $(nodes); do pod "unsigned-after-uninstall-$n" "$REG/e2e/unsigned:v1" "$n"; done
for n in $(nodes); do
  k wait --for=condition=Ready "pod/unsigned-after-uninstall-$n" --timeout=3m
done
log "ok: with criguard uninstalled the unsigned image runs on every node (enforcement was criguard's)"
took "full run" "$start"
log "PASS"
