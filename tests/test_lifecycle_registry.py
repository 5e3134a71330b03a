"""Revoke and prune against a real registry (Debian's docker-registry on loopback), through
the command line: three builds of one image pushed, the middle one revoked and refused by
pull while the others pull; a child on a revoked parent refused; prune keeps the newest and
the parent a kept child names, deletes the rest only with --yes; revocations carried to an
air-gapped import as a file. The images are small real artifacts (support.artifacts); the
same flow on baked images (a child on a revoked org-base) is in tests/e2e/test_e2e_layers.py.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import registry_server
from support.artifacts import BAKER, keypair_fixture, make_artifact, make_image
from support.registry_server import Registry

from baker.evidence import revocation, signing
from baker.hashing import sha256_file

__all__ = ["keypair_fixture"]


def baker(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BAKER), *map(str, argv)], capture_output=True, text=True)


def ok(*argv: object) -> str:
    done = baker(*argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = registry_server.start(tmp_path_factory.mktemp("registry") / "r", tls=False)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def builds(
    tmp_path_factory: pytest.TempPathFactory, keypair: tuple[Path, Path], registry: Registry
) -> dict[str, Any]:
    """Three builds of `web`, a day apart, pushed as web:1, :2, :3, and `app`, built on
    web:1 and pushed as app:1, all in one repository."""
    root = tmp_path_factory.mktemp("builds")
    key, pub = keypair
    repo = f"{registry.host}/golden/images"
    arts: dict[object, Path] = {}
    refs: dict[object, str] = {}
    for n in (1, 2, 3):
        qcow2 = make_image(root / f"img{n}", {"etc/build": f"{n}\n".encode()})
        arts[n] = make_artifact(root / f"web{n}" / "web", qcow2, key, name="web",
                                finished=f"2026-12-0{n}T00:00:00+00:00")  # fmt: skip
        refs[n] = ok("push", arts[n], f"{repo}:{n}").split()[-1]
    parent_digest = f"sha256:{sha256_file(arts[1] / 'image.qcow2')}"
    parent = {
        "name": "web",
        "digest": parent_digest,
        "provenance_digest": f"sha256:{sha256_file(arts[1] / 'provenance.json')}",
        "source": refs[1].replace(":1@", "@"),
        "signer": signing.fingerprint(signing.load_public_key(pub)),
    }
    qcow2 = make_image(root / "img-app", {"etc/app": b"app\n"})
    app = make_artifact(root / "app" / "app", qcow2, key, parent=parent, name="app",
                        finished="2026-12-04T00:00:00+00:00")  # fmt: skip
    refs["app"] = ok("push", app, f"{repo}:app-1").split()[-1]
    return {"repo": repo, "arts": arts, "refs": refs, "app": app, "key": key, "pub": pub,
            "root": root}  # fmt: skip


def test_a_revoked_image_is_refused_by_pull_the_others_pull(
    builds: dict[str, Any], tmp_path: Path
) -> None:
    b = builds
    revoked = ok("revoke", b["refs"][2], "--reason", "CVE-2026-0001 in openssl",
                 "--sign-key", b["key"])  # fmt: skip
    assert revoked.startswith(f"revoked {b['repo']}@sha256:")
    refused = baker("pull", b["refs"][2], "--into", tmp_path / "two", "--pub", b["pub"])
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"baker: error: {b['refs'][2].replace(':2@', '@')}: refused, web (sha256:"
    )
    assert lines[-1].endswith("by key " + _keyid(b["pub"])[:16] + ": CVE-2026-0001 in openssl.")
    assert not (tmp_path / "two").exists() and not list(tmp_path.iterdir())
    for n in (1, 3):
        ok("pull", b["refs"][n], "--into", tmp_path / f"p{n}", "--pub", b["pub"])
        assert "ok   revocation: not revoked (1 statements checked)" in ok(
            "verify", tmp_path / f"p{n}", "--pub", b["pub"], "--online", b["refs"][n]
        )


def test_a_statement_by_another_key_is_ignored(builds: dict[str, Any], tmp_path: Path) -> None:
    other_key, _ = signing.keygen(tmp_path / "other")
    ok("revoke", builds["refs"][3], "--reason", "not ours to say", "--sign-key", other_key)
    pulled = baker("pull", builds["refs"][3], "--into", tmp_path / "p", "--pub", builds["pub"])
    assert pulled.returncode == 0, pulled.stderr
    assert "ignored a revocation:" in pulled.stderr and "has no signature by key" in pulled.stderr


def test_a_child_on_a_revoked_parent_is_refused_and_verify_says_so(
    builds: dict[str, Any], tmp_path: Path
) -> None:
    b = builds
    ok("pull", b["refs"]["app"], "--into", tmp_path / "app", "--pub", b["pub"])
    ok(
        "revoke",
        b["refs"][1],
        "--reason",
        "built from a compromised mirror",
        "--sign-key",
        b["key"],
    )
    refused = baker("pull", b["refs"]["app"], "--into", tmp_path / "again", "--pub", b["pub"])
    assert refused.returncode == 1
    assert "refused, app is built on web (sha256:" in refused.stderr
    assert refused.stderr.rstrip().endswith(": built from a compromised mirror.")
    checked = baker("verify", tmp_path / "app", "--pub", b["pub"], "--online", b["refs"]["app"])
    assert checked.returncode == 1
    assert "FAIL revocation: app is built on web" in checked.stdout


def test_revocations_carried_offline_refuse_an_import(
    builds: dict[str, Any], tmp_path: Path
) -> None:
    b = builds
    ok("revoke", b["refs"][2], "--reason", "CVE-2026-0001 in openssl", "--sign-key", b["key"])
    file = tmp_path / "revocations.json"
    assert "revocation statements of" in ok("revocations", "export", b["repo"], "--to", file)
    statements = json.loads(file.read_text())["revocations"]
    found, _ = revocation.collect([(e, "f") for e in statements],
                                  [signing.load_public_key(b["pub"])])  # fmt: skip
    assert f"sha256:{sha256_file(b['arts'][2] / 'image.qcow2')}" in {r.image for r in found}
    bundle = tmp_path / "web2.tar"
    ok("export", b["arts"][2], "--to", bundle, "--pub", b["pub"])
    refused = baker("import", bundle, "--into", tmp_path / "in", "--pub", b["pub"],
                    "--revocations", file)  # fmt: skip
    assert refused.returncode == 1
    assert "refused, web (sha256:" in refused.stderr and "CVE-2026-0001" in refused.stderr
    assert not (tmp_path / "in").exists()
    failed = baker("verify", b["arts"][2], "--pub", b["pub"], "--revocations", file)
    assert failed.returncode == 1 and "FAIL revocation: web (sha256:" in failed.stdout
    fine = ok("verify", b["arts"][3], "--pub", b["pub"], "--revocations", file)
    assert "ok   revocation: not revoked" in fine


def test_a_local_artifact_revoked_beside_fails_verify_and_is_not_pushed(
    builds: dict[str, Any], tmp_path: Path
) -> None:
    b = builds
    copy = tmp_path / "web"
    subprocess.run(["cp", "-a", str(b["arts"][3]), str(copy)], check=True)
    ok("revoke", copy, "--reason", "superseded", "--sign-key", b["key"])
    assert (copy / revocation.FILE).is_file()
    failed = baker("verify", copy, "--pub", b["pub"])
    assert failed.returncode == 1
    assert "FAIL revocation: web (sha256:" in failed.stdout and ": superseded" in failed.stdout
    assert "ok   SHA256SUMS" in failed.stdout  # the statement is not one of the build's files
    unkeyed = baker("verify", copy)
    assert "FAIL revocation: 1 revocation statement(s) found; give --pub KEY" in unkeyed.stdout
    pushed = baker("push", copy, f"{b['repo']}:revoked")
    assert pushed.returncode == 2 and "a revoked image is not pushed" in pushed.stderr


def test_prune_keeps_the_newest_and_a_kept_childs_parent(
    builds: dict[str, Any], tmp_path: Path
) -> None:
    b = builds
    digest = {n: ref.split("@")[1] for n, ref in b["refs"].items()}
    dry = ok("prune", b["repo"], "--keep", "1")
    assert f"would delete {digest[2]} web [2]: not one of the newest 1 of web" in dry
    assert f"keep   {digest[1]} web [1]: the parent of kept app" in dry
    assert f"keep   {digest[3]} web [3]: one of the newest 1 of web" in dry
    assert "dry run: 1 of 4 images" in dry
    done = ok("prune", b["repo"], "--keep", "1", "--yes")
    assert f"delete {digest[2]} web [2]" in done and "deleted 1 of 4 images" in done
    gone = baker("pull", b["refs"][2], "--into", tmp_path / "gone", "--pub", b["pub"])
    assert gone.returncode == 1 and "no such manifest" in gone.stderr
    ok("pull", b["refs"][3], "--into", tmp_path / "three", "--pub", b["pub"])
    ok("verify", tmp_path / "three", "--pub", b["pub"])
    again = ok("prune", b["repo"], "--keep", "1")
    assert "dry run: 0 of 3 images" in again


def _keyid(pub: Path) -> str:
    return signing.fingerprint(signing.load_public_key(pub))
