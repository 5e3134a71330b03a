"""`baker rebuild --check`: build an artifact's recipe again from its recorded pins, in a
fresh work directory and without earlier step outputs, and compare the image digests."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from baker import recipe as recipes
from baker.artifact import BUILD, IMAGE, check_out_dir, read_record, recorded_root
from baker.build.options import AccelChoice, Options
from baker.build.pipeline import build
from baker.cache import Cache
from baker.errors import InputError
from baker.leftovers import work_root
from baker.progress import Reporter


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
    else the one the build recorded, found again beside the recipe. With `keep`, the rebuilt
    artifact is published into keep/NAME (as `build --out` does) instead of thrown away."""
    if keep is not None:
        check_out_dir(keep, "--keep")
    record = read_record(artifact)
    expected = record.image.digest
    if expected is None:
        raise InputError(f"{artifact}/{BUILD}: records no image digest to compare with.")
    recorded = Path(record.recipe.file)
    variables = record.variables
    if recipe is not None and not recipe.is_file():
        raise InputError(f"--recipe {recipe}: no such recipe file.")
    recipe_file = recipe or recorded
    if not recipe_file.exists():
        raise InputError(
            f"{artifact}: its recipe {recipe_file} is not here; run the rebuild from the "
            "directory the artifact was built in, or give the recipe with --recipe."
        )
    overrides = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in variables.items()}
    spec = recipes.load(recipe_file, overrides, root or recorded_root(record, recipe_file))
    changed = f"sha256:{spec.digest}" != record.recipe.digest
    if changed:
        reporter.info(f"{recipe_file} changed since the build (its digest differs)")
    scratch = Path(tempfile.mkdtemp(prefix="baker-rebuild-", dir=work_root()))
    try:
        scratch.chmod(0o711)
        # A `recipe:` parent is found where it was when the image was built.
        recorded_parent = record.parent if spec.parent_recipe else None
        parents = Path(recorded_parent.source).parent if recorded_parent else None
        opts = Options(
            out=keep or scratch / "out",
            parents=parents,
            accel=accel,
            cache=Cache(steps_root=scratch / "steps"),
            work_root=scratch,
            measure=False,
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
