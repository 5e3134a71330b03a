"""Where a worker puts a finished artifact: an OCI registry (BAKER_FARM_REGISTRY, a
`host[:port]/prefix` under which each image is NAME:<digest>), or a shared directory
(BAKER_FARM_ARTIFACTS, as DIR/NAME/<digest hex>/), and the build recorded in the history
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
                    "size": (directory / artifact.IMAGE).stat().st_size,
                    "artifact": where,
                    "signer": socket.gethostname(),
                }
            )
        finally:
            history.close()
    return where


class NotStored(Exception):
    """The store holds no such image."""


def fetch(name: str, digest: str, into: Path, pub: Path | None) -> str:
    """The image `name` stored as `digest`, into the new directory `into` (a child's parent);
    from the registry it is pulled as `baker pull` does and verified with `pub`, the key the
    child trusts (the child's build verifies it again, from either store). Returns where it
    came from."""
    hexdigest = digest.split(":", 1)[-1]
    if os.environ.get("BAKER_FARM_REGISTRY"):
        from baker.registry import pull
        from baker.registry.client import RegistryError, connect
        from baker.registry.ref import parse

        if pub is None:
            raise NotStored(f"{name}: a parent from the registry needs the key it is trusted by")
        ca = os.environ.get("BAKER_FARM_CA_BUNDLE")
        ref = parse(f"{os.environ['BAKER_FARM_REGISTRY'].rstrip('/')}/{name}:{hexdigest[:32]}")
        try:
            pull.pull(connect(ref, ca_bundle=Path(ca) if ca else None), ref, into, pub)
        except RegistryError as e:
            raise NotStored(f"{name} {digest}: {e}") from None
        return str(ref)
    stored = Path(os.environ.get("BAKER_FARM_ARTIFACTS") or "/nonexistent") / name / hexdigest
    if not (stored / artifact.IMAGE).is_file():
        raise NotStored(f"the farm's store holds no {name} {digest} ({stored})")
    shutil.copytree(stored, into)
    return str(stored)


def _push(directory: Path, name: str, digest: str) -> str:
    from baker.registry import push
    from baker.registry.client import connect
    from baker.registry.ref import parse

    ca = os.environ.get("BAKER_FARM_CA_BUNDLE")
    ref = parse(
        f"{os.environ['BAKER_FARM_REGISTRY'].rstrip('/')}/{name}:{digest.split(':')[1][:32]}"
    )
    client = connect(ref, ca_bundle=Path(ca) if ca else None)
    pushed = push.push(client, directory, ref)
    return str(pushed.ref)


def _copy(directory: Path, name: str, digest: str) -> str:
    shared = Path(os.environ.get("BAKER_FARM_ARTIFACTS") or "")
    if not str(shared) or not shared.is_dir():
        raise RuntimeError(
            "the worker has no BAKER_FARM_ARTIFACTS directory or registry to store into"
        )
    final = shared / name / digest.split(":")[1]
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
