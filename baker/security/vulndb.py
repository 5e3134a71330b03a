"""The vulnerability database a scan reads: a pinned snapshot of the Debian Security Tracker's
JSON or of OSV's Debian records (a JSON array, or a zip of record files), normalized to one
model, and fetched into place. A snapshot is untrusted input: read bounded, and refused with
one sentence naming the file, never a traceback, when it is neither format."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from debian.debian_support import Version

from baker.errors import BuildError, InputError
from baker.evidence.vuln_report import SEVERITIES

DEFAULT_URL = "https://security-tracker.debian.org/tracker/data/json"
# The tracker's JSON is some tens of MiB, decoded a package at a time: room to grow, and a
# bound on what a file a recipe names can make baker hold in memory.
MAX_FILE = 256 << 20
MAX_MEMBER = 16 << 20

RANK = {s: len(SEVERITIES) - i for i, s in enumerate(SEVERITIES)}
# OSV names a Debian release by its number, the tracker and the recipes by its codename.
CODENAMES = {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}
_URGENCY = {"unimportant": "none", "low": "low", "medium": "medium", "moderate": "medium",
            "high": "high", "critical": "critical"}  # fmt: skip
_CVE = re.compile(r"(?:DEBIAN-)?(CVE-\d{4}-\d+)")
_WS = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True, slots=True)
class Advisory:
    """One issue in one source package of one release."""

    id: str
    aliases: tuple[str, ...]
    source: str
    release: str
    fixed: str | None  # None: no fix in the release yet (or, if not_affected, none needed)
    not_affected: bool
    severity: str  # one of SEVERITIES


@dataclass(frozen=True)
class VulnDB:
    kind: str  # "debian-tracker" or "osv"
    digest: str  # "sha256:<hex>" of the file's bytes
    releases: frozenset[str]  # every release the file covers, kept or not
    index: dict[tuple[str, str], tuple[Advisory, ...]]  # (release, source) -> sorted by id

    def advisories(self, release: str, source: str) -> tuple[Advisory, ...]:
        return self.index.get((release, source), ())


class _Bad(Exception):
    """What is wrong with a snapshot, as the end of a sentence naming it."""


def load(path: Path, *, releases: Collection[str] | None = None, limit: int = MAX_FILE) -> VulnDB:
    """The snapshot at `path`, keeping only `releases` (codenames) if given: the whole tracker
    is about a million advisories, and a scan needs one release's."""
    try:
        return _load(path, None if releases is None else frozenset(releases), limit)
    except _Bad as e:
        raise InputError(f"{path} is not a usable vulnerability database: {e}.") from None
    except OSError as e:
        why = e.strerror or e
        raise InputError(f"cannot read the vulnerability database {path}: {why}.") from None


def _load(path: Path, wanted: frozenset[str] | None, limit: int) -> VulnDB:
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise _Bad(f"it is {size} bytes, over the limit of {limit}")
        data = f.read(size + 1)  # sized by fstat: read(limit) would allocate all of limit
    if len(data) > limit:
        raise _Bad(f"it grew past the limit of {limit} bytes as it was read")
    digest, found = "sha256:" + hashlib.sha256(data).hexdigest(), _Found(wanted)
    if data.startswith(b"PK"):
        kind = "osv"
        _zip(data, found, limit)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise _Bad(f"it is neither JSON nor a zip archive ({e})") from None
        del data  # the text is all that is needed, and it may be a gigabyte
        kind = "debian-tracker" if text.startswith("{", _skip(text, 0)) else "osv"
        for key, value in _pairs(text):
            if key is None:
                _osv_record(value, found)
            else:
                _tracker_package(key, value, found)
    if not found.releases:
        raise _Bad("it holds no advisories (an empty snapshot would pass every image)")
    index: dict[tuple[str, str], list[Advisory]] = {}
    for (release, source, _), a in sorted(found.items()):
        index.setdefault((release, source), []).append(a)
    return VulnDB(kind, digest, frozenset(found.releases), {k: tuple(v) for k, v in index.items()})


