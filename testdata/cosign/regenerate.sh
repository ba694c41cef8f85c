#!/usr/bin/env bash
# Regenerates the cosign fixture dump (see README.md) with the real tools, then checks the dump itself: it is
# loaded into a fresh registry, and `cosign verify --key K --insecure-ignore-tlog` must give, for every image and
# key, the verdict of README.md's table (and each image must carry the signature formats the table names).
#
#   testdata/cosign/regenerate.sh             regenerate into a new temporary directory (kept, path printed)
#   testdata/cosign/regenerate.sh --out DIR   regenerate into DIR (it must not hold registry/ or keys/ yet)
#   testdata/cosign/regenerate.sh --write     replace registry/ and keys/ here, only after the check passed
#
# Tools: cosign and crane from e2e/tools/install.sh (in $CRIGUARD_E2E_CACHE, default <repo>/.cache/e2e; the
# script runs it, so it builds whatever is missing), go, openssl and a static busybox (apt busybox-static).
# Everything listens on 127.0.0.1; private keys stay in a temporary directory that is removed on exit, with
# every process the script started. Signatures are random and the signing time is recorded, so a new dump never
# equals the committed one byte for byte: after --write, the tests that pin digests need the new ones.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CRIGUARD_E2E_CACHE:-$repo/.cache/e2e}
bin=$cache/bin
busybox=${BUSYBOX:-/bin/busybox}
keys=(a b rsa)

