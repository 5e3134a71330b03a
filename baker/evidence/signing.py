"""Signing keys, detached file signatures and DSSE envelopes (DESIGN.md, artifact layout).

Every format here is a standard one so that an artifact can be checked without baker:
image.qcow2.sig is what `cosign sign-blob --key` writes and what
`openssl dgst -sha256 -verify baker.pub -signature <(base64 -d image.qcow2.sig) image.qcow2`
accepts; provenance.dsse.json is a DSSE v1 envelope as in-toto tooling reads it.
baker.pub is plain SubjectPublicKeyInfo PEM, which `cosign verify-blob --key` reads as is.
cosign only signs with its own encrypted key format, so baker.key (PKCS#8, what openssl and
everything else read) goes through `cosign import-key-pair --key baker.key` first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from baker.errors import BuildError, InputError

PASSPHRASE_ENV = "BAKER_KEY_PASSPHRASE"
PRIVATE_KEY_NAME = "baker.key"
PUBLIC_KEY_NAME = "baker.pub"
DSSE_PAYLOAD_TYPE = "application/vnd.in-toto+json"

_CHUNK = 1 << 20
# A PEM key is a few hundred bytes; the cap stops a mistaken path (say, the disk image given as
# --sign-key) from being read whole into memory.
_MAX_KEY_BYTES = 1 << 16
_COSIGN_PEM_TYPES = (b"ENCRYPTED SIGSTORE PRIVATE KEY", b"ENCRYPTED COSIGN PRIVATE KEY")


# --- keys ----------------------------------------------------------------------------------


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV, "")
    return value.encode() if value else None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` in the same system call that creates it, refusing to follow or
    replace anything already there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        # The umask can only narrow the mode given to open(); the contract names exact modes
        # (0644 must stay readable even under umask 077).
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def keygen(directory: Path) -> tuple[Path, Path]:
    """Write directory/baker.key (ECDSA P-256, PKCS#8 PEM, 0600; encrypted when
    BAKER_KEY_PASSPHRASE is set and non-empty) and directory/baker.pub (SubjectPublicKeyInfo
    PEM, 0644). Creates the directory if needed; never overwrites an existing key file."""
    key_path = directory / PRIVATE_KEY_NAME
    pub_path = directory / PUBLIC_KEY_NAME
    for existing in (key_path, pub_path):
        if existing.exists() or existing.is_symlink():
            raise InputError(f"{existing} already exists; refusing to overwrite a signing key.")

    key = ec.generate_private_key(ec.SECP256R1())
    passphrase = _passphrase()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create key directory {directory}: {e.strerror}.") from e
    try:
        _write_new(key_path, private_pem, 0o600)
    except FileExistsError as e:
        # Lost a race with another writer between the check above and the create.
        raise InputError(f"{key_path} already exists; refusing to overwrite a signing key.") from e
    except OSError as e:
        raise InputError(f"cannot write signing key {key_path}: {e.strerror}.") from e
    try:
        _write_new(pub_path, public_pem, 0o644)
    except OSError as e:
        # A private key without its public half is useless and would block the next keygen.
        key_path.unlink(missing_ok=True)
        if isinstance(e, FileExistsError):
            raise InputError(
                f"{pub_path} already exists; refusing to overwrite a signing key."
            ) from e
        raise InputError(f"cannot write public key {pub_path}: {e.strerror}.") from e
    return key_path, pub_path


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_BYTES + 1)
    except FileNotFoundError as e:
        raise InputError(f"{what} {path} does not exist.") from e
    except OSError as e:
        raise InputError(f"{what} {path} cannot be read: {e.strerror}.") from e
    if len(data) > _MAX_KEY_BYTES or b"-----BEGIN " not in data:
        raise InputError(f"{what} {path} is not a PEM file.")
    return data


def _require_p256(curve: ec.EllipticCurve, path: Path, what: str) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise InputError(f"{what} {path} uses curve {curve.name}, not P-256 (secp256r1).")


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a P-256 private key (PKCS#8 or SEC 1 PEM), decrypting it with BAKER_KEY_PASSPHRASE
    when it is encrypted; every failure is an InputError naming the path."""
    what = "signing key"
    data = _read_key_file(path, what)
    if any(t in data for t in _COSIGN_PEM_TYPES):
        raise InputError(
            f"{what} {path} is in cosign's own format; baker needs a PKCS#8 PEM key"
            " (create one with `baker keygen`)."
        )
    passphrase = _passphrase()
    try:
        try:
            key = serialization.load_pem_private_key(data, passphrase)
        except TypeError:
            if passphrase is None:
                raise InputError(
                    f"{what} {path} is encrypted; set {PASSPHRASE_ENV} to its passphrase."
                ) from None
            # The variable may be exported for another, encrypted key: an unencrypted one still
            # loads rather than failing over a passphrase it does not need.
            key = serialization.load_pem_private_key(data, None)
    except ValueError as e:
        if passphrase is not None and b"ENCRYPTED PRIVATE KEY" in data:
            raise InputError(
                f"{what} {path} could not be decrypted: {PASSPHRASE_ENV} is wrong"
                " or the file is damaged."
            ) from e
        if b"PRIVATE KEY" not in data:
            raise InputError(f"{what} {path} holds no PEM private key.") from e
        raise InputError(f"{what} {path} is not a valid PEM private key.") from e
    except UnsupportedAlgorithm as e:
        raise InputError(f"{what} {path} uses an unsupported key type or cipher.") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InputError(f"{what} {path} is not an ECDSA key; baker signs with P-256.")
    _require_p256(key.curve, path, what)
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Load a P-256 public key (SubjectPublicKeyInfo PEM); every failure is an InputError naming
    the path."""
    what = "public key"
    data = _read_key_file(path, what)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        if b"PRIVATE KEY" in data:
            raise InputError(
                f"{what} {path} holds a private key; give the public key (baker.pub)."
            ) from e
        raise InputError(f"{what} {path} is not a valid PEM public key.") from e
    except UnsupportedAlgorithm as e:
        raise InputError(f"{what} {path} uses an unsupported key type.") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InputError(f"{what} {path} is not an ECDSA key; baker verifies P-256 signatures.")
    _require_p256(key.curve, path, what)
    return key


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 hex of the DER SubjectPublicKeyInfo: the keyid in DSSE envelopes and what
    `baker inspect` shows (the same as `openssl pkey -pubin -outform DER | sha256sum`)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# --- detached file signatures ----------------------------------------------------------------

_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise BuildError(f"cannot read {path} to sign or verify it: {e.strerror}.") from e
    return h.digest()


def sign_file(key: ec.EllipticCurvePrivateKey, path: Path) -> str:
    """base64 of the DER ECDSA signature over SHA-256 of the file (cosign sign-blob's format),
    hashing the file in one streaming pass; BuildError if the file cannot be read."""
    signature = key.sign(_file_digest(path), _ECDSA_PREHASHED)
    return base64.b64encode(signature).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64, standard or URL-safe alphabet (DSSE allows either), whitespace ignored
    (openssl and editors wrap lines); ValueError on anything else."""
    compact = "".join(text.split())
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact.encode("ascii"), altchars=altchars, validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(str(e)) from e


def verify_file(key: ec.EllipticCurvePublicKey, path: Path, signature_b64: object) -> bool:
    """True only if `signature_b64` is a valid signature by `key` over the file. A bad signature,
    bad base64 or garbage gives False, never an exception; an unreadable file is a BuildError."""
    if not isinstance(signature_b64, str):
        return False
    try:
        signature = _b64decode(signature_b64)
    except ValueError:
        return False
    if not signature:
        return False
    digest = _file_digest(path)
    try:
        key.verify(signature, digest, _ECDSA_PREHASHED)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- DSSE envelopes --------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding; lengths are byte counts, so a non-ASCII type counts
    its UTF-8 bytes."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def dsse_sign(
    key: ec.EllipticCurvePrivateKey,
    payload: bytes,
    payload_type: str = DSSE_PAYLOAD_TYPE,
) -> dict[str, Any]:
    """A DSSE envelope over `payload`, signed by `key`, keyid = fingerprint of its public key."""
    signature = key.sign(pae(payload_type, payload), _ECDSA_SHA256)
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {
                "keyid": fingerprint(key.public_key()),
                "sig": base64.b64encode(signature).decode("ascii"),
            }
        ],
    }


