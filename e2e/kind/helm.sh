#!/usr/bin/env bash
# criguard installed with its Helm chart on a real two-node kind cluster,
# offline (`make e2e-kind-helm`; root; not part of `make test`). It reuses the
# kind e2e's node image (e2e/kind/nodeimage, cached under $CRIGUARD_KIND_CACHE)
# and private dockerd (e2e/kind/lib/dockerd.sh; a dockerd already started by
# another run is used and left running), on a cluster and registry of its own.
#
#   Kyverno's ClusterPolicy/Policy CRDs (from the Kyverno module; no Kyverno runs)
#   helm install (policy.source=imagePolicies, policy.kyverno=true) -> rollout on every node
#   an invalid ImagePolicy is refused by the API server (the CRD's schema)
#   an ImagePolicy object with a Verify rule reaches every node (PolicySynced Events;
#   status.nodes: one Synced entry per node, each applied by criguard-sync/NODE)
#   a cosign-signed pod runs; an unsigned pod is refused with SignatureValidationFailed
#   a Kyverno ClusterPolicy object (verifyImages, keys) reaches every node and is
#   enforced: signed runs, unsigned refused naming the ClusterPolicy
#   helm upgrade to a new criguard build: every node runs it; unsigned pods
#   created throughout the rollout never get a container
#   helm uninstall (alone: its pre-delete hooks restore the nodes): every node's
#   kubelet files and units as before; the unsigned pods then run
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
export REPO
. "$REPO/e2e/kind/nodeimage/lib.sh"
. "$REPO/e2e/kind/lib/dockerd.sh"
. "$REPO/e2e/kind/lib/cluster.sh"
. "$REPO/e2e/kind/lib/k8s.sh"

CLUSTER=criguard-helm
REG_NAME=criguard-helm-registry
REG_PORT=5002
REG=localhost:$REG_PORT
NS=criguard-system
E2E_CACHE=${CRIGUARD_E2E_CACHE:-$REPO/.cache/e2e}
COSIGN=$E2E_CACHE/bin/cosign
HELM=${CRIGUARD_HELM:-$E2E_CACHE/bin/helm} # make helm builds it at the pinned version
work=$(mktemp -d /tmp/criguard-helm.XXXXXX)
export KUBECONFIG=$work/kubeconfig
node_state() { # what uninstall must give back
  docker exec "$1" sh -c '
    for f in /var/lib/kubelet/config.yaml /var/lib/kubelet/instance-config.yaml /var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet; do
      [ -e "$f" ] && sha256sum "$f" || echo "absent $f"
    done
    ls -A /etc/systemd/system /etc/systemd/system/kubelet.service.wants /usr/local/bin 2>&1
    if [ -e /var/lib/criguard ]; then echo "/var/lib/criguard present"; fi
    echo "kubelet $(systemctl is-active kubelet)"'
}

