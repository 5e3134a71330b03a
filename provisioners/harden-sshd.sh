#!/bin/sh
# Harden sshd with a drop-in: keys only, no forwarding of X11 or agents, few auth tries.
#   SSHD_ALLOW_TCP_FORWARDING (default no), SSHD_MAX_AUTH_TRIES (default 3).
set -eu
conf=/etc/ssh/sshd_config.d/50-hardening.conf
cat >"$conf" <<CONF
# Written by provisioners/harden-sshd.sh
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding ${SSHD_ALLOW_TCP_FORWARDING:-no}
MaxAuthTries ${SSHD_MAX_AUTH_TRIES:-3}
LoginGraceTime 30
CONF
chmod 0644 "$conf"
# Refuse to leave a configuration sshd would not start with.
sshd -t
echo "sshd hardened: $conf"
