"""What tonight's mirror would change in an image: the image's packages (from its SBOM) that
the suites an unlocked recipe installs from now serve at another version.

The mirror's InRelease files move several times a day (any package of the whole archive,
and every security advisory), so comparing them rebuilt every image from scratch most nights
for nothing. The Packages indices say what apt would install tonight: if none of the image's
packages moved, the image's own dependencies did not either, and the cached base is still
tonight's. Only the image's packages are kept while the index streams by."""

from __future__ import annotations

import hashlib
import lzma
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from debian.debian_support import Version

from baker.errors import BuildError
from baker.image import debian
from baker.recipe.spec import Base

_LIMIT = 256 * 1024 * 1024  # bookworm main's index is ~45 MiB unpacked; more is not one


@dataclass(frozen=True)
class Moved:
    name: str
    installed: str
    tonight: str

    def __str__(self) -> str:
        return f"{self.name} {self.installed} → {self.tonight}"


@dataclass(frozen=True)
class Tonight:
    moved: tuple[Moved, ...]
    state: str  # sha256 over the candidate versions of the image's packages, for the history


Index = dict[str, Version]  # Package -> its highest Version in one Packages index


def compare(
    base: Base, installed: dict[str, str], fetched: dict[str, Index], timeout: float = 60
) -> Tonight | None:
    """The image's packages at other versions tonight, or None when the mirror did not
    answer (the build then decides, as without a nightly). `fetched` keeps each index read
    tonight, for the next recipe on the same suites."""
    try:
        lines = debian.sources(base)
    except BuildError:  # no mirror configured: the build will say so in its own words
        return None
    candidates: dict[str, Version] = {}
    try:
        for line in sorted(lines):
            _, uri, suite, *_ = line.split()  # deb URI SUITE COMPONENTS (debian.sources)
            url = f"{uri.rstrip('/')}/dists/{suite}/main/binary-{base.arch}/Packages.xz"
            if url not in fetched:
                fetched[url] = _index(url, timeout)
            for name in installed.keys() & fetched[url].keys():
                version = fetched[url][name]
                if name not in candidates or version > candidates[name]:
                    candidates[name] = version  # apt takes the highest of equal priorities
    except (urllib.error.URLError, OSError, ValueError, lzma.LZMAError):
        return None
    moved = tuple(
        Moved(name, installed[name], str(v))
        for name, v in sorted(candidates.items())
        if v != Version(installed[name])
    )
    h = hashlib.sha256()
    for name, v in sorted(candidates.items()):
        h.update(f"{name}={v}\n".encode())
    return Tonight(moved, f"sha256:{h.hexdigest()}")


def _index(url: str, timeout: float) -> Index:
    index: Index = {}
    for name, version in _stanzas(url, timeout):
        if name not in index or version > index[name]:
            index[name] = version
    return index


def _stanzas(url: str, timeout: float) -> Iterator[tuple[str, Version]]:
    """(Package, Version) of each stanza of an xz-compressed Packages index, streamed."""
    unpack = lzma.LZMADecompressor()
    seen, pending, name = 0, b"", None
    with urllib.request.urlopen(url, timeout=timeout) as r:
        while chunk := r.read(1 << 20):
            data = unpack.decompress(chunk)
            seen += len(data)
            if seen > _LIMIT:
                raise ValueError(f"{url} unpacks to more than {_LIMIT} bytes")
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.startswith(b"Package: "):
                    name = line[9:].strip().decode()
                elif line.startswith(b"Version: ") and name is not None:
                    yield name, Version(line[9:].strip().decode())
                    name = None
