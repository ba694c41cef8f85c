#!/usr/bin/env bash
# Regenerates the Sigstore fixture dump (see README.md) with a complete local Sigstore deployment on 127.0.0.1 —
# PostgreSQL, Trillian, Rekor, Fulcio (ephemeral CA), a certificate-transparency log, the timestamp authority and
# an OIDC issuer (internal/cmd/oidcissuer) — and the real cosign CLI. Then it stops the whole deployment, loads
# the dump into a fresh registry and checks it offline: every cell of verdicts.md must be what
# `cosign verify` / `cosign verify-attestation --trusted-root trusted_root.json` says.
#
#   testdata/sigstore/regenerate.sh             regenerate into a new temporary directory (kept, path printed)
#   testdata/sigstore/regenerate.sh --out DIR   regenerate into DIR (it must not hold registry/ or keys/ yet)
#   testdata/sigstore/regenerate.sh --write     replace registry/, keys/ and trusted_root.json here, once checked
#
# Needs root (PostgreSQL runs as user postgres) and the tools of e2e/tools/install.sh and
# e2e/tools/install-sigstore.sh (run here; the Sigstore servers take ~20 min of CPU to build the first time).
# The OIDC issuer must listen on 127.0.0.1:8080: the identities in the fixtures name http://127.0.0.1:8080 and
# http://localhost:8080. Every other server takes a free port. Certificates live 10 minutes, as Fulcio's do.
set -euo pipefail

# shellcheck source=SCRIPTDIR/../regenerate-lib.sh
. "$(dirname "$0")/../regenerate-lib.sh"
[ "$(id -u)" -eq 0 ] || die "run as root: PostgreSQL is started as user postgres"
parse_args "$@"
tools
sigcache=${CRIGUARD_SIGSTORE_CACHE:-$repo/.cache/sigstore}
CRIGUARD_SIGSTORE_CACHE=$sigcache bash "$repo/e2e/tools/install-sigstore.sh"
sbin=$sigcache/bin
(cd "$repo" && go build -o "$work/oidcissuer" ./internal/cmd/oidcissuer)
trillian_dir=$(cd "$repo" && GOFLAGS=-mod=mod go mod download -json \
  "github.com/google/trillian@$(sed -n 's/^TRILLIAN_VERSION=//p' "$repo/e2e/tools/install-sigstore.sh")" |
  sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -f "$trillian_dir/storage/postgresql/schema/storage.sql" ] || die "no Trillian PostgreSQL schema in '$trillian_dir'"
pgbin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

issuer=127.0.0.1:8080 gh_issuer=localhost:8080
if ss -Htln 'sport = :8080' | grep -q .; then die "port 8080 is taken: the OIDC issuer must listen on $issuer"; fi
# Free ports are drawn below the kernel's ephemeral range, where the outgoing connections of the stack itself
# cannot take them between the draw and the bind; none is drawn twice.
read -r ephemeral _ </proc/sys/net/ipv4/ip_local_port_range
drawn=' '
# ports VAR...: sets each VAR to a free loopback port.
ports() {
  local v p
  for v in "$@"; do
    while :; do
      p=$((10000 + RANDOM % (ephemeral - 10000)))
      [[ $drawn == *" $p "* ]] && continue
      ss -Htln "sport = :$p" | grep -q . || break
    done
    drawn+="$p "
    printf -v "$v" '%s' "$p"
  done
}
# wait_for NAME URL: waits up to 60 s for URL to answer 200 while the last process started runs, else fails
# with NAME's log.
wait_for() {
  local pid=${pids[-1]} _
  for _ in $(seq 600); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return; fi
    kill -0 "$pid" 2>/dev/null || die "$1 exited: $(tail -n 20 "$work/$1.log")"
    sleep 0.1
  done
  die "$1 did not answer $2 within 60s: $(tail -n 20 "$work/$1.log")"
}
pgport='' tport='' tsport='' fport='' fgport='' fmport='' ctport='' rport='' tsaport=''
ports pgport tport tsport fport fgport fmport ctport rport tsaport
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

