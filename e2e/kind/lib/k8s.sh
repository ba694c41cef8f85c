# kubectl helpers shared by run.sh and helm.sh. Sourced; needs lib.sh (log,
# die) and $CLUSTER.

step() { log "==== $*"; }
k() { kubectl "$@"; }
nodes() { kind get nodes --name "$CLUSTER"; }

# poll SECONDS WHAT CMD...: runs CMD until it succeeds or time runs out.
poll() {
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [[ $SECONDS -lt $end ]] || die "timed out after ${limit}s waiting for: $what"
    sleep 3
  done
  log "ok: $what"
}

# refused NS POD: a container of the pod (init, app or ephemeral) waits with
# criguard's SignatureValidationFailed, or an event of the pod says so.
refused() {
  local ns=$1 pod=$2
  k -n "$ns" get pod "$pod" -o jsonpath='{range .status.containerStatuses[*]}{.state.waiting.reason} {.state.waiting.message}{"\n"}{end}{range .status.ephemeralContainerStatuses[*]}{.state.waiting.reason} {.state.waiting.message}{"\n"}{end}' |
    grep -q SignatureValidationFailed ||
    k -n "$ns" get events --field-selector "involvedObject.name=$pod" -o jsonpath='{.items[*].message}' | grep -q SignatureValidationFailed
}
# never_ran NS POD: no container of the pod ever got an ID (was never created).
never_ran() {
  [[ -z "$(k -n "$1" get pod "$2" -o jsonpath='{.status.containerStatuses[*].containerID}{.status.ephemeralContainerStatuses[*].containerID}')" ]]
}
# pod NAME IMAGE [NODE] [PULL_POLICY]: a one-container pod, optionally pinned to a node.
pod() {
  cat <<YAML | k apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: ${POD_NS:-default}}
spec:
  ${3:+nodeName: $3}
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: "$2", imagePullPolicy: ${4:-IfNotPresent}}
YAML
}
expect_refused() { # NS POD WHAT
  poll 180 "$3: refused with SignatureValidationFailed" refused "$1" "$2"
  never_ran "$1" "$2" || die "$3: a container was created"
}

# kyverno_key_policy NAME RULE IMAGES PUBFILE [EXCLUDED_NS]: a Kyverno
# ClusterPolicy of the sample library's shape (one keys.publicKeys attestor)
# for the image pattern IMAGES. The test signatures have no transparency-log entry (signed
# offline), hence rekor.ignoreTlog and ctlog.ignoreSCT, as Kyverno needs them.
kyverno_key_policy() {
  local pub exclude=""
  pub=$(sed 's/^/                  /' "$4")
  [[ -z ${5:-} ]] || exclude=$(printf '    exclude:\n      any:\n      - resources:\n          namespaces: [%s]\n' "$5")
  cat <<YAML
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: $1
spec:
  webhookTimeoutSeconds: 30
  failurePolicy: Fail
  background: false
  rules:
  - name: $2
    match:
      any:
      - resources:
          kinds: [Pod]
$exclude
    verifyImages:
    - imageReferences: ["$3"]
      failureAction: Enforce
      attestors:
      - count: 1
        entries:
        - keys:
            publicKeys: |-
$pub
            rekor: {ignoreTlog: true}
            ctlog: {ignoreSCT: true}
YAML
}
