"""Where a worker puts a finished artifact: an OCI registry (BAKER_FARM_REGISTRY, a
`host[:port]/prefix` under which each image is NAME:<digest>), or a shared directory
(BAKER_FARM_ARTIFACTS, as DIR/NAME/<key>/, `key` below), and the build recorded in the history
(BAKER_FARM_HISTORY, a PostgreSQL URL for a farm). Content-addressed: storing what is
already there again is a no-op, so a redelivered job's second store changes nothing. A
child's job takes its parent back out of the same store (`fetch`)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
from pathlib import Path

from baker import artifact


def key(digest: str) -> str:
    """What an image is stored under: a sha256 digest's hex; an EC2 image's digest
    (ec2:REGION:AMI, where the image itself stays) with dashes for its colons."""
    kind, _, rest = digest.partition(":")
    return rest if kind == "sha256" else digest.replace(":", "-")


def put(directory: Path, name: str, digest: str) -> str:
    where = (
        _push(directory, name, digest)
        if os.environ.get("BAKER_FARM_REGISTRY")
        else _copy(directory, name, digest)
    )
    if os.environ.get("BAKER_FARM_HISTORY"):
        from baker.nightly.history import History

        history = History(os.environ["BAKER_FARM_HISTORY"])
        try:
            history.record(
                {
                    "night": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "recipe": name,
                    "status": "built",
                    "digest": digest,
                    "size": _size(directory / artifact.IMAGE),
                    "artifact": where,
                    "signer": socket.gethostname(),
                }
            )
        finally:
            history.close()
    return where


def _size(image: Path) -> int | None:
    # An EC2 build's artifact holds its evidence; the image is in the cloud.
    return image.stat().st_size if image.is_file() else None


class NotStored(Exception):
    """The store holds no such image."""


def fetch(name: str, digest: str, into: Path, pub: Path | None) -> str:
    """The image `name` stored as `digest`, into the new directory `into` (a child's parent);
    from the registry it is pulled as `baker pull` does and verified with `pub`, the key the
    child trusts (the child's build verifies it again, from either store). Returns where it
    came from."""
    if os.environ.get("BAKER_FARM_REGISTRY"):
        from baker.registry import pull
        from baker.registry.client import RegistryError, connect
        from baker.registry.ref import parse

        if pub is None:
            raise NotStored(f"{name}: a parent from the registry needs the key it is trusted by")
        ca = os.environ.get("BAKER_FARM_CA_BUNDLE")
        ref = parse(f"{os.environ['BAKER_FARM_REGISTRY'].rstrip('/')}/{name}:{_tag(digest)}")
        try:
            pull.pull(connect(ref, ca_bundle=Path(ca) if ca else None), ref, into, pub)
        except RegistryError as e:
            raise NotStored(f"{name} {digest}: {e}") from None
        return str(ref)
    stored = Path(os.environ.get("BAKER_FARM_ARTIFACTS") or "/nonexistent") / name / key(digest)
    if not (stored / artifact.IMAGE).is_file():
        raise NotStored(f"the farm's store holds no {name} {digest} ({stored})")
    shutil.copytree(stored, into)
    return str(stored)


def _tag(digest: str) -> str:
    # A tag holds 128 characters: a sha256's first 32 hex digits name the image well enough.
    return key(digest)[:32] if digest.startswith("sha256:") else key(digest)


def _push(directory: Path, name: str, digest: str) -> str:
    from baker.registry import push
    from baker.registry.client import connect
    from baker.registry.ref import parse

    ca = os.environ.get("BAKER_FARM_CA_BUNDLE")
    ref = parse(f"{os.environ['BAKER_FARM_REGISTRY'].rstrip('/')}/{name}:{_tag(digest)}")
    client = connect(ref, ca_bundle=Path(ca) if ca else None)
    pushed = push.push(client, directory, ref)
    return str(pushed.ref)


def _copy(directory: Path, name: str, digest: str) -> str:
    shared = Path(os.environ.get("BAKER_FARM_ARTIFACTS") or "")
    if not str(shared) or not shared.is_dir():
        raise RuntimeError(
            "the worker has no BAKER_FARM_ARTIFACTS directory or registry to store into"
        )
    final = shared / name / key(digest)
    if final.is_dir():
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    shutil.copytree(directory, staging)
    try:
        staging.rename(final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not final.is_dir():
            raise
    return str(final)
