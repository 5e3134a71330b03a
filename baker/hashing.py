"""Streaming hashes and content keys: the identity of files and of build steps."""

from __future__ import annotations

import ast
import errno
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
BAKER_DIR = Path(__file__).resolve().parent
# Where code_digest reads baker's code: the tree this module came from (a test points it at a
# copy it edits).
CODE_ROOT = BAKER_DIR.parent


def sha256_file(path: Path, on_chunk: Callable[[bytes], None] | None = None) -> str:
    """Hash a file in one streaming pass; disk images never sit whole in memory. Holes in a
    sparse file (a 2 GiB raw disk is mostly holes) are hashed as the zeros they read as,
    without reading them. `on_chunk` sees every chunk (holes included), in order."""
    h = hashlib.sha256()

    def feed(data: bytes | memoryview) -> None:
        h.update(data)
        if on_chunk is not None:
            on_chunk(bytes(data))

    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            data_at = _next_data(f.fileno(), pos, size)
            while pos < data_at:  # a hole
                n = min(_CHUNK, data_at - pos)
                feed(_ZEROS if n == _CHUNK else memoryview(_ZEROS)[:n])
                pos += n
            if pos >= size:
                break
            hole_at = _next_hole(f.fileno(), pos, size)
            f.seek(pos)
            while pos < hole_at and (chunk := f.read(min(_CHUNK, hole_at - pos))):
                feed(chunk)
                pos += len(chunk)
    return h.hexdigest()


def _next_data(fd: int, pos: int, size: int) -> int:
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        # ENXIO: nothing but a hole is left. Anything else (no SEEK_DATA here): read it all.
        return size if e.errno == errno.ENXIO else pos


def _next_hole(fd: int, pos: int, size: int) -> int:
    try:
        return min(os.lseek(fd, pos, os.SEEK_HOLE), size)
    except OSError:
        return size


def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no whitespace, so dict order never matters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_key(step: str, config: Any, previous: str | None = None) -> str:
    """A step's key: the hash of its name, of everything that decides its output, and of the
    key of the step before it (osbuild's stage ids work the same way)."""
    payload = {"step": step, "config": config, "previous": previous}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


# Modules that run a build but decide nothing of what a step makes: a step's code digest
# does not follow imports into them (an edit to the progress display rebuilds nothing). The
# recipe package reads the input; what it reads is in every key by its content.
PLUMBING = (
    "baker.build.options",
    "baker.build.runner",
    "baker.build.state",
    "baker.cache",
    "baker.errors",
    "baker.interrupts",
    "baker.leftovers",
    "baker.progress",
    "baker.recipe",
)


def _plumbing(module: str) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in PLUMBING)


def code_digest(*parts: str) -> str:
    """The hash of the code that decides a step's output: the modules named (dotted, like
    `baker.image.disk`) with every baker module they import, directly or not, and the data
    directories and files named (paths under the repository, like `baker/guest`). Part of the
    step's key, so a changed implementation never reuses an output of the old one (mkosi
    keys its cache the same way), while an edit elsewhere (the CLI, the registry client)
    leaves it be."""
    return _code_digest(tuple(sorted(set(parts))), CODE_ROOT)


@functools.cache
def _code_digest(parts: tuple[str, ...], root: Path) -> str:
    files: set[Path] = set()
    for part in parts:
        if part.startswith("baker.") or part == "baker":
            files |= module_closure(part, root)
        elif (root / part).is_file():
            files.add(root / part)
        else:
            files |= {p for p in (root / part).rglob("*") if p.is_file() and _source(p)}
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f"{f.relative_to(root)}".encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
        h.update(b"\1" if os.access(f, os.X_OK) else b"\0")
    return h.hexdigest()


def _source(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc"


def module_file(name: str, root: Path) -> Path | None:
    """The file of baker module `name` under `root`: a module, or a package's __init__."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(name: str, root: Path) -> set[str]:
    """The baker modules module `name` imports anywhere in its text (at the top, or inside a
    function), with the packages a dotted import runs on the way."""
    path = module_file(name, root)
    if path is None:
        return set()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from baker.x import y`: y is a module of its own, or a name in baker.x.
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for dotted in names:
            if dotted != "baker" and not dotted.startswith("baker."):
                continue
            parts = dotted.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in found if m != name and module_file(m, root) is not None}


def module_closure(name: str, root: Path = CODE_ROOT) -> set[Path]:
    """The files of module `name` and of every baker module it imports, transitively, but
    not through PLUMBING."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [m for m in imported(current, root) if not _plumbing(m)]
    return {f for m in seen if (f := module_file(m, root)) is not None}
