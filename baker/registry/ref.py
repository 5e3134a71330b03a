"""Image references: `host[:port]/repo[:tag]` or `host[:port]/repo@sha256:<hex>`.

The oras package parses them (oras.container.Container); what is added here is the checks a
user's mistake meets before any request is sent: a registry host is required (no implicit
Docker Hub), the repository and tag follow the distribution spec's grammar, and a digest is a
sha256 one."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

import oras.container  # type: ignore[import-untyped]

from baker.errors import InputError

# The OCI distribution spec's grammar for a repository name and a tag.
_REPO = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")


@dataclass(frozen=True)
class Ref:
    host: str  # host[:port], as written
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def at(self, digest: str) -> Ref:
        """This repository, at `digest` (the tag dropped)."""
        return replace(self, tag=None, digest=digest)

    def tagged(self, tag: str) -> Ref:
        return replace(self, tag=tag, digest=None)

    def repo(self) -> str:
        return f"{self.host}/{self.repository}"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repo()}@{self.digest}"
        return f"{self.repo()}:{self.tag or 'latest'}"

    def container(self) -> oras.container.Container:
        return oras.container.Container(str(self))

    def is_loopback(self) -> bool:
        name = (
            self.host.rsplit(":", 1)[0]
            if not self.host.startswith("[")
            else self.host[1:].split("]")[0]
        )
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


def parse(text: str, what: str = "REF") -> Ref:
    """`text` as a Ref; InputError naming `what` and the part at fault."""
    host, sep, rest = text.partition("/")
    if (
        not sep
        or not rest
        or not _HOST.fullmatch(host)
        or ("." not in host and ":" not in host and host != "localhost")
    ):
        raise InputError(
            f"{what} {text!r}: name the registry host first (host[:port]/repository:tag)."
        )
    try:
        c = oras.container.Container(text)
    except ValueError:
        raise InputError(
            f"{what} {text!r}: not an image reference (host[:port]/repository:tag)."
        ) from None
    repository = f"{c.namespace}/{c.repository}" if c.namespace else c.repository
    if c.registry != host or not _REPO.fullmatch(repository):
        raise InputError(
            f"{what} {text!r}: the repository {repository!r} may hold only lowercase letters, "
            "digits and separators (. _ - /)."
        )
    digest = c.digest
    if digest is not None and not _DIGEST.fullmatch(digest):
        raise InputError(f"{what} {text!r}: the digest must be sha256:<64 hex digits>.")
    tag = None if digest and ":" not in text.split("@", 1)[0].split("/", 1)[1] else c.tag
    if tag is not None and not _TAG.fullmatch(tag):
        raise InputError(f"{what} {text!r}: {tag!r} is not a valid tag.")
    return Ref(host, repository, tag, digest)
