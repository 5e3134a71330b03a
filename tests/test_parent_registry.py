"""A parent image named by its registry reference (base.image: host/repo@sha256:...): pulled
from a real registry (Debian's docker-registry on loopback) into the step cache as `baker
pull` does, verified with the trusted key, and pinned by its manifest digest; a tag alone,
which can move, is refused when the recipe loads. The e2e flow (push org-base, build org-app
on its reference, push and pull the child) is in tests/e2e/test_e2e_layers.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import registry_server
from support.artifacts import BAKER, image_fixture, keypair_fixture, make_artifact
from support.registry_server import Registry
from support.tamper import flip_byte

from baker import recipe
from baker.build import parent
from baker.cache import Cache
from baker.errors import InputError
from baker.hashing import sha256_file
from baker.recipe import lock
from baker.recipe.spec import is_reference
from baker.registry.client import connect
from baker.registry.push import push
from baker.registry.ref import parse

__all__ = ["image_fixture", "keypair_fixture"]  # the fixtures, for pytest to find

CHILD = """\
name: child
base:
  image: {image}
  trust: ../keys/platform.pub
  boot: bios
"""


@pytest.fixture
def plain_registry(tmp_path: Path) -> Iterator[Registry]:
    """Loopback, plain HTTP: a build reaches it with no flags, as docker does localhost."""
    reg = registry_server.start(tmp_path / "registry", tls=False)
    yield reg
    reg.stop()


@pytest.fixture
def pushed(
    tmp_path: Path, image: Path, keypair: tuple[Path, Path], plain_registry: Registry
) -> dict[str, object]:
    """A project with the trusted key and a child recipe, and a signed parent pushed to the
    registry (and nowhere in the project)."""
    (tmp_path / ".git").mkdir()
    key, pub = keypair
    artifact = make_artifact(tmp_path / "elsewhere" / "tiny", image, key)
    ref = parse(f"{plain_registry.host}/golden/tiny:1")
    manifest = push(connect(ref), artifact, ref).ref.digest
    (tmp_path / "keys").mkdir()
    shutil.copy(pub, tmp_path / "keys" / "platform.pub")
    (tmp_path / "images").mkdir()
    return {
        "root": tmp_path,
        "ref": f"{plain_registry.host}/golden/tiny@{manifest}",
        "image_digest": f"sha256:{sha256_file(artifact / 'image.qcow2')}",
        "cache": Cache(tmp_path / "cache"),
    }


def child(root: Path, image: str, extra: str = "") -> Path:
    path = root / "images" / "child.yaml"
    path.write_text(CHILD.format(image=image) + extra)
    return path


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("registry.example/golden/org-base@sha256:" + "a" * 64, True),
        ("127.0.0.1:5000/golden/org-base:1", True),
        ("localhost/org-base", True),
        ("../out/org-base", False),
        ("./my.images/org-base", False),
        ("out/org-base", False),
        ("org-base", False),
    ],
)
def test_a_registry_reference_is_told_from_a_directory(image: str, expected: bool) -> None:
    assert is_reference(image) is expected


def test_the_parent_is_pulled_into_the_cache_verified_and_pinned_by_its_digests(
    pushed: dict[str, object], plain_registry: Registry
) -> None:
    root, ref, cache = pushed["root"], str(pushed["ref"]), pushed["cache"]
    assert isinstance(root, Path) and isinstance(cache, Cache)
    path = child(root, ref, f"  sha256: {str(pushed['image_digest']).removeprefix('sha256:')}\n")
    said: list[str] = []
    found = parent.resolve(recipe.load(path), cache, said.append)
    assert found is not None
    assert found.pin.source == ref and found.pin.digest == pushed["image_digest"]
    assert found.artifact == cache.root / "parents" / ref.rsplit(":", 1)[1]
    assert said[0] == f"pulling the parent image {ref}"
    # A later build verifies the copy in the cache: the registry is not asked again.
    plain_registry.stop()
    again = parent.resolve(recipe.load(path), cache, said.append)
    assert again is not None and again.pin == found.pin
    assert not any(s.startswith("pulling") for s in said[1:])
    # A cached copy that no longer verifies is refused, not used.
    flip_byte(found.artifact / "image.qcow2", 1 << 20)
    with pytest.raises(InputError, match=r"child\.yaml:3: base\.image: the parent .* does not"):
        parent.resolve(recipe.load(path), cache)


def test_an_image_digest_that_is_not_the_pin_is_refused(pushed: dict[str, object]) -> None:
    root, cache = pushed["root"], pushed["cache"]
    assert isinstance(root, Path) and isinstance(cache, Cache)
    path = child(root, str(pushed["ref"]), f"  sha256: {'ab' * 32}\n")
    with pytest.raises(InputError) as e:
        parent.resolve(recipe.load(path), cache)
    assert str(e.value) == (
        f"{path}:6: base.sha256: the parent {pushed['ref']} is {pushed['image_digest']}, not "
        f"the pinned sha256:{'ab' * 32}."
    )


def test_a_manifest_the_registry_does_not_hold_is_refused_and_nothing_is_left(
    pushed: dict[str, object],
) -> None:
    root, cache = pushed["root"], pushed["cache"]
    assert isinstance(root, Path) and isinstance(cache, Cache)
    gone = str(pushed["ref"]).rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    path = child(root, gone)
    with pytest.raises(InputError) as e:
        parent.resolve(recipe.load(path), cache)
    assert str(e.value).startswith(f"{path}:3: base.image: {gone}: no such manifest")
    assert list((cache.root / "parents").iterdir()) == []  # no partial pull


def test_a_parent_signed_by_another_key_is_refused_before_it_lands(
    pushed: dict[str, object], tmp_path: Path
) -> None:
    root, cache = pushed["root"], pushed["cache"]
    assert isinstance(root, Path) and isinstance(cache, Cache)
    from baker.evidence import signing

    _, other = signing.keygen(tmp_path / "other")
    shutil.copy(other, root / "keys" / "platform.pub")
    with pytest.raises(InputError, match=r"child\.yaml:3: base\.image: .*does not verify"):
        parent.resolve(recipe.load(child(root, str(pushed["ref"]))), cache)
    assert list((cache.root / "parents").iterdir()) == []


def test_a_tag_is_taken_only_as_the_lock_pins_it(
    pushed: dict[str, object], image: Path, keypair: tuple[Path, Path], plain_registry: Registry
) -> None:
    """`baker lock` pins the tag to the manifest it names now; the tag moving on later
    changes nothing for the locked recipe; without a lock the tag is refused."""
    root, cache = pushed["root"], pushed["cache"]
    assert isinstance(root, Path) and isinstance(cache, Cache)
    tag = f"{plain_registry.host}/golden/tiny:1"
    path = child(root, tag)
    spec = recipe.load(path)
    with pytest.raises(InputError) as e:
        parent.resolve(spec, cache)
    assert str(e.value) == (
        f"{path}:3: base.image: {tag} names a tag, which can move; `baker lock {path}` pins it "
        "to the digest it names now (or write …@sha256:<manifest digest>)."
    )
    # The real command, as a team runs it.
    env = {**os.environ, "BAKER_CACHE_DIR": str(cache.root)}
    done = subprocess.run([str(BAKER), "lock", str(path)], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = str(pushed["ref"]).rsplit("@", 1)[1]
    assert f"the parent {tag} pinned at {manifest}" in done.stdout
    locked = lock.load(path.with_suffix(".lock"))
    assert locked.parent == lock.ParentPin(tag, manifest) and locked.packages == ()
    # The tag moves on to another image; the locked build keeps the one it pinned.
    moved = shutil.copy(image, root / "moved.qcow2")
    flip_byte(Path(moved), 1 << 20)
    other = make_artifact(root / "elsewhere" / "moved", Path(moved), keypair[0])
    ref = parse(tag)
    assert push(connect(ref), other, ref).ref.digest != manifest
    found = parent.resolve(spec, cache, tag_pin=locked.parent)
    assert found is not None and found.pin.digest == pushed["image_digest"]
    assert found.pin.source == f"{plain_registry.host}/golden/tiny@{manifest}"
    # A lock made for another parent is refused, naming what to run.
    stale = lock.ParentPin(f"{plain_registry.host}/golden/other:1", manifest)
    with pytest.raises(InputError, match=r"pins the parent .*golden/other:1, but the recipe"):
        lock.check_matches(dataclasses.replace(locked, parent=stale), path, spec.recipe.base, ())


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("127.0.0.1:5000/Golden/tiny@sha256:" + "a" * 64, "the repository 'Golden/tiny' may"),
        ("127.0.0.1:5000/golden/tiny@sha256:abc", "the digest must be sha256:<64 hex digits>"),
    ],
)
def test_a_malformed_reference_is_refused_before_anything_is_fetched(
    pushed: dict[str, object], written: str, said: str
) -> None:
    root, cache = pushed["root"], pushed["cache"]
    assert isinstance(root, Path) and isinstance(cache, Cache)
    path = child(root, written)
    with pytest.raises(InputError) as e:
        parent.resolve(recipe.load(path), cache)
    assert str(e.value).startswith(f"{path}:3: ") and said in str(e.value)
    assert "\n" not in str(e.value) and not (cache.root / "parents").exists()
