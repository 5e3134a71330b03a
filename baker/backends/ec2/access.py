"""How an EC2 build reaches its instance and lets itself in as root: who may reach port 22
(the builder's own address), whether to trust the host key the instance presents (against
the fingerprints it prints on its console), and the shell that grants the build's key root
access for the build and takes it out again before the image is made."""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from baker.backends.ec2.base import Log
from baker.edge import ssh
from baker.edge.aws import POLL_S
from baker.edge.ssh import Endpoint
from baker.errors import BuildError
from baker.recipe.spec import Ec2Backend

CHECKIP_URL = "https://checkip.amazonaws.com"  # AWS's own what-is-my-address service
ACCESS_DIR = "/run/baker-ec2"  # a tmpfs: the build's root key never reaches the image
DROP_IN = "/etc/ssh/sshd_config.d/00-baker-build.conf"
TOFU = "trust-on-first-use"
CONSOLE = "console"

# cloud-init (and baker's own images) print these at first boot; on EC2 they reach the
# console output a while after sshd is up.
_FINGERPRINTS = re.compile(
    r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)-----END SSH HOST KEY FINGERPRINTS-----",
    re.S,
)


# --- the host key ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostKey:
    fingerprint: str
    trust: str  # CONSOLE: matched the fingerprints the instance printed; else TOFU

    def as_dict(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "trust": self.trust}


def console_fingerprints(console: str) -> set[str]:
    """The SHA256 host key fingerprints a machine printed on its console (all blocks)."""
    found: set[str] = set()
    for block in _FINGERPRINTS.findall(console):
        found.update(re.findall(r"(SHA256:[A-Za-z0-9+/]+)", block))
    return found


def decide_trust(key: paramiko.PKey, printed: set[str], instance: str) -> HostKey:
    """A host key the console vouches for, or one trusted on first use when the console
    printed none; one the console contradicts is refused."""
    if not printed:
        return HostKey(key.fingerprint, TOFU)
    if key.fingerprint not in printed:
        raise BuildError(
            f"instance {instance} presented SSH host key {key.fingerprint}, but its console "
            f"lists {', '.join(sorted(printed))}: refusing to trust it (someone may be in "
            "between)."
        )
    return HostKey(key.fingerprint, CONSOLE)


def trust_host_key(
    key: paramiko.PKey, console: Callable[[], str], wait_s: float, instance: str, log: Log
) -> HostKey:
    """Check the host key against the fingerprints the instance prints on its console,
    waiting up to `wait_s` for them to appear there."""
    deadline = time.monotonic() + wait_s
    printed = console_fingerprints(console())
    while not printed and time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        printed = console_fingerprints(console())
    decided = decide_trust(key, printed, instance)
    if decided.trust == TOFU:
        log(
            f"the console of {instance} shows no host key fingerprints; trusting "
            f"{key.fingerprint} on first use (recorded in build.json)"
        )
    return decided


class RememberHostKey(paramiko.MissingHostKeyPolicy):
    """Accept the first contact's host key for now and keep it: whether to trust it is
    decided right after, against the instance's console, before anything is run."""

    def __init__(self) -> None:
        self.key: paramiko.PKey | None = None

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self.key = key


def login(
    endpoint: Endpoint,
    user: str,
    pkey: paramiko.PKey,
    policy: paramiko.MissingHostKeyPolicy,
    timeout: float = 10,
    sock: socket.socket | None = None,
) -> paramiko.SSHClient:
    return ssh.connect(endpoint, pkey, policy=policy, user=user, timeout=timeout, sock=sock)


# --- who may reach port 22 ---------------------------------------------------------------------


def public_address(url: str = CHECKIP_URL, timeout: float = 10) -> str:
    """This machine's address as the internet sees it (what an instance's public IP sees)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            text = reply.read(100).decode(errors="replace").strip()
        return str(ipaddress.ip_address(text))
    except (OSError, ValueError) as e:
        raise BuildError(
            f"could not learn this machine's public address from {url} ({e}); set "
            "backend.ssh_cidr to the address range SSH may come from."
        ) from None


def local_address(host: str, port: int = 22) -> str:
    """The address this machine sends from toward `host` (a route lookup: no packet is sent)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return str(s.getsockname()[0])
    except OSError as e:
        raise BuildError(f"no route from this machine to {host} ({e.strerror}).") from None


def as_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def builder_cidr(config: Ec2Backend, endpoint: Endpoint) -> str:
    """The address range SSH to the instance may come from: the one configured, else this
    machine's own address as the instance will see it."""
    if config.ssh_cidr:
        return config.ssh_cidr
    if config.ssh_host or config.ssh_interface == "private_ip":
        return as_cidr(local_address(endpoint.host, endpoint.port))
    return as_cidr(public_address())


# --- root access for the build -----------------------------------------------------------------

# Debian names the unit ssh, others sshd; a socket-activated sshd reads its config per login.
_RELOAD_SSHD = (
    "for u in ssh sshd; do systemctl try-reload-or-restart $u 2>/dev/null && break; done; true"
)


def grant_root_script(public_key: str) -> str:
    """Shell (run as root) that lets the build's key log in as root until revoked: through a
    key file in /run and an sshd drop-in, so the image's own files are not touched."""
    return f"""set -e
grep -qsE '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\\.d/' /etc/ssh/sshd_config || {{
  echo "/etc/ssh/sshd_config does not include /etc/ssh/sshd_config.d" >&2; exit 3; }}
umask 077
mkdir -p {ACCESS_DIR}
printf '%s\\n' {shlex.quote(public_key)} >{ACCESS_DIR}/authorized_keys.root
umask 022
cat >{DROP_IN} <<'EOF'
# Build-time only: baker removes it before the image is made.
PermitRootLogin prohibit-password
AuthorizedKeysFile {ACCESS_DIR}/authorized_keys.%u .ssh/authorized_keys .ssh/authorized_keys2
EOF
# OpenSSH >= 9.8 refuses an address that closed connections before logging in (the probe's,
# while the instance booted); the tests' own logins come from that address too.
sshd=$(command -v sshd || echo /usr/sbin/sshd)
if "$sshd" -t -o PerSourcePenalties=no 2>/dev/null; then
  echo 'PerSourcePenalties no' >>{DROP_IN}
fi
"$sshd" -t
{_RELOAD_SSHD}
"""


def revoke_script(public_key: str, user: str) -> str:
    """Shell (run as root) that undoes grant_root_script and takes the build's key out of the
    login user's and root's authorized_keys (cloud-init put it there from the key pair)."""
    blob = public_key.split()[1]
    return f"""set -e
rm -f {DROP_IN}
rm -rf {ACCESS_DIR}
home=$(getent passwd {shlex.quote(user)} | cut -d: -f6)
for f in /root/.ssh/authorized_keys "$home/.ssh/authorized_keys"; do
  [ -f "$f" ] || continue
  grep -vF {shlex.quote(blob)} "$f" >"$f.baker" || true
  cat "$f.baker" >"$f"
  rm -f "$f.baker"
done
{_RELOAD_SSHD}
"""


def as_root(script: str, user: str) -> str:
    """The command that runs `script` as root when logged in as `user`."""
    command = f"sh -c {shlex.quote(script)}"
    return command if user == "root" else f"sudo -n {command}"


def last_lines(tail: list[str]) -> str:
    """A failed command's last few output lines, for its error message."""
    return " | ".join(line for line in tail[-5:] if line.strip()) or "no output"
