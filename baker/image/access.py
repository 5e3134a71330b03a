"""The build machine's SSH access (and its held timers), put back into a tree that no longer
has them: a parent image's, whose own capture removed them. The same files the Debian base
gets from baker/guest (customize.sh), chosen by the generalize rules that remove them again
from every image, so what goes in here is exactly what the child's capture takes out."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from debian.debian_support import Version

from baker.errors import BuildError
from baker.image import generalize
from baker.image.debian import GUEST_DIR
from baker.image.packages import parse_status

ACCESS = "build-time SSH access"  # the generalize rules' reason for these files
UNIT = "etc/systemd/system/baker-build-access.service"
DROP_IN = "etc/ssh/sshd_config.d/baker-build.conf"


def _removed_at_capture(rel: str, is_dir: bool) -> bool:
    rules = [r for r in generalize.RULES if r.why in (ACCESS, generalize.HELD)]
    parts = rel.split("/")
    # A rule on a directory removes what is under it too.
    return any(
        r.matches("/".join(parts[:i]), is_dir or i < len(parts))
        for r in rules
        for i in range(1, len(parts) + 1)
    )


def layer(root: Path, into: Path) -> list[str]:
    """Write the access files for the tree mounted at `root` under `into`; returns their
    names (`./rel`, parents first), to be appended to the tree's tar."""
    wants = _wants(root)
    source = GUEST_DIR / "rootfs"
    names = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if not _removed_at_capture(rel, path.is_dir()):
            continue
        target = into / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        names.append(f"./{rel}")
    if _needs_no_penalties(root):
        # As customize.sh does for OpenSSH >= 9.8: every connection comes from one address.
        with open(into / DROP_IN, "a") as f:
            f.write("PerSourcePenalties no\n")
    # The unit enabled, as `systemctl enable` does it.
    link = into / wants / Path(UNIT).name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"/{UNIT}")
    names.append(f"./{wants}/{link.name}")
    return names


def _wants(root: Path) -> str:
    """The directory of the unit's WantedBy= target, which the tree must have already."""
    wanted_by = re.search(r"^WantedBy=(\S+)$", (GUEST_DIR / "rootfs" / UNIT).read_text(), re.M)
    if wanted_by is None:
        raise RuntimeError(f"{UNIT} names no WantedBy= target")
    wants = f"etc/systemd/system/{wanted_by.group(1)}.wants"
    if not (root / wants).is_dir():
        raise BuildError(f"the parent image has no /{wants}: not a systemd tree baker made.")
    return wants


def _needs_no_penalties(root: Path) -> bool:
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except FileNotFoundError:
        status = ""
    versions = {p.name: p.version for p in parse_status(status)}
    found = versions.get("openssh-server")
    if found is None:
        raise BuildError("the parent image has no openssh-server: a build machine needs sshd.")
    return Version(found) >= Version("1:9.8")
