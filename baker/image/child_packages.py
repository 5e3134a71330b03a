"""A child image's own packages (base.packages on a parent image): resolved on the host with
apt against the parent's dpkg database (the build machine's, or for `baker lock` the parent
image's, read from its disk), since the build machine has no network of its own, and fetched
into the package cache (each file checked against the mirror's index). The provision step
sends the files to the machine and installs them there with dpkg."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path

from baker.cache import Cache
from baker.edge import tools
from baker.errors import BuildError
from baker.image import apt, debian
from baker.recipe.lock import Lock, LockedPackage
from baker.recipe.spec import Base


def resolve(
    base: Base, status: str, cache: Cache, workdir: Path, on_line: Callable[[str], None]
) -> list[LockedPackage]:
    """What installing base.packages on a machine whose dpkg database is `status` adds,
    at the versions the mirror serves today, each .deb in `cache`. A name the mirror does
    not have raises apt.UnknownPackage (base.packages.N)."""
    root = workdir / "child-apt"
    for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "var/lib/dpkg",
              "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").write_text(status)
    (root / "etc/apt/sources.list").write_text("".join(f"{s}\n" for s in debian.sources(base)))
    options = [
        f"-oDir={root}",
        f"-oDir::State::status={root / 'var/lib/dpkg/status'}",
        # The host's archive keys check the mirror's signatures, as for the base.
        "-oDir::Etc::TrustedParts=/etc/apt/trusted.gpg.d",
        "-oDir::Etc::Trusted=/etc/apt/trusted.gpg",
        f"-oAPT::Architecture={base.arch}",
        f"-oAPT::Architectures={base.arch}",
        "-oAcquire::Languages=none",
        # Plain index files for apt.index to read, whatever the host's apt.conf.d says (its
        # proxy and the like still apply).
        "-oAcquire::GzipIndexes=false",
        "-oDebug::NoLocking=1",
    ]
    tools.run(["apt-get", *options, "-q", "update"], on_line=on_line,
              what="apt-get update (the child's packages)")  # fmt: skip
    watch = apt.AptWatch(on_line)
    with watch.failing(base):
        uris = tools.run(
            ["apt-get", *options, "-qq", "-y", "--no-install-recommends", "--print-uris",
             "install", *base.packages],
            on_line=watch, what="apt-get install --print-uris (the child's packages)",
        )  # fmt: skip
    # apt prints each file's URL (and an MD5 sum): its pool path finds it in the index,
    # whose SHA256 the file is then checked against.
    listed = apt.index(root / "var/lib/apt/lists")
    by_path = {found[1]: (key, found) for key, found in listed.items()}
    added = []
    for line in uris.splitlines():
        parts = line.split()
        if len(parts) != 4 or "/pool/" not in parts[0]:
            continue
        path = "pool/" + urllib.parse.unquote(parts[0].strip("'")).split("/pool/", 1)[1]
        if path not in by_path:
            raise BuildError(f"apt chose {parts[1]}, which no index of the mirror lists.")
        (name, version, arch), (archive, _, sha256, size) = by_path[path]
        added.append(LockedPackage(name, version, arch, archive, path, sha256, size))
    wanted = Lock(base.suite, base.arch, (), "", tuple(added))
    debian.fetch_missing(wanted, _mirrors(base), cache, on_line)
    return sorted(added)


def fetch_locked(
    base: Base, lock: Lock, cache: Cache, on_line: Callable[[str], None]
) -> list[LockedPackage]:
    """A locked child's own packages, each .deb in `cache` (fetched where missing)."""
    debian.fetch_missing(lock, _mirrors(base), cache, on_line)
    return sorted(lock.packages)


def _mirrors(base: Base) -> dict[str, str]:
    main, security = debian.host_mirrors()
    return {"debian": base.mirror or main or "", "debian-security": security or ""}
