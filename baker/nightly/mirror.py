"""What the mirror serves tonight, as one digest: the InRelease files of the suites an
unlocked recipe installs from. Debian rewrites them whenever a package changes, so an
unchanged digest means tonight's mirror would install exactly what last night's did."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request

from baker.errors import BuildError
from baker.image import debian
from baker.recipe.spec import Base

_LIMIT = 4 * 1024 * 1024  # an InRelease is ~150 KiB; more is not one


def state(base: Base, timeout: float = 30) -> str | None:
    """sha256 over the suites' InRelease files, or None when the mirror did not answer (the
    build then decides, as without a nightly)."""
    h = hashlib.sha256()
    try:
        lines = debian.sources(base)
    except BuildError:  # no mirror configured: the build will say so in its own words
        return None
    for line in sorted(lines):
        _, uri, suite, *_ = line.split()  # deb URI SUITE COMPONENTS (debian.sources)
        url = f"{uri.rstrip('/')}/dists/{suite}/InRelease"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                body = r.read(_LIMIT + 1)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        if len(body) > _LIMIT:
            return None
        h.update(url.encode() + b"\0" + body)
    return f"sha256:{h.hexdigest()}"
