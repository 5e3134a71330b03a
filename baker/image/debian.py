"""The Debian root tree every local image starts from: the packages baker adds, the mirrors,
and mmdebstrap writing it as a tar."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from baker import lock
from baker.cache import Cache
from baker.edge import tools
from baker.errors import BuildError
from baker.spec import Base

# What every baker image needs to boot on its own and be reached over SSH.
BASE_PACKAGES = (
    "dbus",
    "iproute2",
    "linux-image-cloud-amd64",
    "openssh-server",
    "systemd",
    "systemd-resolved",
    "systemd-sysv",
    "udev",
)

# Debian 12.0's release day: the default clamp for file times until a lock gives a date.
DEFAULT_SOURCE_DATE_EPOCH = 1686355200

GUEST_DIR = Path(__file__).resolve().parents[1] / "guest"


def host_mirrors(apt_dir: Path = Path("/etc/apt")) -> tuple[str | None, str | None]:
    """The Debian mirror and security mirror the host's apt already uses."""
    main = security = None
    texts = []
    for f in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        texts.append(f.read_text())
    uris = []
    for text in texts:
        uris += re.findall(r"^URIs:\s*(\S+)", text, re.M)
    list_file = apt_dir / "sources.list"
    if list_file.exists():
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", list_file.read_text(), re.M)
    for uri in uris:
        if "debian" not in uri:
            continue
        if "security" in uri:
            security = security or uri
        else:
            main = main or uri
    return main, security


def sources(base: Base) -> list[str]:
    main, security = host_mirrors()
    main = base.mirror or main
    if not main:
        raise BuildError(
            "no Debian mirror: set base.mirror in the recipe, or configure one in /etc/apt."
        )
    lines = [f"deb {main} {base.suite} main", f"deb {main} {base.suite}-updates main"]
    if security and not base.mirror:
        lines.append(f"deb {security} {base.suite}-security main")
    return lines


def guest_digest() -> str:
    """The hash of the files baker adds to every base, so a change to them re-keys the base."""
    h = hashlib.sha256()
    for f in sorted(p for p in GUEST_DIR.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(GUEST_DIR)).encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0" if not os.access(f, os.X_OK) else b"\1")
    return h.hexdigest()


def wanted(base: Base) -> tuple[str, ...]:
    """The packages asked for: baker's own set and the recipe's (dependencies come on top)."""
    return lock.requested(base, BASE_PACKAGES)


def config(base: Base, locked: lock.Lock | None = None) -> dict[str, object]:
    """Everything that decides the root tree: the base step's content key is its hash. With a
    lock, the exact files installed (its digest) replace what the mirror serves today."""
    cfg: dict[str, object] = {
        "suite": base.suite,
        "arch": base.arch,
        "packages": list(wanted(base)),
        "sources": sources(base),
        "source_date_epoch": locked.source_date_epoch if locked else DEFAULT_SOURCE_DATE_EPOCH,
        "guest": guest_digest(),
    }
    if locked:
        cfg["lock"] = locked.digest
    return cfg


def build(
    base: Base,
    target: Path,
    cache: Cache,
    workdir: Path,
    on_line: Callable[[str], None],
    locked: lock.Lock | None = None,
) -> None:
    """Write the root tree for `base` as a tar at `target`. With a lock, mmdebstrap installs
    from a local repository of exactly the locked files (from the package cache): no network."""
    cfg = config(base, locked)
    image_sources = sources(base)
    mirrors = image_sources
    hooks = []
    if locked:
        main, security = host_mirrors()
        fetched = lock.fetch_missing(
            locked, {"debian": base.mirror or main or "", "debian-security": security or ""},
            cache, on_line,
        )  # fmt: skip
        on_line(f"{len(locked.packages)} locked packages, {fetched} fetched, the rest cached")
        repo = workdir / "repo"
        lock.make_repository(locked, cache, repo)
        # copy://: apt copies the files into the chroot, which cannot see the work dir.
        mirrors = [f"deb [trusted=yes] copy://{repo} ./"]
        # The image's apt looks at the real archive, not at the build's local repository.
        text = "".join(f"{line}\n" for line in image_sources)
        hooks.append(f"--customize-hook=printf '%s' '{text}' >\"$1/etc/apt/sources.list\"")
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        f"--architectures={base.arch}",
        f"--include={','.join(wanted(base))}",
        '--aptopt=Acquire::Languages "none"',
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        # Licences stay: the SBOM reads them.
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f'--customize-hook={GUEST_DIR / "customize.sh"} "$1"',
        *hooks,
        "--format=tar",
        base.suite,
        str(target),
        *mirrors,
    ]
    tools.run(
        argv,
        env={"SOURCE_DATE_EPOCH": str(cfg["source_date_epoch"])},
        on_line=on_line,
        what="mmdebstrap",
    )
