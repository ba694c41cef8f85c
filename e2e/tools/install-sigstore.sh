#!/usr/bin/env bash
# Installs a complete local Sigstore deployment at pinned versions (what testdata/sigstore/regenerate.sh runs):
# Fulcio, Rekor on Trillian (with Debian's PostgreSQL), the timestamp authority and a certificate-transparency
# log. Go tools come from the Go module proxy into $CRIGUARD_SIGSTORE_CACHE/bin (default <repo>/.cache/sigstore),
# each built only when missing or when its pin changed; PostgreSQL from apt (needs root). These versions are the
# newest that build with Go 1.26 (newer Rekor, timestamp-authority need Go 1.27). About 20 minutes of CPU cold.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${CRIGUARD_SIGSTORE_CACHE:-$repo/.cache/sigstore}
bin=$cache/bin
mkdir -p "$bin"

FULCIO_VERSION=v1.8.8
REKOR_VERSION=v1.5.4
TRILLIAN_VERSION=v1.7.3
TSA_VERSION=v2.1.3
CT_VERSION=v1.3.3

log() { printf '[install-sigstore] %s\n' "$*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "apt-get install postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

fresh() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
goinstall() { # name pkg@version
  if fresh "$1" "$2"; then return; fi
  log "go install $2"
  GOTOOLCHAIN=local GOBIN=$bin GOFLAGS=-buildvcs=false go install "$2"
  printf '%s\n' "$2" >"$bin/.$1.version"
}

goinstall fulcio "github.com/sigstore/fulcio@$FULCIO_VERSION"
goinstall rekor-server "github.com/sigstore/rekor/cmd/rekor-server@$REKOR_VERSION"
for t in trillian_log_server trillian_log_signer createtree; do
  goinstall "$t" "github.com/google/trillian/cmd/$t@$TRILLIAN_VERSION"
done
goinstall timestamp-server "github.com/sigstore/timestamp-authority/v2/cmd/timestamp-server@$TSA_VERSION"
goinstall ct_server "github.com/google/certificate-transparency-go/trillian/ctfe/ct_server@$CT_VERSION"
log "sigstore tools ready in $bin"
