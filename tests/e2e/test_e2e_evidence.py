"""The evidence of a real build checks out offline, with our tools and with openssl; every
kind of tampering is caught with a clear line, never a traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.bakerun import BAKER, Baked, run_baker

pytestmark = pytest.mark.e2e


def verify(artifact: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BAKER), "verify", str(artifact), "--pub", str(pub)],
        capture_output=True,
        text=True,
        check=False,
    )


def copy_artifact(src: Path, dst: Path) -> Path:
    """A copy to tamper with: files hard-linked, except those the test rewrites."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).hardlink_to(f)
    return dst


def rewrite(path: Path, change: bytes | None = None, flip_at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    path.unlink()  # break the hard link: the original stays intact
    if flip_at is not None:
        data[flip_at] ^= 0x01
    path.write_bytes(bytes(data) if change is None else change)


def test_untouched_artifact_verifies(base_image: Baked, signing_key: Path) -> None:
    proc = verify(base_image.artifact, signing_key.with_name("baker.pub"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 9  # the session's base is scanned: its report is checked too
    assert all(line.startswith("ok   ") for line in lines), lines


def test_openssl_alone_checks_the_signature(base_image: Baked, signing_key: Path) -> None:
    # The README's command, as a user without baker would run it.
    command = (
        "openssl dgst -sha256 -verify baker.pub "
        "-signature <(base64 -d ARTIFACT/image.qcow2.sig) ARTIFACT/image.qcow2"
    ).replace("ARTIFACT", str(base_image.artifact))
    proc = subprocess.run(
        ["bash", "-c", command], cwd=signing_key.parent, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Verified OK"


def test_inspect_summarizes(base_image: Baked, signing_key: Path) -> None:
    proc = run_baker("inspect", base_image.artifact, "--json", work=base_image.artifact.parent)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["digest"] == base_image.digest
    assert info["boot"]["runs"] == 3
    assert info["tests"] == {"passed": 5, "failed": 0, "skipped": 0}
    keygen_fp = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(signing_key.with_name("baker.pub")),
         "-outform", "DER"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert info["signer"] == hashlib.sha256(keygen_fp).hexdigest()
    text = run_baker("inspect", base_image.artifact, work=base_image.artifact.parent).stdout
    assert base_image.digest in text and "signer" in text


@pytest.mark.parametrize(
    ("case", "tamper", "expected"),
    [
        ("image byte", lambda a, _o, _k: rewrite(a / "image.qcow2", flip_at=10_000_000),
         ["FAIL SHA256SUMS: checksum mismatch: image.qcow2", "FAIL signature:",
          "FAIL build.json: build.json names sha256:"]),
        ("cdx sbom byte", lambda a, _o, _k: rewrite(a / "sbom.cdx.json", flip_at=200),
         ["FAIL SHA256SUMS: checksum mismatch: sbom.cdx.json"]),
        ("spdx sbom byte", lambda a, _o, _k: rewrite(a / "sbom.spdx.json", flip_at=200),
         ["FAIL SHA256SUMS: checksum mismatch: sbom.spdx.json"]),
        ("provenance byte", lambda a, _o, _k: rewrite(a / "provenance.json", flip_at=120),
         ["FAIL SHA256SUMS: checksum mismatch: provenance.json", "FAIL provenance.dsse.json:"]),
        ("signature byte", lambda a, _o, _k: rewrite(a / "image.qcow2.sig", flip_at=20),
         ["FAIL SHA256SUMS: checksum mismatch: image.qcow2.sig", "FAIL signature:"]),
        ("another build's signature",
         lambda a, o, _k: rewrite(a / "image.qcow2.sig", (o / "image.qcow2.sig").read_bytes()),
         ["FAIL signature:"]),
        ("sbom names another image",
         lambda a, o, _k: rewrite(a / "sbom.cdx.json", (o / "sbom.cdx.json").read_bytes()),
         ["FAIL sbom.cdx.json: sbom.cdx.json names sha256:"]),
        ("file removed", lambda a, _o, _k: (a / "boot.json").unlink(),
         ["FAIL SHA256SUMS: listed but missing: boot.json",
          "FAIL boot.json: boot.json is missing"]),
        ("wrong public key", lambda _a, _o, _k: None,
         ["FAIL signature:", "FAIL provenance.dsse.json:"]),
    ],
)  # fmt: skip
def test_tampering_is_caught(
    base_image: Baked,
    web_image: Baked,
    signing_key: Path,
    tmp_path: Path,
    case: str,
    tamper: Callable[[Path, Path, Path], object],
    expected: list[str],
) -> None:
    artifact = copy_artifact(base_image.artifact, tmp_path / "artifact")
    pub = signing_key.with_name("baker.pub")
    if case == "wrong public key":
        subprocess.run([str(BAKER), "keygen", str(tmp_path / "other")], check=True,
                       capture_output=True)  # fmt: skip
        pub = tmp_path / "other" / "baker.pub"
    tamper(artifact, web_image.artifact, pub)
    proc = verify(artifact, pub)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    for line in expected:
        assert any(out.startswith(line) for out in proc.stdout.splitlines()), (line, proc.stdout)
    # The original is untouched and still verifies.
    assert verify(base_image.artifact, signing_key.with_name("baker.pub")).returncode == 0
    shutil.rmtree(artifact)
