"""`baker export` and `baker import`: one self-verifying tar per image, to carry across an air gap.

A bundle holds only regular files, sorted by name, each with the build's source date as its
time, owner 0:0 without names and mode 0644, so the same artifact always gives the same bytes:

    BUNDLE.SHA256SUMS   sha256sum lines for every other member (`sha256sum -c` checks them)
    VERIFY.txt          the commands that check the bundle with sha256sum, openssl and cosign
    baker.pub           the signer's public key (signed artifacts only)
    bundle.json         what is where: the image, its signer, the sources
    NAME/...            the artifact directory as published, with any converted disks
    debs/SHA256.deb     --with-sources: the exact locked packages, named by their hash
    sources/...         --with-sources: recipe, lock, provisioner and test files, laid out as
                        they are relative to the recipe, so its relative references resolve

The tar format is POSIX pax: Python writes plain ustar headers for ordinary members and adds
an extended record only where ustar falls short (a name over 100 bytes, a member over 8 GiB),
which GNU tar, bsdtar and busybox all read; GNU's own extensions are not needed anywhere.

Trust on import: the key is the one the user brings (--pub), never the bundle's baker.pub,
which is only carried so the other side can compare fingerprints; the two must be the same.
SHA256SUMS files are not signed, so every claim they make is tied back to what is: the image
digest to the signed provenance, converted disks to the image by `qemu-img compare`, and each
source file and package to its digest in the signed provenance.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import queue
import re
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from baker import lock
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.evidence import signing
from baker.formats import convert
from baker.formats.convert import IMAGE, SUMS, HashingReader, Meter, human, rate, tar_info
from baker.hashing import sha256_file
from baker.progress import Reporter

FORMAT = 1
BUNDLE_SUMS = "BUNDLE.SHA256SUMS"
VERIFY = "VERIFY.txt"
PUBLIC_KEY = "baker.pub"
INDEX = "bundle.json"
SIGNATURE = f"{IMAGE}.sig"
ENVELOPE = "provenance.dsse.json"
META = (BUNDLE_SUMS, VERIFY, PUBLIC_KEY, INDEX)

# Bounds a bundle must keep: a member claiming more is refused before anything is written.
MAX_MEMBERS = 100_000
MAX_DISK = 1 << 40  # a disk image in any format
MAX_DEB = 4 << 30  # Debian's largest packages are well under this
MAX_OTHER = 64 << 20  # evidence, sources, keys: text files
MAX_NAME = 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)
_HOLE_MIN = 64 << 10
_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


@dataclass(frozen=True)
class _Member:
    name: str
    sha256: str
    size: int
    path: Path | None = None  # streamed from here, or
    data: bytes | None = None  # written from memory


def _dump(value: Any) -> bytes:
    # attest.dump's format; attest itself pulls in the SBOM schemas, seconds of start-up.
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _os_error(what: str, e: OSError) -> BuildError:
    where = f" ({e.filename})" if e.filename else ""
    return BuildError(f"{what} failed: {e.strerror or e}{where}.")


def _from_bytes(name: str, data: bytes) -> _Member:
    return _Member(name, hashlib.sha256(data).hexdigest(), len(data), data=data)


# --- export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    size: int
    members: int
    seconds: float
    signer: str | None
    sources: bool


def export(
    artifact: Path,
    to: Path,
    reporter: Reporter,
    *,
    formats: tuple[str, ...] = (),
    with_sources: bool = False,
    pub: Path | None = None,
    recipe: Path | None = None,
    cache: Cache | None = None,
) -> Exported:
    """Write `artifact` (and with `with_sources`, what an offline rebuild needs) into the tar
    `to`, which appears whole or not at all; the same inputs give the same bytes."""
    try:
        return _export(artifact, to, reporter, formats, with_sources, pub, recipe, cache)
    except OSError as e:
        raise _os_error(f"export of {artifact}", e) from None


def _export(
    artifact: Path,
    to: Path,
    reporter: Reporter,
    formats: tuple[str, ...],
    with_sources: bool,
    pub: Path | None,
    recipe: Path | None,
    cache: Cache | None,
) -> Exported:
    record = convert.read_record(artifact)
    to = Path(os.path.abspath(to))
    _check_destination(artifact, to)
    key = _export_key(artifact, pub)
    sources: list[_Member] = []
    where: dict[str, Any] | None = None
    if with_sources:
        # Before any conversion: a refusal here should cost nothing.
        sources, where = _sources(artifact, record, recipe, cache or Cache())
    if formats:
        convert.convert(artifact, formats, reporter)
    sums = convert.read_sums(artifact)
    digest = record["image"]["digest"]
    if sums.get(IMAGE) != digest.removeprefix("sha256:"):
        raise BuildError(f"{artifact}/{SUMS} does not list {IMAGE} with the digest in build.json.")
    if key is not None:
        _check_signatures(artifact, key, sums[IMAGE])
    members = _artifact_members(artifact, record["recipe"]["name"], sums) + sources
    members += _meta_members(record, key, where, members)
    members.sort(key=lambda m: m.name)
    started = time.monotonic()
    sha256, size = _write_bundle(to, members, int(record["source_date_epoch"]), reporter)
    return Exported(
        to,
        sha256,
        size,
        len(members),
        time.monotonic() - started,
        signing.fingerprint(key) if key else None,
        with_sources,
    )


def _check_destination(artifact: Path, to: Path) -> None:
    if to.is_dir():
        raise InputError(f"--to {to}: is a directory; give the bundle's file name.")
    if not to.parent.is_dir():
        raise InputError(f"--to {to}: {to.parent} does not exist.")
    if to.parent.resolve() == artifact.resolve():
        raise InputError(f"--to {to}: the bundle cannot go inside the artifact it carries.")


def _export_key(artifact: Path, pub: Path | None) -> ec.EllipticCurvePublicKey | None:
    """The signer's key to carry: required for a signed artifact, and it must be the signer's."""
    signed = (artifact / SIGNATURE).exists() or (artifact / ENVELOPE).exists()
    if not signed:
        if pub is not None:
            raise InputError(f"{artifact} is not signed; --pub has no signature to match.")
        return None
    if pub is None:
        raise InputError(
            f"{artifact} is signed; give its signer's public key with --pub so the bundle "
            "carries it."
        )
    from baker.evidence import (
        verify as check,  # its SBOM schemas take seconds to load: only when needed
    )

    key = signing.load_public_key(pub)
    keyid, fingerprint = check.signer(artifact), signing.fingerprint(key)
    if keyid != fingerprint:
        raise InputError(
            f"--pub {pub} (key {fingerprint[:16]}…) is not the key that signed {artifact} "
            f"({(keyid or 'no keyid')[:16]}…)."
        )
    return key


def _check_signatures(artifact: Path, key: ec.EllipticCurvePublicKey, image_sha256: str) -> None:
    """The image signature (over the digest SHA256SUMS lists, which the export then checks the
    image against as it streams it) and the DSSE envelope; a bundle that would fail import is
    not written."""
    try:
        sig = base64.b64decode((artifact / SIGNATURE).read_text().strip(), validate=True)
        key.verify(sig, bytes.fromhex(image_sha256), _ECDSA_PREHASHED)
    except FileNotFoundError:
        raise BuildError(f"{artifact} has {ENVELOPE} but no {SIGNATURE}.") from None
    except (InvalidSignature, ValueError, binascii.Error):
        raise BuildError(f"{artifact}/{SIGNATURE} is not a valid signature by that key.") from None
    try:
        envelope = json.loads((artifact / ENVELOPE).read_bytes())
        statement = (artifact / "provenance.json").read_bytes()
    except (OSError, ValueError) as e:
        raise BuildError(f"{artifact}: the signed provenance cannot be read ({e}).") from None
    if signing.dsse_verify(key, envelope) != statement:
        raise BuildError(f"{artifact}/{ENVELOPE} does not sign provenance.json.")


def _artifact_members(artifact: Path, name: str, sums: dict[str, str]) -> list[_Member]:
    present = {p.name for p in artifact.iterdir() if p.is_file()} - {SUMS}
    if unlisted := sorted(present - set(sums)):
        raise BuildError(
            f"{artifact}: {', '.join(unlisted)} not listed in {SUMS}; run baker verify."
        )
    if missing := sorted(set(sums) - present):
        raise BuildError(f"{artifact}: {', '.join(missing)} listed in {SUMS} but missing.")
    members = [
        _Member(f"{name}/{f}", sums[f], (artifact / f).stat().st_size, path=artifact / f)
        for f in sorted(sums)
    ]
    # Read once now: what is carried is what the other members were checked against.
    return [*members, _from_bytes(f"{name}/{SUMS}", (artifact / SUMS).read_bytes())]


def _sources(
    artifact: Path, record: dict[str, Any], recipe: Path | None, cache: Cache
) -> tuple[list[_Member], dict[str, Any]]:
    """The recipe, its lock, every pinned file and every locked .deb, each checked against the
    build record now (they are small, but the .debs are checked again as they stream)."""
    pins = record.get("pins") or {}
    if not pins.get("lock"):
        raise InputError(
            f"{artifact} was built without a lock, so there is no exact package set to carry; "
            "`baker lock` the recipe and build again."
        )
    recipe = recipe or Path(record["recipe"]["file"])
    if not recipe.is_file():
        raise InputError(
            f"the recipe {recipe} that {artifact} was built from is not here; "
            "give it with --recipe."
        )
    if f"sha256:{sha256_file(recipe)}" != record["recipe"]["digest"]:
        raise InputError(f"{recipe} changed since {artifact} was built (its digest differs).")
    lock_path = lock.path_for(recipe)
    if lock.load(lock_path).digest != pins["lock"]["digest"]:
        raise InputError(f"{lock_path} is not the lock {artifact} was built with.")
    here = recipe.resolve().parent
    layout = _layout(here, recipe.name, list(pins.get("files", {})))
    members = [
        _Member(layout[recipe.name], sha256_file(recipe), recipe.stat().st_size, path=recipe),
        _Member(
            layout[lock_path.name],
            sha256_file(lock_path),
            lock_path.stat().st_size,
            path=lock_path,
        ),
    ]
    files: dict[str, str] = {}
    for rel, pinned in sorted(pins.get("files", {}).items()):
        path = (here / rel).resolve()
        if not path.is_file() or f"sha256:{sha256_file(path)}" != pinned:
            raise InputError(f"{path}, pinned by {recipe} as {rel}, is missing or changed.")
        files[rel] = layout[rel]
        members.append(
            _Member(layout[rel], pinned.removeprefix("sha256:"), path.stat().st_size, path=path)
        )
    debs, missing = {}, []
    for name, pinned in sorted(pins.get("debs", {}).items()):
        sha = pinned.removeprefix("sha256:")
        deb = cache.deb(sha)
        if deb is None:
            missing.append(name)
            continue
        debs[name] = f"debs/{sha}.deb"
        members.append(_Member(debs[name], sha, deb.stat().st_size, path=deb))
    if missing:
        raise InputError(
            f"{len(missing)} locked packages ({', '.join(missing[:5])}"
            f"{'…' if len(missing) > 5 else ''}) are not in the package cache {cache.root}; "
            "a build from the lock fetches them."
        )
    where = {
        "recipe": layout[recipe.name],
        "lock": layout[lock_path.name],
        "files": files,
        "debs": debs,
    }
    # Two spellings of one file are one member.
    unique = {m.name: m for m in members}
    return list(unique.values()), where


def _layout(here: Path, recipe_name: str, rels: list[str]) -> dict[str, str]:
    """Where the recipe, its lock and each pinned file (as the recipe names it) go under
    sources/: rooted as high above the recipe's directory as its references climb."""
    depth = 0
    for rel in rels:
        parts = PurePosixPath(os.path.normpath(rel)).parts
        if PurePosixPath(rel).is_absolute():
            raise InputError(
                f"the recipe pins {rel} by an absolute path; a bundle carries only "
                "files named relative to the recipe."
            )
        depth = max(depth, len([p for p in parts if p == ".."]))
    if depth > len(here.parents):
        raise InputError(f"the recipe's files climb above {here.anchor}.")
    root = here.parents[depth - 1] if depth else here
    out = {}
    for rel in [recipe_name, Path(recipe_name).with_suffix(".lock").name, *rels]:
        inside = os.path.relpath(os.path.normpath(here / rel), root)
        out[rel] = f"sources/{PurePosixPath(inside)}"
    return out


