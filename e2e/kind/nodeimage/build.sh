#!/usr/bin/env bash
# `make kind-node-image`: builds (or finds in the cache) everything the offline
# kind node image needs and the image itself; prints its name. Starts criguard's
# own dockerd when none answers and stops it again unless KEEP_DOCKERD=1.
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../../.." && pwd)}
export REPO
. "$REPO/e2e/kind/nodeimage/lib.sh"
. "$REPO/e2e/kind/lib/dockerd.sh"

start=$SECONDS
kind_lock
ensure_packages
# debootstrap waits mostly on the Debian mirror: run it beside the Go builds.
base_out=$(mktemp)
bash "$REPO/e2e/kind/nodeimage/base.sh" >"$base_out" &
base_pid=$!
bash "$REPO/e2e/kind/nodeimage/bins.sh" all
wait "$base_pid" || die "building the base root filesystem failed"
base_tar=$(tail -1 "$base_out"); rm -f "$base_out"
docker_up
[[ ${KEEP_DOCKERD:-0} == 1 ]] || trap docker_down EXIT
images_tar=$(bash "$REPO/e2e/kind/nodeimage/images.sh" "${base_tar%/rootfs.tar}/rootfs")
node=$(bash "$REPO/e2e/kind/nodeimage/node.sh" "${base_tar%/rootfs.tar}" "$images_tar")
# Node images of older recipes are ~1 GB each in the kept data root: drop them.
docker images criguard.local/kind-node --format '{{.Repository}}:{{.Tag}}' | { grep -vxF "$node" || true; } | xargs -r docker rmi >/dev/null
docker image prune -f >/dev/null
log "node image $node ready in $((SECONDS - start))s"
echo "$node"
