#!/bin/sh
# Enable (and start now) a systemd unit already placed under /etc/systemd/system.
#   UNIT (required): the unit's file name, e.g. image-release.service.
set -eu
: "${UNIT:?UNIT is required}"
test -f "/etc/systemd/system/$UNIT" || { echo "no /etc/systemd/system/$UNIT" >&2; exit 1; }
systemd-analyze verify "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable --now "$UNIT"
systemctl is-active --quiet "$UNIT" || systemctl is-enabled --quiet "$UNIT"
echo "enabled $UNIT"
