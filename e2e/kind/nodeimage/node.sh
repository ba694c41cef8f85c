#!/usr/bin/env bash
# Builds the offline kind node image: the base root filesystem plus containerd,
# runc's shim, crictl, the CNI plugins, kubeadm/kubelet/kubectl, /kind/version,
# kind's runtime spec, the per-node pod network service and every control-plane
# image preloaded into containerd. Needs a dockerd (DOCKER_HOST).
# Usage: node.sh BASE_DIR IMAGES_TAR  (prints the node image's name)
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../../.." && pwd)}
. "$REPO/e2e/kind/nodeimage/lib.sh"
base_dir=$1 images_tar=$2
here=$REPO/e2e/kind/nodeimage
tag=$(cat "$here/pins.env" "$here"/{base,images,node}.sh "$here"/files/* "$here/pause/main.go" | sha256sum | cut -c1-12)
name=criguard.local/kind-node:$K8S_VERSION-$tag
if docker image inspect "$name" >/dev/null 2>&1; then echo "$name"; exit 0; fi

ctrd=$KIND_CACHE/containerd-$CONTAINERD_VERSION k8s=$KIND_CACHE/k8s-$K8S_VERSION cni=$KIND_CACHE/cni-$CNI_PLUGINS_VERSION
for d in "$ctrd" "$k8s" "$cni"; do done_once "$d" || die "$d not built (run bins.sh)"; done
work=$(mktemp -d "$KIND_CACHE/node.XXXXXX")
cpid=
cleanup() { [[ -z $cpid ]] || { kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true; }; rm -rf "$work"; }
trap cleanup EXIT
root=$work/rootfs
mkdir -p "$root"
log "node image $name: assembling"
tar --numeric-owner -C "$root" -xf "$base_dir/rootfs.tar"
install -m 0755 "$ctrd"/{containerd,containerd-shim-runc-v2,ctr,crictl} "$root/usr/local/bin/"
install -m 0755 "$k8s"/{kubeadm,kubelet,kubectl} "$root/usr/bin/"
install -d "$root/opt/cni/bin" "$root/etc/cni/net.d" "$root/etc/criguard-kind"
install -m 0755 "$cni"/* "$root/opt/cni/bin/"
echo "$K8S_VERSION" >"$root/kind/version"
"$ctrd/ctr" oci spec |
  jq '.hooks.createContainer[.hooks.createContainer|length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
  jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"
# kind's containerd config, with the pause image kubeadm names (built here)
# and restrict_oom_score_adj: processes here may not lower oom_score_adj.
sed -e "s#sandbox_image = .*#sandbox_image = \"registry.k8s.io/pause:$PAUSE_IMAGE_TAG\"#" \
    -e 's#restrict_oom_score_adj = false#restrict_oom_score_adj = true#' \
    "$root/etc/containerd/config.toml" >"$work/config.toml"
grep -q "pause:$PAUSE_IMAGE_TAG" "$work/config.toml" && grep -q 'restrict_oom_score_adj = true' "$work/config.toml" ||
  die "kind's containerd config changed shape; cannot set the pause image and restrict_oom_score_adj"
install -m 0644 "$work/config.toml" "$root/etc/containerd/config.toml"
install -m 0755 "$here/files/criguard-podnet.sh" "$root/kind/bin/"
install -m 0644 "$here/files/criguard-podnet.service" "$root/etc/systemd/system/"
chroot "$root" systemctl enable criguard-podnet.service >/dev/null 2>&1

log "node image $name: preloading $(wc -l <"${images_tar%.tar}.txt") images into the node's containerd"
cat >"$work/ctrd.toml" <<TOML
version = 3
root = "$root/var/lib/containerd"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
[grpc]
  address = "$work/c.sock"
[ttrpc]
  address = "$work/c.sock.ttrpc"
TOML
"$ctrd/containerd" --config "$work/ctrd.toml" >"$work/containerd.log" 2>&1 &
cpid=$!
for ((i = 0; i < 50; i++)); do "$ctrd/ctr" -a "$work/c.sock" version >/dev/null 2>&1 && break; sleep 0.2; done
"$ctrd/ctr" -a "$work/c.sock" -n k8s.io images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack "$images_tar" >/dev/null
"$ctrd/ctr" -a "$work/c.sock" -n k8s.io images ls -q | sort >"$work/loaded"
sort "${images_tar%.tar}.txt" | comm -23 - "$work/loaded" | grep . && die "images missing from the node's containerd (above)"
kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=

log "node image $name: importing into docker"
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' -c 'ENV container=docker' - "$name" >/dev/null
echo "$name"
