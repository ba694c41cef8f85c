# cosign plus Kyverno, side by side with a real Kyverno (KYVERNO=1 e2e/kind/run.sh,
# `make e2e-kind-kyverno`). Kyverno v1.19.x's admission controller is built from the
# Go module proxy (nodeimage/bins.sh kyverno) and installed from the module's own
# config/install-latest-testing.yaml (its CRDs, RBAC, services; the admission
# controller only). A ClusterPolicy of Kyverno's sample-library shape (one
# keys.publicKeys attestor) guards $REG/e2e/*, with rekor.ignoreTlog and
# ctlog.ignoreSCT: without them Kyverno fetches Sigstore's TUF root from the
# internet and, offline, refuses every image, signed or not (docs/kind.md has
# the exact message). Then:
#   - Kyverno admits the signed pod (it reads cosign's legacy .sig format, so the
#     image is signed that way too) and criguard lets it run;
#   - Kyverno refuses the unsigned pod at admission;
#   - a pod in a namespace the policy excludes gets past admission, and so does a
#     static pod (kubelet runs it whatever admission says): criguard refuses both
#     on the node.
# Sourced by run.sh after the install; uses its helpers.

kyverno_main() {
  step "Kyverno $KYVERNO_VERSION beside criguard"
  local t=$SECONDS kdir img=criguard.local/kyverno:$KYVERNO_VERSION
  bash "$REPO/e2e/kind/nodeimage/bins.sh" kyverno
  kdir=$(go mod download -json "github.com/kyverno/kyverno@$KYVERNO_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [[ -f $kdir/config/install-latest-testing.yaml ]] || die "Kyverno $KYVERNO_VERSION has no config/install-latest-testing.yaml"
  if ! docker image inspect "$img" >/dev/null 2>&1; then
    local r=$work/kyverno-root
    mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/.sigstore"; chmod 1777 "$r/tmp" "$r/.sigstore"
    cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$r/etc/passwd"
    cp "$KIND_CACHE/kyverno-$KYVERNO_VERSION/kyverno" "$r/kyverno"
    tar --numeric-owner -C "$r" -c . | docker import -c 'ENTRYPOINT ["/kyverno"]' - "$img" >/dev/null
  fi
  kind load docker-image --name "$CLUSTER" "$img"
  # The admission controller only: our image, no init container (it cleans up
  # after earlier installs), plain-HTTP registry allowed, and the node's network
  # so that it reaches the registry as localhost:5001 like kubelet and criguard.
  sed -e "s#reg.kyverno.io/kyverno/kyverno:latest#$img#" \
      -e 's#--allowInsecureRegistry=false#--allowInsecureRegistry=true#' \
      "$kdir/config/install-latest-testing.yaml" >"$work/kyverno.yaml"
  k apply --server-side -f "$work/kyverno.yaml" >/dev/null
  k -n kyverno delete deployment kyverno-background-controller kyverno-cleanup-controller kyverno-reports-controller >/dev/null
  k -n kyverno patch deployment kyverno-admission-controller --type=json -p '[
    {"op": "remove", "path": "/spec/template/spec/initContainers"},
    {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true},
    {"op": "replace", "path": "/spec/template/spec/dnsPolicy", "value": "ClusterFirstWithHostNet"},
    {"op": "add", "path": "/spec/replicas", "value": 1}]' >/dev/null
  k -n kyverno rollout status deployment/kyverno-admission-controller --timeout=6m
  took "Kyverno installed" "$t"

  k create namespace e2e-kyverno-excluded >/dev/null
  kyverno_key_policy check-image check-image "$REG/e2e/*" "$work/cosign.pub" e2e-kyverno-excluded >"$work/kyverno-policy.yaml"
  # Kyverno's own webhook checks the policy: retry until its service answers.
  poll 120 "ClusterPolicy check-image applied" k apply -f "$work/kyverno-policy.yaml"
  poll 180 "ClusterPolicy check-image Ready" k wait --for=condition=Ready clusterpolicy/check-image --timeout=10s
  COSIGN_PASSWORD='' "$COSIGN" sign --yes --key "$work/cosign.key" --tlog-upload=false --use-signing-config=false \
    --new-bundle-format=false "$REG/e2e/signed@$signed_digest" 2>&1 | tail -1

  step "Kyverno admits the signed pod, criguard lets it run"
  kyverno_admits() {
    k get pod kyverno-signed >/dev/null 2>&1 || k run kyverno-signed --image="$REG/e2e/signed:v1" --restart=Never >/dev/null 2>&1
  }
  poll 120 "kubectl run of the signed image admitted by Kyverno" kyverno_admits
  k wait --for=condition=Ready pod/kyverno-signed --timeout=3m
  k get pod kyverno-signed -o jsonpath='{.spec.containers[0].image}{"\n"}' | grep -q "@$signed_digest" ||
    die "Kyverno did not pin the signed pod's image to its verified digest"
  local node; node=$(k get pod kyverno-signed -o jsonpath='{.spec.nodeName}')
  poll 30 "criguard on $node allowed the signed pod" criguard_logged "$node" "pod=kyverno-signed" "$signed_digest" allow

  step "Kyverno refuses the unsigned pod at admission"
  local out
  kyverno_refuses() {
    out=$(k run kyverno-unsigned --image="$REG/e2e/unsigned:v1" --restart=Never 2>&1) && {
      k delete pod kyverno-unsigned --wait=false >/dev/null; return 1; }
    grep -q 'check-image' <<<"$out"
  }
  poll 120 "kubectl run of the unsigned image denied by Kyverno's webhook" kyverno_refuses
  printf '%s\n' "$out" >&2

  step "past admission (a namespace the policy excludes): criguard refuses it on the node"
  POD_NS=e2e-kyverno-excluded pod unsigned "$REG/e2e/unsigned:v1"
  expect_refused e2e-kyverno-excluded unsigned "unsigned pod admitted by Kyverno (excluded namespace)"
  k -n e2e-kyverno-excluded get pod unsigned

  step "past admission (a static pod): criguard refuses it on the node"
  static_pod kyverno-static "$REG/e2e/unsigned:v1"
  # kubelet runs a static pod whether or not the API server admits its mirror pod,
  # so criguard's journal and the node's own containers are the evidence.
  static_refused() { criguard_logged "$WORKER" "pod=kyverno-static-$WORKER" "$REG/e2e/unsigned:v1" deny; }
  poll 180 "static pod's unsigned image denied by criguard on $WORKER" static_refused
  sleep 5
  [[ -z "$(docker exec "$WORKER" crictl ps -a --label io.kubernetes.pod.name="kyverno-static-$WORKER" -q)" ]] ||
    die "the unsigned static pod got a container on $WORKER"
  docker exec "$WORKER" rm -f /etc/kubernetes/manifests/kyverno-static.yaml
  log "ok: Kyverno refused at admission; what got past admission criguard refused on the node"
}
