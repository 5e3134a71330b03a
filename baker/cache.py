"""The step cache: outputs stored under their content key, written atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def default_dir() -> Path:
    # libvirt's qemu runs as its own user and must traverse to a cached base disk, so root's
    # cache lives outside /root (mode 0700).
    if env := os.environ.get("BAKER_CACHE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/baker")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "baker"


class Cache:
    """Packages (debs/) by sha256, and step outputs (rootfs/, disk/) by content key. A
    rebuild that must not trust earlier step outputs gives its own `steps_root`."""

    def __init__(self, root: Path | None = None, steps_root: Path | None = None) -> None:
        self.root = root or default_dir()
        self.steps_root = steps_root or self.root

    def path(self, kind: str, name: str) -> Path:
        d = (self.root if kind == "debs" else self.steps_root) / kind
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
        return d / name

    def deb_path(self, sha256: str) -> Path:
        return self.path("debs", f"{sha256}.deb")

    def deb(self, sha256: str) -> Path | None:
        """The cached .deb with that sha256, if there is one (callers verify it on use)."""
        path = self.deb_path(sha256)
        return path if path.exists() else None

    def put_deb(self, src: Path, sha256: str) -> None:
        target = self.deb_path(sha256)
        if not target.exists():
            with self.staging(target) as tmp:
                shutil.copyfile(src, tmp)

    @contextlib.contextmanager
    def staging(self, target: Path) -> Iterator[Path]:
        """A temporary name beside `target`, renamed into place only if the block succeeds,
        so a half-written entry is never taken for a cached one."""
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            yield tmp
            tmp.rename(target)
        finally:
            tmp.unlink(missing_ok=True)
