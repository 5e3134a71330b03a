"""The package lock: every package the base installs (dependencies included), at an exact
version, with the sha256 of its .deb, as resolved from the mirror on one day.

`baker lock` writes it beside the recipe (images/NAME.lock); `baker build` then installs
exactly those files, fetched once into a content-addressed cache and served to mmdebstrap
from a local repository, so a fully cached build needs no network. The lock names no host:
each package says which archive it came from (debian or debian-security) and its path in
the pool; the mirror is the host's (or the recipe's).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from baker.cache import Cache
from baker.edge import tools
from baker.errors import BuildError, InputError
from baker.hashing import canonical_json, sha256_file
from baker.spec import Base

FORMAT = 1


@dataclass(frozen=True, order=True)
class LockedPackage:
    name: str
    version: str
    arch: str
    archive: str  # "debian" or "debian-security"
    path: str  # pool/main/…/NAME_VERSION_ARCH.deb
    sha256: str
    size: int


@dataclass(frozen=True)
class Lock:
    suite: str
    arch: str
    requested: tuple[str, ...]
    resolved: str  # the newest Release date of the suites resolved from (ISO 8601, UTC)
    packages: tuple[LockedPackage, ...]

    @property
    def source_date_epoch(self) -> int:
        return int(dt.datetime.fromisoformat(self.resolved).timestamp())

    def content(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "suite": self.suite,
            "arch": self.arch,
            "requested": list(self.requested),
            "resolved": self.resolved,
            "packages": [asdict(p) for p in self.packages],
        }

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(canonical_json(self.content())).hexdigest()}"

    def dump(self) -> str:
        """Readable and diff-friendly: one package a line, sorted."""
        lines = [
            "# baker package lock: `baker lock --update RECIPE` refreshes it. Do not edit.",
            f"format: {FORMAT}",
            f"suite: {self.suite}",
            f"arch: {self.arch}",
            f"resolved: '{self.resolved}'",
            "requested:",
            *(f"  - {name}" for name in self.requested),
            "packages:",
        ]
        for p in sorted(self.packages):
            fields = ", ".join(f"{k}: {_scalar(v)}" for k, v in asdict(p).items())
            lines.append(f"  - {{{fields}}}")
        return "\n".join(lines) + "\n"


def _scalar(value: object) -> str:
    return str(value) if isinstance(value, int) else f"'{value}'"


def requested(base: Base, base_packages: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(base_packages) | set(base.packages)))


def path_for(recipe: Path) -> Path:
    return recipe.with_suffix(".lock")


def load(path: Path) -> Lock:
    try:
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} baker lock")
        packages = tuple(LockedPackage(**p) for p in data["packages"])
        return Lock(
            suite=str(data["suite"]),
            arch=str(data["arch"]),
            requested=tuple(str(r) for r in data["requested"]),
            resolved=str(data["resolved"]),
            packages=packages,
        )
    except OSError as e:
        raise InputError(f"{path}: cannot read the lock: {e.strerror}.") from None
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise InputError(
            f"{path}: not a valid lock ({e}); `baker lock --update` remakes it."
        ) from None


def check_matches(lock: Lock, path: Path, base: Base, wanted: tuple[str, ...]) -> None:
    """A lock resolved for another package list, suite or architecture is refused."""
    if (lock.suite, lock.arch) != (base.suite, base.arch):
        raise InputError(
            f"{path}: resolved for {lock.suite}/{lock.arch}, but the recipe asks for "
            f"{base.suite}/{base.arch}; run `baker lock --update`."
        )
    if set(lock.requested) != set(wanted):
        added = sorted(set(wanted) - set(lock.requested))
        removed = sorted(set(lock.requested) - set(wanted))
        change = "; ".join(
            part
            for part in (
                f"added {', '.join(added)}" if added else "",
                f"removed {', '.join(removed)}" if removed else "",
            )
            if part
        )
        raise InputError(
            f"{path}: the recipe's packages no longer match the lock ({change}); "
            "run `baker lock --update`."
        )


def resolve(
    base: Base,
    wanted: tuple[str, ...],
    sources: list[str],
    cache: Cache,
    workdir: Path,
    on_line: Callable[[str], None] | None = None,
) -> Lock:
    """Resolve `wanted` against the mirror with mmdebstrap (nothing is built), and put every
    .deb it installed into the package cache."""
    debs, lists, installed = workdir / "debs", workdir / "lists", workdir / "installed.txt"
    debs.mkdir()
    lists.mkdir()
    tools.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--architectures={base.arch}",
            f"--include={','.join(wanted)}",
            '--aptopt=Acquire::Languages "none"',
            # Keep every .deb, essential ones too: they are what the lock pins.
            "--skip=essential/unlink",
            "--skip=download/empty",
            f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
            f"--customize-hook=sync-out /var/lib/apt/lists {lists}",
            '--customize-hook=chroot "$1" dpkg-query -W '
            f"-f='${{Package}}\\t${{Version}}\\t${{Architecture}}\\n' > {installed}",
            base.suite,
            "/dev/null",
            *sources,
        ],
        on_line=on_line,
        what="mmdebstrap (resolving the lock)",
    )
    index = _index(lists)
    # apt names downloaded files its own way (epochs as %3a), so match them by content.
    by_hash = {sha256_file(deb): deb for deb in debs.glob("*.deb")}
    packages = []
    for line in installed.read_text().splitlines():
        name, version, arch = line.split("\t")
        found = index.get((name, version, arch))
        if found is None:
            raise BuildError(f"{name} {version} ({arch}) is installed but in no package index.")
        archive, path, sha256, size = found
        deb = by_hash.get(sha256)
        if deb is None:
            raise BuildError(f"no downloaded file of {name} {version} matches the mirror's index.")
        cache.put_deb(deb, sha256)
        packages.append(LockedPackage(name, version, arch, archive, path, sha256, size))
    return Lock(
        suite=base.suite,
        arch=base.arch,
        requested=wanted,
        resolved=_release_date(lists),
        packages=tuple(sorted(packages)),
    )


def _index(lists: Path) -> dict[tuple[str, str, str], tuple[str, str, str, int]]:
    out: dict[tuple[str, str, str], tuple[str, str, str, int]] = {}
    for f in sorted(lists.glob("*_Packages")):
        archive = "debian-security" if "_debian-security_" in f.name else "debian"
        for stanza in f.read_text(errors="replace").split("\n\n"):
            fields: dict[str, str] = dict(
                (m.group(1), m.group(2))
                for m in re.finditer(
                    r"^(Package|Version|Architecture|Filename"
                    r"|SHA256|Size): (.*)$",
                    stanza,
                    re.M,
                )
            )
            if len(fields) == 6:
                key = (fields["Package"], fields["Version"], fields["Architecture"])
                out[key] = (archive, fields["Filename"], fields["SHA256"], int(fields["Size"]))
    return out


def _release_date(lists: Path) -> str:
    dates = []
    for f in lists.glob("*Release"):
        if m := re.search(r"^Date: (.*)$", f.read_text(errors="replace"), re.M):
            dates.append(email.utils.parsedate_to_datetime(m.group(1)).astimezone(dt.UTC))
    if not dates:
        raise BuildError("the mirror's Release files carry no Date.")
    return max(dates).isoformat()


def fetch_missing(
    lock: Lock, mirrors: dict[str, str], cache: Cache, on_line: Callable[[str], None]
) -> int:
    """Bring every locked .deb into the cache (verified); returns how many were fetched."""
    fetched = 0
    for p in lock.packages:
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


def make_repository(lock: Lock, cache: Cache, repo: Path) -> None:
    """A flat apt repository holding exactly the locked files, for mmdebstrap to install from."""
    repo.mkdir()
    for p in lock.packages:
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
    # mmdebstrap picks the essential and required set by suite: the repository must say it.
    release = tools.run(
        ["apt-ftparchive", f"-oAPT::FTPArchive::Release::Suite={lock.suite}",
         f"-oAPT::FTPArchive::Release::Codename={lock.suite}",
         f"-oAPT::FTPArchive::Release::Architectures={lock.arch}", "release", "."],
        cwd=repo,
    )  # fmt: skip
    (repo / "Release").write_text(release)
