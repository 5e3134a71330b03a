"""Downloading a large file over HTTP(S): streamed to disk, hashed as it streams, and resumed
from where an interrupted download stopped (an HTTP Range request), so a multi-gigabyte cloud
image is never held in memory and never fetched twice."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from baker.errors import BuildError

CHUNK = 1 << 20
PROGRESS_EVERY_S = 5.0


def fetch(url: str, part: Path, on_progress: Callable[[str], None]) -> str:
    """Download `url` into `part`, going on from the bytes `part` already holds when the
    server honours a range (else from the start); returns the sha256 of the whole file."""
    digest, have = hashlib.sha256(), 0
    if part.exists():
        with part.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                have += len(chunk)
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after the bytes already here: it was complete
            return digest.hexdigest()
        raise BuildError(f"cannot download {url}: HTTP {e.code} {e.reason}.") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise BuildError(f"cannot download {url}: {reason}.") from None
    with response:
        if have and response.status != 206:  # the range was not honoured: start again
            digest, have = hashlib.sha256(), 0
            part.unlink()
        if have:
            on_progress(f"resuming {url} after {have >> 20} MiB")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        shown = time.monotonic()
        try:
            with part.open("ab") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    have += len(chunk)
                    if time.monotonic() - shown >= PROGRESS_EVERY_S:
                        shown = time.monotonic()
                        of = f" of {total >> 20} MiB" if total else " MiB"
                        on_progress(f"downloaded {have >> 20}{of}")
        except (OSError, urllib.error.URLError) as e:
            raise BuildError(
                f"the download of {url} stopped after {have >> 20} MiB ({e}); "
                "building again resumes it."
            ) from None
    if total is not None and have != total:
        raise BuildError(
            f"the download of {url} ended after {have} of {total} bytes; building again resumes it."
        )
    return digest.hexdigest()
