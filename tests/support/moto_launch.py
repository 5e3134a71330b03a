"""moto's server, with the one part of EBS it lacks: in AWS, every EBS snapshot (one that
CreateImage made included) can be read, and written while pending, through the EBS direct
API, in 512 KiB blocks, and an image's snapshot is as large as the instance's root volume.
moto keeps EBS-direct snapshots apart from EC2's, says 512-byte blocks and 15 GiB. Run as
`python moto_launch.py -H HOST -p PORT`, like `python -m moto.server`.

Nothing of baker is changed here: this is the cloud's side, as the tests need it to be."""

from __future__ import annotations

import re
import sys
from typing import Any

from moto.ebs import models
from moto.server import main

BLOCK = 512 * 1024  # the EBS direct API's one block size


class _Snapshots(dict[str, Any]):
    """EBS-direct snapshots, with any EC2 snapshot taken in (empty) the first time it is
    named: a snapshot CreateImage made reads as zeros until the test writes its blocks."""

    def __init__(self, backend: models.EBSBackend) -> None:
        super().__init__()
        self.backend = backend

    def __missing__(self, snapshot_id: str) -> Any:
        ec2 = self.backend.ec2_backend.snapshots.get(snapshot_id)
        if ec2 is None:
            raise KeyError(snapshot_id)
        ebs = models.EBSSnapshot(account_id=self.backend.account_id, snapshot=ec2)
        ebs.status = "completed"
        # moto gives every image a new 15 GiB volume; AWS's image holds the instance's own.
        made_by = re.match(r"Created by CreateImage\((i-[0-9a-f]+)\)", ec2.description or "")
        if made_by:
            backend = self.backend.ec2_backend
            instance = backend.get_instance(made_by.group(1))
            mapping = instance.block_device_mapping
            root = mapping.get(instance.root_device_name) or next(iter(mapping.values()))
            ebs.volume_size = backend.get_volume(root.volume_id).size
        self[snapshot_id] = ebs
        return ebs


_init_backend = models.EBSBackend.__init__
_init_snapshot = models.EBSSnapshot.__init__


def _backend(self: models.EBSBackend, region_name: str, account_id: str) -> None:
    _init_backend(self, region_name, account_id)
    self.snapshots = _Snapshots(self)


def _snapshot(self: models.EBSSnapshot, account_id: str, snapshot: Any) -> None:
    _init_snapshot(self, account_id, snapshot)
    self.block_size = BLOCK


models.EBSBackend.__init__ = _backend  # type: ignore[method-assign]
models.EBSSnapshot.__init__ = _snapshot  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
