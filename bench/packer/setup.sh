#!/bin/sh
# The bench's shell step, the same for Packer and baker: a user, the motd, the uploaded unit.
set -eu
useradd --create-home --shell /bin/bash ops
printf 'baked for the Packer comparison\n' >/etc/motd
printf 'IMAGE=bench-vs-packer\n' >/etc/image-release
systemctl enable image-release.service