def _meta_members(
    record: dict[str, Any],
    key: ec.EllipticCurvePublicKey | None,
    where: dict[str, Any] | None,
    members: list[_Member],
) -> list[_Member]:
    name = record["recipe"]["name"]
    signer = signing.fingerprint(key) if key else None
    index = {
        "format": FORMAT,
        "image": {"name": name, "digest": record["image"]["digest"]},
        "artifact": name,
        "signer": signer,
        "sources": where,
    }
    disks = sorted(
        m.name.removeprefix(f"{name}/")
        for m in members
        if m.name.startswith(f"{name}/image.") and not m.name.endswith(".sig")
    )
    meta = [
        _from_bytes(INDEX, _dump(index)),
        _from_bytes(VERIFY, verify_text(name, record["image"]["digest"], signer, disks, where)),
    ]
    if key is not None:
        meta.append(_from_bytes(PUBLIC_KEY, _pem(key)))
    listed = sorted([*members, *meta], key=lambda m: m.name)
    sums = "".join(f"{m.sha256}  {m.name}\n" for m in listed)
    return [*meta, _from_bytes(BUNDLE_SUMS, sums.encode())]


def _pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_text(
    name: str, digest: str, signer: str | None, disks: list[str], where: dict[str, Any] | None
) -> bytes:
    """VERIFY.txt: the exact commands, in order, that check this bundle on the other side.
    Commands are indented four spaces, what they must print is a comment below them."""
    image = f"{name}/{IMAGE}"
    lines = [
        f"baker bundle of {name}, image {digest}",
        "",
        "Check it with the tools at hand (bash, coreutils, openssl, cosign, qemu-img), or with",
        "baker import, which runs every check below before it extracts anything.",
        "",
        "1. Unpack, then check every file against the bundle's list:",
        "    mkdir bundle && tar -xf BUNDLE.tar -C bundle && cd bundle",
        f"    sha256sum -c {BUNDLE_SUMS}",
        f"    (cd {name} && sha256sum -c {SUMS})",
        f"    sha256sum {image}",
        f"        # must print {digest.removeprefix('sha256:')}",
        "",
    ]
    if signer:
        lines += [
            "2. Check the signature with the public key you trust, brought separately",
            f"   (TRUSTED.pub below; {PUBLIC_KEY} in here is only for comparison):",
            "    openssl pkey -pubin -in TRUSTED.pub -outform DER | sha256sum",
            f"        # must print {signer}",
            f"    openssl dgst -sha256 -verify TRUSTED.pub -signature <(base64 -d {image}.sig) \\",
            f"        {image}",
            f"    cosign verify-blob --key TRUSTED.pub --signature {image}.sig \\",
            f"        --insecure-ignore-tlog {image}",
            f"    baker verify {name} --pub TRUSTED.pub",
            "",
        ]
    else:
        lines += [
            "2. This image is NOT signed: nothing here proves who built it. Compare the digest",
            "   above with one you received separately. The evidence is checked with:",
            f"    baker verify {name}",
            "",
        ]
    if others := [d for d in disks if d != IMAGE]:
        signed = ", the signed one" if signer else ""
        lines.append(f"3. Each converted disk holds the same disk as {IMAGE}{signed}:")
        for d in others:
            if d.endswith(".ova"):
                lines += [
                    f"    mkdir ova && tar -xf {name}/{d} -C ova",
                    f"    sed -E 's/^SHA256\\((.+)\\)= ([0-9a-f]+)$/\\2  \\1/' ova/{name}.mf"
                    " | (cd ova && sha256sum -c)",
                    f"    qemu-img compare -f vmdk -F qcow2 ova/{convert.FILES['vmdk']} {image}",
                ]
            else:
                fmt = convert.DISK_FORMATS[d.rsplit(".", 1)[1]]
                lines.append(f"    qemu-img compare -f {fmt} -F qcow2 {name}/{d} {image}")
        lines.append("")
    pub = " --pub TRUSTED.pub" if signer else ""
    lines += [
        "4. Install it (checks everything again, then extracts into DIR):",
        f"    baker import BUNDLE.tar --into DIR{pub}",
    ]
    if where:
        lines += [
            "",
            "5. Rebuild it offline from the carried sources and packages, and compare digests:",
            f"    baker rebuild --check DIR --recipe DIR/{where['recipe']}",
        ]
    return ("\n".join(lines) + "\n").encode()


