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

keys=(a b rsa)
# shellcheck source=SCRIPTDIR/../regenerate-lib.sh
. "$(dirname "$0")/../regenerate-lib.sh"
parse_args "$@"
tools

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

# --- images ------------------------------------------------------------------------------------------------
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
check_dump

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
    want=fail mark=''
    [[ ", $passes," == *", $k,"* ]] && want=pass
    got=$(verdict cosign verify --key "$out/keys/$k.pub" --insecure-ignore-tlog "$registry/$img:1.0")
    if [ "$want" != "$got" ]; then
      mark="  <-- DIFFERS: $(tail -n 3 "$work/verify.log" | tr '\n' ' ')"
      failures=$((failures + 1))
    fi
    printf '%-20s %-22s %-8s %-8s %s%s\n' "$img" "$format" "$k" "$want" "$got" "$mark" >&2
  done
done <"$work/table"
[ $failures -eq 0 ] || die "$failures verdicts or formats differ from $here/README.md"
log "self-check passed: $(wc -l <"$work/table") images x ${#keys[@]} keys agree with README.md"

finish "$write" registry keys
