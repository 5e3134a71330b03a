"""apt on the mirror, for the base's package set: resolving it to a lock (mmdebstrap, nothing
built), and the recipe's packages apt says it cannot find (UnknownPackage)."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import re
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from baker.cache import Cache
from baker.edge import tools
from baker.errors import BuildError, InputError
from baker.hashing import sha256_file
from baker.recipe.lock import Lock, LockedPackage
from baker.recipe.spec import Base


class UnknownPackage(InputError):
    """apt has no package (or no such version) that the recipe's base.packages asks for: bad
    input, exit 2. The message is one sentence starting at the field; `field` is the entry's
    dotted path (base.packages.N), for the caller to put `spec.where(field)` before it."""

    def __init__(self, package: str, apt_line: str, suite: str, field: str) -> None:
        self.package, self.apt_line, self.field = package, apt_line, field
        kind = "version" if apt_line.startswith("Version") else "package"
        super().__init__(
            f"base.packages: {package}: no such {kind} in {suite} on the mirror (apt: {apt_line})."
        )


# How apt says it has nothing to install for a name it was given.
_APT_MISSING = re.compile(
    r"E: (Unable to locate package (?P<a>\S+)"
    r"|Package '(?P<b>[^']+)' has no installation candidate"
    r"|Version '[^']*' for '(?P<c>[^']+)' was not found"
    r"|Couldn't find any package by (?:glob|regex) '(?P<d>[^']+)')"
)


class AptWatch:
    """An on_line callback for tools.run: passes every line on, and keeps the last few of
    apt's complaints about names it cannot find, so that a failed mmdebstrap can say which
    of the recipe's packages is at fault instead of a tail of apt's output."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        self.on_line = on_line
        self.missing: deque[tuple[str, str]] = deque(maxlen=16)  # (name, apt's words)

    def __call__(self, line: str) -> None:
        if m := _APT_MISSING.search(line):
            name = m["a"] or m["b"] or m["c"] or m["d"]
            self.missing.append((name, m[1].rstrip(". ")))
        if self.on_line:
            self.on_line(line)

    def unknown(self, base: Base) -> UnknownPackage | None:
        """The first of apt's complaints about one of `base.packages` (not baker's own set:
        a mirror without those is no fault of the recipe)."""
        for name, said in self.missing:
            for i, asked in enumerate(base.packages):
                if asked.partition("=")[0] == name:
                    return UnknownPackage(asked, said, base.suite, f"base.packages.{i}")
        return None

    @contextlib.contextmanager
    def failing(self, base: Base) -> Iterator[None]:
        """Turn a tool's failure into UnknownPackage when apt said why."""
        try:
            yield
        except BuildError:
            unknown = self.unknown(base)
            if unknown is None:
                raise
            raise unknown from None


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
    watch = AptWatch(on_line)
    with watch.failing(base):
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
            on_line=watch,
            what="mmdebstrap (resolving the lock)",
        )
    found_in = index(lists)
    # apt names downloaded files its own way (epochs as %3a), so match them by content.
    by_hash = {sha256_file(deb): deb for deb in debs.glob("*.deb")}
    packages = []
    for line in installed.read_text().splitlines():
        name, version, arch = line.split("\t")
        found = found_in.get((name, version, arch))
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


def index(lists: Path) -> dict[tuple[str, str, str], tuple[str, str, str, int]]:
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