class _BackgroundHash:
    """sha256 fed from another thread. hashlib lets go of the GIL on large buffers, so the
    bundle's own digest takes a second core instead of doubling the time per byte (each byte
    is hashed twice: as its member, against SHA256SUMS, and as part of the bundle)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            self.hash.update(data)

    def update(self, data: bytes) -> None:
        self.queue.put(data)

    def close(self) -> str:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        return self.hash.hexdigest()


class _HashingWriter:
    """The bundle's file, hashed as tarfile writes it (its own digest at no extra read). Long
    runs of zeros, as in a raw or fixed vhd disk, are skipped over rather than written: the
    file reads back the same bytes, but holds holes instead of gigabytes of written zeros."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.hash = _BackgroundHash()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(bytes(data))
        _write_sparse(self.f, data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def finish(self) -> None:
        self.f.truncate(self.size)  # a hole at the very end still counts

    def close(self) -> None:
        self.hash.close()  # also on failure: the thread must not outlive the export


def _write_sparse(f: Any, data: bytes) -> None:
    """Write `data`, or seek over it when it is a long run of zeros (the caller truncates the
    file to its full size at the end, for a hole at the very end)."""
    n = len(data)
    if n >= _HOLE_MIN and data == (_ZEROS if n == _CHUNK else _ZEROS[:n]):
        f.seek(n, os.SEEK_CUR)
    else:
        f.write(data)


def _write_bundle(
    to: Path, members: list[_Member], mtime: int, reporter: Reporter
) -> tuple[str, int]:
    tmp = to.with_name(f".{to.name}.{os.getpid()}.partial")
    total = sum(m.size for m in members)
    try:
        with (
            tmp.open("wb") as f,
            Meter(reporter, f"export {to.name}", total) as meter,
            contextlib.closing(_HashingWriter(f)) as out,
        ):
            with tarfile.open(
                fileobj=out,
                mode="w",
                format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                copybufsize=_CHUNK,
            ) as tar:
                for m in members:
                    _add(tar, m, mtime, meter)
            out.finish()
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)
        tmp.rename(to)
    except OSError as e:
        raise BuildError(f"cannot write {to}: {e.strerror or e}.") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out.hash.close(), out.size


