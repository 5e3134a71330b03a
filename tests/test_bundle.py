"""baker.bundle.export: export gives the same bytes every time; import checks everything before it
extracts anything, and a damaged or malicious bundle leaves the target as it was."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.artifacts import (
    BAKER,
    NAME,
    SDE,
    image_fixture,
    keypair_fixture,
    make_artifact,
    make_project,
    quiet,
)

from baker import recipe
from baker.bundle import export as bundle
from baker.bundle import importer
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.evidence import verify as check
from baker.formats import convert, tario
from baker.hashing import sha256_file

__all__ = ["image_fixture", "keypair_fixture"]  # fixtures

ALL = ("raw", "vmdk", "vhdx", "vhd", "ova")


def _run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def signed(
    tmp_path_factory: pytest.TempPathFactory, image: Path, keypair: tuple[Path, Path]
) -> dict[str, Any]:
    """A signed, locked artifact in every format, exported with its sources."""
    root = tmp_path_factory.mktemp("signed")
    cache = Cache(root / "cache")
    project = make_project(root / "project", cache)
    art = make_artifact(root / "out" / NAME, image, keypair[0], project)
    tar = root / "bundle.tar"
    done = bundle.export(art, tar, quiet(), formats=ALL, with_sources=True, pub=keypair[1],
                         cache=cache)  # fmt: skip
    return {"root": root, "cache": cache, "artifact": art, "bundle": tar, "exported": done,
            "project": project, "key": keypair[0], "pub": keypair[1]}  # fmt: skip


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory, image: Path) -> dict[str, Any]:
    """An unsigned, unlocked artifact with one converted disk: small, for hand-made tars."""
    root = tmp_path_factory.mktemp("unsigned")
    art = make_artifact(root / "out" / NAME, image)
    tar = root / "bundle.tar"
    bundle.export(art, tar, quiet(), formats=("vmdk",))
    return {"root": root, "artifact": art, "bundle": tar}


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    """Where imports go; afterwards nothing else may have appeared beside it."""
    parent = tmp_path / "site"
    parent.mkdir()
    yield parent / "imported"
    assert [p.name for p in parent.iterdir()] in ([], ["imported"])


def _import(tar: Path, into: Path, pub: Path | None, cache: Path) -> importer.Imported:
    return importer.import_bundle(tar, into, quiet(), pub=pub, cache=Cache(cache))


def _members(tar: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar) as t:
        return t.getmembers()


# --- export ----------------------------------------------------------------------------------


def test_exporting_twice_gives_the_same_bytes(signed: dict[str, Any], tmp_path: Path) -> None:
    again = bundle.export(signed["artifact"], tmp_path / "other-name.tar", quiet(), formats=ALL,
                          with_sources=True, pub=signed["pub"], cache=signed["cache"])  # fmt: skip
    assert again.sha256 == signed["exported"].sha256 == sha256_file(signed["bundle"])
    assert (tmp_path / "other-name.tar").read_bytes() == signed["bundle"].read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["other-name.tar"]  # no partial file left


def test_bundle_members_are_sorted_plain_files_with_fixed_metadata(signed: dict[str, Any]) -> None:
    members = _members(signed["bundle"])
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:4] == ["BUNDLE.SHA256SUMS", "VERIFY.txt", "baker.pub", "bundle.json"]
    for m in members:
        assert m.isreg(), m.name
        assert (m.uid, m.gid, m.uname, m.gname, m.mode, m.mtime) == (0, 0, "", "", 0o644, SDE)
        assert not m.pax_headers, m.name  # plain ustar headers: no names or sizes needed more
    expected = {
        f"{NAME}/{f}"
        for f in ("SHA256SUMS", "build.json", "boot.json", "sbom.cdx.json", "sbom.spdx.json",
                  "provenance.json", "provenance.dsse.json", "image.qcow2.sig",
                  "verify.junit.xml", *(f"image.{x}" for x in convert.FORMATS))
    } | {
        "sources/images/tiny.yaml", "sources/images/tiny.lock",
        "sources/images/testinfra/test_tiny.py", "sources/provisioners/hello.sh",
        "sources/provisioners/files/page.html",
        *(f"debs/{d.removeprefix('sha256:')}.deb" for d in signed["project"]["debs"].values()),
    }  # fmt: skip
    assert set(names) - set(names[:4]) == expected
    assert signed["bundle"].stat().st_size % tarfile.RECORDSIZE == 0
    index = json.loads(_read(signed["bundle"], "bundle.json"))
    assert index["signer"] == signing.fingerprint(signing.load_public_key(signed["pub"]))
    assert index["sources"]["recipe"] == "sources/images/tiny.yaml"


def _read(tar: Path, name: str) -> bytes:
    with tarfile.open(tar) as t:
        return t.extractfile(name).read()  # type: ignore[union-attr]


def _verify_commands(text: str, trusted: Path) -> tuple[str, list[str]]:
    """VERIFY.txt's commands (indented four spaces) as one bash script, with the user's
    TRUSTED.pub and our baker put in, and what its comments say they must print."""
    commands, expected, pending = [], [], ""
    for line in text.splitlines():
        if not line.startswith("    "):
            continue
        line = line.strip()
        if line.startswith("# must print "):
            expected.append(line.removeprefix("# must print "))
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if line.startswith(("baker import", "baker rebuild")):
            continue  # the install and the rebuild are tested on their own
        if line.startswith("cosign") and shutil.which("cosign") is None:
            continue
        line = line.replace("TRUSTED.pub", str(trusted))
        commands.append(f"{BAKER} {line[6:]}" if line.startswith("baker ") else line)
    return "set -euo pipefail\n" + "\n".join(commands) + "\n", expected


def test_verify_txt_commands_check_the_bundle_with_plain_tools(
    signed: dict[str, Any], tmp_path: Path
) -> None:
    shutil.copyfile(signed["bundle"], tmp_path / "BUNDLE.tar")
    text = _read(signed["bundle"], "VERIFY.txt").decode()
    assert "openssl dgst -sha256 -verify TRUSTED.pub" in text
    assert "cosign verify-blob --key TRUSTED.pub" in text
    assert "baker rebuild --check DIR --recipe DIR/sources/images/tiny.yaml" in text
    script, expected = _verify_commands(text, signed["pub"])
    proc = _run("bash", "-c", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Verified OK" in proc.stdout
    for value in expected:
        assert value in proc.stdout
    # The same commands catch a changed image.
    qcow2 = tmp_path / "bundle" / NAME / "image.qcow2"
    with qcow2.open("r+b") as f:
        f.write(b"X")
    recheck = "cd bundle\n" + script.split("cd bundle\n", 1)[1]
    assert _run("bash", "-c", recheck, cwd=tmp_path).returncode != 0


def test_export_refuses_what_it_cannot_carry_faithfully(
    signed: dict[str, Any], unsigned: dict[str, Any], tmp_path: Path, keypair: Any
) -> None:
    art, pub, to = signed["artifact"], signed["pub"], tmp_path / "b.tar"
    other = signing.keygen(tmp_path / "other")[1]
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: bundle.export(art, to, quiet()), "is signed; give its signer's public key"),
        (lambda: bundle.export(art, to, quiet(), pub=other), "is not the key that signed"),
        (lambda: bundle.export(unsigned["artifact"], to, quiet(), pub=pub), "is not signed"),
        (lambda: bundle.export(unsigned["artifact"], to, quiet(), with_sources=True),
         "was built without a lock"),
        (lambda: bundle.export(art, art / "b.tar", quiet(), pub=pub), "inside the artifact"),
        (lambda: bundle.export(art, to, quiet(), pub=pub, with_sources=True,
                               cache=Cache(tmp_path / "empty")),
         "3 locked packages (pkg0, pkg1, pkg2) are not in the package cache"),
        (lambda: bundle.export(art, to, quiet(), pub=pub, with_sources=True,
                               recipe=tmp_path / "nope.yaml"),
         "is not here; give it with --recipe"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(InputError) as e:
            call()
        assert message in str(e.value)
    assert not to.exists() and not (art / "b.tar").exists()


def test_export_refuses_a_recipe_changed_since_the_build(
    signed: dict[str, Any], tmp_path: Path
) -> None:
    recipe_file = signed["project"]["recipe"]
    saved = recipe_file.read_bytes()
    try:
        recipe_file.write_bytes(saved + b"# edited\n")
        with pytest.raises(InputError, match="changed since"):
            bundle.export(signed["artifact"], tmp_path / "b.tar", quiet(), pub=signed["pub"],
                          with_sources=True, cache=signed["cache"])  # fmt: skip
    finally:
        recipe_file.write_bytes(saved)


def test_export_of_a_changed_file_leaves_no_bundle(
    unsigned: dict[str, Any], tmp_path: Path
) -> None:
    art = tmp_path / NAME
    shutil.copytree(unsigned["artifact"], art)
    with (art / "image.vmdk").open("r+b") as f:
        f.seek(4096)
        f.write(b"changed")
    with pytest.raises(BuildError, match="does not match its recorded sha256"):
        bundle.export(art, tmp_path / "b.tar", quiet())
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


# --- import ----------------------------------------------------------------------------------


def test_import_checks_then_extracts_artifact_sources_and_packages(
    signed: dict[str, Any], target: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "fresh-cache"
    done = _import(signed["bundle"], target, signed["pub"], cache)
    assert done.signer == signing.fingerprint(signing.load_public_key(signed["pub"]))
    assert done.debs == 3 and done.recipe == target / "sources/images/tiny.yaml"
    assert any("sources: recipe, lock and 3 pinned files" in line for line in done.checks)
    assert all(f.ok for f in check.verify(target, signed["pub"]))
    for name in (p.name for p in signed["artifact"].iterdir()):
        assert sha256_file(target / name) == sha256_file(signed["artifact"] / name)
    # The recipe's relative references resolve where the sources landed.
    spec = recipe.load(target / "sources/images/tiny.yaml", root=target / "sources")
    assert spec.files["../provisioners/hello.sh"][0] == target / "sources/provisioners/hello.sh"
    for digest in signed["project"]["debs"].values():
        assert Cache(cache).deb(digest.removeprefix("sha256:")) is not None


def test_import_into_an_existing_empty_directory(signed: dict[str, Any], target: Path) -> None:
    target.mkdir()
    _import(signed["bundle"], target, signed["pub"], target.parent.parent / "cache")
    assert (target / "image.qcow2").is_file()


def test_import_refuses_a_non_empty_target(signed: dict[str, Any], target: Path) -> None:
    target.mkdir()
    (target / "mine").write_text("keep\n")
    with pytest.raises(InputError, match="is not empty"):
        _import(signed["bundle"], target, signed["pub"], target.parent.parent / "cache")
    assert [p.name for p in target.iterdir()] == ["mine"]


def test_import_needs_the_key_you_trust(
    signed: dict[str, Any], unsigned: dict[str, Any], target: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match=r"is signed .* give the public key you trust with --pub"):
        _import(signed["bundle"], target, None, cache)
    other = signing.keygen(tmp_path / "other")[1]
    with pytest.raises(BuildError, match=r"baker\.pub .* is not the key you gave"):
        _import(signed["bundle"], target, other, cache)
    with pytest.raises(BuildError, match="is not signed, but --pub was given"):
        _import(unsigned["bundle"], target, signed["pub"], cache)
    assert not target.exists() and not cache.exists()


def test_an_unsigned_bundle_imports_and_says_so(unsigned: dict[str, Any], target: Path) -> None:
    proc = _run(BAKER, "import", unsigned["bundle"], "--into", target)
    assert proc.returncode == 0, proc.stderr
    assert "UNSIGNED" in proc.stdout
    assert "skip signature: not checked" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith(f"imported {NAME} (sha256:")
    assert _run(BAKER, "verify", target).returncode == 0


def test_cli_export_and_import(signed: dict[str, Any], tmp_path: Path) -> None:
    env = {"BAKER_CACHE_DIR": str(signed["cache"].root), "PATH": "/usr/bin:/bin:/usr/sbin"}
    tar = tmp_path / "b.tar"
    out = _run(BAKER, "export", signed["artifact"], "--to", tar, "--format", "vmdk,ova",
               "--with-sources", "--pub", signed["pub"], env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    last = out.stdout.splitlines()[-1]
    assert last.startswith(f"{tar}: 27 files, ") and last.endswith(f"sha256:{sha256_file(tar)}")
    assert "/s)" in last
    env["BAKER_CACHE_DIR"] = str(tmp_path / "cache")
    into = tmp_path / "into"
    proc = _run(BAKER, "import", tar, "--into", into, "--pub", signed["pub"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"rebuild offline: baker rebuild --check {into} --recipe {into}/sources/images/" in (
        proc.stdout
    )
    no_key = _run(BAKER, "import", tar, "--into", tmp_path / "x", env=env)
    assert no_key.returncode == 2
    assert no_key.stderr.count("\n") == 1 and "Traceback" not in no_key.stderr


# --- damaged and malicious bundles -----------------------------------------------------------

KINDS = [
    "BUNDLE.SHA256SUMS", "VERIFY.txt", "baker.pub", "bundle.json",
    *(f"{NAME}/{f}" for f in ("image.qcow2", "SHA256SUMS", "build.json", "boot.json",
                              "sbom.cdx.json", "sbom.spdx.json", "provenance.json",
                              "provenance.dsse.json", "image.qcow2.sig", "verify.junit.xml",
                              "image.raw", "image.vmdk", "image.vhdx", "image.vhd", "image.ova")),
    "sources/images/tiny.yaml", "sources/images/tiny.lock", "sources/provisioners/hello.sh",
    "deb",
]  # fmt: skip


@pytest.fixture
def flip(signed: dict[str, Any]) -> Iterator[Callable[[str], None]]:
    """Flip one byte in the middle of a member of the signed bundle, in place; the byte is
    flipped back afterwards (copying the bundle for each case would dominate the run time)."""
    tar = signed["bundle"]
    flipped: list[int] = []

    def at(offset: int) -> None:
        with tar.open("r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x01]))

    def member(name: str) -> None:
        is_it = (lambda n: n.startswith("debs/")) if name == "deb" else name.__eq__
        m = next(m for m in _members(tar) if is_it(m.name))
        offset = m.offset_data + m.size // 2
        at(offset)
        flipped.append(offset)

    yield member
    for offset in flipped:
        at(offset)
    assert sha256_file(tar) == signed["exported"].sha256


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_in_any_member_fails_the_import(
    kind: str, signed: dict[str, Any], flip: Callable[[str], None], target: Path, tmp_path: Path
) -> None:
    flip(kind)
    with pytest.raises(BuildError) as e:
        _import(signed["bundle"], target, signed["pub"], tmp_path / "cache")
    assert "BUNDLE.SHA256SUMS" in str(e.value)
    assert not target.exists() and not (tmp_path / "cache").exists()


def test_a_flipped_byte_in_a_header_fails_the_import(
    signed: dict[str, Any], target: Path, tmp_path: Path
) -> None:
    """A damaged header ends the readable archive early: the members after it are missing."""
    tar = signed["bundle"]
    m = next(m for m in _members(tar) if m.name == "sources/images/tiny.yaml")
    with tar.open("r+b") as f:
        f.seek(m.offset + 3)  # inside the name field: the header checksum no longer holds
        byte = f.read(1)[0]
        try:
            f.seek(m.offset + 3)
            f.write(bytes([byte ^ 0x01]))
            f.flush()
            with pytest.raises(BuildError, match="not in the bundle"):
                _import(tar, target, signed["pub"], tmp_path / "cache")
        finally:
            f.seek(m.offset + 3)
            f.write(bytes([byte]))
    assert not target.exists()


def _repack(src: Path, out: Path, edit: Callable[[dict[str, bytes]], None], sums: bool) -> None:
    """The bundle's members, edited in memory, written back as export would; with `sums`, the
    bundle's and the artifact's SHA256SUMS are made to agree with the edit (a careful forger)."""
    with tarfile.open(src) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]
    edit(files)
    if sums:
        art = {k.split("/", 1)[1]: v for k, v in files.items()
               if k.startswith(f"{NAME}/") and k != f"{NAME}/SHA256SUMS"}  # fmt: skip
        files[f"{NAME}/SHA256SUMS"] = "".join(
            f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in sorted(art.items())
        ).encode()
        files["BUNDLE.SHA256SUMS"] = "".join(
            f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in sorted(files.items())
            if k != "BUNDLE.SHA256SUMS"
        ).encode()  # fmt: skip
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            t.addfile(tario.tar_info(name, len(data), SDE), io.BytesIO(data))


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.update({f"{NAME}/image.qcow2": _flip_middle(f[f"{NAME}/image.qcow2"])}),
         "build.json names sha256:"),
        (lambda f: f.update({f"{NAME}/image.vmdk": f[f"{NAME}/image.qcow2"]}),
         "image.vmdk"),
        (lambda f: f.update({"sources/images/tiny.yaml": b"name: tiny\n"}),
         "the carried recipe sources/images/tiny.yaml does not match"),
        (lambda f: f.update({"sources/provisioners/hello.sh": b"#!/bin/sh\nrm -rf /\n"}),
         "the carried sources/provisioners/hello.sh does not match"),
        (lambda f: f.update({"sources/provisioners/evil.sh": b"#!/bin/sh\n"}),
         "carries sources/provisioners/evil.sh, which the build did not pin"),
        (lambda f: f.update({next(k for k in f if k.startswith("debs/")): b"!<arch>\nevil\n"}),
         "does not hold what its name says"),
        (lambda f: f.pop(next(k for k in f if k.startswith("debs/"))),
         "not exactly the locked ones"),
        (lambda f: f.pop(f"{NAME}/image.qcow2.sig"), "signature: image.qcow2.sig is missing"),
    ],
    ids=["image", "converted-disk", "recipe", "provisioner", "extra-source", "deb",
         "deb-removed", "signature-removed"],
)  # fmt: skip
def test_a_consistent_forgery_is_caught_by_what_is_signed(
    edit: Callable[[dict[str, bytes]], None],
    message: str,
    signed: dict[str, Any],
    target: Path,
    tmp_path: Path,
) -> None:
    forged = tmp_path / "forged.tar"
    _repack(signed["bundle"], forged, edit, sums=True)
    with pytest.raises(BuildError) as e:
        _import(forged, target, signed["pub"], tmp_path / "cache")
    assert message in str(e.value)
    assert not target.exists() and not (tmp_path / "cache").exists()


def _malicious(src: Path, out: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]],
               drop: str | None = None) -> None:  # fmt: skip
    """The good bundle's members (minus `drop`), then hand-made `extra` ones."""
    with tarfile.open(src) as good, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as bad:
        for m in good.getmembers():
            if m.name != drop:
                bad.addfile(m, good.extractfile(m))
        for info, data in extra:
            if data is None:  # only a header: the size it claims is never backed by data
                bad.fileobj.write(info.tobuf(tarfile.PAX_FORMAT))
            else:
                bad.addfile(info, io.BytesIO(data))


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "") -> Any:
    info = tario.tar_info(name, size, SDE)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("extra", "drop", "message"),
    [
        ([], f"{NAME}/sbom.cdx.json",
         f"{NAME}/sbom.cdx.json is listed in BUNDLE.SHA256SUMS but not in the bundle"),
        ([(_info("../evil", size=5), b"evil\n")], None, "'../evil' has an unsafe path"),
        ([(_info(f"{NAME}/../../evil", size=5), b"evil\n")], None, "has an unsafe path"),
        ([(_info("/tmp/evil", size=5), b"evil\n")], None, "'/tmp/evil' has an unsafe path"),
        ([(_info(f"{NAME}/passwd", tarfile.SYMTYPE, link="../../../../etc/passwd"), b"")],
         None, f"{NAME}/passwd is a symbolic link (to ../../../../etc/passwd)"),
        ([(_info(f"{NAME}/shadow", tarfile.LNKTYPE, link="/etc/shadow"), b"")],
         None, "is a hard link (to /etc/shadow)"),
        ([(_info(f"{NAME}/build.json", size=3), b"{}\n")], None,
         f"{NAME}/build.json appears twice"),
        ([(_info(f"{NAME}/image.raw", size=2 << 40), None)], None,
         "tiny/image.raw claims 2.00 TiB, over the 1.00 TiB a bundle allows for it"),
        ([(_info(f"{NAME}/notes.txt", size=100 << 20), None)], None,
         "claims 100.00 MiB, over the 64.00 MiB a bundle allows for it"),
        ([(_info(f"{NAME}/console", tarfile.CHRTYPE), b"")], None,
         "is not a regular file (tar type b'3')"),
        ([(_info("elsewhere/file", size=5), b"evil\n")], None,
         "elsewhere/file is in the bundle but not in BUNDLE.SHA256SUMS"),
    ],
    ids=["member-removed", "traversal", "traversal-inside", "absolute", "escaping-symlink",
         "hardlink", "duplicate", "oversized-disk", "oversized-file", "device", "unlisted"],
)  # fmt: skip
def test_a_malicious_bundle_is_refused_before_anything_is_written(
    extra: list[tuple[tarfile.TarInfo, bytes | None]],
    drop: str | None,
    message: str,
    unsigned: dict[str, Any],
    target: Path,
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.tar"
    _malicious(unsigned["bundle"], bad, extra, drop)
    with pytest.raises(BuildError) as e:
        _import(bad, target, None, tmp_path / "cache")
    assert message in str(e.value)
    assert not target.exists()
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil").exists()


def test_a_listed_unexpected_member_is_refused(unsigned: dict[str, Any], target: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    forged = tmp_path / "forged.tar"
    _repack(unsigned["bundle"], forged, lambda f: f.update({"elsewhere/x": b"x"}), sums=True)
    with pytest.raises(BuildError, match="unexpected member elsewhere/x"):
        _import(forged, target, None, tmp_path / "cache")
    assert not target.exists()


def test_cli_import_of_a_damaged_bundle_is_one_line_and_exit_1(
    unsigned: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.tar"
    _malicious(unsigned["bundle"], bad, [(_info("../evil", size=5), b"evil\n")])
    into = tmp_path / "into"
    into.mkdir()
    proc = _run(BAKER, "import", bad, "--into", into)
    assert proc.returncode == 1
    assert (
        proc.stderr
        == f"baker: error: {bad}: member '../evil' has an unsafe path (absolute, .. or odd).\n"
    )
    assert list(into.iterdir()) == []


def test_a_file_that_is_no_tar_is_refused(tmp_path: Path) -> None:
    not_tar = tmp_path / "not.tar"
    not_tar.write_bytes(b"hello" * 1000)
    with pytest.raises(BuildError, match="not a readable tar"):
        _import(not_tar, tmp_path / "x", None, tmp_path / "cache")
    assert not (tmp_path / "x").exists()


def test_a_system_error_is_one_sentence(
    signed: dict[str, Any], target: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> str:
        raise PermissionError(13, "Permission denied", str(target.parent / ".x"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(BuildError, match=r"failed: Permission denied \(.*/\.x\)\.$"):
        _import(signed["bundle"], target, signed["pub"], tmp_path / "cache")
    assert not target.exists()
