#!/usr/bin/env bash
# Builds, with no registry, every image a kind node of the pinned Kubernetes
# needs (exactly the names `kubeadm config images list` gives) from the binaries
# bins.sh built: each is a static binary on a minimal root; kube-proxy's also
# carries iptables/nft, conntrack and ipset from the base root filesystem.
# Needs a dockerd (DOCKER_HOST). Output: one `docker save` archive, once per pin.
# Usage: images.sh BASE_ROOTFS_DIR  (prints the archive's path)
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../../.." && pwd)}
. "$REPO/e2e/kind/nodeimage/lib.sh"

IMAGES_RECIPE=1 # bump when this script's output changes
base_root=$1
k8s=$KIND_CACHE/k8s-$K8S_VERSION
out=$KIND_CACHE/images-$K8S_VERSION-etcd$ETCD_VERSION-coredns$COREDNS_VERSION-r$IMAGES_RECIPE
if done_once "$out"; then echo "$out/images.tar"; exit 0; fi
for d in "$k8s" "$KIND_CACHE/etcd-$ETCD_VERSION" "$KIND_CACHE/coredns-$COREDNS_VERSION"; do
  done_once "$d" || die "$d not built (run bins.sh)"
done
rm -rf "$out"; mkdir -p "$out"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A minimal root: users, name service, CA certificates, /tmp.
minimal_root() {
  local r=$1
  install -d -m 0755 "$r"/{etc/ssl/certs,usr/local/bin,var/run,run,root,home,proc,sys,dev}
  install -d -m 1777 "$r/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$r/etc/group"
  echo 'hosts: files dns' >"$r/etc/nsswitch.conf"
  cp "$base_root/etc/ssl/certs/ca-certificates.crt" "$r/etc/ssl/certs/"
}

# add_with_libs ROOT FILE...: copies FILEs from the base root with the shared
# libraries they load (ldd run inside the base root).
add_with_libs() {
  local r=$1 f lib; shift
  for f in "$@"; do
    install -D "$base_root$f" "$r$f"
    for lib in $(chroot "$base_root" ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
      [[ -e $r$lib ]] || install -D "$base_root$(chroot "$base_root" readlink -f "$lib")" "$r$lib"
    done
  done
}

# image NAME ROOT ENTRYPOINT_JSON: imports ROOT as NAME.
image() {
  local name=$1 r=$2 ep=$3
  tar --numeric-owner -C "$r" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    ${ep:+-c "ENTRYPOINT $ep"} - "$name" >/dev/null
  log "image $name"
  names+=("$name")
}

names=()
list=$("$k8s/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
for ref in $list; do
  r=$work/${ref//[\/:]/_}; minimal_root "$r"; ep=
  case $ref in
    */kube-proxy:*)
      cp "$k8s/kube-proxy" "$r/usr/local/bin/"
      libs=()
      while read -r f; do libs+=("$f"); done < <(cd "$base_root" && ls usr/sbin/xtables-*-multi usr/sbin/conntrack usr/sbin/ipset usr/sbin/nft usr/lib/x86_64-linux-gnu/xtables/*.so | sed 's#^#/#')
      add_with_libs "$r" "${libs[@]}"
      for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -s xtables-nft-multi "$r/usr/sbin/$t"
      done
      ;;
    */kube-*:*) b=${ref##*/}; cp "$k8s/${b%%:*}" "$r/usr/local/bin/" ;;
    */etcd:*) cp "$KIND_CACHE/etcd-$ETCD_VERSION/etcd" "$r/usr/local/bin/"; ep='["/usr/local/bin/etcd"]' ;;
    */coredns:*) cp "$KIND_CACHE/coredns-$COREDNS_VERSION/coredns" "$r/coredns"; ep='["/coredns"]' ;;
    */pause:*)
      (cd "$REPO" && CGO_ENABLED=0 "${NICE[@]}" go build -tags kind -trimpath -ldflags '-s -w' -o "$r/pause" ./e2e/kind/nodeimage/pause)
      ep='["/pause"]' ;;
    *) die "no recipe for kubeadm's image $ref" ;;
  esac
  image "$ref" "$r" "$ep"
done
docker save "${names[@]}" -o "$out/images.tar"
printf '%s\n' "${names[@]}" >"$out/images.txt"
mark_done "$out"
echo "$out/images.tar"
