"""What sits where in an air-gapped bundle, for both sides: the member names, the format of its
index (bundle.json), the VERIFY.txt it carries, and the lines both commands end with.

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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker.artifact import IMAGE, SUMS
from baker.errors import BuildError
from baker.formats.convert import FILES
from baker.formats.qemu import DISK_FORMATS
from baker.progress import human, rate

FORMAT = 1
BUNDLE_SUMS = "BUNDLE.SHA256SUMS"
VERIFY = "VERIFY.txt"
PUBLIC_KEY = "baker.pub"
INDEX = "bundle.json"
META = (BUNDLE_SUMS, VERIFY, PUBLIC_KEY, INDEX)


@dataclass(frozen=True)
class Member:
    """A file to write into a bundle, with the sha256 it must have."""

    name: str
    sha256: str
    size: int
    path: Path | None = None  # streamed from here, or
    data: bytes | None = None  # written from memory


def os_error(what: str, e: OSError) -> BuildError:
    where = f" ({e.filename})" if e.filename else ""
    return BuildError(f"{what} failed: {e.strerror or e}{where}.")


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
                    f"    qemu-img compare -f vmdk -F qcow2 ova/{FILES['vmdk']} {image}",
                ]
            else:
                fmt = DISK_FORMATS[d.rsplit(".", 1)[1]]
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


def summary_line(size: int, seconds: float) -> str:
    return f"{human(size)} in {seconds:.1f} s ({rate(size, seconds)})"


def from_bytes(name: str, data: bytes) -> Member:
    return Member(name, hashlib.sha256(data).hexdigest(), len(data), data=data)


def artifact_members(artifact: Path, name: str, sums: dict[str, str]) -> list[Member]:
    """An artifact directory's files under NAME/, each as its SHA256SUMS lists it, and that
    file; anything unlisted or missing is refused."""
    present = {p.name for p in artifact.iterdir() if p.is_file()} - {SUMS}
    if unlisted := sorted(present - set(sums)):
        raise BuildError(
            f"{artifact}: {', '.join(unlisted)} not listed in {SUMS}; run baker verify."
        )
    if missing := sorted(set(sums) - present):
        raise BuildError(f"{artifact}: {', '.join(missing)} listed in {SUMS} but missing.")
    members = [
        Member(f"{name}/{f}", sums[f], (artifact / f).stat().st_size, path=artifact / f)
        for f in sorted(sums)
    ]
    # Read once now: what is carried is what the other members were checked against.
    return [*members, from_bytes(f"{name}/{SUMS}", (artifact / SUMS).read_bytes())]
