"""The package lock: every package the base installs (dependencies included), at an exact
version, with the sha256 of its .deb, as resolved from the mirror on one day.

`baker lock` writes it beside the recipe (images/NAME.lock); `baker build` then installs
exactly those files, fetched once into a content-addressed cache and served to mmdebstrap
from a local repository (baker.image.debian), so a fully cached build needs no network. The
lock names no host: each package says which archive it came from (debian or debian-security)
and its path in the pool; the mirror is the host's (or the recipe's). A lock is read as
untrusted input, bounded and checked field by field. Resolving a lock against the mirror is
baker.image.apt's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from baker.errors import InputError
from baker.hashing import canonical_json
from baker.recipe.bounded import YamlError, parse_yaml, read_limited
from baker.recipe.messages import field_name, line_of, shown
from baker.recipe.spec import Base

FORMAT = 1
# A lock is written by baker, about 200 bytes and 17 YAML nodes a package: these bounds hold
# some 15,000 packages (a minimal base has about 200) and refuse anything that is no lock.
MAX_LOCK_BYTES = 16 << 20
MAX_LOCK_NODES = 250_000


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
class ParentPin:
    """A child's parent named by a registry tag (base.image), pinned: the manifest digest
    the tag named when the lock was made. A tag can move; the lock does not."""

    reference: str  # base.image as the recipe writes it
    digest: str  # sha256:<hex> of the manifest


@dataclass(frozen=True)
class Lock:
    suite: str
    arch: str
    requested: tuple[str, ...]
    # The newest Release date of the suites resolved from (ISO 8601, UTC); a child's lock:
    # its parent's SOURCE_DATE_EPOCH.
    resolved: str
    packages: tuple[LockedPackage, ...]
    parent: ParentPin | None = None

    @property
    def source_date_epoch(self) -> int:
        return int(dt.datetime.fromisoformat(self.resolved).timestamp())

    def content(self) -> dict[str, Any]:
        content = {
            "format": FORMAT,
            "suite": self.suite,
            "arch": self.arch,
            "requested": list(self.requested),
            "resolved": self.resolved,
            "packages": [asdict(p) for p in self.packages],
        }
        return content | ({"parent": asdict(self.parent)} if self.parent else {})

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(canonical_json(self.content())).hexdigest()}"

    def dump(self) -> str:
        """Readable and diff-friendly: one package a line, sorted."""
        lines = [
            "# baker package lock: `baker lock --update RECIPE` refreshes it. Do not edit.",
            # Outside the data (the digest is unchanged), for load() to tell a lock cut short.
            f"# {len(self.packages)} packages",
            f"format: {FORMAT}",
            f"suite: {self.suite}",
            f"arch: {self.arch}",
            f"resolved: '{self.resolved}'",
            *_parent_lines(self.parent),
            "requested:" if self.requested else "requested: []",
            *(f"  - {name}" for name in self.requested),
            "packages:" if self.packages else "packages: []",
        ]
        for p in sorted(self.packages):
            fields = ", ".join(f"{k}: {_scalar(v)}" for k, v in asdict(p).items())
            lines.append(f"  - {{{fields}}}")
        return "\n".join(lines) + "\n"


def _parent_lines(pin: ParentPin | None) -> list[str]:
    if pin is None:
        return []
    return [f"parent: {{reference: '{pin.reference}', digest: '{pin.digest}'}}"]


def _scalar(value: object) -> str:
    return str(value) if isinstance(value, int) else f"'{value}'"


def requested(base: Base, base_packages: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(base_packages) | set(base.packages)))


def path_for(recipe: Path) -> Path:
    return recipe.with_suffix(".lock")


def load(path: Path, recipe: Path | None = None) -> Lock:
    """The lock at `path`; anything that is not one baker wrote is refused in one line that
    names the line and field at fault and how to remake it (for `recipe`, when given)."""
    remake = f"`baker lock --update {recipe or 'RECIPE'}` remakes it"
    raw = read_limited(path, MAX_LOCK_BYTES, "lock", remake)

    def invalid(line: int | None, what: str) -> InputError:
        where = f"{path}:{line}" if line else str(path)
        return InputError(f"{where}: not a valid lock: {what}; {remake}.")

    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise invalid(
            raw.count(b"\n", 0, e.start) + 1, f"byte {e.start} is not UTF-8 text"
        ) from None
    try:
        parsed = parse_yaml(path, text, MAX_LOCK_NODES, "lock")
    except YamlError as e:
        raise invalid(e.line, e.problem) from None
    declared = re.search(r"^# (\d+) packages$", text[:4096], re.M)
    try:
        return _lock_from(parsed.data, int(declared[1]) if declared else None)
    except _Invalid as e:
        what = f"{field_name(e.loc)}: {e.what}" if e.loc else e.what
        at = line_of(parsed.node, e.loc) if parsed.node is not None else None
        raise invalid(at, what) from None


class _Invalid(Exception):
    def __init__(self, loc: tuple[Any, ...], what: str) -> None:
        self.loc, self.what = loc, what


_PACKAGE_FIELDS = {"name": str, "version": str, "arch": str, "archive": str, "path": str,
                   "sha256": str, "size": int}  # fmt: skip
_CHECKS: dict[str, tuple[str, str]] = {  # field: (pattern, what it expects)
    "name": (r"[a-z0-9][a-z0-9+.-]+", "a Debian package name"),
    "requested": (r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?", "a Debian package name"),
    "archive": (r"debian|debian-security", "debian or debian-security"),
    "path": (r"pool/(?!.*\.\./)[A-Za-z0-9+.~_/-]+\.deb", "a pool/... path to a .deb"),
    "sha256": (r"[0-9a-f]{64}", "64 lower-case hex digits"),
    "digest": (r"sha256:[0-9a-f]{64}", "sha256:<64 lower-case hex digits>"),
    "reference": (r"[A-Za-z0-9._:/@-]{1,512}", "a registry reference"),
}


def _lock_from(data: Any, declared: int | None) -> Lock:
    """The Lock in `data` (parsed YAML), every field checked; _Invalid names the first one
    at fault."""
    if not isinstance(data, dict):
        raise _Invalid((), f"expected a mapping of fields, not {shown(data, 40)}")
    fields = ("format", "suite", "arch", "resolved", "requested", "packages")
    for key in data:
        if key not in (*fields, "parent"):
            raise _Invalid((key,), "unknown field")
    for key in fields:
        if key not in data:
            raise _Invalid((), f"{key} is missing")
    if data["format"] != FORMAT:
        raise _Invalid(("format",), f"expected {FORMAT} (got {shown(data['format'], 40)})")
    suite, arch, resolved = (_text(data, (key,)) for key in ("suite", "arch", "resolved"))
    try:
        dt.datetime.fromisoformat(resolved).timestamp()
    except ValueError:
        raise _Invalid(
            ("resolved",), f"expected an ISO 8601 time (got {shown(resolved)})"
        ) from None
    requested = tuple(_text(data, ("requested", i)) for i in range(len(_list(data, "requested"))))
    packages = []
    for i, entry in enumerate(_list(data, "packages")):
        if not isinstance(entry, dict):
            raise _Invalid(("packages", i), "expected a mapping of the package's fields")
        for key in entry:
            if key not in _PACKAGE_FIELDS:
                raise _Invalid(("packages", i, key), "unknown field")
        for key, kind in _PACKAGE_FIELDS.items():
            if key not in entry:
                raise _Invalid(("packages", i), f"{key} is missing")
            if kind is int and (type(entry[key]) is not int or entry[key] < 0):
                raise _Invalid(
                    ("packages", i, key), f"expected a size in bytes (got {shown(entry[key], 40)})"
                )
            if kind is str:
                _text(data, ("packages", i, key))
        packages.append(LockedPackage(**entry))
    names = {p.name for p in packages}
    for i, wanted in enumerate(requested):
        if wanted.partition("=")[0] not in names:
            raise _Invalid(("requested", i), f"{wanted} is not among the packages (cut short?)")
    if declared is not None and declared != len(packages):
        raise _Invalid(("packages",), f"{len(packages)} packages where the lock's header "
                       f"says {declared} (cut short?)")  # fmt: skip
    return Lock(suite, arch, requested, resolved, tuple(packages), _parent_pin(data))


def _parent_pin(data: dict[str, Any]) -> ParentPin | None:
    if "parent" not in data:
        return None
    pin = data["parent"]
    if not isinstance(pin, dict) or set(pin) != {"reference", "digest"}:
        raise _Invalid(("parent",), "expected a mapping of reference and digest")
    return ParentPin(_text(data, ("parent", "reference")), _text(data, ("parent", "digest")))


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise _Invalid((key,), f"expected a list (got {shown(value, 40)})")
    return value


def _text(data: Any, loc: tuple[Any, ...]) -> str:
    """The text at `loc` in `data`, checked against its field's pattern if it has one."""
    value = data
    for part in loc:
        value = value[part]
    if not isinstance(value, str):
        raise _Invalid(loc, f"expected text (got {shown(value, 40)})")
    field = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if field in _CHECKS and not re.fullmatch(_CHECKS[field][0], value):
        raise _Invalid(loc, f"expected {_CHECKS[field][1]} (got {shown(value, 60)})")
    return value


def check_matches(lock: Lock, path: Path, base: Base, wanted: tuple[str, ...]) -> None:
    """A lock resolved for another package list, suite, architecture or parent is refused."""
    if lock.parent is not None and lock.parent.reference != base.image:
        raise InputError(
            f"{path}: pins the parent {lock.parent.reference}, but the recipe names "
            f"{base.image}; run `baker lock --update`."
        )
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
