# shellcheck shell=bash
# What testdata/cosign/regenerate.sh and testdata/sigstore/regenerate.sh share: the work directory and the
# processes they start (both undone on exit), the pinned tools, busybox images and the fixture dump tool.
# Sourced after `set -euo pipefail`; sets $repo, $bin, $work and the functions below.

here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CRIGUARD_E2E_CACHE:-$repo/.cache/e2e}
bin=$cache/bin
busybox=${BUSYBOX:-/bin/busybox}

log() { printf '[regenerate %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
  printf '[regenerate] FAILED: %s\n' "$*" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/criguard-regen.XXXXXX")
made_out=''   # a default output directory, removed if the run fails
pids=()       # every background process started, stopped on exit
sigs=()       # the signal that stops each of them
names=()      # and its name
on_exit=()    # further commands run on exit, before $work is removed
# stop_all: stops every process started, newest first, killing what still runs after 10 s.
stop_all() {
  local i pid alive _
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "-${sigs[i]}" "${pids[i]}" 2>/dev/null || true; done
  for _ in $(seq 100); do
    alive=false
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null; then alive=true; fi
    done
    $alive || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -KILL "${pids[i]}" 2>/dev/null; then log "${names[i]} still ran 10 s after SIG${sigs[i]}: killed"; fi
    wait "${pids[i]}" 2>/dev/null || true
  done
  pids=() sigs=() names=()
}
cleanup() {
  local rc=$? c
  stop_all
  for c in "${on_exit[@]}"; do eval "$c" || true; done
  rm -rf "$work"
  if [ $rc -ne 0 ] && [ -n "$made_out" ]; then rm -rf "$made_out"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME COMMAND...: runs COMMAND in the background, logging to $work/NAME.log. Not a function or subshell:
# $! must be the process itself, or killing it would leave the process running. STOP_SIGNAL (default TERM)
# is how it is stopped.
start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  sigs+=("${STOP_SIGNAL:-TERM}")
  names+=("$name")
}

# parse_args "$@": --out DIR, --write or --help (the script's header); then picks the output directory: $out,
# and $write (true when the fixtures here are replaced once checked).
parse_args() {
  out='' write=false
  while [ $# -gt 0 ]; do
    case $1 in
      --write) write=true ;;
      --out)
        [ $# -ge 2 ] || die "--out needs a directory"
        out=$2
        shift
        ;;
      -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
  if $write && [ -n "$out" ]; then die "--write and --out exclude each other"; fi
  if $write; then
    out=$work/out
  elif [ -z "$out" ]; then
    out=$(mktemp -d "${TMPDIR:-/tmp}/criguard-fixtures.XXXXXX")
    made_out=$out
  fi
  mkdir -p "$out"
  if [ -e "$out/registry" ] || [ -e "$out/keys" ]; then die "$out already holds registry/ or keys/"; fi
}

# tools: cosign and crane at the pins of e2e/tools/install.sh (which builds what is missing), and fixturedump.
tools() {
  local cv kv
  pin() { sed -n "s/^$1=//p" "$repo/e2e/tools/install.sh"; }
  CRIGUARD_E2E_CACHE=$cache bash "$repo/e2e/tools/install.sh"
  command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
  [ -x "$busybox" ] || die "$busybox is missing (apt-get install busybox-static)"
  if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked: an image needs busybox-static"; fi
  cv=$(pin COSIGN_VERSION) kv=$(pin CRANE_VERSION)
  "$bin/cosign" version 2>&1 | grep -q "GitVersion: *$cv\$" ||
    die "$bin/cosign is not $cv: $("$bin/cosign" version 2>&1 | grep GitVersion)"
  [ "$("$bin/crane" version)" = "$kv" ] || die "$bin/crane is not $kv"
  (cd "$repo" && go build -o "$work/fixturedump" ./internal/cmd/fixturedump)
  mkdir -p "$work/home"
}

# cosign and crane get a home of their own: no docker credentials, TUF cache or config from the host.
cosign() { HOME=$work/home DOCKER_CONFIG=$work/home/.docker COSIGN_PASSWORD='' "$bin/cosign" "$@"; }
crane() { HOME=$work/home DOCKER_CONFIG=$work/home/.docker "$bin/crane" "$@"; }
fixturedump() { "$work/fixturedump" "$@"; }

# start_registry NAME: an in-memory `crane registry serve` on a free loopback port; sets $registry.
start_registry() {
  local logf=$work/registry-$1.log port='' i
  start "registry-$1" env HOME="$work/home" "$bin/crane" registry serve --address 127.0.0.1:0
  for i in $(seq 100); do
    port=$(sed -n 's/.*serving on port \([0-9][0-9]*\).*/\1/p' "$logf")
    [ -z "$port" ] || break
    kill -0 "${pids[-1]}" 2>/dev/null || die "registry $1 exited: $(cat "$logf")"
    sleep 0.1
  done
  [ -n "$port" ] || die "registry $1 did not report its port within $((i / 10))s: $(cat "$logf")"
  registry=127.0.0.1:$port
  log "registry $1 serving on $registry"
}

# Every image is busybox (sh, sleep, echo, cat, ls) plus /etc/marker naming it, entrypoint /bin/sh. Fixed owners
# and times keep the layers the same from run to run, given the same busybox.
tarball() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf "$2" .; }

# image REPO MARKER: pushes the image as $registry/REPO:1.0.
image() {
  local dir=$work/marker-$2
  if [ ! -e "$work/busybox.tar" ]; then
    mkdir -p "$work/rootfs/bin"
    cp "$busybox" "$work/rootfs/bin/busybox"
    for app in sh sleep echo cat ls; do ln -s busybox "$work/rootfs/bin/$app"; done
    tarball "$work/rootfs" "$work/busybox.tar"
  fi
  mkdir -p "$dir/etc"
  printf '%s\n' "$2" >"$dir/etc/marker"
  tarball "$dir" "$dir.tar"
  crane append -f "$work/busybox.tar" -f "$dir.tar" -t "$registry/$1:1.0" >/dev/null 2>&1 ||
    die "crane append for $1"
  crane mutate --entrypoint /bin/sh -t "$registry/$1:1.0" "$registry/$1:1.0" >/dev/null 2>&1 ||
    die "crane mutate for $1"
}

# digest REPO: the digest $registry/REPO:1.0 names.
digest() { crane digest "$registry/$1:1.0"; }

# check_dump: loads $out into a fresh registry (sets $registry to it) and checks that it dumps to the same bytes,
# i.e. that the dump holds everything its tags reach.
check_dump() {
  start_registry check
  fixturedump load -registry "$registry" -dir "$out"
  fixturedump dump -registry "$registry" -out "$work/redump"
  diff -r "$out/registry" "$work/redump/registry" >&2 || die "the dump, loaded and dumped again, differs"
}

# finish WRITE FILES...: with --write, replaces FILES of the fixture directory with those of $out.
finish() {
  local write=$1 f
  shift
  if $write; then
    for f in "$@"; do
      rm -rf "${here:?}/$f"
      cp -r "$out/$f" "$here/$f"
    done
    log "replaced $* in $here"
  else
    log "dump written to $out"
  fi
}

# verdict COMMAND...: runs a cosign verification and prints pass, fail (cosign refused the signatures) or error
# (any other failure: an unreachable registry or a bad flag is no verdict). The output is in $work/verify.log.
verdict() {
  if "$@" >"$work/verify.log" 2>&1; then
    echo pass
  elif grep -Eq 'no matching (signatures|attestations)|no signatures found|none of the attestations matched' \
    "$work/verify.log"; then
    echo fail
  else
    echo error
  fi
}
