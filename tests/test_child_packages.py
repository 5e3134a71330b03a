"""base.packages on a child image: resolved on the host with apt against the build machine's
dpkg database (the machine has no network), each .deb fetched from the real mirror into the
package cache and checked against the mirror's index; a name the mirror lacks is the
recipe's error, naming the entry. The install on a real build machine is in
tests/e2e/test_e2e_layers.py (org-app's `tree`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from baker import recipe
from baker.build import pipeline
from baker.build.steps.provision import own_packages
from baker.cache import Cache
from baker.errors import InputError
from baker.hashing import sha256_file
from baker.image import apt, child_packages

CHILD = """\
name: app
base:
  image: ../out/org
  sha256: {sha}
  trust: ../keys/platform.pub
{packages}"""
# A dpkg database every Debian 12 host has a consistent one of: the host's own.
STATUS = Path("/var/lib/dpkg/status")


def _child(tmp_path: Path, packages: str) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "images" / "app.yaml"
    path.write_text(CHILD.format(sha="a" * 64, packages=packages))
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


def test_a_locked_child_with_packages_of_its_own_is_refused(tmp_path: Path) -> None:
    path = _child(tmp_path, "  packages: [tree]\n")
    path.with_suffix(".lock").write_text(
        "format: 1\nsuite: bookworm\narch: amd64\nresolved: '2023-06-10T00:00:00+00:00'\n"
        "requested: []\npackages: []\n"
    )
    with pytest.raises(InputError) as e:
        pipeline.load_lock(recipe.load(path))
    assert str(e.value).startswith(
        f"{path}:6: base.packages: a locked child installs no packages of its own yet"
    )
