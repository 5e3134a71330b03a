"""A child image on the farm: its job carries its parent recipe's files, the key the parent
is trusted by, and the parent's name and digest (never the image: images travel through the
farm's store); the worker takes that very image back out of the store (a shared directory,
or a real registry on loopback) and builds with `--parents` there. A parent the store lacks
fails the build in one line; a parent directory cannot be sent at all."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import registry_server
from support.artifacts import image_fixture, keypair_fixture, make_artifact
from support.registry_server import Registry

from baker import recipe
from baker.cli import farm as farm_cli
from baker.errors import InputError
from baker.evidence import signing
from baker.farm import store, tasks
from baker.hashing import sha256_file
from baker.registry.client import connect
from baker.registry.push import push
from baker.registry.ref import parse

__all__ = ["image_fixture", "keypair_fixture"]  # the fixtures, for pytest to find

CHILD = """\
name: app
base:
  image: recipe:org.yaml
  trust: ../keys/platform.pub
provisioners:
  - file: ../files/app.conf
    sha256: {sha256}
    dest: /etc/app.conf
"""


@pytest.fixture
def project(tmp_path: Path, image: Path, keypair: tuple[Path, Path]) -> dict[str, Any]:
    """A project with a parent recipe, a child on it, the trusted key, and the parent's
    artifact in out/ as an earlier farm build left it."""
    root = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for d in ("images", "files", "keys"):
        (root / d).mkdir()
    (root / "files" / "org.txt").write_text("org\n")
    (root / "files" / "app.conf").write_text("app\n")
    org_sha = sha256_file(root / "files" / "org.txt")
    (root / "images" / "org.yaml").write_text(
        "name: org\nprovisioners:\n  - file: ../files/org.txt\n"
        f"    sha256: {org_sha}\n    dest: /etc/org.txt\n"
    )
    child = root / "images" / "app.yaml"
    child.write_text(CHILD.format(sha256=sha256_file(root / "files" / "app.conf")))
    shutil.copy(keypair[1], root / "keys" / "platform.pub")
    parent = make_artifact(root / "out" / "org", image, keypair[0])
    return {"root": root, "child": child, "parent": parent,
            "digest": f"sha256:{sha256_file(parent / 'image.qcow2')}"}  # fmt: skip


def test_a_childs_job_carries_its_parent_by_name_and_digest_not_its_image(
    project: dict[str, Any],
) -> None:
    job = farm_cli._job(recipe.load(project["child"]), {}, project["root"] / "out")
    assert job["parent"] == {"name": "org", "digest": project["digest"]}
    assert sorted(f["path"] for f in job["files"]) == [
        "files/app.conf", "files/org.txt", "images/app.yaml", "images/org.yaml",
        "keys/platform.pub",
    ]  # fmt: skip


def test_a_child_whose_parent_was_not_built_is_refused_at_submit(
    project: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(InputError) as e:
        farm_cli._job(recipe.load(project["child"]), {}, tmp_path / "nowhere")
    assert str(e.value).startswith(f"{project['child']}:3: base.image: no org artifact in ")
    assert "build it on the farm first" in str(e.value)


def test_a_parent_directory_cannot_travel_with_a_job(project: dict[str, Any]) -> None:
    child = project["child"]
    local = f"image: ../out/org\n  sha256: {project['digest'][7:]}"
    child.write_text(child.read_text().replace("image: recipe:org.yaml", local))
    with pytest.raises(InputError, match=r"app\.yaml:3: base\.image: a parent directory does"):
        farm_cli._job(recipe.load(child), {}, project["root"] / "out")


def test_the_worker_takes_the_parent_from_the_shared_directory(
    project: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("BAKER_FARM_ARTIFACTS", str(shared))
    job = farm_cli._job(recipe.load(project["child"]), {}, project["root"] / "out")
    worker = tmp_path / "job"
    root = worker / "project"
    from baker.farm import payload

    payload.lay_out(job, root)
    with pytest.raises(tasks.BuildFailed) as e:
        tasks._parent(job, root, worker / "parents")
    assert str(e.value).startswith(f"the farm's store holds no org {project['digest']} (")
    store.put(project["parent"], "org", project["digest"])  # as the parent's worker did
    parents = tasks._parent(job, root, worker / "parents")
    assert parents == worker / "parents"
    fetched = parents / "org" / "image.qcow2"
    assert sha256_file(fetched) == project["digest"][7:]


@pytest.fixture
def plain_registry(tmp_path: Path) -> Iterator[Registry]:
    reg = registry_server.start(tmp_path / "registry", tls=False)
    yield reg
    reg.stop()


def test_the_worker_pulls_the_parent_from_the_registry_store_verified(
    project: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plain_registry: Registry,
    keypair: tuple[Path, Path],
) -> None:
    monkeypatch.setenv("BAKER_FARM_REGISTRY", f"{plain_registry.host}/farm")
    where = store.put(project["parent"], "org", project["digest"])
    assert where.startswith(f"{plain_registry.host}/farm/org@sha256:")
    got = store.fetch("org", project["digest"], tmp_path / "one", keypair[1])
    assert sha256_file(tmp_path / "one" / "image.qcow2") == project["digest"][7:]
    assert got == f"{plain_registry.host}/farm/org:{project['digest'][7:39]}"
    # Signed by another key than the child trusts: not taken.
    _, other = signing.keygen(tmp_path / "other")
    with pytest.raises(store.NotStored, match="does not verify"):
        store.fetch("org", project["digest"], tmp_path / "two", other)
    assert not (tmp_path / "two").exists()
    # What the store does not hold is said as such.
    ref = parse(f"{plain_registry.host}/farm/org:1")
    push(connect(ref), project["parent"], ref)
    with pytest.raises(store.NotStored, match="no such manifest"):
        store.fetch("org", "sha256:" + "0" * 64, tmp_path / "three", keypair[1])
