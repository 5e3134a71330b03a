"""A child recipe's parent image (base.image): found inside the project, pinned by its digest,
verified with the trusted key before anything starts; each refusal one line naming the
recipe's file, line and field. The parents are small real artifacts (support.artifacts); the
e2e tests build a real parent and a child on it (tests/e2e/test_e2e_layers.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.artifacts import image_fixture, keypair_fixture, make_artifact
from support.tamper import flip_byte

from baker import recipe
from baker.artifact import dump_json, sha256sums
from baker.build import parent
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.evidence.verify import verify
from baker.hashing import sha256_file
from baker.image import access, generalize
from baker.inspect import summary

__all__ = ["image_fixture", "keypair_fixture"]  # the fixtures, for pytest to find

CHILD = """\
name: child
base:
  image: {image}
  sha256: {sha256}
  trust: {trust}
  boot: bios
"""


@pytest.fixture
def project(tmp_path: Path, image: Path, keypair: tuple[Path, Path]) -> Path:
    """A project holding a signed parent artifact, its trusted key and a child recipe."""
    (tmp_path / ".git").mkdir()
    key, pub = keypair
    make_artifact(tmp_path / "out" / "tiny", image, key)
    (tmp_path / "keys").mkdir()
    shutil.copy(pub, tmp_path / "keys" / "platform.pub")
    (tmp_path / "images").mkdir()
    child(tmp_path)
    return tmp_path


def child(root: Path, **fields: str) -> Path:
    values = {
        "image": "../out/tiny",
        "sha256": sha256_file(root / "out" / "tiny" / "image.qcow2"),
        "trust": "../keys/platform.pub",
        **fields,
    }
    path = root / "images" / "child.yaml"
    path.write_text(CHILD.format(**values))
    return path


def refusal(path: Path) -> str:
    with pytest.raises(InputError) as e:
        parent.resolve(recipe.load(path))
    return str(e.value)


def test_a_verified_parent_is_pinned_with_its_provenance_and_signer(
    project: Path, keypair: tuple[Path, Path]
) -> None:
    found = parent.resolve(recipe.load(project / "images" / "child.yaml"))
    assert found is not None
    artifact = project / "out" / "tiny"
    assert found.pin.name == "tiny"
    assert found.pin.digest == f"sha256:{sha256_file(artifact / 'image.qcow2')}"
    assert found.pin.provenance_digest == f"sha256:{sha256_file(artifact / 'provenance.json')}"
    assert found.pin.signer == signing.fingerprint(signing.load_public_key(keypair[1]))
    assert found.pin.source == "../out/tiny" and found.pin.ancestors == []


def test_a_digest_that_is_not_the_pin_is_refused(project: Path) -> None:
    path = child(project, sha256="ab" * 32)
    assert refusal(path) == (
        f"{path}:4: base.sha256: the parent {project / 'out' / 'tiny'} is "
        f"sha256:{sha256_file(project / 'out' / 'tiny' / 'image.qcow2')}, not the pinned "
        f"sha256:{'ab' * 32}."
    )


def test_a_parent_signed_by_another_key_is_refused(project: Path, tmp_path: Path) -> None:
    _, other = signing.keygen(tmp_path / "other")
    shutil.copy(other, project / "keys" / "other.pub")
    path = child(project, trust="../keys/other.pub")
    said = refusal(path)
    assert said.startswith(f"{path}:3: base.image: the parent {project / 'out' / 'tiny'} does")
    assert "does not verify with" in said and "signature" in said and "\n" not in said


def test_an_unsigned_parent_is_refused(project: Path, image: Path) -> None:
    shutil.rmtree(project / "out" / "tiny")
    make_artifact(project / "out" / "tiny", image)  # no key: no signature
    said = refusal(project / "images" / "child.yaml")
    assert "base.image: the parent" in said and "image.qcow2.sig is missing" in said


def test_a_parent_with_a_flipped_byte_is_refused(project: Path) -> None:
    flip_byte(project / "out" / "tiny" / "image.qcow2", 1 << 20)
    said = refusal(project / "images" / "child.yaml")
    assert ":3: base.image: the parent" in said and "does not verify" in said


def test_a_missing_parent_is_refused(project: Path) -> None:
    path = child(project, image="../out/gone")
    assert refusal(path) == (
        f"{path}:3: base.image: no baker artifact at {project / 'out' / 'gone'} "
        "(it holds no image.qcow2)."
    )


def test_a_parent_outside_the_project_is_refused_when_the_recipe_loads(project: Path) -> None:
    path = child(project, image="../../elsewhere")
    with pytest.raises(InputError, match=r":3: base.image: '../../elsewhere' leaves the project"):
        recipe.load(path)


def test_no_trusted_key_is_refused(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(parent.TRUST_ENV, raising=False)
    path = project / "images" / "child.yaml"
    path.write_text(path.read_text().replace("  trust: ../keys/platform.pub\n", ""))
    said = refusal(path)
    assert said.startswith(f"{path}:2: base.trust: a parent image is trusted by the key")
    # The key from the environment is as good as the recipe's.
    monkeypatch.setenv(parent.TRUST_ENV, str(project / "keys" / "platform.pub"))
    assert parent.resolve(recipe.load(path)) is not None


def test_a_child_boots_as_its_parent_does(project: Path) -> None:
    path = project / "images" / "child.yaml"
    path.write_text(path.read_text().replace("  boot: bios\n", ""))
    assert refusal(path) == (
        f"{path}:2: base.boot: the parent image boots bios, and a child boots as its parent "
        "does; write boot: bios."
    )


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("  mirror: http://deb.debian.org/debian\n", "base: mirror comes from the parent image"),
        ("  kernel: generic\n", "base: kernel comes from the parent image; leave it out"),
    ],
)
def test_what_the_parent_decides_is_not_written(project: Path, extra: str, said: str) -> None:
    path = project / "images" / "child.yaml"
    path.write_text(path.read_text() + extra)
    with pytest.raises(InputError, match=f"{path}:2: {said}"):
        recipe.load(path)


def test_a_pin_without_a_parent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: r\nbase:\n  sha256: {'a' * 64}\n")
    with pytest.raises(InputError, match=r"r.yaml:2: base: sha256 and trust pin a parent"):
        recipe.load(path)


def test_baker_build_refuses_a_bad_parent_in_one_line_before_anything_starts(
    project: Path, tmp_path: Path
) -> None:
    path = child(project, sha256="cd" * 32)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "BAKER_WORK_DIR": str(work), "BAKER_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "baker"), "build", str(path), "--out",
         str(tmp_path / "built")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"baker: error: {path}:4: base.sha256: the parent {project / 'out' / 'tiny'} is "
        f"sha256:{sha256_file(project / 'out' / 'tiny' / 'image.qcow2')}, not the pinned "
        f"sha256:{'cd' * 32}."
    ]
    assert not (tmp_path / "built").exists() and list(work.iterdir()) == []


def _tree(root: Path, openssh: str | None = "1:9.2p1-2+deb12u3") -> Path:
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    stanza = f"Package: openssh-server\nStatus: install ok installed\nVersion: {openssh}\n"
    (root / "var/lib/dpkg/status").write_text(stanza if openssh else "")
    return root


def test_the_access_layer_is_what_the_capture_removes_again(tmp_path: Path) -> None:
    root, into = _tree(tmp_path / "root"), tmp_path / "layer"
    names = access.layer(root, into)
    assert names == [
        "./etc/ssh/sshd_config.d/baker-build.conf",
        "./etc/systemd/system/baker-build-access.service",
        "./etc/systemd/system/timer.d",
        "./etc/systemd/system/timer.d/baker-build.conf",
        "./usr/local/lib/baker",
        "./usr/local/lib/baker/build-access",
        "./etc/systemd/system/multi-user.target.wants/baker-build-access.service",
    ]
    link = into / names[-1].removeprefix("./")
    assert os.readlink(link) == "/etc/systemd/system/baker-build-access.service"
    assert os.access(into / "usr/local/lib/baker/build-access", os.X_OK)
    # Every one of them is left out of a captured image by the generalize rules.
    kept = set(generalize.walk(into))
    assert kept == {".", "./etc", "./etc/ssh", "./etc/ssh/sshd_config.d", "./etc/systemd",
                    "./etc/systemd/system", "./etc/systemd/system/multi-user.target.wants",
                    "./usr", "./usr/local", "./usr/local/lib"}  # fmt: skip
    assert "PerSourcePenalties" not in (into / "etc/ssh/sshd_config.d/baker-build.conf").read_text()


def test_openssh_9_8_gets_no_per_source_penalties_on_the_build_machine(tmp_path: Path) -> None:
    root, into = _tree(tmp_path / "root", "1:10.0p1-7"), tmp_path / "layer"
    access.layer(root, into)
    conf = (into / "etc/ssh/sshd_config.d/baker-build.conf").read_text()
    assert conf.endswith("PerSourcePenalties no\n")


def test_a_tree_without_sshd_or_systemd_is_no_parent(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="the parent image has no openssh-server"):
        access.layer(_tree(tmp_path / "a", None), tmp_path / "la")
    bare = tmp_path / "b"
    (bare / "var/lib/dpkg").mkdir(parents=True)
    with pytest.raises(BuildError, match=r"has no /etc/systemd/system/multi-user.target.wants"):
        access.layer(bare, tmp_path / "lb")


PARENT = {
    "name": "org-base",
    "digest": "sha256:" + "a" * 64,
    "provenance_digest": "sha256:" + "b" * 64,
    "source": "../out/org-base",
    "signer": "c" * 64,
    "ancestors": [{"name": "root-base", "digest": "sha256:" + "d" * 64}],
}


def _signed_by(pub: Path) -> dict[str, object]:
    """PARENT, verified with `pub` when the child was built."""
    return {**PARENT, "signer": signing.fingerprint(signing.load_public_key(pub))}


def test_a_childs_evidence_names_its_parent_and_what_it_added(
    tmp_path: Path, image: Path, keypair: tuple[Path, Path]
) -> None:
    artifact = make_artifact(tmp_path / "child", image, keypair[0], parent=_signed_by(keypair[1]))
    statement = json.loads((artifact / "provenance.json").read_text())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    (dep,) = [d for d in deps if d["name"] == "parent-image"]
    assert dep["digest"] == {"sha256": "a" * 64} and dep["uri"] == "file:../out/org-base"
    assert dep["annotations"]["provenanceDigest"] == PARENT["provenance_digest"]
    assert dep["annotations"]["ancestors"] == PARENT["ancestors"]
    # CycloneDX: the parent is the image's ancestor; each package says where it came from.
    cdx = json.loads((artifact / "sbom.cdx.json").read_text())
    (ancestor,) = cdx["metadata"]["component"]["pedigree"]["ancestors"]
    assert ancestor["name"] == "org-base" and ancestor["hashes"][0]["content"] == "a" * 64
    layers = {
        c["name"]: {p["name"]: p["value"] for p in c["properties"]}["baker:layer"]
        for c in cdx["components"]
    }
    assert layers == {"pkg0": "parent", "pkg1": "parent", "pkg2": "added"}
    # SPDX: the image descends from the parent, which contains what it gave.
    spdx = json.loads((artifact / "sbom.spdx.json").read_text())
    rels = {(r["spdxElementId"], r["relationshipType"], r["relatedSpdxElement"])
            for r in spdx["relationships"]}  # fmt: skip
    assert ("SPDXRef-Image", "DESCENDANT_OF", "SPDXRef-ParentImage") in rels
    given = {r[2] for r in rels if r[0] == "SPDXRef-ParentImage" and r[1] == "CONTAINS"}
    assert given == {"SPDXRef-Deb-pkg0-Arch-amd64", "SPDXRef-Deb-pkg1-Arch-amd64"}
    # Both documents still valid, and verify checks the lineage is well formed.
    findings = {f.name: f for f in verify(artifact, keypair[1])}
    assert all(f.ok for f in findings.values()), [f.line() for f in findings.values()]
    assert findings["lineage"].detail.startswith("built on org-base sha256:aaaa")
    assert "← root-base sha256:dddd" in findings["lineage"].detail
    signer = str(_signed_by(keypair[1])["signer"])
    assert findings["lineage"].detail.endswith(f"; the parent signed by trusted key {signer:.16}…")


def test_with_pub_the_parents_signer_must_be_a_trusted_key(
    tmp_path: Path, image: Path, keypair: tuple[Path, Path]
) -> None:
    """The platform team signs the parent, the application team the child: the child's key
    alone does not vouch for the parent; --trust names the platform's."""
    _, platform = signing.keygen(tmp_path / "platform")
    artifact = make_artifact(tmp_path / "child", image, keypair[0], parent=_signed_by(platform))
    (failed,) = [f for f in verify(artifact, keypair[1]) if not f.ok]
    assert failed.name == "lineage" and failed.detail.startswith(
        f"its parent org-base was verified with key {_signed_by(platform)['signer']!s:.16}…, "
        f"none of {keypair[1]}"
    )
    assert all(f.ok for f in verify(artifact, keypair[1], trusted=(platform,)))
    # Without --pub nothing is trusted, so the signer is not judged: the lineage is well formed.
    assert [f.ok for f in verify(artifact, None) if f.name == "lineage"] == [True]


