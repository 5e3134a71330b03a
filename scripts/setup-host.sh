#!/usr/bin/env bash
# Installs and starts everything baker needs on a fresh Debian 12 machine, idempotently:
# the Debian packages (e2fsprogs from bookworm-backports, for `mkfs.ext4 -d root.tar`),
# libvirtd and virtlogd (there is no systemd here), and the project's venv.
# Used by `make bake` and `make test` (`make bench-setup` adds the peers bench/ runs against);
# safe to run again, and fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

PACKAGES=(
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-dev pkg-config gcc
  mmdebstrap fdisk grub-pc-bin libarchive13 apt-utils libxml2-utils
  # UEFI: the EFI system partition (FAT), and OVMF to boot and measure UEFI images.
  dosfstools mtools ovmf
  # NoCloud seed images for the tests, git for their throwaway projects.
  genisoimage git
  # The registry tests: a real registry (distribution 2.8), skopeo as an independent
  # client, htpasswd for its logins. The tests start the registry themselves.
  docker-registry skopeo apache2-utils
  # baker nightly's tests: a real PostgreSQL server for the history (started by the tests),
  # headless Chromium to look at the report site.
  postgresql chromium fonts-dejavu-core
  # The farm's tests: the Redis broker (started by the tests on 127.0.0.1).
  redis-server
  # The vendor-image tests make their "vendor's cloud image" with mkosi (from backports,
  # below), which needs these on the host; and a small one with an XFS root (taken as it is).
  kmod cpio zstd bubblewrap xfsprogs
)
# `setup-host.sh --bench`: the peers bench/ compares against too (bench/vs_packer.py).
if [ "${1:-}" = "--bench" ]; then
  PACKAGES+=(packer)
fi

need_install() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 0
  done
  # e2fsprogs 1.47.2+ (bookworm-backports) reads a tar with `mkfs.ext4 -d` and honours
  # SOURCE_DATE_EPOCH; bookworm's 1.47.0 does neither.
  dpkg --compare-versions "$(dpkg-query -W -f='${Version}' e2fsprogs)" ge 1.47.2 || return 0
  # mkosi 24 (bookworm-backports, with systemd 254's systemd-repart): bookworm's mkosi 14
  # cannot make a disk without device-mapper, which this machine lacks.
  dpkg --compare-versions "$(dpkg-query -W -f='${Version}' mkosi 2>/dev/null || echo 0)" ge 24 || return 0
  return 1
}

add_backports() {
  [ -e /etc/apt/sources.list.d/baker-backports.sources ] && return 0
  # The backports suite lives on the mirror the machine already uses; take its address
  # from the existing apt configuration rather than naming one here.
  local uri
  uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { log "cannot find the Debian mirror in the apt sources"; exit 1; }
  cat >/etc/apt/sources.list.d/baker-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

if need_install; then
  log "installing Debian packages"
  add_backports
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  apt-get install -y -qq --no-install-recommends -t bookworm-backports e2fsprogs mkosi >/dev/null
fi

# Debian's udev rule gives /dev/kvm to group kvm (mode 0660); without udev it stays root-only,
# and libvirt, whose qemu user is in group kvm, then finds its cached qemu capabilities
# "outdated" at every domain start and re-probes qemu for ~50 s. Give it the usual mode.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# No systemd: start the daemons by hand when they are not running.
if ! pgrep -x virtlogd >/dev/null; then
  log "starting virtlogd"
  virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
  log "starting libvirtd"
  libvirtd -d
fi
for _ in $(seq 50); do
  [ -S /run/libvirt/libvirt-sock ] && break
  sleep 0.2
done
[ -S /run/libvirt/libvirt-sock ] || { log "libvirtd did not come up"; exit 1; }

# The venv is rebuilt when pyproject.toml changes.
if [ ! -x .venv/bin/baker ] || [ pyproject.toml -nt .venv/.installed ]; then
  log "installing the Python venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
