"""What `baker export --with-sources` carries for an offline rebuild: the recipe, its lock,
every pinned file and every locked .deb, each checked against the build record, and where
each goes under sources/ so the recipe's relative references still resolve; a child's
parent too (baker.bundle.carried_parent). A child without packages of its own and a parent
pinned as written needs no lock."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from baker.artifact import BuildRecord, Carried
from baker.bundle.carried_parent import carry
from baker.bundle.layout import Member
from baker.cache import Cache
from baker.errors import InputError
from baker.hashing import sha256_file
from baker.recipe import lock


def collect_sources(
    artifact: Path, record: BuildRecord, recipe: Path | None, cache: Cache, parent: Carried | None
) -> tuple[list[Member], dict[str, Any]]:
    """The recipe, its lock, every pinned file and every locked .deb, each checked against the
    build record now (they are small, but the .debs are checked again as they stream)."""
    pins = record.pins
    # A child needs no lock when it installs nothing of its own (parent_as_built says).
    if pins.lock is None and record.parent is None:
        raise InputError(
            f"{artifact} was built without a lock, so there is no exact package set to carry; "
            "`baker lock` the recipe and build again."
        )
    recipe = recipe or Path(record.recipe.file)
    if not recipe.is_file():
        raise InputError(
            f"the recipe {recipe} that {artifact} was built from is not here; "
            "give it with --recipe."
        )
    if f"sha256:{sha256_file(recipe)}" != record.recipe.digest:
        raise InputError(f"{recipe} changed since {artifact} was built (its digest differs).")
    if record.parent is not None and parent is None:
        raise InputError(f"{artifact} was built on a parent image, and none was given to carry.")
    lock_path = lock.path_for(recipe)
    locked = lock.load(lock_path) if pins.lock else None
    if locked and pins.lock and locked.digest != pins.lock.digest:
        raise InputError(f"{lock_path} is not the lock {artifact} was built with.")
    here = recipe.resolve().parent
    layout = _layout(here, recipe.name, list(pins.files))
    members = [
        Member(layout[recipe.name], sha256_file(recipe), recipe.stat().st_size, path=recipe),
    ]
    if locked:
        members.append(
            Member(
                layout[lock_path.name],
                sha256_file(lock_path),
                lock_path.stat().st_size,
                path=lock_path,
            )
        )
    files: dict[str, str] = {}
    for rel, pinned in sorted(pins.files.items()):
        path = (here / rel).resolve()
        if not path.is_file() or f"sha256:{sha256_file(path)}" != pinned:
            raise InputError(f"{path}, pinned by {recipe} as {rel}, is missing or changed.")
        files[rel] = layout[rel]
        members.append(
            Member(layout[rel], pinned.removeprefix("sha256:"), path.stat().st_size, path=path)
        )
    debs, missing = {}, []
    for name, pinned in sorted(pins.debs.items()):
        sha = pinned.removeprefix("sha256:")
        deb = cache.deb(sha)
        if deb is None:
            missing.append(name)
            continue
        debs[name] = f"debs/{sha}.deb"
        members.append(Member(debs[name], sha, deb.stat().st_size, path=deb))
    if missing:
        raise InputError(
            f"{len(missing)} locked packages ({', '.join(missing[:5])}"
            f"{'…' if len(missing) > 5 else ''}) are not in the package cache {cache.root}; "
            "a build from the lock fetches them."
        )
    where: dict[str, Any] = {
        "recipe": layout[recipe.name],
        "lock": layout[lock_path.name] if locked else None,
        "files": files,
        "debs": debs,
    }
    if parent is not None and record.parent is not None:  # a child: its parent, as built on
        carried, where["parent"] = carry(parent, record.parent.name, record.parent.digest)
        members += carried
    # Two spellings of one file are one member.
    unique = {m.name: m for m in members}
    return list(unique.values()), where


def _layout(here: Path, recipe_name: str, rels: list[str]) -> dict[str, str]:
    """Where the recipe, its lock and each pinned file (as the recipe names it) go under
    sources/: rooted as high above the recipe's directory as its references climb."""
    depth = 0
    for rel in rels:
        parts = PurePosixPath(os.path.normpath(rel)).parts
        if PurePosixPath(rel).is_absolute():
            raise InputError(
                f"the recipe pins {rel} by an absolute path; a bundle carries only "
                "files named relative to the recipe."
            )
        depth = max(depth, len([p for p in parts if p == ".."]))
    if depth > len(here.parents):
        raise InputError(f"the recipe's files climb above {here.anchor}.")
    root = here.parents[depth - 1] if depth else here
    out = {}
    for rel in [recipe_name, Path(recipe_name).with_suffix(".lock").name, *rels]:
        inside = os.path.relpath(os.path.normpath(here / rel), root)
        out[rel] = f"sources/{PurePosixPath(inside)}"
    return out