class _Found(dict[tuple[str, str, str], Advisory]):
    """Advisories by (release, source, id): two records of one issue become one."""

    def __init__(self, wanted: frozenset[str] | None) -> None:
        super().__init__()
        self.wanted, self.releases = wanted, set[str]()

    def add(self, a: Advisory) -> None:
        self.releases.add(a.release)
        if self.wanted is None or a.release in self.wanted:
            key = (a.release, a.source, a.id)
            self[key] = _merge(self[key], a) if key in self else a


def _merge(a: Advisory, b: Advisory) -> Advisory:
    """Two records of one issue (a DSA and the CVE it fixes): the later fix, since a scan must
    not pass what either still calls affected; a fix over none; not-affected only if both say
    so; the graver assessed severity. The result does not depend on the records' order."""
    fixes = [f for f in (a.fixed, b.fixed) if f is not None]
    known = [s for s in (a.severity, b.severity) if s != "unknown"]
    return Advisory(
        a.id, tuple(sorted({*a.aliases, *b.aliases})), a.source, a.release,
        _later(*fixes) if len(fixes) == 2 else next(iter(fixes), None),
        a.not_affected and b.not_affected,
        max(known, key=RANK.__getitem__) if known else "unknown",
    )  # fmt: skip


def _later(a: str, b: str) -> str:
    try:
        va, vb = Version(a), Version(b)
    except ValueError:
        return max(a, b)  # a version dpkg would refuse: any choice, as long as a stable one
    return a if va > vb or (va == vb and a >= b) else b


def severity_of(urgency: object) -> str:
    """Debian's urgency ("low**", "unimportant", "not yet assigned") as one of SEVERITIES."""
    if not isinstance(urgency, str):
        return "unknown"
    return _URGENCY.get(urgency.rstrip("*").strip().lower(), "unknown")


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


def _pairs(text: str) -> Iterator[tuple[str | None, Any]]:
    """The top-level object's (key, value) pairs or array's (None, item), decoded one at a
    time: the tracker's whole tree at once would take ten times the file's size in memory."""
    decoder, i = json.JSONDecoder(), _skip(text, 0)
    close = {"{": "}", "[": "]"}.get(text[i : i + 1])
    if close is None:
        raise _Bad("it is neither a JSON object (the tracker's), a JSON array of OSV records, "
                   "nor a zip archive of them")  # fmt: skip
    i = _skip(text, i + 1)
    try:
        while not text.startswith(close, i):
            key = None
            if close == "}":
                key, i = decoder.raw_decode(text, i)
                i = _skip(text, i)
                if not isinstance(key, str) or not text.startswith(":", i):
                    raise _Bad(f"it is not JSON (no key and ':' at character {i})")
                i = _skip(text, i + 1)
            value, i = decoder.raw_decode(text, i)
            yield key, value
            i = _skip(text, i)
            if text.startswith(",", i):
                i = _skip(text, i + 1)
            elif not text.startswith(close, i):
                raise _Bad(f"it is not JSON (no ',' or '{close}' at character {i})")
    except json.JSONDecodeError as e:
        raise _Bad(f"it is not JSON ({e})") from None
    if _skip(text, i + 1) != len(text):
        raise _Bad(f"it is not JSON (more data after character {i})")


def _tracker_package(source: str, issues: Any, found: _Found) -> None:
    if not isinstance(issues, dict):
        raise _Bad(f"the tracker entry {source!r} is a {type(issues).__name__}, not an object")
    source = sys.intern(source)
    for vid, issue in issues.items():
        releases = issue.get("releases", {}) if isinstance(issue, dict) else None
        if not isinstance(releases, dict):
            raise _Bad(f"the tracker's {vid} in {source} has no releases object")
        for codename, r in releases.items():
            if not isinstance(r, dict):
                raise _Bad(f"the tracker's {vid} in {source} for {codename} is not an object")
            fixed = r.get("fixed_version")
            # "open" and "undetermined": no fix in the release. "resolved" without a version
            # is unheard of, and is reported (as no fix) rather than passed in silence.
            if r.get("status") != "resolved" or not isinstance(fixed, str) or not fixed:
                fixed = None
            a = Advisory(vid, (), source, sys.intern(codename), None if fixed == "0" else fixed,
                         fixed == "0", severity_of(r.get("urgency")))  # fmt: skip
            found.add(a)  # fixed "0": the release never had the flaw