[[ $(id -u) == 0 ]] || die "run as root (dockerd, iptables, sysctls)"
kind_lock # before looking at dockerd: a run holding the lock may stop it
ensure_packages
own_dockerd=1
DOCKER_HOST=unix://$KIND_RUN/docker.sock docker_answers && own_dockerd=0
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    k get pods -A -o wide 2>&1 || true
    k get events -A --sort-by=.lastTimestamp 2>&1 | tail -30 || true
    k -n "$NS" logs -l app.kubernetes.io/name=criguard --all-containers --tail=40 --prefix 2>&1 || true
  fi
  if [[ ${KEEP:-0} != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
    if [[ $own_dockerd == 1 ]]; then docker_down; fi
    rm -rf "$work"
  fi
  exit $rc
}

step "tools, dockerd, node image (cached)"
[[ -x $COSIGN ]] || die "cosign missing at $COSIGN: run \`make tools\`"
[[ -n ${CRIGUARD_HELM:-} ]] || make -s -C "$REPO" helm E2E_CACHE="$E2E_CACHE" >&2
[[ -x $HELM ]] || die "helm missing at $HELM"
bash "$REPO/e2e/kind/nodeimage/bins.sh" all
export PATH=$KIND_CACHE/tools-$KIND_VERSION-$CRANE_VERSION-$KUSTOMIZE_VERSION:$KIND_CACHE/ko-$KO_VERSION:$KIND_CACHE/k8s-$K8S_VERSION:$PATH
docker_up
trap cleanup EXIT
NODE_IMAGE=$(KEEP_DOCKERD=1 bash "$REPO/e2e/kind/nodeimage/build.sh" | tail -1)
kind_test_roots

step "kind cluster $CLUSTER (control plane + worker), registry $REG"
kind_cluster_up "$NODE_IMAGE"

crane append -f "$work/busybox.tar" -t "$REG/e2e/busybox:1" >/dev/null
crane mutate "$REG/e2e/busybox:1" --set-platform linux/amd64 --entrypoint /bin/sleep --cmd 3600 -t "$REG/e2e/busybox:1" >/dev/null
signed_ref=$(crane mutate "$REG/e2e/busybox:1" --label criguard.e2e=signed -t "$REG/e2e/signed:v1")
crane mutate "$REG/e2e/busybox:1" --label criguard.e2e=unsigned -t "$REG/e2e/unsigned:v1" >/dev/null
(cd "$work" && COSIGN_PASSWORD='' "$COSIGN" generate-key-pair >/dev/null 2>&1)
COSIGN_PASSWORD='' "$COSIGN" sign --yes --key "$work/cosign.key" --tlog-upload=false --use-signing-config=false "$signed_ref" >/dev/null 2>&1
for n in $(nodes); do node_state "$n" >"$work/before-$n"; done

step "Kyverno $KYVERNO_VERSION's ClusterPolicy and Policy CRDs (no Kyverno controller)"
kdir=$(cd "$REPO" && go mod download -json "github.com/kyverno/kyverno@$KYVERNO_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
for crd in clusterpolicies policies; do
  k apply --server-side -f "$kdir/config/crds/kyverno/kyverno.io_$crd.yaml" >/dev/null
  # kubectl wait fails at once while the CRD has no conditions yet: poll.
  poll 60 "CRD $crd.kyverno.io Established" k wait --for=condition=Established "crd/$crd.kyverno.io" --timeout=5s
done
crane mutate "$REG/e2e/busybox:1" --label criguard.e2e=kyverno-unsigned -t "$REG/kyv/unsigned:v1" >/dev/null
kyv_signed=$(crane mutate "$REG/e2e/busybox:1" --label criguard.e2e=kyverno-signed -t "$REG/kyv/signed:v1")
COSIGN_PASSWORD='' "$COSIGN" sign --yes --key "$work/cosign.key" --tlog-upload=false --use-signing-config=false "$kyv_signed" >/dev/null 2>&1

step "images: ko build ./cmd/criguard ./cmd/criguard-sync"
export KO_DOCKER_REPO=$REG KO_DEFAULTBASEIMAGE=$REG/e2e/busybox:1
mapfile -t refs < <(cd "$REPO" && ko build --preserve-import-paths --platform linux/amd64 ./cmd/criguard ./cmd/criguard-sync 2>"$work/ko.log")
[[ ${#refs[@]} == 2 ]] || { cat "$work/ko.log" >&2; die "ko built ${#refs[@]} images"; }
# ko prints the images in the order they finish: pick each by its path.
main_ref=$(printf '%s\n' "${refs[@]}" | grep '/cmd/criguard@') sync_ref=$(printf '%s\n' "${refs[@]}" | grep '/cmd/criguard-sync@')
log "criguard $main_ref, criguard-sync $sync_ref"

step "helm install (policy.source=imagePolicies, policy.kyverno=true)"
k create namespace "$NS"
k label namespace "$NS" pod-security.kubernetes.io/enforce=privileged
"$HELM" install criguard "$REPO/charts/criguard" -n "$NS" --wait --timeout 8m \
  --set image.repository="${main_ref%@*}",image.digest="${main_ref#*@}" \
  --set syncImage.repository="${sync_ref%@*}",syncImage.digest="${sync_ref#*@}" \
  --set policy.source=imagePolicies,policy.kyverno=true --set-file keys.e2e\\.pub="$work/cosign.pub"
# helm --wait counts a DaemonSet ready with maxUnavailable (1) pods missing:
# rollout status waits for every node.
k -n "$NS" rollout status daemonset/criguard-installer --timeout=6m
k -n "$NS" get pods -o wide
k get imagepolicies
for n in $(nodes); do
  docker exec "$n" systemctl is-active --quiet criguard || die "$n: criguard.service not active"
  docker exec "$n" crictl --runtime-endpoint unix:///run/criguard/criguard.sock version >/dev/null || die "$n: no CRI through criguard"
done

step "invalid ImagePolicies are refused by the API server"
# refused_by_api WANT YAML: kubectl apply fails and says WANT.
refused_by_api() {
  local out
  if out=$(k apply -f - <<<"$2" 2>&1); then die "the API server stored an invalid ImagePolicy: $out"; fi
  log "refused: $out"
  grep -qF -- "$1" <<<"$out" || die "the refusal does not say: $1"
}
refused_by_api 'spec.mode: Unsupported value: "Warn"' \
  "$(printf 'apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: bad-mode}\nspec:\n  mode: Warn\n')"
refused_by_api 'attestors and signatureRepository only apply to action Verify' \
  "$(printf 'apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: bad-rule}\nspec:\n  rules:\n  - {name: r, images: [\"*\"], action: Allow, attestors: {entries: [{key: {file: /x}}]}}\n')"
refused_by_api 'unknown field "spec.enforce"' \
  "$(printf 'apiVersion: criguard.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: bad-field}\nspec:\n  enforce: true\n')"

step "an ImagePolicy object with a Verify rule reaches every node"
cat <<YAML | k apply -f -
apiVersion: criguard.dev/v1alpha1
kind: ImagePolicy
metadata: {name: e2e}
spec:
  rules:
  - name: e2e-signed
    images: ["$REG/e2e/*"]
    action: Verify
    attestors:
      entries:
      - key: {file: /etc/criguard/keys/e2e.pub}
YAML
synced() { [[ $(k get events -n default --field-selector involvedObject.kind=ImagePolicy,involvedObject.name=e2e,reason=PolicySynced -o jsonpath='{.items[*].source.host}' | wc -w) -ge $(nodes | wc -l) ]]; }
poll 120 "PolicySynced Events for ImagePolicy e2e from every node" synced
k get events -n default --field-selector involvedObject.kind=ImagePolicy,involvedObject.name=e2e -o custom-columns=NODE:.source.host,REASON:.reason,MESSAGE:.message
for n in $(nodes); do
  poll 60 "$n: criguard enforces /etc/criguard/policy/imagepolicy-e2e.yaml" docker exec "$n" test -f /etc/criguard/policy/imagepolicy-e2e.yaml
done
# Each node applies its own entry of status.nodes (field manager criguard-sync/NODE).
status_nodes() { k get imagepolicy e2e -o jsonpath='{range .status.nodes[*]}{.name} {.observedGeneration} {.result}{"\n"}{end}' | sort; }
status_synced() {
  local gen
  gen=$(k get imagepolicy e2e -o jsonpath='{.metadata.generation}')
  [[ "$(status_nodes)" == "$(nodes | sed "s/\$/ $gen Synced/" | sort)" ]]
}
poll 60 "status.nodes of ImagePolicy e2e: every node Synced at its generation" status_synced
status_nodes
managers=$(k get imagepolicy e2e --show-managed-fields -o jsonpath='{range .metadata.managedFields[?(@.subresource=="status")]}{.manager}{"\n"}{end}' | sort)
[[ "$managers" == "$(nodes | sed 's|^|criguard-sync/|' | sort)" ]] || die "status.nodes managers: $managers; want criguard-sync/NODE per node"

step "a signed pod runs, an unsigned pod is refused"
pod signed "$REG/e2e/signed:v1"
pod unsigned "$REG/e2e/unsigned:v1"
k wait --for=condition=Ready pod/signed --timeout=3m
expect_refused default unsigned "the unsigned pod"
k get pods -o wide
k get events --field-selector involvedObject.name=unsigned -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | awk '/SignatureValidationFailed/ && !n++' # reads to the end: no SIGPIPE under pipefail
k delete pod unsigned --wait=false

step "a Kyverno ClusterPolicy object reaches every node and is enforced"
kyverno_key_policy check-kyv check-kyv-image "$REG/kyv/*" "$work/cosign.pub" | k apply -f -
kyv_synced() { [[ $(k get events -n default --field-selector involvedObject.kind=ClusterPolicy,involvedObject.name=check-kyv,reason=PolicySynced -o jsonpath='{.items[*].source.host}' | wc -w) -ge $(nodes | wc -l) ]]; }
poll 120 "PolicySynced Events for ClusterPolicy check-kyv from every node" kyv_synced
for n in $(nodes); do
  poll 60 "$n: criguard enforces /etc/criguard/policy/kyverno-clusterpolicy-check-kyv.yaml" docker exec "$n" test -f /etc/criguard/policy/kyverno-clusterpolicy-check-kyv.yaml
done
pod kyv-signed "$REG/kyv/signed:v1"
pod kyv-unsigned "$REG/kyv/unsigned:v1"
k wait --for=condition=Ready pod/kyv-signed --timeout=3m
expect_refused default kyv-unsigned "kyv-unsigned"
names_policy() { k get events --field-selector involvedObject.name=kyv-unsigned -o jsonpath='{.items[*].message}' | grep SignatureValidationFailed | grep -q check-kyv; }
poll 60 "the refusal names ClusterPolicy check-kyv" names_policy
k get events --field-selector involvedObject.name=kyv-unsigned -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | awk '/SignatureValidationFailed/ && !n++'
k delete pod kyv-unsigned kyv-signed --wait=false

step "helm upgrade to a new criguard build; unsigned pods created throughout never run"
v2_ref=$(cd "$REPO" && GOFLAGS=-ldflags=-X=main.version=helm-e2e-2 ko build --preserve-import-paths --platform linux/amd64 ./cmd/criguard 2>>"$work/ko.log")
[[ $v2_ref == *@sha256:* && $v2_ref != "$main_ref" ]] || die "the upgrade build $v2_ref is not a new image"
touch "$work/probing"
( i=0
  while [[ -f $work/probing ]]; do pod "upgrade-probe-$i" "$REG/e2e/unsigned:v1" || true; i=$((i + 1)); sleep 3; done ) &
prober=$!
t=$SECONDS
"$HELM" upgrade criguard "$REPO/charts/criguard" -n "$NS" --reuse-values --set image.digest="${v2_ref#*@}" --wait --timeout 8m
k -n "$NS" rollout status daemonset/criguard-installer --timeout=6m
log "upgrade rolled out in $((SECONDS - t))s"
sleep 10
rm -f "$work/probing"; wait "$prober"
for n in $(nodes); do
  v=$(docker exec "$n" /usr/local/bin/criguard version)
  [[ $v == "criguard helm-e2e-2" ]] || die "$n runs $v after the upgrade, want criguard helm-e2e-2"
  docker exec "$n" systemctl is-active --quiet criguard || die "$n: criguard.service not active after the upgrade"
done
probes=$(k get pods -o name | grep -c upgrade-probe- || true)
(( probes >= 4 )) || die "only $probes probe pods were created during the upgrade"
for p in $(k get pods -o name | grep upgrade-probe-); do
  expect_refused default "${p#pod/}" "${p#pod/}, created during the upgrade"
done
log "ok: every node runs criguard helm-e2e-2; none of $probes unsigned pods created during the upgrade got a container"
k get pods -o name | grep upgrade-probe- | xargs -r kubectl delete --wait=false >/dev/null

step "helm uninstall: its pre-delete hooks put every node back on containerd"
t=$SECONDS
"$HELM" uninstall criguard -n "$NS" --wait --timeout 6m
log "helm uninstall took $((SECONDS - t))s"
[[ -z $(k -n "$NS" get daemonsets,jobs,roles,rolebindings -o name) ]] || die "helm uninstall left objects: $(k -n "$NS" get daemonsets,jobs,roles,rolebindings -o name)"
for n in $(nodes); do
  node_state "$n" >"$work/after-$n"
  diff -u "$work/before-$n" "$work/after-$n" || die "$n: not as before the install"
done
log "every node as before the install"
k wait --for=delete pod/unsigned --timeout=1m || true
pod unsigned "$REG/e2e/unsigned:v1"
k wait --for=condition=Ready pod/unsigned --timeout=3m
log "the unsigned pod runs without criguard: the refusal was criguard's"
log "PASS"
