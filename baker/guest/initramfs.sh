#!/bin/sh
# mmdebstrap essential hook: $1 is the new root, before the kernel is installed, so the one
# initrd its installation makes is already the small one (see initramfs/).
set -eu
here="$(dirname "$(readlink -f "$0")")"
tar -C "$here/initramfs" --owner=0 --group=0 --numeric-owner -cf - . \
  | tar -C "$1" --no-overwrite-dir -xpf -
