"""The base step: a Debian root filesystem as a tar, built by mmdebstrap and cached by key."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baker import tools
from baker.cache import Cache
from baker.errors import BuildError
from baker.hashing import sha256_file
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

GUEST_DIR = Path(__file__).parent / "guest"


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


def config(base: Base) -> dict[str, object]:
    """Everything that decides the root tree: the base step's content key is its hash."""
    return {
        "suite": base.suite,
        "arch": base.arch,
        "packages": sorted(set(BASE_PACKAGES) | set(base.packages)),
        "sources": sources(base),
        "source_date_epoch": DEFAULT_SOURCE_DATE_EPOCH,
        "guest": guest_digest(),
    }


@dataclass(frozen=True)
class RootTar:
    path: Path
    digest: str  # 'sha256:<hex>' of the tar: the base's identity in provenance
    cached: bool


def build(
    base: Base, key: str, cache: Cache, on_line: Callable[[str], None] | None = None
) -> RootTar:
    """The root tar for `base`, from the cache when its key is there."""
    cfg = config(base)
    target = cache.path("rootfs", f"{key}.tar")
    sidecar = target.with_name(f"{target.name}.sha256")
    if target.exists() and sidecar.exists():
        return RootTar(target, sidecar.read_text().strip(), True)
    with cache.staging(target) as tmp:
        argv = [
            "mmdebstrap",
            "--variant=minbase",
            f"--architectures={cfg['arch']}",
            f"--include={','.join(cfg['packages'])}",  # type: ignore[arg-type]
            '--aptopt=Acquire::Languages "none"',
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            # Licences stay: the SBOM reads them.
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            f'--customize-hook={GUEST_DIR / "customize.sh"} "$1"',
            "--format=tar",
            str(cfg["suite"]),
            str(tmp),
            *cfg["sources"],  # type: ignore[misc]
        ]
        tools.run(
            argv,
            env={"SOURCE_DATE_EPOCH": str(cfg["source_date_epoch"])},
            on_line=on_line,
            what="mmdebstrap",
        )
    digest = f"sha256:{sha256_file(target)}"
    sidecar.write_text(digest + "\n")
    return RootTar(target, digest, False)
