"""The Debian root tree every local image starts from: the packages baker adds, the mirrors,
and mmdebstrap writing it as a tar; with a lock, from a local repository of exactly the
locked files, fetched once into the package cache."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from baker.cache import Cache
from baker.edge import tools
from baker.errors import BuildError
from baker.hashing import sha256_file
from baker.image import apt
from baker.image.apt import UnknownPackage
from baker.recipe import lock
from baker.recipe.spec import Base

# UnknownPackage is raised here (and by apt.resolve), where apt's words for it are known.
__all__ = ["UnknownPackage", "build", "config", "mmdebstrap_argv", "sources", "wanted"]

# What every baker image needs to boot on its own and be reached over SSH.
BASE_PACKAGES = (
    "dbus",
    "iproute2",
    "openssh-server",
    "systemd",
    "systemd-resolved",
    "systemd-sysv",
    "udev",
)

# base.kernel: the kernel package of each flavour.
KERNELS = {"cloud": "linux-image-cloud-amd64", "generic": "linux-image-amd64"}
# UEFI boot: Debian's signed shim and GRUB, read from the image onto its EFI system partition.
UEFI_PACKAGES = ("grub-efi-amd64-signed", "shim-helpers-amd64-signed", "shim-signed")
CLOUD_INIT_PACKAGES = ("cloud-init",)

# Each suite's distribution and version, for the purl's namespace and distro qualifier, and
# its release day (x.0, or Ubuntu's GA): the default clamp for file times until a lock gives a
# date. Ubuntu's suites are for builds on Ubuntu's cloud images (baker.build.vendor).
DISTROS = {
    "bookworm": "debian-12",
    "trixie": "debian-13",
    "jammy": "ubuntu-22.04",
    "noble": "ubuntu-24.04",
}
RELEASE_DAYS = {
    "bookworm": 1686355200,
    "trixie": 1754697600,
    "jammy": 1650499200,
    "noble": 1714003200,
}


def distro(base: Base) -> str:
    """The purl distro qualifier of the image's packages: debian-12, ubuntu-24.04."""
    return DISTROS[base.suite]


def family(base: Base) -> str:
    """The distribution the suite is of, as os-release's ID says it: debian, ubuntu."""
    return distro(base).split("-", 1)[0]


def default_source_date_epoch(base: Base) -> int:
    return RELEASE_DAYS[base.suite]


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
    """The packages asked for: baker's own set for the boot mode and instance initialization
    asked for, and the recipe's (dependencies come on top)."""
    ours: tuple[str, ...] = (*BASE_PACKAGES, KERNELS[base.kernel])
    if base.boot != "bios":
        ours += UEFI_PACKAGES
    if base.cloud_init:
        ours += CLOUD_INIT_PACKAGES
    return lock.requested(base, ours)


