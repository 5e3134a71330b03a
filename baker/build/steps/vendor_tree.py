"""The base step of a build on a vendor's cloud image (base.image naming a URL or a file): the
image fetched and checked against its pin (baker.build.vendor), and its root tree read into
the tar the disk step makes baker's layout from, with /etc/fstab naming that layout's root."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from baker.build import vendor
from baker.build.state import BuildState, Context
from baker.build.steps.base import ROOT_TAR, RootTree
from baker.cache import Cache
from baker.edge import tools
from baker.hashing import content_key
from baker.image import generalize, tree
from baker.image.layout import ROOT_LABEL

# The mounts baker's layout decides: the root filesystem, and the EFI system partition (which
# baker's images, like its own bases, leave unmounted).
_REMADE = ("/", "/boot/efi")
ROOT_LINE = f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1"


class VendorTree(RootTree):
    code = ("baker.build.vendor", "baker.image.tree", "baker.inspect.disk")

    def describe(self, ctx: Context) -> str:
        return f"the vendor image's tree ({ctx.spec.cloud_image})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        return content_key("base", vendor.key_config(self.pin_config(ctx)), previous)

    def pin_config(self, ctx: Context) -> dict[str, Any]:
        return {
            **vendor.pin_config(ctx.spec),
            "source_date_epoch": ctx.source_date_epoch,
            "tools": tools.versions("tar", "qemu-img"),
            "code": self.code_digest(),
        }

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        work = ctx.work / "vendor"
        cache = ctx.opts.cache or Cache()
        with vendor.checked(ctx.spec, cache, work, ctx.reporter.info) as opened:
            rules = (*generalize.RULES, generalize.Rule("etc/fstab", "baker's layout"))
            tree.from_root(opened.root, ctx.work / ROOT_TAR, work, ctx.source_date_epoch,
                           _fstab, rules)  # fmt: skip
        opened.raw.unlink()


def _fstab(root: Path, into: Path) -> list[str]:
    """The image's /etc/fstab with baker's root line for the mounts baker's layout decides."""
    try:
        old = (root / "etc/fstab").read_text(errors="replace").splitlines()
    except OSError:
        old = []
    kept = [line for line in old if len(line.split()) < 2 or line.split()[1] not in _REMADE]
    target = into / "etc/fstab"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join([ROOT_LINE, *kept]) + "\n")
    target.chmod(0o644)
    return ["./etc/fstab"]
