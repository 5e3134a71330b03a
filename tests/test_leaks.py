"""The leak check on root trees made by the tests (a tar as the capture step writes one, and the
same tree as a directory): what a package shipped unchanged is not looked into, what the build
left is; a secret's value is found as written, in hex and in base64 at every alignment;
histories and undeclared authorized_keys are findings; an allowed path is not; a finding names
the file and the kind, never the value."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from baker.recipe.safety import Allowed
from baker.security import leaks

AWS = b"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
# detect-secrets needs only the armour line to know a private key; the body is filler.
OPENSSH = (
    b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    b"-----END OPENSSH PRIVATE KEY-----\n"
)
SECRET = "tok-9f8e7d6c5b4a"


def _tree(files: dict[str, bytes]) -> dict[str, bytes]:
    """A small root: a package that ships a test key in its docs, unchanged, and its sums."""
    shipped = {"usr/share/doc/pkg/test.key": OPENSSH, "usr/lib/pkg/conf": b"x=1\n"}
    sums = "".join(f"{hashlib.md5(d).hexdigest()}  {p}\n" for p, d in shipped.items())
    return {**shipped, "var/lib/dpkg/info/pkg.md5sums": sums.encode(), **files}


def _tar(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "root.tar"
    with tarfile.open(path, "w") as t:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def _dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "root"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _both(
    tmp_path: Path,
    files: dict[str, bytes],
    secrets: dict[str, str] | None = None,
    declared: Sequence[str] = (),
    allow: Sequence[Allowed] = (),
) -> list[leaks.Leak]:
    """The findings, which must be the same read from a tar or from a directory."""
    tree = _tree(files)
    from_tar = leaks.check_tar(_tar(tmp_path, tree), leaks.Checker(secrets or {}, declared, allow))
    from_dir = leaks.check_tree(_dir(tmp_path, tree), leaks.Checker(secrets or {}, declared, allow))
    assert from_dir == from_tar
    return from_tar


def test_a_clean_tree_has_no_findings_and_a_packages_own_key_is_its_business(
    tmp_path: Path,
) -> None:
    assert _both(tmp_path, {"etc/hostname": b"localhost\n"}) == []


def test_keys_credentials_histories_and_authorized_keys_are_named_by_file_and_kind(
    tmp_path: Path,
) -> None:
    found = _both(tmp_path, {
        "root/.aws/credentials": AWS,
        "root/.ssh/id_ed25519": OPENSSH,
        "usr/lib/pkg/conf": b"x=1\n" + OPENSSH,  # a package's file, changed by the build
        "root/.bash_history": b"ls\n",
        "root/.ssh/authorized_keys": b"ssh-ed25519 AAAA someone\n",
        "home/app/.ssh/authorized_keys": b"ssh-ed25519 AAAA app\n",
    }, declared=["/home/app/.ssh/authorized_keys"])  # fmt: skip
    assert [str(f) for f in found] == [
        "/root/.aws/credentials (AWS Access Key)",
        "/root/.bash_history (a shell history)",
        "/root/.ssh/authorized_keys (an authorized_keys file the recipe does not declare)",
        "/root/.ssh/id_ed25519 (Private Key)",
        "/usr/lib/pkg/conf (Private Key)",
    ]


def test_an_allowed_path_is_not_a_finding(tmp_path: Path) -> None:
    allow = [Allowed(path="/etc/ssl/private/site.key", reason="the appliance's demo cert")]
    assert _both(tmp_path, {"etc/ssl/private/site.key": OPENSSH}, allow=allow) == []


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc"])
def test_a_secret_value_is_found_raw_in_hex_and_in_base64_at_any_alignment(
    tmp_path: Path, prefix: bytes
) -> None:
    value = SECRET.encode()
    files = {
        "etc/raw": b"token=" + value + b"\n",
        "etc/hex": value.hex().encode(),
        "etc/b64": base64.b64encode(prefix + value + b" and more"),
    }
    found = _both(tmp_path, files, secrets={"TOKEN": SECRET})
    assert [str(f) for f in found] == [
        "/etc/b64 (secret TOKEN, in base64)",
        "/etc/hex (secret TOKEN, in hex)",
        "/etc/raw (the value of secret TOKEN)",
    ]
    assert not any(SECRET in str(f) for f in found)


def test_a_value_across_two_reads_is_still_found(tmp_path: Path) -> None:
    big = b"x" * (leaks._CHUNK - 5) + SECRET.encode() + b"y" * 100  # straddles the chunk
    found = _both(tmp_path, {"var/big": big}, secrets={"TOKEN": SECRET})
    assert [str(f) for f in found] == ["/var/big (the value of secret TOKEN)"]
