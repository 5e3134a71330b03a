"""`baker rebuild --check`: build an artifact's recipe again from its recorded pins, in a
fresh work directory and without earlier step outputs, and compare the image digests."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from baker import recipe as recipes
from baker.artifact import (
    BUILD,
    IMAGE,
    BuildRecord,
    Carried,
    carried_in,
    check_out_dir,
    read_record,
    recorded_root,
)
from baker.build import parent
from baker.build.options import AccelChoice, Options
from baker.build.pipeline import build
from baker.cache import Cache
from baker.errors import InputError
from baker.leftovers import work_root
from baker.progress import Reporter
from baker.recipe import lock
from baker.recipe.spec import Spec


@dataclass(frozen=True)
class Rebuilt:
    expected: str
    actual: str
    recipe_changed: bool
    difference: str  # the rendered diff when the digests differ

    @property
    def reproduced(self) -> bool:
        return self.expected == self.actual


def check(
    artifact: Path,
    reporter: Reporter,
    accel: AccelChoice = "auto",
    recipe: Path | None = None,
    root: Path | None = None,
    keep: Path | None = None,
) -> Rebuilt:
    """`recipe` overrides the recipe path build.json records: an imported bundle's
    sources sit elsewhere than where the artifact was built. The project root is `root`,
    else the one the build recorded, found again beside the recipe. A child's parent is the
    one an imported bundle carried into the artifact, else where the build found it. With
    `keep`, the rebuilt artifact is published into keep/NAME (as `build --out` does) instead
    of thrown away."""
    if keep is not None:
        check_out_dir(keep, "--keep")
    record = read_record(artifact)
    expected = record.image.digest
    if expected is None:
        raise InputError(f"{artifact}/{BUILD}: records no image digest to compare with.")
    if record.image.reproducible is False:
        raise InputError(
            f"{artifact}: its image is not reproducible ({record.image.why_not_reproducible}); "
            "there is nothing to rebuild it to."
        )
    recorded = Path(record.recipe.file)
    if recipe is not None and not recipe.is_file():
        raise InputError(f"--recipe {recipe}: no such recipe file.")
    recipe_file = recipe or recorded
    if not recipe_file.exists():
        raise InputError(
            f"{artifact}: its recipe {recipe_file} is not here; run the rebuild from the "
            "directory the artifact was built in, or give the recipe with --recipe."
        )
    spec = recorded_spec(record, recipe_file, root)
    changed = f"sha256:{spec.digest}" != record.recipe.digest
    if changed:
        reporter.info(f"{recipe_file} changed since the build (its digest differs)")
    scratch = Path(tempfile.mkdtemp(prefix="baker-rebuild-", dir=work_root()))
    try:
        scratch.chmod(0o711)
        opts = Options(
            out=keep or scratch / "out",
            parents=recorded_parents(record, spec),
            carried_parent=carried_in(artifact, record),
            accel=accel,
            cache=Cache(steps_root=scratch / "steps"),
            work_root=scratch,
            measure=False,
            save_machine=False,
        )
        result = build(spec, opts, reporter)
        difference = ""
        if result.digest != expected:
            from baker.inspect import diff

            d = diff.diff(artifact / IMAGE, result.artifact / IMAGE)
            difference = diff.render(d)
        return Rebuilt(expected, result.digest, changed, difference)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def recorded_spec(record: BuildRecord, recipe_file: Path, root: Path | None = None) -> Spec:
    """The recipe loaded as the build recorded it: its variables, its project root (`root`,
    else the recorded one found again beside the recipe)."""
    overrides = {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in record.variables.items()
    }
    return recipes.load(recipe_file, overrides, root or recorded_root(record, recipe_file))


def recorded_parents(record: BuildRecord, spec: Spec) -> Path | None:
    """Where a `recipe:` parent is found again: beside where it was when the image was built
    (its recorded source); None for any other kind of parent."""
    if record.parent is None or spec.parent_recipe is None:
        return None
    return Path(record.parent.source).parent


def parent_as_built(artifact: Path, recipe: Path | None, cache: Cache) -> Carried | None:
    """A child's parent found and verified again as its build found it, with the key that
    verifies it, for a bundle to carry; None for an image with no parent. The parent must be
    the one the child recorded, and a child with packages of its own must have been locked."""
    record = read_record(artifact)
    recorded = record.parent
    if recorded is None:
        return None
    recipe_file = recipe or Path(record.recipe.file)
    if not recipe_file.is_file():
        return None  # the sources' own check names the missing recipe
    spec = recorded_spec(record, recipe_file)
    if spec.recipe.base.packages and record.pins.lock is None:
        raise InputError(
            f"{artifact} installed packages of its own without a lock, so there is no exact "
            "package set to carry; `baker lock` the recipe and build again."
        )
    locked = lock.load(lock.path_for(recipe_file)) if record.pins.lock else None
    parents = recorded_parents(record, spec) or Path("out")
    found = parent.resolve(spec, cache, parents=parents, tag_pin=locked.parent if locked else None)
    assert found is not None
    if found.pin.digest != recorded.digest:
        raise InputError(
            f"{artifact} was built on {recorded.name} {recorded.digest}, but its recipe's parent "
            f"is now {found.pin.digest} ({found.artifact}); export the parent it was built on."
        )
    key = parent.trust_key(spec)
    assert key is not None  # resolve() verified the parent with it
    return Carried(found.artifact, key)
