#!/usr/bin/env bash
# dockerd's default runtime for the kind e2e. This machine's capability bounding
# set lacks CAP_SYS_RESOURCE and its processes may not lower oom_score_adj, so a
# privileged kind node (and every `docker exec` into one) fails in plain runc
# with "unable to apply caps: operation not permitted". Before handing over to
# the real runc this drops CAP_SYS_RESOURCE from the bundle's config.json
# (create/run) and from the process file of `runc exec --process FILE`, and
# raises a negative oomScoreAdj to 0. Nothing else is changed.
set -euo pipefail
REAL_RUNC=${CRIGUARD_REAL_RUNC:-/usr/sbin/runc}

fix() { # fix FILE JQ_PREFIX
  local f=$1 p=$2 tmp
  [[ -f $f ]] || return 0
  tmp=$(mktemp "$f.XXXXXX")
  jq "if $p.capabilities then $p.capabilities |= with_entries(.value |= map(select(. != \"CAP_SYS_RESOURCE\"))) else . end
      | if ($p.oomScoreAdj // 0) < 0 then $p.oomScoreAdj = 0 else . end" "$f" >"$tmp"
  mv "$tmp" "$f"
}

args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  a=${args[i]}
  case $a in
    --bundle|-b) fix "${args[i+1]}/config.json" .process ;;
    --bundle=*) fix "${a#--bundle=}/config.json" .process ;;
    --process|-p) fix "${args[i+1]}" "" ;;
    --process=*) fix "${a#--process=}" "" ;;
  esac
done
exec "$REAL_RUNC" "$@"
