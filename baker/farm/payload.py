"""A build job as content: the recipe, its lock and every file it pins, each with its sha256,
laid out by their paths inside the project. A worker needs no checkout: it lays the files out
again in a directory of its own, checking each digest, and builds from there; the step keys
depend on content, not on where the project lies, so the worker's image is the submitter's.

A child image's job also carries the key its parent must be signed by and, for a parent
named by its recipe (`recipe:FILE`), that recipe's files and the parent's name and digest:
the worker fetches that very image from the farm's store (baker.farm.store.fetch). Images
travel through the store, never through the broker.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from baker.errors import InputError
from baker.recipe import lock
from baker.recipe.spec import Spec

MAX_BYTES = 64 * 1024 * 1024  # a job travels through the broker: recipes, not disks


def make(
    spec: Spec,
    variables: dict[str, str],
    parent: Spec | None = None,
    parent_digest: str | None = None,
) -> dict[str, Any]:
    """The job for `spec`; `parent` is the spec its `recipe:FILE` parent names, which the
    farm built as `parent_digest`."""
    root = spec.root.resolve()
    paths = [*_paths(spec), *(_paths(parent) if parent else [])]
    if spec.trust is not None and spec.trust.is_file():
        paths.append(spec.trust.resolve())
    files, total = [], 0
    for path in dict.fromkeys(paths):
        data = path.read_bytes()
        total += len(data)
        if total > MAX_BYTES:
            raise InputError(
                f"{spec.source}: its files pass {MAX_BYTES >> 20} MiB; too much for a job."
            )
        if not path.is_relative_to(root):
            raise InputError(f"{spec.source}: {path} is outside its project {root}.")
        files.append(
            {
                "path": path.relative_to(root).as_posix(),
                "sha256": hashlib.sha256(data).hexdigest(),
                "data": base64.b64encode(data).decode(),
            }
        )
    return {
        "name": spec.name,
        "recipe": spec.source.resolve().relative_to(root).as_posix(),
        "files": files,
        "variables": dict(sorted(variables.items())),
        "accel": getattr(spec.recipe.backend, "accel", "auto"),
        "backend": spec.recipe.backend.type,
        "arch": spec.recipe.base.arch,
        "parent": {"name": parent.name, "digest": parent_digest} if parent else None,
    }


def _paths(spec: Spec) -> list[Path]:
    """The recipe, every file it pins, and its lock."""
    paths = [spec.source.resolve(), *(p.resolve() for p, _ in spec.files.values())]
    lock_file = lock.path_for(spec.source)
    if lock_file.exists():
        paths.append(lock_file.resolve())
    return paths


def lay_out(payload: dict[str, Any], into: Path) -> Path:
    """Write the job's files under `into` (checked: plain relative paths, the right digests);
    returns the recipe's path there."""
    for f in payload["files"]:
        rel = PurePosixPath(f["path"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise InputError(f"the job names the file {f['path']!r}, outside its project.")
        data = base64.b64decode(f["data"])
        if hashlib.sha256(data).hexdigest() != f["sha256"]:
            raise InputError(f"the job's {f['path']} does not match its sha256.")
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return into / str(payload["recipe"])
