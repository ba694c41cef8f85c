#!/usr/bin/env bash
# Builds the kind base root filesystem offline: Debian (debootstrap from the
# Debian mirror apt uses) plus the files and service setup of kind's own base
# image (images/base in the pinned kind module). Output, once per pin:
# $KIND_CACHE/base-<suite>-kind<version>-r<recipe>/rootfs.tar
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/../../.." && pwd)}
. "$REPO/e2e/kind/nodeimage/lib.sh"

BASE_RECIPE=1 # bump when this script's output changes
PACKAGES=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps,runc,socat,ebtables,ipset

debian_mirror() {
  local m
  m=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [[ -n $m ]] || m=$(sed -n 's/^deb \(http[^ ]*\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

kind_module_dir() {
  go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p'
}

# kind_base_setup ROOT: what kind's base Dockerfile does after its COPYs.
kind_base_setup() {
  local root=$1 kind files
  kind=$(kind_module_dir); files=$kind/images/base/files
  [[ -d $files ]] || die "kind $KIND_VERSION module has no images/base/files"
  install -d -m 0755 "$root/kind" "$root/kind/bin" "$root/etc/kubernetes/manifests" "$root/LICENSES"
  install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
  install -m 0644 "$files"/kind/README.txt "$root/kind/"
  install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
  install -m 0644 "$files"/LICENSES/* "$root/LICENSES/"
  install -m 0644 "$files"/etc/crictl.yaml "$root/etc/"
  install -d "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" "$root/etc/systemd/system/kubelet.service.d"
  install -m 0644 "$files"/etc/containerd/* "$root/etc/containerd/"
  install -m 0644 "$files"/etc/default/* "$root/etc/default/"
  install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
  find "$files/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$root/etc/systemd/system/" \;
  install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
  find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
  rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
    "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
    "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
  ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
  chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
  chroot "$root" systemctl mask systemd-binfmt.service
  # kind's base builds its own runc into /usr/local/sbin; this one is Debian's.
  ln -sf /usr/sbin/runc "$root/usr/local/sbin/runc"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
}

main() {
  local out=$KIND_CACHE/base-$DEBIAN_SUITE-kind$KIND_VERSION-r$BASE_RECIPE
  done_once "$out" && { echo "$out/rootfs.tar"; return 0; }
  command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
  rm -rf "$out"; mkdir -p "$out"
  local root=$out/rootfs
  # debootstrap mounts proc and sys in the root and leaves them on failure.
  trap 'for m in proc sys dev/pts; do mountpoint -q "'"$root"'/$m" && umount -l "'"$root"'/$m"; done; true' EXIT
  log "debootstrap $DEBIAN_SUITE (about 7 min cold) from $(debian_mirror)"
  "${NICE[@]}" debootstrap --variant=minbase --include="$PACKAGES" "$DEBIAN_SUITE" "$root" "$(debian_mirror)" \
    >"$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; die "debootstrap failed (log: $out/debootstrap.log)"; }
  kind_base_setup "$root"
  "${NICE[@]}" tar --numeric-owner -C "$root" -cf "$out/rootfs.tar" .
  mark_done "$out"
  echo "$out/rootfs.tar"
}
main "$@"