def config(base: Base, locked: lock.Lock | None = None) -> dict[str, object]:
    """Everything that decides the root tree: the base step's content key is its hash. With a
    lock, the exact files installed (its digest) replace what the mirror serves today."""
    cfg: dict[str, object] = {
        "suite": base.suite,
        "arch": base.arch,
        "packages": list(wanted(base)),
        "sources": sources(base),
        "source_date_epoch": (
            locked.source_date_epoch if locked else default_source_date_epoch(base)
        ),
        "guest": guest_digest(),
        "ssh_host_keys": list(base.ssh_host_keys),
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
    from a local repository of exactly the locked files (from the package cache): no network.
    A package of the recipe's that the mirror does not have raises UnknownPackage."""
    cfg = config(base, locked)
    repo = None
    if locked:
        main, security = host_mirrors()
        fetched = fetch_missing(
            locked, {"debian": base.mirror or main or "", "debian-security": security or ""},
            cache, on_line,
        )  # fmt: skip
        on_line(f"{len(locked.packages)} locked packages, {fetched} fetched, the rest cached")
        repo = workdir / "repo"
        make_repository(locked, cache, repo)
    watch = apt.AptWatch(on_line)
    with watch.failing(base):
        tools.run(
            mmdebstrap_argv(base, target, sources(base), locked, repo),
            env={"SOURCE_DATE_EPOCH": str(cfg["source_date_epoch"])},
            on_line=watch,
            what="mmdebstrap",
        )


def mmdebstrap_argv(
    base: Base,
    target: Path,
    image_sources: list[str],
    locked: lock.Lock | None = None,
    repo: Path | None = None,
) -> list[str]:
    """mmdebstrap's command line for `base`, writing a tar at `target`; `image_sources` are
    the apt lines the image keeps (sources()).

    Unlocked: minbase (the Essential and Priority: required packages, apt, and wanted()) from
    the mirror. The unlocked argv is the one every unlocked image of this baker was made with:
    a change to it is a change of every image, made on purpose (tests/test_lock.py).

    Locked, from the flat repository `repo` (make_repository): the essential variant plus
    every locked package by name. Not minbase: a flat repository's priorities are those of the
    .deb control files, not the archive's overrides (apt's control file says `important`, the
    archive `required`), so minbase from it left out apt, gpgv, debian-archive-keyring,
    libapt-pkg6.0 and the rest of apt's dependencies. mmdebstrap's minbase is its essential
    variant with `?priority(required)` added to the one `apt-get install` of the --include
    list; naming the lock's whole set there instead installs exactly that set: apt.resolve
    read it from such an install, so it is closed under dependencies, and the repository holds
    one version of each, so apt has nothing left to choose. (An apt-ftparchive override file
    would need the archive's priorities, which the lock does not record.)"""
    variant, include, mirrors, hooks = "minbase", wanted(base), image_sources, []
    if locked:
        if repo is None:
            raise ValueError("a locked base is installed from a local repository")
        variant = "essential"
        include = tuple(sorted({p.name for p in locked.packages}))
        # copy://: apt copies the files into the chroot, which cannot see the work dir.
        mirrors = [f"deb [trusted=yes] copy://{repo} ./"]
        # The image's apt looks at the real archive, not at the build's local repository.
        text = "".join(f"{line}\n" for line in image_sources)
        hooks.append(f"--customize-hook=printf '%s' '{text}' >\"$1/etc/apt/sources.list\"")
    return [
        "mmdebstrap",
        f"--variant={variant}",
        f"--architectures={base.arch}",
        f"--include={','.join(include)}",
        '--aptopt=Acquire::Languages "none"',
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        # Licences stay: the SBOM reads them.
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f'--essential-hook={GUEST_DIR / "initramfs.sh"} "$1"',
        f'--customize-hook={GUEST_DIR / "customize.sh"} "$1" {",".join(base.ssh_host_keys)}',
        *hooks,
        "--format=tar",
        base.suite,
        str(target),
        *mirrors,
    ]


def fetch_missing(
    locked: lock.Lock, mirrors: dict[str, str], cache: Cache, on_line: Callable[[str], None]
) -> int:
    """Bring every locked .deb into the cache (verified); returns how many were fetched."""
    fetched = 0
    for p in locked.packages:
        if cache.deb(p.sha256) is not None:
            continue
        base_url = mirrors.get(p.archive)
        if not base_url:
            raise BuildError(f"no mirror for the {p.archive} archive, needed for {p.name}.")
        url = f"{base_url.rstrip('/')}/{p.path}"
        on_line(f"fetching {p.name} {p.version}")
        with cache.staging(cache.deb_path(p.sha256)) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as f:
                    shutil.copyfileobj(response, f, 1 << 20)
            except (urllib.error.URLError, OSError) as e:
                raise BuildError(
                    f"cannot fetch {p.name} {p.version} from the mirror ({e}); if the mirror "
                    "no longer has it, `baker lock --update` pins current versions."
                ) from None
            if sha256_file(tmp) != p.sha256:
                raise BuildError(f"{p.name} {p.version} from the mirror does not match its pin.")
        fetched += 1
    return fetched


def make_repository(locked: lock.Lock, cache: Cache, repo: Path) -> None:
    """A flat apt repository holding exactly the locked files, for mmdebstrap to install from."""
    repo.mkdir()
    for p in locked.packages:
        deb = cache.deb(p.sha256)
        if deb is None:
            raise BuildError(f"{p.name} {p.version} is not in the package cache.")
        # A fresh check at the moment of use: the cache is only a hint.
        if sha256_file(deb) != p.sha256:
            raise BuildError(f"the cached {p.name} {p.version} is corrupt ({deb}); remove it.")
        target = repo / Path(p.path).name
        if deb.stat().st_dev == repo.stat().st_dev:
            os.link(deb, target)
        else:
            shutil.copyfile(deb, target)
    packages = tools.run(["apt-ftparchive", "packages", "."], cwd=repo)
    (repo / "Packages").write_text(packages)
    # mmdebstrap picks the essential set by suite: the repository must say it.
    release = tools.run(
        ["apt-ftparchive", f"-oAPT::FTPArchive::Release::Suite={locked.suite}",
         f"-oAPT::FTPArchive::Release::Codename={locked.suite}",
         f"-oAPT::FTPArchive::Release::Architectures={locked.arch}", "release", "."],
        cwd=repo,
    )  # fmt: skip
    (repo / "Release").write_text(release)