# --- PostgreSQL and Trillian -----------------------------------------------------------------------------------
log "starting PostgreSQL, Trillian, the OIDC issuer, Fulcio, the CT log, Rekor and the TSA"
pg=$(mktemp -d "${TMPDIR:-/tmp}/criguard-regen-pg.XXXXXX")
on_exit+=("rm -rf '$pg'")
chown postgres: "$pg"
as_postgres "$pgbin/initdb" -D "$pg/data" -U postgres --auth=trust >"$work/initdb.log" 2>&1 ||
  die "initdb: $(tail "$work/initdb.log")"
# INT: PostgreSQL's fast shutdown (TERM would wait for Trillian's connections to close).
STOP_SIGNAL=INT start postgres setpriv --reuid=postgres --regid=postgres --init-groups "$pgbin/postgres" -D "$pg/data" \
  -p "$pgport" -k "$pg" -c listen_addresses=127.0.0.1 -c fsync=off
for _ in $(seq 100); do
  if pg_isready -q -h 127.0.0.1 -p "$pgport"; then break; fi
  sleep 0.1
done
psql_() { psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres "$@"; }
psql_ -c 'CREATE DATABASE trillian' >/dev/null
psql_ -d trillian -f "$trillian_dir/storage/postgresql/schema/storage.sql" >/dev/null
pguri="postgresql:///trillian?host=127.0.0.1&port=$pgport&user=postgres&sslmode=disable"
# KILL: Trillian takes 5-10 s to stop gracefully, and its database is thrown away anyway.
STOP_SIGNAL=KILL start trillian-server "$sbin/trillian_log_server" --storage_system=postgresql --postgresql_uri="$pguri" \
  --quota_system=noop --rpc_endpoint="127.0.0.1:$tport" --http_endpoint=''
STOP_SIGNAL=KILL start trillian-signer "$sbin/trillian_log_signer" --storage_system=postgresql --postgresql_uri="$pguri" \
  --quota_system=noop --force_master --rpc_endpoint="127.0.0.1:$tsport" --http_endpoint='' \
  --sequencer_interval=100ms
ct_tree=''
for _ in $(seq 100); do
  ct_tree=$("$sbin/createtree" --admin_server="127.0.0.1:$tport" 2>>"$work/createtree.log") && break
  sleep 0.2
done
[ -n "$ct_tree" ] || die "createtree: $(tail "$work/createtree.log") $(tail "$work/trillian-server.log")"

# --- OIDC issuer and Fulcio ----------------------------------------------------------------------------------
start oidcissuer "$work/oidcissuer" -addr "$issuer"
wait_for oidcissuer "http://$issuer/.well-known/openid-configuration"
cat >"$work/fulcio.yaml" <<EOF
oidc-issuers:
  http://$issuer:
    issuer-url: http://$issuer
    client-id: sigstore
    type: email
  http://$gh_issuer:
    issuer-url: http://$gh_issuer
    client-id: sigstore
    type: ci-provider
    ci-provider: github-workflow
ci-issuer-metadata:
  github-workflow:
    default-template-values:
      url: "https://github.com"
      environment: ""
    extension-templates:
      github-workflow-trigger: "event_name"
      github-workflow-sha: "sha"
      github-workflow-name: "workflow"
      github-workflow-repository: "repository"
      github-workflow-ref: "ref"
      build-signer-uri: "{{ .url }}/{{ .job_workflow_ref }}"
      build-signer-digest: "job_workflow_sha"
      runner-environment: "runner_environment"
      source-repository-uri: "{{ .url }}/{{ .repository }}"
      source-repository-digest: "sha"
      source-repository-ref: "ref"
      source-repository-identifier: "repository_id"
      source-repository-owner-uri: "{{ .url }}/{{ .repository_owner }}"
      source-repository-owner-identifier: "repository_owner_id"
      build-config-uri: "{{ .url }}/{{ .workflow_ref }}"
      build-config-digest: "workflow_sha"
      build-trigger: "event_name"
      run-invocation-uri: "{{ .url }}/{{ .repository }}/actions/runs/{{ .run_id }}/attempts/{{ .run_attempt }}"
      source-repository-visibility-at-signing: "repository_visibility"
      deployment-environment: "environment"
    subject-alternative-name-template: "{{ .url }}/{{ .job_workflow_ref }}"
EOF
start fulcio "$sbin/fulcio" serve --ca ephemeralca --config-path "$work/fulcio.yaml" \
  --host 127.0.0.1 --port "$fport" --grpc-host 127.0.0.1 --grpc-port "$fgport" \
  --metrics-port "$fmport" --legacy-unix-domain-socket "$work/fulcio-legacy.sock" \
  --ct-log-url "http://127.0.0.1:$ctport/test"