log() { printf '[regenerate %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
  printf '[regenerate] FAILED: %s\n' "$*" >&2
  exit 1
}

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
      sed -n '2,9p' "$0"
      exit 0
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
if $write && [ -n "$out" ]; then die "--write and --out exclude each other"; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/criguard-regen-cosign.XXXXXX")
made_out='' # a default output directory, removed if the run fails
pids=()
cleanup() {
  local rc=$? pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
  if [ $rc -ne 0 ] && [ -n "$made_out" ]; then rm -rf "$made_out"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if $write; then
  out=$work/out
elif [ -z "$out" ]; then
  out=$(mktemp -d "${TMPDIR:-/tmp}/criguard-cosign-fixtures.XXXXXX")
  made_out=$out
fi
mkdir -p "$out"
if [ -e "$out/registry" ] || [ -e "$out/keys" ]; then die "$out already holds registry/ or keys/"; fi

# --- tools ---------------------------------------------------------------------------------------------------
pin() { sed -n "s/^$1=//p" "$repo/e2e/tools/install.sh"; }
CRIGUARD_E2E_CACHE=$cache bash "$repo/e2e/tools/install.sh"
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
[ -x "$busybox" ] || die "$busybox is missing (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked: an image needs busybox-static"; fi
cosign_version=$(pin COSIGN_VERSION) crane_version=$(pin CRANE_VERSION)
"$bin/cosign" version 2>&1 | grep -q "GitVersion: *$cosign_version\$" ||
  die "$bin/cosign is not $cosign_version: $("$bin/cosign" version 2>&1 | grep GitVersion)"
[ "$("$bin/crane" version)" = "$crane_version" ] || die "$bin/crane is not $crane_version"
(cd "$repo" && go build -o "$work/fixturedump" ./internal/cmd/fixturedump)

# cosign and crane get a home of their own: no docker credentials, TUF cache or config from the host.
mkdir -p "$work/home"
cosign() { HOME=$work/home DOCKER_CONFIG=$work/home/.docker COSIGN_PASSWORD='' "$bin/cosign" "$@"; }
crane() { HOME=$work/home DOCKER_CONFIG=$work/home/.docker "$bin/crane" "$@"; }
fixturedump() { "$work/fixturedump" "$@"; }

# start_registry NAME: an in-memory `crane registry serve` on a free loopback port; sets $registry.
start_registry() {
  local logf=$work/registry-$1.log port='' i
  # Not through the crane function: a backgrounded function is a subshell, and killing it would leave the
  # registry running. $! must be the registry process itself.
  HOME=$work/home "$bin/crane" registry serve --address 127.0.0.1:0 >"$logf" 2>&1 &
  pids+=($!)
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

# --- keys ----------------------------------------------------------------------------------------------------
mkdir -p "$work/keys" "$out/keys"
(
  cd "$work/keys"
  cosign generate-key-pair --output-key-prefix a >/dev/null 2>&1
  cosign generate-key-pair --output-key-prefix b >/dev/null 2>&1
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null
  cosign import-key-pair --key rsa.pem --output-key-prefix rsa >/dev/null 2>&1
) || die "making the keys failed"
for k in "${keys[@]}"; do cp "$work/keys/$k.pub" "$out/keys/$k.pub"; done

# --- images --------------------------------------------------------------------------------------------------
# Every image is busybox (sh, sleep, echo, cat, ls) plus /etc/marker naming it, entrypoint /bin/sh. Fixed owners
# and times keep the layers the same from run to run, given the same busybox.
tarball() { tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf "$2" .; }
mkdir -p "$work/rootfs/bin"
cp "$busybox" "$work/rootfs/bin/busybox"
for app in sh sleep echo cat ls; do ln -s busybox "$work/rootfs/bin/$app"; done
tarball "$work/rootfs" "$work/busybox.tar"

# image REPO MARKER: pushes the image as REPO:1.0 and prints nothing.
image() {
  local dir=$work/marker-$2
  mkdir -p "$dir/etc"
  printf '%s\n' "$2" >"$dir/etc/marker"
  tarball "$dir" "$dir.tar"
  crane append -f "$work/busybox.tar" -f "$dir.tar" -t "$registry/$1:1.0" >/dev/null 2>&1 ||
    die "crane append for $1"
  crane mutate --entrypoint /bin/sh -t "$registry/$1:1.0" "$registry/$1:1.0" >/dev/null 2>&1 ||
    die "crane mutate for $1"
}
digest() { crane digest "$registry/$1:1.0"; }
# sign KEY REPO FORMAT: signs REPO:1.0 by digest, offline, as a bundle (cosign v3's default) or legacy .sig.
sign() {
  local format=()
  [ "$3" = legacy ] && format=(--new-bundle-format=false)
  cosign sign --yes --key "$work/keys/$1.key" --tlog-upload=false --use-signing-config=false "${format[@]}" \
    "$registry/$2@$(digest "$2")" >"$work/sign.log" 2>&1 || die "cosign sign $1 $2 $3: $(cat "$work/sign.log")"
}

start_registry build
log "building and signing the images"
image demo/signed-bundle sb && sign a demo/signed-bundle bundle
image demo/signed-legacy sl && sign a demo/signed-legacy legacy
image demo/unsigned un
image demo/wrong-key wk && sign b demo/wrong-key bundle && sign b demo/wrong-key legacy
image demo/two-signers ts && sign a demo/two-signers bundle && sign b demo/two-signers bundle
image demo/rsa rs && sign rsa demo/rsa bundle && sign rsa demo/rsa legacy
# replayed: a's valid signature of another image, copied to this image's .sig tag.
image demo/replayed rp
sl=$(digest demo/signed-legacy) rp=$(digest demo/replayed)
crane copy "$registry/demo/signed-legacy:${sl/:/-}.sig" "$registry/demo/replayed:${rp/:/-}.sig" >/dev/null 2>&1 ||
  die "copying the signature of demo/signed-legacy to demo/replayed"
# moved: signed, then the tag moves to another image.
image demo/moved mv1 && sign a demo/moved bundle && image demo/moved mv2
# multi: an index of the signed-bundle and unsigned images, signed at the index digest.
crane index append -m "$registry/demo/signed-bundle@$(digest demo/signed-bundle)" \
  -m "$registry/demo/unsigned@$(digest demo/unsigned)" -t "$registry/demo/multi:1.0" >/dev/null 2>&1 ||
  die "crane index append for demo/multi"
sign a demo/multi bundle && sign a demo/multi legacy

log "dumping into $out"
fixturedump dump -registry "$registry" -out "$out"

# --- self-check ----------------------------------------------------------------------------------------------
start_registry check
fixturedump load -registry "$registry" -dir "$out"
# The loaded registry dumps to the same bytes: the dump holds everything its tags reach.
fixturedump dump -registry "$registry" -out "$work/redump"
diff -r "$out/registry" "$work/redump/registry" >&2 || die "the dump, loaded and dumped again, differs"

fixturedump tags -dir "$out" >"$work/tags"
# The table's rows: "image<TAB>format<TAB>keys that pass".
awk -F'|' '/^\| demo\// {
  for (i = 2; i <= 5; i++) gsub(/^[ \t]+|[ \t]+$/, "", $i)
  print $2 "\t" $4 "\t" $5 }' "$here/README.md" >"$work/table"
[ -s "$work/table" ] || die "no verdict table in $here/README.md"
diff <(cut -f1 "$work/table" | sort) <(cut -d' ' -f1 "$work/tags" | sort -u) >&2 ||
  die "the README's images and the dump's repositories differ"

failures=0
printf '%-20s %-22s %-8s %-8s %s\n' image format key want got >&2
while IFS=$'\t' read -r img format passes; do
  has_bundle=no has_legacy=no
  grep -Eq "^$img sha256-[0-9a-f]{64} " "$work/tags" && has_bundle=yes
  grep -Eq "^$img sha256-[0-9a-f]{64}\.sig " "$work/tags" && has_legacy=yes
  want_bundle=no want_legacy=no
  [[ $format == *bundle* ]] && want_bundle=yes
  [[ $format == *legacy* ]] && want_legacy=yes
  if [ $has_bundle != $want_bundle ] || [ $has_legacy != $want_legacy ]; then
    printf '%s: format "%s" wants bundle=%s legacy=%s, the dump has bundle=%s legacy=%s  <-- DIFFERS\n' \
      "$img" "$format" $want_bundle $want_legacy $has_bundle $has_legacy >&2
    failures=$((failures + 1))
  fi
  for k in "${keys[@]}"; do
    want=fail got=fail mark=''
    [[ ", $passes," == *", $k,"* ]] && want=pass
    if cosign verify --key "$out/keys/$k.pub" --insecure-ignore-tlog "$registry/$img:1.0" \
      >"$work/verify.log" 2>&1; then
      got=pass
    elif ! grep -Eq 'no matching (signatures|attestations)|no signatures found' "$work/verify.log"; then
      got=error # a refusal that is not a verdict (registry unreachable, bad key file...) proves nothing
    fi
    if [ $want != $got ]; then
      mark="  <-- DIFFERS: $(tail -n 3 "$work/verify.log" | tr '\n' ' ')"
      failures=$((failures + 1))
    fi
    printf '%-20s %-22s %-8s %-8s %s%s\n' "$img" "$format" "$k" $want $got "$mark" >&2
  done
done <"$work/table"
[ $failures -eq 0 ] || die "$failures verdicts or formats differ from $here/README.md"
log "self-check passed: $(wc -l <"$work/table") images x ${#keys[@]} keys agree with README.md"

if $write; then
  rm -rf "$here/registry" "$here/keys"
  cp -r "$out/registry" "$out/keys" "$here/"
  log "replaced $here/registry and $here/keys"
else
  log "dump written to $out"
fi
