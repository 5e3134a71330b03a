#!/bin/sh
# mmdebstrap customize hook: $1 is the new root. Makes the tree a bootable, generic base.
set -eu
root="$1"
here="$(dirname "$(readlink -f "$0")")"
tar -C "$here/rootfs" --owner=0 --group=0 --numeric-owner -cf - . \
  | tar -C "$root" --no-overwrite-dir -xpf -
chroot "$root" systemctl enable --quiet \
  systemd-networkd.service systemd-resolved.service \
  baker-ssh-hostkeys.service baker-build-access.service
# Instance initialization, when the image has cloud-init: its datasources and what it leaves
# to the image (network, host keys, growing the root).
if [ -x "$root/usr/bin/cloud-init" ]; then
  tar -C "$here/cloud-init" --owner=0 --group=0 --numeric-owner -cf - . \
    | tar -C "$root" --no-overwrite-dir -xpf -
fi
# The disk is labelled; its UUIDs are derived per image. x-systemd.growfs: the filesystem
# grows with its partition (systemd-repart, /etc/repart.d) on a larger disk.
printf 'LABEL=baker-root / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1\n' >"$root/etc/fstab"
printf 'debian\n' >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# Generic: no host keys (made at first boot), no machine id (made at first boot).
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
