"""A vendor's disk taken as it is (base.capture: as-is), for a layout baker does not re-make:
asked for in the recipe (a re-make of such an image is refused with the field to write),
checked before anything boots as a re-made image is (an XFS root read too), built by its own
steps, and said to be not reproducible in build.json, by `baker inspect`, and by `baker
rebuild --check`, which has nothing to rebuild it to. The e2e test bakes on an image mkosi
made (tests/e2e/test_e2e_vendor.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from support.artifacts import image_fixture, make_artifact, quiet
from support.vendor_images import Layout, make_vendor_image, write_recipe

from baker import recipe
from baker.backends.fake import FakeBackend
from baker.build import rebuild, vendor
from baker.build.pipeline import steps
from baker.cache import Cache
from baker.errors import InputError
from baker.hashing import sha256_file
from baker.inspect import summary

__all__ = ["image_fixture"]  # a fixture

AS_IS = "  capture: as-is\n"
HINT = "write base.capture: as-is to take its disk as it is (not reproducible)."


def _open(path: Path, tmp_path: Path) -> vendor.Opened:
    spec = recipe.load(path)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        return vendor.open_tree(spec, vendor.obtain(spec, Cache(tmp_path / "c"), print), work,
                                stack)  # fmt: skip


@pytest.mark.parametrize(
    ("layout", "why"),
    [
        ("gpt-xfs", "its root filesystem is xfs, not ext4"),
        ("mbr-ext4", "its layout is a dos table with 1 data partition"),
    ],
)
def test_a_layout_baker_does_not_remake_is_refused_with_the_field_to_write(
    tmp_path: Path, layout: Layout, why: str
) -> None:
    image = make_vendor_image(tmp_path / "made", layout=layout)
    path = write_recipe(tmp_path, "../made/vendor.qcow2", sha256_file(image))
    with pytest.raises(InputError) as e:
        _open(path, tmp_path)
    assert str(e.value) == (
        f"{path}:3: base.image: {image}: {why}, so baker cannot re-make its layout; {HINT}"
    )


@pytest.mark.parametrize("layout", ["gpt-xfs", "mbr-ext4", "gpt-ext4"])
def test_as_is_the_image_is_read_and_checked_before_it_boots(
    tmp_path: Path, layout: Layout
) -> None:
    """Its root is read (XFS too), and it boots under BIOS as its table says."""
    image = make_vendor_image(tmp_path / "made", layout=layout, leave_out=("vmlinuz",))
    path = write_recipe(tmp_path, "../made/vendor.qcow2", sha256_file(image), extra=AS_IS)
    assert _open(path, tmp_path).boots == frozenset({"bios"})
    # The checks of what baker reaches the image through still hold.
    bare = make_vendor_image(tmp_path / "bare", layout=layout, leave_out=("usr/bin/cloud-init",))
    path = write_recipe(tmp_path, "../bare/vendor.qcow2", sha256_file(bare), extra=AS_IS)
    with pytest.raises(InputError, match=r"it has no cloud-init \(/usr/bin/cloud-init\)"):
        _open(path, tmp_path)
    # And the firmware the recipe asks for must be one the image has.
    path = write_recipe(tmp_path, "../made/vendor.qcow2", sha256_file(image), "hybrid", AS_IS)
    with pytest.raises(InputError, match=r"base.boot: .* boots under bios, not hybrid\.$"):
        _open(path, tmp_path)


def test_as_is_takes_a_vendor_image_only(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "x", "a" * 64)
    path.write_text("name: plain\nbase:\n  suite: bookworm\n" + AS_IS)
    with pytest.raises(InputError) as e:
        recipe.load(path)
    assert str(e.value) == (
        f"{path}:4: base.capture: as-is takes a vendor's cloud image as it is; base.image "
        "names none (a URL, or an image file in the project)."
    )


def test_an_as_is_build_boots_generalizes_in_place_and_images_the_disk(tmp_path: Path) -> None:
    (tmp_path / "vendor.qcow2").write_bytes(b"x")
    spec = recipe.load(write_recipe(tmp_path, "../vendor.qcow2", "a" * 64, extra=AS_IS))
    built = steps(spec, FakeBackend(hands_back="disk", starts_from="debian"))
    assert [s.name for s in built] == ["base", "boot", "provision", "verify", "generalize",
                                       "shutdown", "image", "leak-check", "measure", "attest",
                                       "publish"]  # fmt: skip
    generalize = built[4]
    # Root's SSH files put back before the rules, free space trimmed after them.
    assert generalize.first == (vendor.RESTORE_ROOT_SSH_IN_GUEST,)  # type: ignore[attr-defined]
    assert generalize.last == (vendor.TRIM_IN_GUEST,)  # type: ignore[attr-defined]
    # A re-made one is captured off the machine, as baker's own images are.
    remade = recipe.load(write_recipe(tmp_path, "../vendor.qcow2", "a" * 64))
    names = [s.name for s in steps(remade, FakeBackend(hands_back="disk", starts_from="debian"))]
    assert names[:2] == ["base", "disk"] and "capture" in names


def test_an_as_is_image_says_it_is_not_reproducible(tmp_path: Path, image: Path) -> None:
    artifact = make_artifact(tmp_path / "out" / "on-vendor", image)
    record = json.loads((artifact / "build.json").read_text())
    why = "base.capture: as-is: the vendor's disk as it is"
    record["image"] |= {"reproducible": False, "why_not_reproducible": why}
    (artifact / "build.json").write_text(json.dumps(record))
    assert f"  rebuild   not reproducible ({why})" in summary.render(summary.summarize(artifact))
    assert summary.summarize(artifact)["reproducible"] is False
    with pytest.raises(InputError) as e:
        rebuild.check(artifact, quiet())
    assert str(e.value) == (
        f"{artifact}: its image is not reproducible ({why}); there is nothing to rebuild it to."
    )