def _add(tar: tarfile.TarFile, m: _Member, mtime: int, meter: Meter) -> None:
    info = tar_info(m.name, m.size, mtime)
    if m.data is not None:
        tar.addfile(info, _BytesReader(m.data))
        meter.advance(m.size)
        return
    assert m.path is not None
    with m.path.open("rb") as f:
        reader = HashingReader(f, meter.advance)
        tar.addfile(info, reader)  # type: ignore[arg-type]
    if reader.hash.hexdigest() != m.sha256:
        raise BuildError(f"{m.path} does not match its recorded sha256; run baker verify.")


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        size = len(self.view) if size < 0 else size
        chunk, self.view = self.view[:size], self.view[size:]
        return bytes(chunk)


# --- import ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    directory: Path
    name: str
    digest: str
    signer: str | None
    files: int
    size: int
    debs: int
    seconds: float
    recipe: Path | None
    checks: list[str]


def import_bundle(
    bundle: Path, into: Path, reporter: Reporter, *, pub: Path | None, cache: Cache | None = None
) -> Imported:
    """Check everything in `bundle`, in a staging directory beside `into`, before `into` is
    touched; then move the artifact (and sources) into `into` and the packages into the cache.
    Any failure leaves `into` as it was (absent or empty)."""
    key = signing.load_public_key(pub) if pub else None
    into = Path(os.path.abspath(into))  # "." too has a name and a parent to stage beside
    _check_target(into)
    if not bundle.is_file():
        raise InputError(f"{bundle}: no such bundle file.")
    started = time.monotonic()
    try:
        with tarfile.open(bundle, "r:") as tar:
            members = _members(tar, bundle)
            listed, index = _read_meta(tar, members, bundle)
            kinds = _classify(members, index, bundle)
            _check_signed(bundle, kinds, index, key)
            _check_space(into, members)
            work = Path(tempfile.mkdtemp(prefix=f".{into.name}.import-", dir=into.parent))
            try:
                _extract(tar, members, kinds, listed, work, reporter)
                checks = _verify(work, index, key, pub, reporter)
                debs = _install(work, into, cache or Cache())
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except tarfile.TarError as e:
        raise BuildError(f"{bundle}: not a readable tar ({e}).") from None
    except OSError as e:
        raise _os_error(f"import of {bundle}", e) from None
    sources = index.get("sources")
    return Imported(
        into,
        index["artifact"],
        index["image"]["digest"],
        signing.fingerprint(key) if key else None,
        len(members),
        sum(m.size for m in members.values()),
        debs,
        time.monotonic() - started,
        into / sources["recipe"] if sources else None,
        checks,
    )


