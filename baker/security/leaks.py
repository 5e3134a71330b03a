"""The leak check: secrets in a captured image, found without ever printing one.

Three kinds of finding, each named by the file and the kind, never the value:
- the build's own secret values (as written, in hex, and in base64 at each of the three
  alignments it can have inside a longer base64 text), in any file;
- private keys, cloud credentials and tokens that Yelp's detect-secrets recognises, in the
  files no package owns or that differ from what their package shipped (dpkg's md5sums and
  conffile sums): a package's own files are the distribution's, and scanning them would cry
  wolf over test keys and documentation;
- shell histories, and authorized_keys files the recipe did not put there itself.
The tree is read as a stream (the captured tar, or a mounted image's directory), once for the
package sums and once for the files; no file is held in memory beyond DETECT_LIMIT, and a
larger one is read only to look for the build's secret values (the detectors look at small
text files: keys, credentials files, configuration).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

from baker.recipe.safety import Allowed

DETECT_LIMIT = 1 << 20  # a key or a credentials file is small; larger files get the value search
_CHUNK = 1 << 20
_MIN_FORM = 8  # shorter encoded fragments would match by chance
# detect-secrets' guessers (entropy, "password =" keywords, public IPs) flag ordinary config.
_GUESSERS = {"Base64HighEntropyString", "HexHighEntropyString", "KeywordDetector",
             "IPPublicDetector"}  # fmt: skip
HISTORIES = frozenset({".bash_history", ".zsh_history", ".sh_history", ".ash_history",
                       ".history", ".python_history", ".mysql_history", ".psql_history",
                       ".sqlite_history", ".node_repl_history", ".rediscli_history"})  # fmt: skip
# dpkg's and debconf's own records of the packages (control files, templates): made from the
# packages, not by the build. (debconf's config.dat, where preseeded passwords go, is looked at.)
_DPKG_OWN = ("/var/lib/dpkg/info/", "/var/lib/dpkg/status", "/var/lib/dpkg/available",
             "/var/cache/debconf/templates.dat")  # fmt: skip
# Debian 12 merged /bin, /sbin and /lib into /usr: a package's md5sums still say lib/...
_MERGED = ("bin/", "sbin/", "lib/", "lib32/", "lib64/", "libx32/")
_AUTHORIZED = frozenset({"authorized_keys", "authorized_keys2"})


@dataclass(frozen=True, order=True)
class Leak:
    path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path} ({self.kind})"


def forms(name: str, value: str) -> dict[bytes, str]:
    """The byte strings that give `value` away -> what finding names it."""
    raw = value.encode()
    out = {raw: f"the value of secret {name}"}
    out[raw.hex().encode()] = out[raw.hex().upper().encode()] = f"secret {name}, in hex"
    for shift in range(3):  # where the value starts in a longer text's 3-byte groups
        text = base64.b64encode(b"\0" * shift + raw)
        first, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
        fragment = text[first:end]
        if len(fragment) >= _MIN_FORM:
            out[fragment] = f"secret {name}, in base64"
    return {k: v for k, v in out.items() if len(k) >= min(_MIN_FORM, len(raw))}


class Checker:
    """Findings over one tree: feed it `sums` first, then every regular file."""

    def __init__(
        self, secrets: Mapping[str, str], declared: Sequence[str], allow: Sequence[Allowed]
    ) -> None:
        self.forms: dict[bytes, str] = {}
        for name, value in secrets.items():
            self.forms.update(forms(name, value))
        alternatives = sorted(self.forms, key=len, reverse=True)
        self._pattern = (
            re.compile(b"|".join(map(re.escape, alternatives))) if alternatives else None
        )
        self._overlap = max(map(len, alternatives), default=1) - 1
        self.declared = frozenset(declared)
        self.allowed = {a.path: a for a in allow}
        self.sums: dict[str, str] = {}  # path -> md5 hex, of every file a package ships
        self.found: set[Leak] = set()
        self.files = self.looked = 0  # files read; files the detectors looked into
        mapping: dict[str, type[Any]] = get_mapping_from_secret_type_to_class()
        self._detectors = [c() for c in mapping.values() if c.__name__ not in _GUESSERS]
        # Every detector here is a set of regexes: those run over a whole file in one pass
        # each (grouped by their flags) tell which few files need the line-by-line look.
        by_flags: dict[int, list[str]] = {}
        for d in self._detectors:
            for p in d.denylist:
                by_flags.setdefault(p.flags, []).append(f"(?:{p.pattern})")
        self._prefilter = [re.compile("|".join(ps), flags) for flags, ps in by_flags.items()]

    def read_sums(self, name: str, data: bytes) -> None:
        """A package's md5sums file, or dpkg's status (its conffiles' sums)."""
        text = data.decode(errors="replace")
        if name.endswith(".md5sums"):
            for line in text.splitlines():
                digest, _, path = line.partition("  ")
                path = path.lstrip("/")
                if path:
                    self.sums["/" + path] = digest.strip()
                    if path.startswith(_MERGED):
                        self.sums["/usr/" + path] = digest.strip()
            return
        for line in text.splitlines():  # " /etc/x 0123abcd..." under Conffiles:
            parts = line.split()
            if line.startswith(" /") and len(parts) >= 2:
                self.sums[parts[0]] = parts[1]

    def file(self, path: str, size: int, read: Callable[[int], bytes]) -> None:
        self.files += 1
        base = os.path.basename(path)
        if base in HISTORIES and size > 0:
            self._add(path, "a shell history")
        if base in _AUTHORIZED and size > 0 and path not in self.declared:
            self._add(path, "an authorized_keys file the recipe does not declare")
        small = size <= DETECT_LIMIT
        if not (small or self.forms):
            return  # only the detectors would look, and they look at small files
        head, tail = b"", b""
        while chunk := read(_CHUNK):
            if small:
                head += chunk
            if self.forms:  # bytes.find is memchr-fast; a regex of alternatives is not
                window = tail + chunk
                for form, kind in self.forms.items():
                    if form in window:
                        self._add(path, kind)
                tail = window[-self._overlap :] if self._overlap else b""
        if not small or b"\0" in head[:8192] or path.startswith(_DPKG_OWN):
            return  # too big, binary, or dpkg's own record of the packages
        if self.sums.get(path) == hashlib.md5(head, usedforsecurity=False).hexdigest():
            return  # as its package shipped it
        self.looked += 1
        for kind in self._detect(head):
            self._add(path, kind)

    def _detect(self, data: bytes) -> set[str]:
        kinds: set[str] = set()
        text = data.decode(errors="replace")
        if not any(p.search(text) for p in self._prefilter):
            return kinds
        for line in text.splitlines():
            line = line[:4096]
            for d in self._detectors:
                if d.secret_type not in kinds and any(True for _ in d.analyze_string(line)):
                    kinds.add(d.secret_type)
        return kinds

    def _add(self, path: str, kind: str) -> None:
        if path not in self.allowed:
            self.found.add(Leak(path, kind))


def _is_sums(path: str) -> bool:
    return path == "/var/lib/dpkg/status" or (
        path.startswith("/var/lib/dpkg/info/") and path.endswith(".md5sums")
    )


def check_tar(tar: Path, checker: Checker) -> list[Leak]:
    """Findings in a root tree held as a tar (the capture step's), read twice as a stream."""
    for member, _, f in _members(tar):
        if _is_sums(member):
            checker.read_sums(member, f.read(64 << 20))
    for member, size, f in _members(tar):
        checker.file(member, size, f.read)
    return sorted(checker.found)


def _members(tar: Path) -> Iterator[tuple[str, int, IO[bytes]]]:
    with tarfile.open(tar, "r|") as t:
        for m in t:
            f = t.extractfile(m) if m.isreg() else None
            if f is not None:
                name = m.name[2:] if m.name.startswith("./") else m.name
                yield "/" + name.lstrip("/"), m.size, f


def check_tree(root: Path, checker: Checker) -> list[Leak]:
    """Findings in a mounted root tree (an image opened read-only)."""
    info = root / "var/lib/dpkg/info"
    for p in sorted(info.glob("*.md5sums")) if info.is_dir() else ():
        checker.read_sums(f"/var/lib/dpkg/info/{p.name}", p.read_bytes())
    status = root / "var/lib/dpkg/status"
    if status.is_file():
        checker.read_sums("/var/lib/dpkg/status", status.read_bytes())
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(top, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            path = "/" + os.path.relpath(full, root)
            with open(full, "rb") as f:
                checker.file(path, os.fstat(f.fileno()).st_size, f.read)
    return sorted(checker.found)
