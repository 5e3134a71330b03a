"""`export --with-sources` of a child image carries its parent: found and verified again as
the child's build found it, with the key that verified it; the import checks the carried
parent against what the child's signed provenance says of it (image, provenance, signer),
and `rebuild --check` finds it there. The offline rebuild of a real child from its bundle is
in tests/e2e/test_e2e_layers.py."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from support.artifacts import NAME, SDE, image_fixture, keypair_fixture, make_artifact, quiet

from baker.artifact import carried_in, read_record
from baker.build import rebuild
from baker.bundle import export as bundle
from baker.bundle import importer
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.formats import tario
from baker.hashing import sha256_file

__all__ = ["image_fixture", "keypair_fixture"]  # fixtures

CHILD = """\
name: child
base:
  image: ../out/tiny
  sha256: {sha256}
  trust: ../keys/platform.pub
  boot: bios
"""


@pytest.fixture
def child(tmp_path: Path, image: Path, keypair: tuple[Path, Path]) -> dict[str, Any]:
    """A project with a signed parent artifact (out/tiny) and its key, and a signed child
    artifact built on it (built/tiny) from a recipe that installs nothing of its own."""
    root = tmp_path / "project"
    (root / ".git").mkdir(parents=True)
    key, pub = keypair
    parent = make_artifact(root / "out" / NAME, image, key)
    (root / "keys").mkdir()
    shutil.copy(pub, root / "keys" / "platform.pub")
    (root / "images").mkdir()
    recipe = root / "images" / "child.yaml"
    recipe.write_text(CHILD.format(sha256=sha256_file(parent / "image.qcow2")))
    record = {
        "name": NAME,
        "digest": f"sha256:{sha256_file(parent / 'image.qcow2')}",
        "provenance_digest": f"sha256:{sha256_file(parent / 'provenance.json')}",
        "source": "../out/tiny",
        "signer": signing.fingerprint(signing.load_public_key(pub)),
        "ancestors": [],
    }
    project: dict[str, Any] = {"recipe": recipe, "lock": None, "debs": {}, "files": {}}
    built = make_artifact(root / "built" / NAME, image, key, project, parent=record)
    return {"root": root, "parent": parent, "artifact": built, "pub": pub, "key": key}


def _export(child: dict[str, Any], tar: Path) -> None:
    cache = Cache(child["root"] / "cache")
    carried = rebuild.parent_as_built(child["artifact"], None, cache)
    assert carried is not None and carried.artifact == child["parent"]
    bundle.export(child["artifact"], tar, quiet(), with_sources=True, pub=child["pub"],
                  cache=cache, parent=carried)  # fmt: skip


def test_a_childs_bundle_carries_its_parent_and_the_import_checks_it(
    child: dict[str, Any], tmp_path: Path
) -> None:
    tar = tmp_path / "child.tar"
    _export(child, tar)
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {f"parent/{NAME}/image.qcow2", f"parent/{NAME}/SHA256SUMS", "parent/trust.pub",
            "sources/child.yaml"} <= names  # fmt: skip
    assert not any(n.endswith(".lock") for n in names)  # it installs nothing: no lock needed
    into = tmp_path / "site" / "imported"
    into.parent.mkdir()
    done = importer.import_bundle(tar, into, quiet(), pub=child["pub"], cache=Cache(tmp_path / "c"))
    assert any(line.startswith(f"ok   parent: {NAME} sha256:") for line in done.checks)
    carried = carried_in(into, read_record(into))
    assert carried is not None
    assert sha256_file(carried.artifact / "image.qcow2") == sha256_file(
        child["parent"] / "image.qcow2"
    )
    assert carried.key.read_bytes() == child["pub"].read_bytes()


def _repack(src: Path, out: Path, name: str, data: bytes) -> None:
    """The bundle with one member replaced and both SHA256SUMS made to agree (a careful
    forger: only what is signed can catch it)."""
    import hashlib

    with tarfile.open(src) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]
    files[name] = data
    files["BUNDLE.SHA256SUMS"] = "".join(
        f"{hashlib.sha256(v).hexdigest()}  {k}\n"
        for k, v in sorted(files.items())
        if k != "BUNDLE.SHA256SUMS"
    ).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for member, content in sorted(files.items()):
            t.addfile(tario.tar_info(member, len(content), SDE), io.BytesIO(content))


def test_a_carried_parent_key_that_is_not_the_recorded_signer_is_refused(
    child: dict[str, Any], tmp_path: Path
) -> None:
    tar, forged = tmp_path / "child.tar", tmp_path / "forged.tar"
    _export(child, tar)
    _, other = signing.keygen(tmp_path / "other")
    _repack(tar, forged, "parent/trust.pub", other.read_bytes())
    into = tmp_path / "site" / "imported"
    into.parent.mkdir()
    with pytest.raises(BuildError) as e:
        importer.import_bundle(forged, into, quiet(), pub=child["pub"], cache=Cache(tmp_path / "c"))
    assert "parent/trust.pub" in str(e.value) and "is not the key that signed the parent" in str(
        e.value
    )
    assert not into.exists()


def test_a_child_whose_parent_moved_on_is_not_exported_with_another(
    child: dict[str, Any], tmp_path: Path, image: Path
) -> None:
    """The recipe's parent must still be the one the child was built on."""
    record = read_record(child["artifact"])
    assert record.parent is not None
    bogus = record.parent.model_copy(update={"digest": "sha256:" + "0" * 64})
    moved = record.model_copy(update={"parent": bogus})
    (child["artifact"] / "build.json").write_text(moved.model_dump_json())
    with pytest.raises(InputError) as e:
        rebuild.parent_as_built(child["artifact"], None, Cache(tmp_path / "c"))
    assert f"was built on {NAME} sha256:{'0' * 64}, but its recipe's parent is now" in str(e.value)


def test_a_parent_the_index_does_not_describe_is_refused(
    child: dict[str, Any], tmp_path: Path
) -> None:
    tar, edited = tmp_path / "child.tar", tmp_path / "edited.tar"
    _export(child, tar)
    with tarfile.open(tar) as t:
        index = json.loads(t.extractfile("bundle.json").read())  # type: ignore[union-attr]
    del index["sources"]["parent"]
    _repack(tar, edited, "bundle.json", json.dumps(index).encode())
    into = tmp_path / "site" / "imported"
    into.parent.mkdir()
    with pytest.raises(BuildError, match=r"unexpected member parent/"):
        importer.import_bundle(edited, into, quiet(), pub=child["pub"], cache=Cache(tmp_path / "c"))
    assert not into.exists()
