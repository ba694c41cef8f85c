# Starts a private dockerd for the kind e2e when none answers, and undoes what it
# and the kind nodes change on the host. Sourced; needs lib.sh (KIND_CACHE, log, die).
#
# State: data root under $KIND_CACHE/docker (kept: it holds the node image),
# exec root and socket under /run/criguard-kind, and host-state.env there with
# what the host looked like before, so `dockerd.sh down` also works after a crash.

KIND_RUN=${CRIGUARD_KIND_RUN:-/run/criguard-kind}
HOST_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward)

docker_answers() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# docker_up: sets DOCKER_HOST. Uses a dockerd that already answers (and then
# leaves it and the host alone on docker_down), else starts one.
docker_up() {
  if [[ -z ${DOCKER_HOST:-} ]] && docker_answers; then
    log "using the running dockerd ($(docker version --format '{{.Server.Version}}'))"; return 0
  fi
  export DOCKER_HOST=unix://$KIND_RUN/docker.sock
  if docker_answers; then log "using criguard's dockerd at $DOCKER_HOST"; return 0; fi
  command -v dockerd >/dev/null || die "dockerd missing: apt-get install --no-install-recommends docker.io"
  mkdir -p "$KIND_RUN" "$KIND_CACHE/docker"
  [[ -f $KIND_RUN/host-state.env ]] || snapshot_host >"$KIND_RUN/host-state.env"
  log "starting dockerd (data root $KIND_CACHE/docker, socket $KIND_RUN/docker.sock)"
  dockerd --data-root "$KIND_CACHE/docker" --exec-root "$KIND_RUN/exec" -H "$DOCKER_HOST" \
    --pidfile "$KIND_RUN/dockerd.pid" --add-runtime "criguard-runc=$REPO/e2e/kind/lib/runc-wrapper.sh" \
    --default-runtime criguard-runc --storage-driver overlay2 \
    >"$KIND_RUN/dockerd.log" 2>&1 &
  local i
  for ((i = 0; i < 60; i++)); do docker_answers && return 0; sleep 1; done
  tail -20 "$KIND_RUN/dockerd.log" >&2
  die "dockerd did not answer within 60s (log: $KIND_RUN/dockerd.log)"
}

snapshot_host() {
  local s
  for s in "${HOST_SYSCTLS[@]}"; do echo "SYSCTL_${s//./_}=$(sysctl -n "$s")"; done
  echo "FORWARD_POLICY=$(iptables -S FORWARD | sed -n 's/^-P FORWARD //p')"
  echo "LINKS='$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | tr '\n' ' ')'"
  echo "BR_NETFILTER=$([[ -d /sys/module/br_netfilter ]] && echo 1 || echo 0)"
  local t
  for t in filter nat; do iptables -t "$t" -S | sed "s/^/$t /" >"$KIND_RUN/iptables.before"."$t"; done
}

# docker_down: removes every container and network of criguard's dockerd, stops
# it by PID and restores the host as snapshot_host found it.
docker_down() {
  [[ -f $KIND_RUN/host-state.env ]] || return 0
  export DOCKER_HOST=unix://$KIND_RUN/docker.sock
  if docker_answers; then
    local c n
    c=$(docker ps -aq); [[ -z $c ]] || docker rm -f $c >/dev/null
    n=$(docker network ls -q --filter type=custom); [[ -z $n ]] || docker network rm $n >/dev/null
  fi
  local pid; pid=$(cat "$KIND_RUN/dockerd.pid" 2>/dev/null || true)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    local i; for ((i = 0; i < 60 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); i++)); do sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "dockerd $pid ignored SIGTERM; killing"; kill -9 "$pid"; }
  fi
  restore_host
  rm -rf "$KIND_RUN"
  log "dockerd stopped; host sysctls, iptables and links restored"
}

restore_host() {
  # shellcheck disable=SC1091
  . "$KIND_RUN/host-state.env"
  local s v
  for s in "${HOST_SYSCTLS[@]}"; do v=SYSCTL_${s//./_}; sysctl -qw "$s=${!v}"; done
  # Rules and chains that appeared while dockerd ran and that are docker's.
  local t line chain
  for t in filter nat; do
    iptables -t "$t" -S | sed "s/^/$t /" | grep -vxF -f "$KIND_RUN/iptables.before.$t" |
      grep -E 'DOCKER|docker0|br-[0-9a-f]{12}|MASQUERADE' | while read -r _ line; do
        case $line in
          "-A "*) iptables -t "$t" -D ${line#-A } 2>/dev/null || true ;;
        esac
      done
    local new=()
    for chain in $(iptables -t "$t" -S | sed -n 's/^-N \(DOCKER[A-Z0-9-]*\)$/\1/p'); do
      grep -qxF "$t -N $chain" "$KIND_RUN/iptables.before.$t" || new+=("$chain")
    done
    for chain in "${new[@]}"; do iptables -t "$t" -F "$chain"; done
    for chain in "${new[@]}"; do iptables -t "$t" -X "$chain" || true; done
  done
  iptables -P FORWARD "$FORWARD_POLICY"
  local l
  for l in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'); do
    [[ " $LINKS " == *" $l "* ]] && continue
    case $l in docker0|br-*|veth*) ip link del "$l" 2>/dev/null || true ;; esac
  done
  [[ $BR_NETFILTER != 0 ]] || modprobe -r br_netfilter 2>/dev/null || true
}
