#!/bin/sh
# mmdebstrap customize hook: $1 is the new root, $2 the SSH host key types to make at first
# boot (comma-separated). Makes the tree a bootable, generic base.
set -eu
root="$1"
host_keys="$2"
here="$(dirname "$(readlink -f "$0")")"
tar -C "$here/rootfs" --owner=0 --group=0 --numeric-owner -cf - . \
  | tar -C "$root" --no-overwrite-dir -xpf -
# OpenSSH >= 9.8 (Debian 13) refuses, for a while, every connection from an address that
# closed several before logging in (PerSourcePenalties); on the build machine every
# connection is baker's, through one forwarded address (its probe, then the tests' own
# logins). The build-time drop-in, removed at capture, turns that off: the published image
# keeps the distribution's default.
if chroot "$root" dpkg --compare-versions \
  "$(chroot "$root" dpkg-query -W -f='${Version}' openssh-server)" ge 1:9.8; then
  printf 'PerSourcePenalties no\n' >>"$root/etc/ssh/sshd_config.d/baker-build.conf"
fi
chroot "$root" systemctl enable --quiet \
  systemd-networkd.service systemd-resolved.service \
  baker-ssh-hostkeys.service baker-build-access.service
# Not needed at a VM image's boot: e2scrub_reap removes leftovers of online ext4 scrubs (LVM
# snapshots) that a baker image never has, and cost ~1 s of every boot under emulation.
if [ -e "$root/usr/lib/systemd/system/e2scrub_reap.service" ] \
  || [ -e "$root/lib/systemd/system/e2scrub_reap.service" ]; then
  chroot "$root" systemctl disable --quiet e2scrub_reap.service
fi
# The host keys sshd uses, and so the ones made at first boot (make-host-keys).
for kind in $(printf '%s' "$host_keys" | tr ',' ' '); do
  printf 'HostKey /etc/ssh/ssh_host_%s_key\n' "$kind"
done >"$root/etc/ssh/sshd_config.d/host-keys.conf"
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
