"""Build secrets: their values, read on the build host when the build starts, held in memory
only, handed to the provisioners that name them over the SSH session (an environment file
on the machine's /run tmpfs, sourced and removed), masked in every line baker prints or logs,
and looked for in the captured image by the leak check. The records name them, never their
values; the step cache keys on their names (as BuildKit's secret mounts do), so a changed
value alone does not rebuild."""

from __future__ import annotations

import os

from baker.errors import InputError
from baker.recipe.render import project_file
from baker.recipe.safety import MAX_SECRET_BYTES
from baker.recipe.spec import Spec


def resolve(spec: Spec) -> dict[str, str]:
    """NAME -> value of every secret the recipe defines; InputError naming the field when one
    cannot be had (an unset variable, a file outside the project, an empty or huge value)."""
    values: dict[str, str] = {}
    for name, secret in sorted(spec.recipe.secrets.items()):
        where = f"{spec.where(f'secrets.{name}')}: secrets.{name}"
        if secret.env is not None:
            value = os.environ.get(secret.env)
            if value is None:
                raise InputError(f"{where}: the environment variable {secret.env} is not set.")
            raw = value.encode()
        else:
            assert secret.file is not None
            raw = _read(spec, secret.file, where)
        if not raw.strip():
            raise InputError(f"{where}: the value is empty.")
        if len(raw) > MAX_SECRET_BYTES:
            raise InputError(f"{where}: the value is over {MAX_SECRET_BYTES >> 10} KiB.")
        if b"\0" in raw:
            raise InputError(f"{where}: the value holds a NUL byte.")
        try:
            values[name] = raw.decode()
        except UnicodeDecodeError:
            raise InputError(f"{where}: the value is not UTF-8 text.") from None
    return values


def _read(spec: Spec, rel: str, where: str) -> bytes:
    path = project_file(spec.source.parent, rel, spec.root, f"{where}: file")
    try:
        with path.open("rb") as f:
            return f.read(MAX_SECRET_BYTES + 1)
    except OSError as e:
        raise InputError(f"{where}: file: cannot read {rel}: {e.strerror}.") from None


def names(spec: Spec) -> dict[str, str]:
    """NAME -> where its value comes from: what build.json and the provenance record."""
    return {name: s.where for name, s in sorted(spec.recipe.secrets.items())}