def _osv_record(rec: Any, found: _Found) -> None:
    rid = rec.get("id") if isinstance(rec, dict) else None
    if not isinstance(rid, str) or not isinstance(rec.get("affected", []), list):
        raise _Bad("it holds an OSV record without an id or a list of affected packages")
    if rec.get("withdrawn"):
        return
    related = [a for k in ("aliases", "upstream") for a in _strings(rec.get(k))]
    # One finding per CVE: a DEBIAN-CVE record is its CVE; a DSA or DLA stands for each CVE it
    # fixes (so it merges with their records), and for itself only when it names none.
    own = _CVE.fullmatch(rid)
    ids = [own.group(1)] if own else [m.group(1) for a in related if (m := _CVE.fullmatch(a))]
    named = {rid, *(a for a in related if own or not _CVE.fullmatch(a))}
    for aff in rec.get("affected", []):
        package = aff.get("package") if isinstance(aff, dict) else None
        if not isinstance(package, dict):
            raise _Bad(f"its OSV record {rid} has an affected entry without a package")
        base, _, number = str(package.get("ecosystem")).partition(":")
        release, name = CODENAMES.get(number) if base == "Debian" else None, package.get("name")
        fix = _osv_fix(aff.get("ranges"))
        if release is None or not isinstance(name, str) or fix is None:
            continue  # another distribution, a release we do not know, or nothing to compare
        urgencies = [_get(aff, "ecosystem_specific"), _get(aff, "database_specific"),
                     _get(rec, "database_specific")]  # fmt: skip
        severity = next((s for u in urgencies if (s := severity_of(u)) != "unknown"), None)
        severity = severity or _cvss_severity(aff.get("severity"), rec.get("severity"))
        for vid in sorted(set(ids)) or [rid]:
            aliases = tuple(sorted(named - {vid}))
            found.add(Advisory(vid, aliases, sys.intern(name), release, *fix, severity))


def _osv_fix(ranges: Any) -> tuple[str | None, bool] | None:
    """(fixed, not_affected) from ECOSYSTEM ranges; None if there are none."""
    ranges = [r for r in ranges or () if isinstance(r, dict) and r.get("type") == "ECOSYSTEM"]
    fixes: list[str] = []
    still_open = False
    for r in ranges:
        events = [e for e in r.get("events") or () if isinstance(e, dict)]
        fixes += [e["fixed"] for e in events if isinstance(e.get("fixed"), str)]
        # Open unless the last event is a fix (introduced, last_affected: no fix known).
        still_open = still_open or not events or not isinstance(events[-1].get("fixed"), str)
    if not ranges or still_open:
        return (None, False) if ranges else None
    if all(f == "0" for f in fixes):
        return None, True
    # Several introduced/fixed pairs fold into the latest fix: a version between two ranges is
    # then reported, never a vulnerable one passed.
    latest = fixes[0]
    for f in fixes[1:]:
        latest = _later(latest, f)
    return latest, False


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _get(d: dict[str, Any], key: str) -> Any:
    inner = d.get(key)
    return inner.get("urgency") if isinstance(inner, dict) else None


