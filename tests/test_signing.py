"""Signing keys, detached signatures and DSSE envelopes (baker.evidence.signing); no VM needed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.tamper import flip_byte

from baker.errors import BuildError, InputError
from baker.evidence import signing

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found")


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    # A passphrase exported in the developer's shell must not change what these tests see.
    monkeypatch.delenv(signing.PASSPHRASE_ENV, raising=False)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return signing.keygen(tmp_path / "keys")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    # Several 1 MiB chunks and a partial one, so the streaming hash crosses chunk boundaries.
    path = tmp_path / "image.qcow2"
    path.write_bytes(os.urandom(5 * (1 << 20) + 4321))
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# --- keygen ----------------------------------------------------------------------------------


def test_keygen_writes_pem_keys_with_exact_modes(tmp_path: Path) -> None:
    key_path, pub_path = signing.keygen(tmp_path / "a" / "b")
    assert key_path == tmp_path / "a" / "b" / "baker.key"
    assert pub_path == tmp_path / "a" / "b" / "baker.pub"
    assert _mode(key_path) == 0o600
    assert _mode(pub_path) == 0o644
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    private = signing.load_private_key(key_path)
    public = signing.load_public_key(pub_path)
    assert signing.fingerprint(private.public_key()) == signing.fingerprint(public)


@pytest.mark.parametrize("mask", [0o000, 0o077])
def test_keygen_modes_do_not_depend_on_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    key_path, pub_path = signing.keygen(tmp_path)
    assert _mode(key_path) == 0o600
    assert _mode(pub_path) == 0o644


def test_private_key_is_created_0600_not_chmodded_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: None
) -> None:
    # Under umask 0 a create-then-chmod would leave the key world-readable for a moment; the
    # mode must be given to the very open() that creates the file.
    os.umask(0)
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    key_path, _ = signing.keygen(tmp_path)
    [(_, flags, mode)] = [c for c in calls if c[0] == os.fspath(key_path)]
    assert flags & os.O_CREAT and flags & os.O_EXCL
    assert mode == 0o600


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    key_path, pub_path = signing.keygen(tmp_path)
    before = (key_path.read_bytes(), pub_path.read_bytes())
    with pytest.raises(InputError, match=r"baker\.key already exists"):
        signing.keygen(tmp_path)
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before


def test_keygen_refuses_when_only_the_public_key_exists(tmp_path: Path) -> None:
    (tmp_path / "baker.pub").write_text("someone else's key\n")
    with pytest.raises(InputError, match=r"baker\.pub already exists"):
        signing.keygen(tmp_path)
    assert not (tmp_path / "baker.key").exists()
    assert (tmp_path / "baker.pub").read_text() == "someone else's key\n"


def test_keygen_refuses_to_write_through_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "baker.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="already exists"):
        signing.keygen(tmp_path)
    assert not (tmp_path / "elsewhere").exists()


def test_keygen_into_a_path_that_is_a_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create key directory"):
        signing.keygen(tmp_path / "file")


# --- passphrases -----------------------------------------------------------------------------


def test_passphrase_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "correct horse battery staple")
    key_path, pub_path = signing.keygen(tmp_path)
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    key = signing.load_private_key(key_path)
    assert signing.fingerprint(key.public_key()) == signing.fingerprint(
        signing.load_public_key(pub_path)
    )


def test_empty_passphrase_means_no_encryption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "")
    key_path, _ = signing.keygen(tmp_path)
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_encrypted_key_without_passphrase_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "secret")
    key_path, _ = signing.keygen(tmp_path)
    monkeypatch.delenv(signing.PASSPHRASE_ENV)
    with pytest.raises(InputError, match="is encrypted; set BAKER_KEY_PASSPHRASE") as e:
        signing.load_private_key(key_path)
    assert str(key_path) in str(e.value)


def test_wrong_passphrase_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "secret")
    key_path, _ = signing.keygen(tmp_path)
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "not the secret")
    with pytest.raises(InputError, match="could not be decrypted: BAKER_KEY_PASSPHRASE is wrong"):
        signing.load_private_key(key_path)


def test_unencrypted_key_loads_even_with_a_passphrase_set(
    keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "for some other key")
    signing.load_private_key(keys[0])


# --- loading errors --------------------------------------------------------------------------


def test_missing_key_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(InputError, match=rf"^signing key {missing} does not exist\.$"):
        signing.load_private_key(missing)
    with pytest.raises(InputError, match=rf"^public key {missing} does not exist\.$"):
        signing.load_public_key(missing)


def test_a_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        signing.load_private_key(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello\n", os.urandom(4096), b"\0" * (1 << 20)])
def test_not_pem_is_an_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"is not a PEM file\.$"):
        signing.load_private_key(path)
    with pytest.raises(InputError, match=r"is not a PEM file\.$"):
        signing.load_public_key(path)


def test_damaged_pem_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InputError, match="is not a valid PEM private key"):
        signing.load_private_key(path)


def test_public_and_private_keys_swapped(keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    with pytest.raises(InputError, match="holds no PEM private key"):
        signing.load_private_key(pub_path)
    with pytest.raises(InputError, match=r"holds a private key; give the public key"):
        signing.load_public_key(key_path)


def test_keys_on_other_curves_are_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    key_path = tmp_path / "p384.key"
    pub_path = tmp_path / "p384.pub"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(InputError, match=r"secp384r1, not P-256"):
        signing.load_private_key(key_path)
    with pytest.raises(InputError, match=r"secp384r1, not P-256"):
        signing.load_public_key(pub_path)


def test_a_cosign_format_key_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "cosign.key"
    path.write_text(
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    with pytest.raises(InputError, match="cosign's own format"):
        signing.load_private_key(path)


# --- file signatures -------------------------------------------------------------------------


def test_sign_and_verify_a_multi_megabyte_file(keys: tuple[Path, Path], image: Path) -> None:
    key = signing.load_private_key(keys[0])
    pub = signing.load_public_key(keys[1])
    sig = signing.sign_file(key, image)
    assert base64.b64decode(sig, validate=True)[0] == 0x30  # a DER SEQUENCE
    assert signing.verify_file(pub, image, sig)
    # The streamed, prehashed signature is plain ECDSA-SHA256 over the whole file.
    pub.verify(base64.b64decode(sig), image.read_bytes(), ec.ECDSA(hashes.SHA256()))


def test_verify_tolerates_wrapped_base64(keys: tuple[Path, Path], image: Path) -> None:
    sig = signing.sign_file(signing.load_private_key(keys[0]), image)
    wrapped = "\n".join(sig[i : i + 20] for i in range(0, len(sig), 20)) + "\n"
    assert signing.verify_file(signing.load_public_key(keys[1]), image, wrapped)


def test_verify_fails_after_one_flipped_byte(keys: tuple[Path, Path], image: Path) -> None:
    sig = signing.sign_file(signing.load_private_key(keys[0]), image)
    flip_byte(image, (3 << 20) + 7)
    assert signing.verify_file(signing.load_public_key(keys[1]), image, sig) is False


def test_verify_fails_with_another_key(
    tmp_path: Path, keys: tuple[Path, Path], image: Path
) -> None:
    sig = signing.sign_file(signing.load_private_key(keys[0]), image)
    _, other_pub = signing.keygen(tmp_path / "other")
    assert signing.verify_file(signing.load_public_key(other_pub), image, sig) is False


def test_verify_fails_with_a_corrupted_or_truncated_signature(
    keys: tuple[Path, Path], image: Path
) -> None:
    pub = signing.load_public_key(keys[1])
    raw = base64.b64decode(signing.sign_file(signing.load_private_key(keys[0]), image))
    corrupted = bytearray(raw)
    corrupted[-5] ^= 0x40
    for bad in (bytes(corrupted), raw[:-1], raw[:-8], raw[: len(raw) // 2], raw + b"\0"):
        assert signing.verify_file(pub, image, base64.b64encode(bad).decode()) is False


@pytest.mark.parametrize(
    "garbage",
    ["", "   \n", "not base64!!!", "AAAA", "=====", "é", "\0\0", "QUJD", "MEUCIQ", "a" * 10_000],
)
def test_verify_returns_false_for_garbage(
    keys: tuple[Path, Path], image: Path, garbage: str
) -> None:
    assert signing.verify_file(signing.load_public_key(keys[1]), image, garbage) is False


def test_signing_a_missing_file_is_one_clear_error(keys: tuple[Path, Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing.qcow2"
    with pytest.raises(BuildError, match=str(missing)):
        signing.sign_file(signing.load_private_key(keys[0]), missing)


# --- openssl interoperability ----------------------------------------------------------------


def _openssl_verify(pub: Path, sig_b64: str, image: Path, tmp_path: Path) -> int:
    sig_file = tmp_path / "image.qcow2.sig"
    sig_file.write_text(sig_b64)
    # The exact command DESIGN.md and signing.sign_file's docstring give users.
    command = f"openssl dgst -sha256 -verify {pub} -signature <(base64 -d {sig_file}) {image}"
    return subprocess.run(["bash", "-c", command], capture_output=True).returncode


@needs_openssl
def test_openssl_verifies_a_good_signature_and_rejects_a_tampered_file(
    keys: tuple[Path, Path], image: Path, tmp_path: Path
) -> None:
    sig = signing.sign_file(signing.load_private_key(keys[0]), image)
    assert _openssl_verify(keys[1], sig, image, tmp_path) == 0
    flip_byte(image, 12345)
    assert _openssl_verify(keys[1], sig, image, tmp_path) != 0


@needs_openssl
def test_openssl_signatures_verify_with_baker(
    keys: tuple[Path, Path], image: Path, tmp_path: Path
) -> None:
    sig_der = tmp_path / "sig.der"
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", keys[0], "-out", sig_der, image],
        check=True,
        capture_output=True,
    )
    sig = base64.b64encode(sig_der.read_bytes()).decode()
    assert signing.verify_file(signing.load_public_key(keys[1]), image, sig)


@needs_openssl
def test_openssl_reads_an_encrypted_key_and_agrees_on_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "s3cret pass")
    key_path, pub_path = signing.keygen(tmp_path)
    derived = subprocess.run(
        ["openssl", "pkey", "-in", key_path, "-passin", f"env:{signing.PASSPHRASE_ENV}", "-pubout"],
        check=True,
        capture_output=True,
    ).stdout
    assert derived == pub_path.read_bytes()
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", pub_path, "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    assert hashlib.sha256(der).hexdigest() == signing.fingerprint(signing.load_public_key(pub_path))


# --- DSSE ------------------------------------------------------------------------------------


def test_pae_matches_the_dsse_spec_example() -> None:
    assert (
        signing.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert signing.pae("", b"") == b"DSSEv1 0  0 "
    # Lengths count bytes, not characters.
    assert signing.pae("é", "ü".encode()) == "DSSEv1 2 é 2 ü".encode()


Keypair = tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]


@pytest.fixture
def keypair(keys: tuple[Path, Path]) -> Keypair:
    return signing.load_private_key(keys[0]), signing.load_public_key(keys[1])


STATEMENT = json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": []}).encode()


def test_dsse_round_trip(keypair: Keypair) -> None:
    key, pub = keypair
    envelope = signing.dsse_sign(key, STATEMENT)
    # What is written to provenance.dsse.json and read back.
    envelope = json.loads(json.dumps(envelope))
    assert set(envelope) == {"payloadType", "payload", "signatures"}
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"], validate=True) == STATEMENT
    [entry] = envelope["signatures"]
    assert set(entry) == {"keyid", "sig"}
    assert entry["keyid"] == signing.fingerprint(pub) == signing.fingerprint(key.public_key())
    assert len(entry["keyid"]) == 64
    # The signature covers the PAE, not the raw payload.
    pub.verify(
        base64.b64decode(entry["sig"]),
        signing.pae(envelope["payloadType"], STATEMENT),
        ec.ECDSA(hashes.SHA256()),
    )
    assert signing.dsse_verify(pub, envelope) == STATEMENT


def test_dsse_custom_payload_type(keypair: Keypair) -> None:
    key, pub = keypair
    envelope = signing.dsse_sign(key, b"hello world", "http://example.com/HelloWorld")
    assert envelope["payloadType"] == "http://example.com/HelloWorld"
    assert signing.dsse_verify(pub, envelope) == b"hello world"


def test_dsse_accepts_an_unlabelled_signature(keypair: Keypair) -> None:
    key, pub = keypair
    envelope = signing.dsse_sign(key, STATEMENT)
    envelope["signatures"][0]["keyid"] = ""
    assert signing.dsse_verify(pub, envelope) == STATEMENT
    del envelope["signatures"][0]["keyid"]
    assert signing.dsse_verify(pub, envelope) == STATEMENT


def test_dsse_tampered_payload_is_refused(keypair: Keypair) -> None:
    key, pub = keypair
    envelope = signing.dsse_sign(key, STATEMENT)
    envelope["payload"] = base64.b64encode(STATEMENT.replace(b"[]", b"[1]")).decode()
    with pytest.raises(BuildError, match="does not verify"):
        signing.dsse_verify(pub, envelope)


def test_dsse_tampered_payload_type_is_refused(keypair: Keypair) -> None:
    key, pub = keypair
    envelope = signing.dsse_sign(key, STATEMENT)
    envelope["payloadType"] = "application/json"
    with pytest.raises(BuildError, match="does not verify"):
        signing.dsse_verify(pub, envelope)


def test_dsse_wrong_key_is_refused(tmp_path: Path, keypair: Keypair) -> None:
    key, _ = keypair
    _, other_pub_path = signing.keygen(tmp_path / "other")
    other = signing.load_public_key(other_pub_path)
    with pytest.raises(BuildError, match=f"no signature by key {signing.fingerprint(other)}"):
        signing.dsse_verify(other, signing.dsse_sign(key, STATEMENT))


def test_dsse_wrong_keyid_is_refused(keypair: Keypair) -> None:
    key, pub = keypair
    envelope = signing.dsse_sign(key, STATEMENT)
    envelope["signatures"][0]["keyid"] = "0" * 64
    with pytest.raises(BuildError, match="no signature by key"):
        signing.dsse_verify(pub, envelope)


def test_dsse_signature_by_another_key_under_our_keyid_is_refused(
    tmp_path: Path, keypair: Keypair
) -> None:
    _, pub = keypair
    other_key = signing.load_private_key(signing.keygen(tmp_path / "other")[0])
    envelope = signing.dsse_sign(other_key, STATEMENT)
    envelope["signatures"][0]["keyid"] = signing.fingerprint(pub)
    with pytest.raises(BuildError, match="does not verify"):
        signing.dsse_verify(pub, envelope)


def _envelope(keypair: Keypair) -> dict[str, Any]:
    return signing.dsse_sign(keypair[0], STATEMENT)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: "not a dict",
        lambda e: None,
        lambda e: {k: v for k, v in e.items() if k != "payload"},
        lambda e: {k: v for k, v in e.items() if k != "payloadType"},
        lambda e: {k: v for k, v in e.items() if k != "signatures"},
        lambda e: {**e, "payload": 12},
        lambda e: {**e, "payload": "!!not base64!!"},
        lambda e: {**e, "signatures": []},
        lambda e: {**e, "signatures": "abc"},
        lambda e: {**e, "signatures": ["abc"]},
        lambda e: {**e, "signatures": [{"keyid": e["signatures"][0]["keyid"]}]},
        lambda e: {**e, "signatures": [{**e["signatures"][0], "sig": "!!garbage!!"}]},
        lambda e: {**e, "signatures": [{**e["signatures"][0], "sig": 5}]},
        lambda e: {**e, "signatures": [{**e["signatures"][0], "sig": "AAAA"}]},
    ],
)
def test_dsse_malformed_envelopes_raise_build_error(
    keypair: Keypair, mangle: Callable[[dict[str, Any]], Any]
) -> None:
    with pytest.raises(BuildError) as e:
        signing.dsse_verify(keypair[1], mangle(_envelope(keypair)))
    message = str(e.value)
    assert message.startswith("the DSSE envelope") and message.endswith(".")
    assert "\n" not in message
