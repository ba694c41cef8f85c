# Shared helpers for the offline kind node image builder and the kind e2e run.
# Sourced, not run. Needs: REPO (repository root).

# shellcheck disable=SC1091
. "$REPO/e2e/kind/nodeimage/pins.env"
KIND_CACHE=${CRIGUARD_KIND_CACHE:-$REPO/.cache/kind}
NICE=(nice -n 15)
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

log() { printf '%s [kind] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# done_once DIR: true when DIR was completed by an earlier build (its .done
# stamp exists). Every cached piece lives in a directory named after its pin,
# so a pin change means a new directory, i.e. a rebuild of that piece only.
done_once() { [[ -f "$1/.done" ]]; }
mark_done() { date -u +%FT%TZ >"$1/.done"; }

# gobin DIR PKG@VERSION...: go install into DIR (niced, so the machine's other
# builds are not starved).
gobin() {
  local dir=$1; shift
  mkdir -p "$dir"
  GOBIN=$dir CGO_ENABLED=${CGO_ENABLED:-0} "${NICE[@]}" go install "$@"
}

# ensure_packages: the Debian packages the kind e2e needs (nothing installed by
# hand survives to a new machine): dockerd, debootstrap, iptables, jq, busybox.
ensure_packages() {
  local missing=() c
  for c in dockerd:docker.io debootstrap:debootstrap iptables:iptables jq:jq modprobe:kmod flock:util-linux; do
    command -v "${c%%:*}" >/dev/null || missing+=("${c#*:}")
  done
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "could not install ${missing[*]} from Debian"
}
