# The kind benchmark (BENCH=1 e2e/kind/run.sh, `make bench-kind`): a 50-replica
# Deployment of the signed image rolled out with criguard in kubelet's path and
# without it, on the same cluster, interleaved A B B A ... so drift in the
# machine's load falls on both sides. Reports wall time of each rollout and
# per-pod start latency (creation to Ready, 1 s resolution of the API's
# timestamps); ratios, never assertions. Sourced by run.sh after the install;
# uses its k, log, step, work, REG and the install/uninstall functions.

BENCH_REPLICAS=${BENCH_REPLICAS:-50}
BENCH_PAIRS=${BENCH_PAIRS:-2}

bench_rollout() { # LABEL: one rollout; appends "LABEL wall p50 p95 max" to $work/bench.txt
  local label=$1 t0 t1
  t0=$(date +%s.%N)
  cat <<YAML | k apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench, namespace: default}
spec:
  replicas: $BENCH_REPLICAS
  selector: {matchLabels: {app: bench}}
  template:
    metadata: {labels: {app: bench}}
    spec:
      tolerations: [{operator: Exists}]
      terminationGracePeriodSeconds: 0
      containers:
      - {name: main, image: "$REG/e2e/signed:v1", resources: {requests: {cpu: 1m, memory: 4Mi}}}
YAML
  k rollout status deployment/bench --timeout=10m >/dev/null
  t1=$(date +%s.%N)
  k get pods -l app=bench -o json | python3 -c '
import json, sys, datetime
label, wall = sys.argv[1], float(sys.argv[2])
ts = lambda s: datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").timestamp()
lat = sorted(ts(c["lastTransitionTime"]) - ts(p["metadata"]["creationTimestamp"])
             for p in json.load(sys.stdin)["items"] for c in p["status"]["conditions"] if c["type"] == "Ready")
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
print(f"{label} {wall:.2f} {q(0.5):.0f} {q(0.95):.0f} {lat[-1]:.0f} {len(lat)}")' "$label" "$(awk "BEGIN{print $t1 - $t0}")" | tee -a "$work/bench.txt" >&2
  k delete deployment bench --wait=true >/dev/null
  k wait --for=delete pod -l app=bench --timeout=5m >/dev/null 2>&1 || true
}

bench_main() {
  step "benchmark: $BENCH_REPLICAS-replica rollout with and without criguard, $BENCH_PAIRS interleaved pairs"
  : >"$work/bench.txt"
  echo "# label wall_s pod_p50_s pod_p95_s pod_max_s pods" >&2
  local i want state=on
  for ((i = 0; i < 2 * BENCH_PAIRS; i++)); do
    case $((i % 4)) in 0 | 3) want=on ;; *) want=off ;; esac # on off off on on off ...
    if [[ $want != "$state" ]]; then
      if [[ $want == on ]]; then install_criguard; else uninstall_criguard; fi
      state=$want
    fi
    if [[ $want == on ]]; then bench_rollout with-criguard; else bench_rollout without; fi
  done
  python3 - "$work/bench.txt" <<'PY' >&2
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def agg(label, col):
    return statistics.mean(float(r[col]) for r in rows if r[0] == label)
for col, name in ((1, "rollout wall time"), (2, "pod start p50"), (3, "pod start p95")):
    w, wo = agg("with-criguard", col), agg("without", col)
    print(f"{name}: with {w:.2f}s, without {wo:.2f}s, ratio {w / wo if wo else float('nan'):.3f}")
PY
  cp "$work/bench.txt" "${BENCH_OUT:-/tmp/criguard-kind-bench.txt}"
}
