"""Revocation statements: signed and read back, refused when tampered, signed by another key
or not a revocation, and checked against an image and its ancestors; the revocations file is
bounded and said to be wrong in one sentence."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from baker.errors import BuildError, InputError
from baker.evidence import revocation, signing

NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
IMAGE = "sha256:" + "ab" * 32
PARENT = "sha256:" + "cd" * 32


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    private, public = signing.keygen(tmp_path_factory.mktemp("k"))
    other, _ = signing.keygen(tmp_path_factory.mktemp("o"))
    return (signing.load_private_key(private), signing.load_public_key(public),
            signing.load_private_key(other))  # fmt: skip


def test_a_statement_reads_back_with_its_key(keys) -> None:
    key, pub, _ = keys
    envelope = revocation.sign(key, "web", IMAGE, "  CVE-2026-1 \n in openssl ", NOW)
    r = revocation.read(envelope, [pub], "here")
    assert (r.name, r.image, r.reason, r.revoked_at) == ("web", IMAGE, "CVE-2026-1 in openssl",
                                                         "2026-12-07T12:30:00Z")  # fmt: skip
    assert r.keyid == signing.fingerprint(pub)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": "web", "digest": {"sha256": "ab" * 32}}]


def test_tampered_foreign_and_other_statements_do_not_count(keys) -> None:
    key, pub, other = keys
    envelope = revocation.sign(key, "web", IMAGE, "bad", NOW)
    tampered = dict(envelope, payload=base64.b64encode(b'{"_type": "x"}').decode())
    with pytest.raises(BuildError, match="here: the DSSE envelope's signature by key"):
        revocation.read(tampered, [pub], "here")
    with pytest.raises(BuildError, match="has no signature by key"):
        revocation.read(revocation.sign(other, "web", IMAGE, "x", NOW), [pub], "there")
    provenance_like = signing.dsse_sign(key, b'{"_type": "https://in-toto.io/Statement/v1"}')
    with pytest.raises(BuildError, match=r"^p: not a baker revocation statement\.$"):
        revocation.read(provenance_like, [pub], "p")
    good, ignored = revocation.collect([(envelope, "a"), (tampered, "b")], [pub])
    assert [r.reason for r in good] == ["bad"] and len(ignored) == 1


def test_the_image_and_each_ancestor_are_checked(keys) -> None:
    key, pub, _ = keys
    found = [revocation.read(revocation.sign(key, "base", PARENT, "compromised", NOW), [pub], "f")]
    revocation.check("web", IMAGE, [], found)  # not revoked itself, no lineage
    with pytest.raises(revocation.Revoked, match=r"^web is built on base \(sha256:cdcdcd"):
        revocation.check("web", IMAGE, [("base", PARENT)], found)
    with pytest.raises(revocation.Revoked, match=r"^base \(sha256:cdcd.*\) is revoked 2026-12-07"):
        revocation.check("base", PARENT, [], found)
    with pytest.raises(BuildError, match=r"1 revocation statement\(s\) found; give --pub KEY"):
        revocation.verdict("web", IMAGE, [], [(found[0].envelope, "f")], [])


@pytest.mark.parametrize("reason", ["", "   ", "x" * 1001])
def test_a_reason_must_say_something_and_not_too_much(keys, reason: str) -> None:
    with pytest.raises(InputError, match=r"^--reason: "):
        revocation.sign(keys[0], "web", IMAGE, reason, NOW)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]", "not a revocations file"),
        (b'{"revocations": {}}', "not a revocations file"),
        (b"\xff", "not a revocations file"),
        (b" " * (revocation.MAX_FILE + 1), "the revocations file is more than 16 MiB"),
    ],
)
def test_a_bad_revocations_file_is_one_sentence(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"^(--revocations )?{path}: {message}"):
        revocation.load_file(path)
    with pytest.raises(InputError, match="No such file"):
        revocation.load_file(tmp_path / "missing.json")