def _check_target(into: Path) -> None:
    if into.is_symlink() or (into.exists() and not into.is_dir()):
        raise InputError(f"--into {into}: exists and is not a directory.")
    if into.is_dir() and any(into.iterdir()):
        raise InputError(f"--into {into}: is not empty; import into a new or empty directory.")
    if not into.parent.is_dir():
        raise InputError(f"--into {into}: {into.parent} does not exist.")


def _members(tar: tarfile.TarFile, bundle: Path) -> dict[str, tarfile.TarInfo]:
    """The member list, read from the headers alone, with everything a bundle never holds
    refused: links, devices, odd names, duplicates, members beyond any sane size."""
    members: dict[str, tarfile.TarInfo] = {}
    for n, m in enumerate(tar, 1):
        if n > MAX_MEMBERS:
            raise BuildError(f"{bundle}: more than {MAX_MEMBERS} members.")
        _check_name(m.name, bundle)
        if m.issym() or m.islnk():
            kind = "a symbolic link" if m.issym() else "a hard link"
            raise BuildError(
                f"{bundle}: {m.name} is {kind} (to {m.linkname}); "
                "a bundle holds regular files only."
            )
        if m.isdir():
            continue  # tar tools add them when repacking; the files say where they go
        if m.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise BuildError(f"{bundle}: {m.name} is not a regular file (tar type {m.type!r}).")
        if m.name in members:
            raise BuildError(f"{bundle}: {m.name} appears twice.")
        if m.size > (bound := _bound(m.name)):
            raise BuildError(
                f"{bundle}: {m.name} claims {human(m.size)}, over the {human(bound)} a bundle "
                "allows for it."
            )
        members[m.name] = m
    return members