def dsse_verify(key: ec.EllipticCurvePublicKey, envelope: dict[str, Any]) -> bytes:
    """The payload bytes if a signature by `key` verifies; BuildError (one sentence) for a
    malformed envelope, no signature with a matching keyid, or a bad signature."""
    if not isinstance(envelope, dict):
        raise BuildError("the DSSE envelope is malformed: it is not a JSON object.")
    payload_type = envelope.get("payloadType")
    payload_b64 = envelope.get("payload")
    signatures = envelope.get("signatures")
    if not isinstance(payload_type, str) or not isinstance(payload_b64, str):
        raise BuildError("the DSSE envelope is malformed: payloadType or payload is missing.")
    if not isinstance(signatures, list) or not signatures:
        raise BuildError("the DSSE envelope is malformed: it has no signatures.")
    try:
        payload = _b64decode(payload_b64)
    except ValueError as e:
        raise BuildError("the DSSE envelope is malformed: its payload is not base64.") from e

    keyid = fingerprint(key)
    # keyid is only a hint in DSSE and other signers (cosign attest-blob) may leave it empty, so
    # unlabelled signatures are tried too; a signature labelled for another key is not.
    candidates = [
        s for s in signatures if isinstance(s, dict) and s.get("keyid", "") in (keyid, "", None)
    ]
    if not candidates:
        raise BuildError(f"the DSSE envelope has no signature by key {keyid}.")
    message = pae(payload_type, payload)
    for entry in candidates:
        sig_b64 = entry.get("sig")
        if not isinstance(sig_b64, str):
            continue
        try:
            key.verify(_b64decode(sig_b64), message, _ECDSA_SHA256)
        except (ValueError, InvalidSignature):
            continue
        return payload
    raise BuildError(f"the DSSE envelope's signature by key {keyid} does not verify.")
