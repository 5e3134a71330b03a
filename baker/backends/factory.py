"""The backend a recipe names, opened."""

from __future__ import annotations

from collections.abc import Callable

from baker.backends.accel import Accel
from baker.backends.base import Backend
from baker.recipe.spec import Ec2Backend, LibvirtBackend


def open_backend(
    config: LibvirtBackend | Ec2Backend, accel: Accel, log: Callable[[str], None]
) -> Backend:
    """The backend a recipe names. Imported here, not at the top: each pulls in its own
    client library (libvirt-python, boto3)."""
    if isinstance(config, Ec2Backend):
        from baker.backends.ec2 import Ec2

        return Ec2(config, log=log)
    from baker.backends.libvirt import Libvirt

    return Libvirt(config, accel, log)