def _zip(data: bytes, found: _Found, limit: int) -> None:
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith(".json")]
            for m in sorted(members, key=lambda m: m.filename):
                if m.file_size > MAX_MEMBER:
                    raise _Bad(f"its member {m.filename} unpacks to {m.file_size} bytes, "
                               f"over the limit of {MAX_MEMBER}")  # fmt: skip
                with archive.open(m) as member:
                    raw = member.read(MAX_MEMBER + 1)
                total += len(raw)
                if len(raw) > MAX_MEMBER or total > limit:
                    raise _Bad(f"it unpacks past the limit at its member {m.filename}")
                try:
                    record = json.loads(raw)
                except ValueError as e:
                    raise _Bad(f"its member {m.filename} is not JSON ({e})") from None
                for r in record if isinstance(record, list) else [record]:
                    _osv_record(r, found)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise _Bad(f"it is not a readable zip archive ({e})") from None


_CVSS = {"AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}, "AC": {"L": 0.77, "H": 0.44},
         "UI": {"N": 0.85, "R": 0.62}, "CIA": {"H": 0.56, "L": 0.22, "N": 0.0}}  # fmt: skip
_BANDS = ((9.0, "critical"), (7.0, "high"), (4.0, "medium"), (0.1, "low"), (0.0, "none"))


def _cvss_severity(*lists: Any) -> str:
    """The band of the gravest CVSS v3 base score in the first OSV severity list with one."""
    for entries in lists:
        scores = [_cvss3(e.get("score")) for e in entries or () if isinstance(e, dict)]
        if known := [s for s in scores if s is not None]:
            return next(band for floor, band in _BANDS if max(known) >= floor)
    return "unknown"


def _cvss3(vector: object) -> float | None:
    """The base score of a CVSS:3.x vector, by the specification's formula."""
    if not isinstance(vector, str) or not vector.startswith("CVSS:3."):
        return None
    m = dict(p.split(":", 1) for p in vector.split("/")[1:] if ":" in p)
    changed = m.get("S") == "C"
    try:
        pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[m["PR"]]
        av, ac, ui = _CVSS["AV"][m["AV"]], _CVSS["AC"][m["AC"]], _CVSS["UI"][m["UI"]]
        c, i, a = (_CVSS["CIA"][m[k]] for k in ("C", "I", "A"))
    except KeyError:
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    total = min((impact + 8.22 * av * ac * pr * ui) * (1.08 if changed else 1), 10)
    n = round(total * 100_000)  # CVSS 3.1's Roundup, free of floating-point error
    return n / 100_000 if n % 10_000 == 0 else (n // 10_000 + 1) / 10


def fetch(url: str, to: Path, timeout: float = 60, limit: int = MAX_FILE) -> str:
    """Download a snapshot to `to`, atomically and only if it loads; its "sha256:<hex>"."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise InputError(f"{url} is not an http(s) URL of a vulnerability database.")
    try:
        fd, name = tempfile.mkstemp(dir=to.parent, prefix=f".{to.name}.", suffix=".part")
    except OSError as e:
        raise InputError(f"cannot write the vulnerability database to {to}: {e}.") from None
    part = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            digest = _download(url, f, timeout, limit)
            f.flush()
            os.fsync(f.fileno())
        part.chmod(0o644)  # not mkstemp's 0600: a snapshot is no secret, and others may read it
        try:
            _load(part, frozenset(), limit)  # keeping no release: the whole file checked, cheaply
        except _Bad as e:
            raise InputError(f"{url} gave no usable vulnerability database: {e}.") from None
        os.replace(part, to)
    finally:
        part.unlink(missing_ok=True)
    return digest


def _download(url: str, f: IO[bytes], timeout: float, limit: int) -> str:
    h, n = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length") or ""
            too_big = length.isdigit() and int(length) > limit
            while not too_big and (chunk := response.read(1 << 20)):
                n += len(chunk)
                too_big = n > limit
                h.update(chunk)
                f.write(chunk)
    except urllib.error.HTTPError as e:
        e.close()
        raise BuildError(f"cannot download {url}: HTTP {e.code} {e.reason}.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise BuildError(f"cannot download {url}: {reason}.") from None
    if too_big:
        raise InputError(f"{url} sends more than {limit} bytes, over the limit for a snapshot.")
    return "sha256:" + h.hexdigest()