def _bound(name: str) -> int:
    """The most a member may hold, by what its name says it is: read before anything else,
    so a forged size is refused before a byte is written."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("image.") and base.removeprefix("image.") in convert.FORMATS:
        return MAX_DISK
    return MAX_DEB if name.startswith("debs/") else MAX_OTHER


def _check_name(name: str, bundle: Path) -> None:
    path = PurePosixPath(name)
    bad = (
        not name
        or len(name) > MAX_NAME
        or path.is_absolute()
        or "\\" in name
        or any(ord(c) < 32 or c == "\x7f" for c in name)
        or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))
    )
    if bad:
        raise BuildError(f"{bundle}: member {name!r} has an unsafe path (absolute, .. or odd).")


def _read_meta(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], bundle: Path
) -> tuple[dict[str, str], dict[str, Any]]:
    for name in (BUNDLE_SUMS, INDEX):
        if name not in members:
            raise BuildError(f"{bundle}: no {name}; is this a baker bundle?")
        if members[name].size > MAX_OTHER:
            raise BuildError(f"{bundle}: {name} is implausibly large.")
    listed: dict[str, str] = {}
    text = _small(tar, members[BUNDLE_SUMS]).decode(errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m or m.group(2) in listed:
            raise BuildError(f"{bundle}: {BUNDLE_SUMS} line {n} is not a sha256sum line.")
        listed[m.group(2)] = m.group(1)
    present = set(members) - {BUNDLE_SUMS}
    if missing := sorted(set(listed) - present):
        raise BuildError(
            f"{bundle}: {missing[0]} is listed in {BUNDLE_SUMS} but not in the "
            "bundle (removed or cut off)."
        )
    if unlisted := sorted(present - set(listed)):
        raise BuildError(f"{bundle}: {unlisted[0]} is in the bundle but not in {BUNDLE_SUMS}.")
    data = _small(tar, members[INDEX])
    if hashlib.sha256(data).hexdigest() != listed[INDEX]:
        raise BuildError(f"{bundle}: {INDEX} does not match {BUNDLE_SUMS}.")
    try:
        index = json.loads(data)
        if index["format"] != FORMAT or not _NAME.fullmatch(index["artifact"]):
            raise ValueError("unknown format or artifact name")
        index["image"]["digest"], index["signer"], index["sources"]
    except (ValueError, KeyError, TypeError) as e:
        raise BuildError(f"{bundle}: {INDEX} is not a baker bundle index ({e}).") from None
    return listed, dict(index)


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None
    return f.read(MAX_OTHER)


def _classify(
    members: dict[str, tarfile.TarInfo], index: dict[str, Any], bundle: Path
) -> dict[str, str]:
    """Each member's kind (meta, artifact, source, deb), from where it sits; anything else is
    refused."""
    art = index["artifact"]
    kinds: dict[str, str] = {}
    for name in members:
        parts = name.split("/")
        if name in META:
            kinds[name] = "meta"
        elif len(parts) == 2 and parts[0] == art:
            kinds[name] = "artifact"
        elif (
            len(parts) == 2 and parts[0] == "debs" and re.fullmatch(r"[0-9a-f]{64}\.deb", parts[1])
        ):
            kinds[name] = "deb"
        elif len(parts) >= 2 and parts[0] == "sources":
            kinds[name] = "source"
        else:
            raise BuildError(f"{bundle}: unexpected member {name}.")
    if f"{art}/{IMAGE}" not in kinds:
        raise BuildError(f"{bundle}: no {art}/{IMAGE} in the bundle.")
    if not index["sources"] and any(k in ("source", "deb") for k in kinds.values()):
        raise BuildError(f"{bundle}: carries sources its index does not describe.")
    return kinds


def _check_signed(
    bundle: Path,
    kinds: dict[str, str],
    index: dict[str, Any],
    key: ec.EllipticCurvePublicKey | None,
) -> None:
    art = index["artifact"]
    signed = f"{art}/{SIGNATURE}" in kinds or f"{art}/{ENVELOPE}" in kinds
    if signed and key is None:
        raise InputError(
            f"{bundle} is signed (by key {str(index['signer'])[:16]}…); give the public key you "
            "trust with --pub."
        )
    if not signed and key is not None:
        raise BuildError(
            f"{bundle} is not signed, but --pub was given: refusing an unsigned "
            "bundle where a signed one is expected."
        )


def _check_space(into: Path, members: dict[str, tarfile.TarInfo]) -> None:
    need = sum(m.size for m in members.values())
    free = shutil.disk_usage(into.parent).free
    if need > free:
        raise BuildError(
            f"the bundle needs {human(need)} beside {into}, but only {human(free)} is free."
        )


def _staged(work: Path, name: str, kind: str) -> Path:
    if kind == "meta":
        return work / "meta" / name
    if kind == "deb":
        return work / name  # work/debs/<sha256>.deb
    # The artifact's files and sources/ become the target directory's contents.
    parts = name.split("/")
    return work / "tree" / (parts[1] if kind == "artifact" else name)


def _extract(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    kinds: dict[str, str],
    listed: dict[str, str],
    work: Path,
    reporter: Reporter,
) -> None:
    """Stream each member into the staging directory, hashing it; any mismatch stops here."""
    total = sum(m.size for m in members.values())
    with Meter(reporter, "extract and check each member", total) as meter:
        for name, m in members.items():
            target = _staged(work, name, kinds[name])
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = _copy_out(tar, m, target, meter)
            if name != BUNDLE_SUMS and digest != listed[name]:
                raise BuildError(
                    f"{name} does not match {BUNDLE_SUMS}: the bundle is corrupt or was altered."
                )


def _copy_out(tar: tarfile.TarFile, m: tarfile.TarInfo, target: Path, meter: Meter) -> str:
    src = tar.extractfile(m)
    assert src is not None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    h = hashlib.sha256()
    with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            _write_sparse(out, chunk)
            meter.advance(len(chunk))
        out.truncate(m.size)
    if target.stat().st_size != m.size:
        raise BuildError(f"{m.name} is cut short in the bundle.")
    return h.hexdigest()


def _verify(
    work: Path,
    index: dict[str, Any],
    key: ec.EllipticCurvePublicKey | None,
    pub: Path | None,
    reporter: Reporter,
) -> list[str]:
    from baker.evidence import (
        verify as check,  # its SBOM schemas take seconds to load: only when needed
    )

    tree = work / "tree"
    lines = []
    bundled = work / "meta" / PUBLIC_KEY
    if key is not None and bundled.exists():
        try:
            theirs = signing.fingerprint(signing.load_public_key(bundled))
        except InputError:
            raise BuildError(f"the bundle's {PUBLIC_KEY} is not a valid public key.") from None
        if theirs != signing.fingerprint(key):
            raise BuildError(
                f"the bundle's {PUBLIC_KEY} (key {theirs[:16]}…) is not the key you "
                f"gave (key {signing.fingerprint(key)[:16]}…)."
            )
    with Meter(reporter, "verify the artifact (checksums, signature, provenance, SBOMs)", 0):
        findings = check.verify(tree, pub)
    for f in findings:
        if f.ok is False or (f.ok is None and key is not None):
            raise BuildError(f"{index['artifact']}: {f.name}: {f.detail}.")
        lines.append(f.line())
    digest = f"sha256:{sha256_file(tree / IMAGE)}"
    if digest != index["image"]["digest"]:
        raise BuildError(f"{INDEX} names {index['image']['digest']}, but {IMAGE} is {digest}.")
    with Meter(reporter, "compare the converted disks with the image", 0):
        lines += [f"ok   {line}" for line in convert.check_converted(tree)]
    if index["sources"]:
        try:
            lines += _verify_sources(work, index["sources"])
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise BuildError(
                f"the sources cannot be checked: {INDEX}, build.json or the "
                f"provenance lacks a field ({e!r})."
            ) from None
    return lines


def _verify_sources(work: Path, where: dict[str, Any]) -> list[str]:
    """Each carried source against the build record and the (signed) provenance: recipe and
    lock digests, every pinned file, and exactly the packages the lock names."""
    tree = work / "tree"
    record = json.loads((tree / "build.json").read_bytes())
    statement = json.loads((tree / "provenance.json").read_bytes())
    signed = {
        d.get("name"): f"sha256:{d.get('digest', {}).get('sha256')}"
        for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    }
    pins = record["pins"]

    def agree(what: str, found: str, *expected: str) -> None:
        if any(found != e for e in expected):
            raise BuildError(f"the carried {what} does not match the build's record of it.")

    recipe = tree / where["recipe"]
    agree(
        f"recipe {where['recipe']}",
        f"sha256:{sha256_file(recipe)}",
        record["recipe"]["digest"],
        signed.get("recipe", ""),
    )
    if where["lock"] != str(PurePosixPath(where["recipe"]).with_suffix(".lock")):
        raise BuildError("the carried lock does not sit beside the carried recipe.")
    try:
        locked = lock.load(tree / where["lock"])
    except InputError:
        raise BuildError(f"the carried lock {where['lock']} is not a valid lock.") from None
    agree(f"lock {where['lock']}", locked.digest, pins["lock"]["digest"], signed.get("lock", ""))
    expected = {where["recipe"], where["lock"]}
    if set(where["files"]) != set(pins["files"]):
        raise BuildError("the carried sources are not the files the build pinned.")
    recipe_dir = PurePosixPath(where["recipe"]).parent
    for rel, arc in where["files"].items():
        if arc != f"{os.path.normpath(recipe_dir / rel)}":
            raise BuildError(f"the carried {rel} is not where the recipe looks for it.")
        agree(arc, f"sha256:{sha256_file(tree / arc)}", pins["files"][rel], signed.get(rel, ""))
        expected.add(arc)
    present = {str(p.relative_to(tree)) for p in (tree / "sources").rglob("*") if p.is_file()}
    if extra := sorted(present - expected):
        raise BuildError(f"the bundle carries {extra[0]}, which the build did not pin.")
    # The lock's digest is in the signed provenance, and it names every package's sha256.
    debs = {p.name.removesuffix(".deb") for p in (work / "debs").glob("*.deb")}
    if debs != {p.sha256 for p in locked.packages} or set(where["debs"]) != set(pins["debs"]):
        raise BuildError("the carried packages are not exactly the locked ones.")
    for sha in debs:
        if sha256_file(work / "debs" / f"{sha}.deb") != sha:
            raise BuildError(f"debs/{sha}.deb does not hold what its name says.")
    return [
        f"ok   sources: recipe, lock and {len(where['files'])} pinned files match the provenance",
        f"ok   packages: the {len(debs)} locked .deb files, each matching its pin",
    ]


def _install(work: Path, into: Path, cache: Cache) -> int:
    """Packages into the cache (content-addressed, so a failure after this harms nothing),
    then the checked tree into place with one rename."""
    debs = sorted((work / "debs").glob("*.deb")) if (work / "debs").is_dir() else []
    for deb in debs:
        target = cache.deb_path(deb.name.removesuffix(".deb"))
        if not target.exists():
            with cache.staging(target) as tmp:
                shutil.move(deb, tmp)
    tree = work / "tree"
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        # rename() replaces an empty directory: `into` goes from absent or empty to complete.
        tree.rename(into)
    except OSError as e:
        raise BuildError(f"cannot move the checked artifact into {into}: {e.strerror}.") from None
    return len(debs)


def summary_line(size: int, seconds: float) -> str:
    return f"{human(size)} in {seconds:.1f} s ({rate(size, seconds)})"