wait_for fulcio "http://127.0.0.1:$fport/api/v1/rootCert"
curl -fsS "http://127.0.0.1:$fport/api/v1/rootCert" >"$work/fulcio-chain.pem"

# --- CT log (its roots: Fulcio's ephemeral CA) -----------------------------------------------------------------
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -outform DER >"$work/ct.der"
openssl pkey -inform DER -in "$work/ct.der" -pubout -out "$work/ct.pub"
cat >"$work/ct.cfg" <<EOF
config {
  log_id: $ct_tree
  prefix: "test"
  roots_pem_file: "$work/fulcio-chain.pem"
  private_key: {
    [type.googleapis.com/keyspb.PrivateKey] { der: "$(od -An -v -tx1 "$work/ct.der" | tr -d ' \n' | sed 's/../\\x&/g')" }
  }
  ext_key_usages: [ "CodeSigning" ]
}
EOF
start ct "$sbin/ct_server" --log_config "$work/ct.cfg" --log_rpc_server "127.0.0.1:$tport" \
  --http_endpoint "127.0.0.1:$ctport" --alsologtostderr
wait_for ct "http://127.0.0.1:$ctport/test/ct/v1/get-sth"

# --- Rekor and the timestamp authority -----------------------------------------------------------------------
# Both serve metrics on :2112, hard-coded: the TSA exits if it cannot, Rekor carries on, so the TSA goes first.
if ss -Htln 'sport = :2112' | grep -q .; then die "port 2112 is taken: the timestamp authority needs it"; fi
start tsa "$sbin/timestamp-server" serve --host 127.0.0.1 --port "$tsaport" --timestamp-signer memory \
  --disable-ntp-monitoring
wait_for tsa "http://127.0.0.1:$tsaport/api/v1/timestamp/certchain"
curl -fsS "http://127.0.0.1:$tsaport/api/v1/timestamp/certchain" >"$work/tsa-chain.pem"
start rekor "$sbin/rekor-server" serve --trillian_log_server.address=127.0.0.1 \
  --trillian_log_server.port="$tport" --rekor_server.address=127.0.0.1 --port="$rport" \
  --rekor_server.signer=memory --enable_retrieve_api=false --enable_attestation_storage=false
wait_for rekor "http://127.0.0.1:$rport/api/v1/log/publicKey"
curl -fsS "http://127.0.0.1:$rport/api/v1/log/publicKey" >"$work/rekor.pub"

# --- trusted root and signing config -------------------------------------------------------------------------
since=2025-01-01T00:00:00Z
fulcio_url=http://127.0.0.1:$fport rekor_url=http://127.0.0.1:$rport
tsa_url=http://127.0.0.1:$tsaport/api/v1/timestamp ct_url=http://127.0.0.1:$ctport/test
cosign trusted-root create --out "$out/trusted_root.json" \
  --fulcio="url=$fulcio_url,certificate-chain=$work/fulcio-chain.pem" \
  --rekor="url=$rekor_url,public-key=$work/rekor.pub,start-time=$since" \
  --tsa="url=$tsa_url,certificate-chain=$work/tsa-chain.pem" \
  --ctfe="url=$ct_url,public-key=$work/ct.pub,start-time=$since" >"$work/trusted-root.log" 2>&1 ||
  die "cosign trusted-root create: $(cat "$work/trusted-root.log")"
cosign signing-config create --out "$work/signing_config.json" \
  --fulcio="url=$fulcio_url,api-version=1,start-time=$since,operator=local" \
  --rekor="url=$rekor_url,api-version=1,start-time=$since,operator=local" --rekor-config=ANY \
  --tsa="url=$tsa_url,api-version=1,start-time=$since,operator=local" --tsa-config=ANY \
  --oidc-provider="url=http://$issuer,api-version=1,start-time=$since,operator=local" \
  >"$work/signing-config.log" 2>&1 || die "cosign signing-config create: $(cat "$work/signing-config.log")"

