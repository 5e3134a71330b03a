"""base.packages on a child image: resolved on the host with apt against the build machine's
dpkg database (the machine has no network), each .deb fetched from the real mirror into the
package cache and checked against the mirror's index; a name the mirror lacks is the
recipe's error, naming the entry; `baker lock` of a child pins them as they install on its
verified parent image (its dpkg database read from its disk). The install on a real build
machine is in tests/e2e/test_e2e_layers.py (org-app's `tree`, unlocked and locked)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.artifacts import SDE, image_fixture, keypair_fixture, make_artifact, make_image

from baker import recipe
from baker.build import parent, pipeline
from baker.build.steps.provision import own_packages
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.hashing import sha256_file
from baker.image import apt, child_packages

CHILD = """\
name: app
base:
  image: ../out/org
  sha256: {sha}
  trust: ../keys/platform.pub
  boot: bios
{packages}"""
# A dpkg database every Debian 12 host has a consistent one of: the host's own.
STATUS = Path("/var/lib/dpkg/status")

__all__ = ["image_fixture", "keypair_fixture"]  # the fixtures, for pytest to find


def _child(tmp_path: Path, packages: str, sha: str = "a" * 64) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "images" / "app.yaml"
    path.write_text(CHILD.format(sha=sha, packages=packages))
    return path


def test_what_the_child_adds_is_resolved_on_the_host_and_fetched_checked(
    tmp_path: Path,
) -> None:
    spec = recipe.load(_child(tmp_path, "  packages: [sl]\n"))
    assert own_packages(spec) == ("sl",)
    cache = Cache(tmp_path / "cache")
    (tmp_path / "work").mkdir()
    added = child_packages.resolve(spec.recipe.base, STATUS.read_text(), cache,
                                   tmp_path / "work", lambda line: None)  # fmt: skip
    assert [p.name for p in added] == ["sl"]
    (sl,) = added
    assert sl.path.startswith("pool/main/s/sl/sl_") and sl.archive == "debian"
    deb = cache.deb(sl.sha256)
    assert deb is not None and sha256_file(deb) == sl.sha256 and deb.stat().st_size == sl.size
    # Already installed on the machine at that version: nothing to add.
    version = re.search(r"^Package: dpkg\n(?:.+\n)*?Version: (\S+)$", STATUS.read_text(), re.M)
    assert version is not None
    host_has = recipe.load(_child(tmp_path, f"  packages: ['dpkg={version[1]}']\n"))
    assert child_packages.resolve(host_has.recipe.base, STATUS.read_text(), cache,
                                  tmp_path / "work", lambda line: None) == []  # fmt: skip


def test_a_package_the_mirror_lacks_names_the_entry(tmp_path: Path) -> None:
    spec = recipe.load(_child(tmp_path, "  packages: [sl, no-such-package-here]\n"))
    (tmp_path / "work").mkdir()
    with pytest.raises(apt.UnknownPackage) as e:
        child_packages.resolve(spec.recipe.base, STATUS.read_text(), Cache(tmp_path / "c"),
                               tmp_path / "work", lambda line: None)  # fmt: skip
    assert e.value.field == "base.packages.1"
    assert str(e.value).startswith("base.packages: no-such-package-here: no such package in")


def test_a_base_made_from_packages_installs_its_own_with_mmdebstrap(tmp_path: Path) -> None:
    path = tmp_path / "base.yaml"
    path.write_text("name: base\nbase:\n  packages: [sl]\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert own_packages(recipe.load(path)) == ()


@pytest.fixture
def parent_with_dpkg(tmp_path: Path, keypair: tuple[Path, Path]) -> str:
    """A signed parent artifact at out/org whose image holds the host's dpkg database, its
    key at keys/platform.pub; returns the image's sha256."""
    key, pub = keypair
    made = tmp_path / "made"
    made.mkdir()
    image = make_image(made, {"var/lib/dpkg/status": STATUS.read_bytes()})
    make_artifact(tmp_path / "out" / "org", image, key)
    (tmp_path / "keys").mkdir()
    shutil.copy(pub, tmp_path / "keys" / "platform.pub")
    return sha256_file(image)


def test_a_childs_lock_pins_its_own_packages_as_they_install_on_its_parent(
    tmp_path: Path, parent_with_dpkg: str
) -> None:
    path = _child(tmp_path, "  packages: [sl]\n", parent_with_dpkg)
    (tmp_path / "work").mkdir()
    cache = Cache(tmp_path / "cache")
    locked = parent.lock_child(recipe.load(path), cache, tmp_path / "work",
                               parents=tmp_path / "out")  # fmt: skip
    assert locked.requested == ("sl",) and locked.parent is None
    assert [p.name for p in locked.packages] == ["sl"]
    assert cache.deb(locked.packages[0].sha256) is not None
    assert locked.source_date_epoch == SDE  # the parent's
    path.with_suffix(".lock").write_text(locked.dump())
    got, _ = pipeline.load_lock(recipe.load(path))
    assert got == locked
    # The recipe asking for more than its lock pins is refused, as for any recipe.
    more = _child(tmp_path, "  packages: [sl, tree]\n", parent_with_dpkg)
    with pytest.raises(InputError) as e:
        pipeline.load_lock(recipe.load(more))
    assert "the recipe's packages no longer match the lock (added tree)" in str(e.value)


def test_a_parent_image_without_a_dpkg_database_cannot_be_locked_for(
    tmp_path: Path, keypair: tuple[Path, Path], image: Path
) -> None:
    key, pub = keypair
    make_artifact(tmp_path / "out" / "org", image, key)
    (tmp_path / "keys").mkdir()
    shutil.copy(pub, tmp_path / "keys" / "platform.pub")
    path = _child(tmp_path, "  packages: [sl]\n", sha256_file(image))
    (tmp_path / "work").mkdir()
    with pytest.raises(BuildError) as e:
        parent.lock_child(recipe.load(path), Cache(tmp_path / "c"), tmp_path / "work")
    assert str(e.value).endswith("has no dpkg database (/var/lib/dpkg/status).")


def test_a_child_pinned_as_written_without_packages_has_nothing_to_lock(
    tmp_path: Path, parent_with_dpkg: str
) -> None:
    path = _child(tmp_path, "", parent_with_dpkg)
    with pytest.raises(InputError) as e:
        parent.lock_child(recipe.load(path), Cache(tmp_path / "c"), tmp_path)
    assert str(e.value).startswith(f"{path}:3: base.image: nothing to lock:")