def test_a_lineage_the_provenance_does_not_share_fails_verify(
    tmp_path: Path, image: Path, keypair: tuple[Path, Path]
) -> None:
    artifact = make_artifact(tmp_path / "child", image, keypair[0], parent=PARENT)
    record = json.loads((artifact / "build.json").read_text())
    record["parent"]["digest"] = "sha256:" + "e" * 64
    (artifact / "build.json").write_bytes(dump_json(record))
    (artifact / "SHA256SUMS").write_text(sha256sums(artifact))
    (failed,) = [f for f in verify(artifact, keypair[1]) if not f.ok]
    assert failed.name == "lineage"
    assert (
        failed.detail
        == f"provenance.json does not name the parent build.json records (sha256:{'e' * 64})"
    )


def test_inspect_prints_the_chain_up_to_the_root_base(
    tmp_path: Path, image: Path, keypair: tuple[Path, Path]
) -> None:
    artifact = make_artifact(tmp_path / "child", image, keypair[0], parent=PARENT)
    digest = f"sha256:{sha256_file(artifact / 'image.qcow2')}"
    text = summary.render(summary.summarize(artifact))
    assert f"  base      parent image org-base sha256:{'a' * 64}, 3 packages" in text
    assert (
        f"  lineage   tiny {digest} ← org-base sha256:{'a' * 64} ← root-base "
        f"sha256:{'d' * 64} ← debian bookworm/amd64"
    ) in text