# --- identities, keys, predicates ----------------------------------------------------------------------------
# token HOST CLAIMS: an identity token from the issuer reached as http://HOST.
token() { curl -fsS --get --data-urlencode "claims=$2" "http://$1/token"; }
email() { printf '{"sub":"%s","email":"%s","email_verified":true}' "$1" "$1"; }
sha=0123456789abcdef0123456789abcdef01234567
wf=example/app/.github/workflows/release.yml@refs/heads/main
github_claims='{"sub":"ci@example.com","repository":"example/app","repository_id":"1","repository_owner":"example",
"repository_owner_id":"2","repository_visibility":"public","ref":"refs/heads/main","sha":"'$sha'",
"event_name":"push","workflow":"release","workflow_ref":"'$wf'","workflow_sha":"'$sha'","job_workflow_ref":"'$wf'",
"job_workflow_sha":"'$sha'","run_id":"42","run_attempt":"1","runner_environment":"github-hosted"}'
mkdir -p "$work/keys" "$out/keys"
(cd "$work/keys" && cosign generate-key-pair --output-key-prefix t >/dev/null 2>&1) || die "cosign generate-key-pair"
cp "$work/keys/t.pub" "$out/keys/t.pub"
cat >"$work/slsa.json" <<'EOF'
{"buildDefinition":{"buildType":"https://example.test/build/v1","externalParameters":{"repository":"https://github.com/example/app","ref":"refs/heads/main"},"resolvedDependencies":[{"uri":"git+https://github.com/example/app@refs/heads/main","digest":{"gitCommit":"0123456789abcdef0123456789abcdef01234567"}}]},"runDetails":{"builder":{"id":"https://example.test/builder@v1"},"metadata":{"invocationId":"https://example.test/runs/42"}}}
EOF
cat >"$work/vuln.json" <<'EOF'
{"invocation":{"uri":"https://example.test/scan/42","event_id":"42","builder.id":"https://example.test/scanner@v1"},"scanner":{"uri":"https://example.test/scanner","version":"1.0.0","result":{"summary":{"critical":0,"high":0,"medium":0,"low":0}}},"metadata":{"scanStartedOn":"2026-01-01T00:00:00Z","scanFinishedOn":"2026-01-01T00:00:01Z"}}
EOF

# --- images and signatures -----------------------------------------------------------------------------------
# run WHAT COMMAND...: runs a cosign command, failing with its output.
run() {
  local what=$1
  shift
  "$@" >"$work/cosign.log" 2>&1 || die "$what: $(tail -n 20 "$work/cosign.log")"
}
ref() { echo "$registry/$1@$(digest "$1")"; }
legacy=(--new-bundle-format=false --use-signing-config=false --trusted-root "$out/trusted_root.json"
  --fulcio-url "$fulcio_url" --rekor-url "$rekor_url" --timestamp-server-url "$tsa_url")
bundle=(--signing-config "$work/signing_config.json" --trusted-root "$out/trusted_root.json")

start_registry build
log "building and signing the images"
alice=$(token "$issuer" "$(email alice@example.com)")
image fx/keyless-legacy kl
run "keyless-legacy sign" cosign sign --yes "${legacy[@]}" --identity-token "$alice" "$(ref fx/keyless-legacy)"
run "keyless-legacy attest" cosign attest --yes "${legacy[@]}" --identity-token "$alice" \
  --type slsaprovenance1 --predicate "$work/slsa.json" "$(ref fx/keyless-legacy)"
image fx/keyless-bundle kb
run "keyless-bundle sign" cosign sign --yes "${bundle[@]}" --identity-token "$alice" "$(ref fx/keyless-bundle)"
run "keyless-bundle attest" cosign attest --yes "${bundle[@]}" --identity-token "$alice" \
  --type slsaprovenance1 --predicate "$work/slsa.json" "$(ref fx/keyless-bundle)"
image fx/keyless-bob kbob
run "keyless-bob sign" cosign sign --yes "${bundle[@]}" \
  --identity-token "$(token "$issuer" "$(email bob@example.com)")" "$(ref fx/keyless-bob)"
image fx/github-main ghm
run "github-main sign" cosign sign --yes "${bundle[@]}" \
  --identity-token "$(token "$gh_issuer" "$github_claims")" "$(ref fx/github-main)"
image fx/key-tlog-legacy ktl
run "key-tlog-legacy sign" cosign sign --yes --key "$work/keys/t.key" --new-bundle-format=false \
  --use-signing-config=false --rekor-url "$rekor_url" "$(ref fx/key-tlog-legacy)"
image fx/key-tlog-bundle ktb
run "key-tlog-bundle sign" cosign sign --yes --key "$work/keys/t.key" "${bundle[@]}" "$(ref fx/key-tlog-bundle)"
image fx/key-no-tlog knt
run "key-no-tlog sign" cosign sign --yes --key "$work/keys/t.key" --tlog-upload=false \
  --use-signing-config=false "$(ref fx/key-no-tlog)"
image fx/key-attest ka
run "key-attest sign" cosign sign --yes --key "$work/keys/t.key" "${bundle[@]}" "$(ref fx/key-attest)"
run "key-attest attest" cosign attest --yes --key "$work/keys/t.key" "${bundle[@]}" --type vuln \
  --predicate "$work/vuln.json" "$(ref fx/key-attest)"
image fx/unsigned un

log "dumping into $out"
fixturedump dump -registry "$registry" -out "$out"

# --- self-check, offline -------------------------------------------------------------------------------------
log "stopping the Sigstore deployment and the build registry"
stop_all
log "stopped; checking the dump offline against verdicts.md"
check_dump

tr=(--trusted-root "$out/trusted_root.json")
alice_id=(--certificate-identity alice@example.com --certificate-oidc-issuer "http://$issuer")
github_id=(--certificate-identity-regexp '^https://github.com/example/app/' --certificate-oidc-issuer
  "http://$gh_issuer" --certificate-github-workflow-ref refs/heads/main)
columns=("alice keyless" "GitHub workflow" "key t.pub (tlog required)" "key t.pub --insecure-ignore-tlog"
  "alice slsaprovenance1 attestation" "t.pub vuln attestation")
# check COLUMN REF: cosign's verdict for one cell of verdicts.md.
check() {
  case $1 in
    0) verdict cosign verify "${tr[@]}" "${alice_id[@]}" "$2" ;;
    1) verdict cosign verify "${tr[@]}" "${github_id[@]}" "$2" ;;
    2) verdict cosign verify "${tr[@]}" --key "$out/keys/t.pub" "$2" ;;
    3) verdict cosign verify "${tr[@]}" --key "$out/keys/t.pub" --insecure-ignore-tlog "$2" ;;
    4) verdict cosign verify-attestation "${tr[@]}" "${alice_id[@]}" --type slsaprovenance1 "$2" ;;
    5) verdict cosign verify-attestation "${tr[@]}" --key "$out/keys/t.pub" --type vuln "$2" ;;
  esac
}
header=$(grep -m1 '^| image' "$here/verdicts.md")
want_header="| image (tag 1.0) |$(printf ' %s |' "${columns[@]}")"
[ "$header" = "$want_header" ] || die "verdicts.md's columns are not the ones this script checks: $header"
awk -F'|' '/^\| fx\// { for (i = 2; i <= 8; i++) { gsub(/^[ \t]+|[ \t]+$/, "", $i); printf "%s%s", $i, (i < 8 ? "\t" : "\n") } }' \
  "$here/verdicts.md" >"$work/table"
fixturedump tags -dir "$out" | cut -d' ' -f1 | sort -u >"$work/repos"
diff <(cut -f1 "$work/table" | sort) "$work/repos" >&2 || die "verdicts.md's images and the dump's repositories differ"

failures=0
while IFS=$'\t' read -r img c0 c1 c2 c3 c4 c5; do
  want=("$c0" "$c1" "$c2" "$c3" "$c4" "$c5")
  for i in 0 1 2 3 4 5; do
    got=$(check "$i" "$registry/$img:1.0") mark=''
    if [ "$got" != "${want[$i]}" ]; then
      mark="  <-- DIFFERS: $(grep -m1 -i 'error' "$work/verify.log" | cut -c1-200)"
      failures=$((failures + 1))
    fi
    printf '%-20s %-36s want %-5s got %-5s%s\n' "$img" "${columns[$i]}" "${want[$i]}" "$got" "$mark" >&2
  done
done <"$work/table"
[ $failures -eq 0 ] || die "$failures verdicts differ from $here/verdicts.md"
log "self-check passed: $(wc -l <"$work/table") images x ${#columns[@]} columns agree with verdicts.md, offline"

finish "$write" registry keys trusted_root.json
