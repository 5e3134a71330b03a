"""A vendor's cloud image as a build's base (base.image naming a URL or a file, pinned by the
file's sha256; no signature exists for most, so the pin is the trust): fetched once into the
cache, hashed as it streams, expanded when compressed, and read before anything boots.

baker re-makes the image's layout (a GPT disk with one ext4 root filesystem, a BIOS boot
partition and/or an EFI system partition, and the kernel and initrd at /vmlinuz and
/initrd.img, as Debian's cloud images have them), so a child of a pinned image is
reproducible bit for bit; with base.capture: as-is, it takes the disk as it is (any layout
whose root it can read: ext4, XFS or btrfs), not reproducible. Everything wrong with the
image is the recipe's to fix: each refusal is an InputError naming the recipe's field."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baker.backends.nocloud import KEPT
from baker.cache import Cache
from baker.edge import download
from baker.errors import BuildError, InputError
from baker.hashing import sha256_file
from baker.image import debian, esp, generalize
from baker.image.layout import BIOS_BOOT_TYPE, ESP_TYPE
from baker.image.packages import parse_status
from baker.inspect import disk
from baker.recipe.spec import Spec, is_cloud_url

IMAGES = "images"  # under the cache's root: vendor images by their pinned sha256
# A compressed image file, by its first bytes, and the tool that expands it as a stream.
_COMPRESSED = {b"\xfd7zXZ\x00": "xz", b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
BOOT_FILES = ("vmlinuz", "initrd.img")
_NAME = "vendor"  # what disk.open_image calls its raw copy and mount point


def as_is(spec: Spec) -> bool:
    """Whether the build takes a vendor's disk as it is (base.capture: as-is)."""
    return spec.cloud_image is not None and spec.recipe.base.capture == "as-is"


@dataclass(frozen=True)
class VendorImage:
    source: str  # the URL or file the recipe names
    sha256: str  # of that file, as pinned
    path: Path  # what qemu-img reads: the file, or its expanded copy in the cache


def obtain(spec: Spec, cache: Cache, on_progress: Callable[[str], None]) -> VendorImage:
    """The recipe's cloud image, checked against its pin: a URL downloaded into the cache
    once (resumed if interrupted; the cached copy hashed again on every use), a file hashed
    where it is."""
    source, pinned = spec.cloud_image, spec.recipe.base.sha256
    if source is None or pinned is None:
        raise RuntimeError("a vendor image step for a recipe without a pinned cloud image")
    images = cache.root / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    if is_cloud_url(source):
        file = images / pinned
        if file.exists() and sha256_file(file) != pinned:
            on_progress(f"the cached copy of {source} is damaged: downloading it again")
            file.unlink()
        if not file.exists():
            part = images / f"{pinned}.part"
            on_progress(f"downloading {source}")
            got = download.fetch(source, part, on_progress)
            if got != pinned:
                part.unlink(missing_ok=True)
                raise _mismatch(spec, source, got, pinned)
            part.rename(file)
    else:
        file = Path(source)
        try:
            got = sha256_file(file)
        except OSError as e:
            where = spec.where("base.image")
            raise InputError(f"{where}: base.image: cannot read {file}: {e.strerror}.") from None
        if got != pinned:
            raise _mismatch(spec, source, got, pinned)
    return VendorImage(source, pinned, _expanded(file, images / f"{pinned}.img", cache))


def _mismatch(spec: Spec, source: str, got: str, pinned: str) -> InputError:
    return InputError(
        f"{spec.where('base.sha256')}: base.sha256: {source} has sha256 {got}, "
        f"but the recipe pins {pinned}."
    )


def _expanded(file: Path, target: Path, cache: Cache) -> Path:
    """`file` itself, or if it is compressed (xz, gzip, zstd), its expanded copy at `target`
    (made once, streamed; a half-written one never takes its place)."""
    with file.open("rb") as f:
        head = f.read(6)
    tool = next((t for magic, t in _COMPRESSED.items() if head.startswith(magic)), None)
    if tool is None:
        return file
    if not target.exists():
        with cache.staging(target) as tmp, tmp.open("wb") as out:
            proc = subprocess.run([tool, "-dc", str(file)], stdout=out, stderr=subprocess.PIPE)
            if proc.returncode != 0:
                why = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
                raise InputError(f"{file}: cannot expand it with {tool}: {' '.join(why)}.")
    return target


@dataclass(frozen=True)
class Opened:
    root: Path  # the image's root filesystem, mounted read-only
    boots: frozenset[str]  # the firmware its partitions boot under: bios, uefi
    raw: Path  # the raw copy of its disk the checks read (never written: mounted read-only)


def pin_config(spec: Spec) -> dict[str, Any]:
    """What a build on a vendor image pins of it (build.json's pins.base): the source, its
    digest and the trust in it, and the recipe's suite, arch and boot."""
    base = spec.recipe.base
    return {
        "cloud_image": {
            "source": spec.cloud_image,
            "sha256": f"sha256:{base.sha256}",
            "trust": "the recipe's sha256 pin (the image has no signature)",
        },
        "suite": base.suite,
        "arch": base.arch,
        "boot": base.boot,
    }


def key_config(pinned: dict[str, Any]) -> dict[str, Any]:
    """A base step's pin as its key reads it: the file's digest decides what the step makes,
    wherever the file was fetched from."""
    return {**pinned, "cloud_image": {"sha256": pinned["cloud_image"]["sha256"]}}


@contextlib.contextmanager
def checked(spec: Spec, cache: Cache, work: Path, say: Callable[[str], None]) -> Iterator[Opened]:
    """The recipe's image obtained (baker.build.vendor.obtain), read in `work` (made here)
    and checked (open_tree); mounted until the block ends."""
    vendor = obtain(spec, cache, say)
    work.mkdir()
    with contextlib.ExitStack() as mounted:
        opened = open_tree(spec, vendor, work, mounted)
        say(f"{vendor.source}: boots under {', '.join(sorted(opened.boots))}")
        yield opened


def open_tree(spec: Spec, vendor: VendorImage, work: Path, stack: contextlib.ExitStack) -> Opened:
    """The image's root tree, mounted read-only, after every check a build needs before
    anything boots: a dpkg database, cloud-init, the recipe's suite, a boot mode the image
    has, and a layout baker re-makes (unless base.capture takes the disk as it is)."""
    here = f"{spec.where('base.image')}: base.image: {vendor.source}"
    try:
        opened = disk.open_image(vendor.path, _NAME, work, stack)
    except InputError as e:
        raise InputError(f"{here}: {str(e).removeprefix(f'{vendor.path}: ')}") from None
    table = opened.table
    types = [str(p.get("type", "")).upper() for p in table.get("partitions") or []]
    root = opened.root
    if not (root / "var/lib/dpkg/status").is_file():
        raise InputError(
            f"{here}: it has no dpkg database (/var/lib/dpkg/status), which baker reads its "
            "packages from; an RPM-based image is not supported."
        )
    if not (root / "usr/bin/cloud-init").exists():
        raise InputError(
            f"{here}: it has no cloud-init (/usr/bin/cloud-init), through which baker reaches "
            "a vendor's image."
        )
    _check_release(spec, root, here)
    as_is = spec.recipe.base.capture == "as-is"
    why = None if as_is else _not_remade(table, types, opened.fs_type, root)
    if why:
        raise InputError(
            f"{here}: {why}, so baker cannot re-make its layout; write base.capture: as-is "
            "to take its disk as it is (not reproducible)."
        )
    boots = _boots(table, types)
    _check_boot(spec, root, boots, as_is)
    return Opened(root, boots, work / f"{_NAME}.raw")


def _not_remade(table: dict[str, Any], types: list[str], fs_type: str, root: Path) -> str | None:
    """Why baker cannot re-make the image's layout (GPT, one ext4 root holding /vmlinuz and
    /initrd.img, a BIOS boot and/or an EFI system partition), or None if it can."""
    data = [t for t in types if t not in (BIOS_BOOT_TYPE, ESP_TYPE)]
    if table.get("label") != "gpt" or len(data) != 1:
        n = len(data)
        return f"its layout is a {table.get('label')} table with {n} data partition{'s'[: n != 1]}"
    if fs_type != "ext4":
        return f"its root filesystem is {fs_type}, not ext4"
    missing = [f"/{name}" for name in BOOT_FILES if _inside(root, root / name) is None]
    if missing:
        return f"its root has no {' or '.join(missing)} (its kernel boots from elsewhere)"
    return None


def _boots(table: dict[str, Any], types: list[str]) -> frozenset[str]:
    """The firmware the image's partitions boot under: a GPT disk's BIOS boot partition and
    EFI system partition; an MBR disk boots under BIOS, and under UEFI too with an ESP."""
    if table.get("label") == "dos":
        return frozenset({"bios"} | ({"uefi"} if "EF" in types else set()))
    return frozenset(
        ({"bios"} if BIOS_BOOT_TYPE in types else set())
        | ({"uefi"} if ESP_TYPE in types else set())
    )


def _check_release(spec: Spec, root: Path, here: str) -> None:
    """The image is Debian's or Ubuntu's, of the recipe's suite: its packages' purls and the
    build's defaults follow the suite (baker.image.debian.DISTROS)."""
    release = _os_release(root)
    suite = spec.recipe.base.suite
    ident = release.get("ID")
    if ident not in ("debian", "ubuntu"):
        name = release.get("PRETTY_NAME") or ident or "neither Debian nor Ubuntu"
        raise InputError(
            f"{here}: it is {name}; baker bakes on Debian's and Ubuntu's cloud images."
        )
    codename = release.get("VERSION_CODENAME") or release.get("UBUNTU_CODENAME")
    if (ident, codename) != (debian.family(spec.recipe.base), suite):
        said = f"{ident.capitalize()} {codename}"
        raise InputError(
            f"{spec.where('base.suite')}: base.suite: {spec.cloud_image} is {said}, not "
            f"{suite}; write the image's suite."
        )


def _check_boot(spec: Spec, root: Path, boots: frozenset[str], as_is: bool) -> None:
    boot = spec.recipe.base.boot
    wanted = {"bios", "uefi"} if boot == "hybrid" else {boot}
    where = f"{spec.where('base.boot')}: base.boot"
    if not wanted <= boots:
        has = " and ".join(sorted(boots)) or "no firmware baker knows"
        raise InputError(f"{where}: {spec.cloud_image} boots under {has}, not {boot}.")
    if as_is and "bios" not in boots:
        raise InputError(
            f"{spec.where('base.capture')}: base.capture: as-is: the build machine starts the "
            f"disk under BIOS, and {spec.cloud_image} boots under UEFI only; not supported yet."
        )
    if "uefi" in wanted and not as_is:  # as it is, the image keeps its own UEFI loader
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
        installed = {p.name for p in parse_status(status)}
        lacking = [p for p in esp.PACKAGES if p not in installed]
        if lacking:
            raise InputError(
                f"{where}: {spec.cloud_image} lacks {', '.join(lacking)}, which baker's UEFI "
                "boot is made from; write boot: bios."
            )


def _os_release(root: Path) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = _inside(root, root / rel)
        if path is not None:
            lines = path.read_text(errors="replace").splitlines()
            pairs = (line.split("=", 1) for line in lines if "=" in line)
            return {k.strip(): v.strip().strip("\"'") for k, v in pairs}
    return {}


def _inside(root: Path, path: Path) -> Path | None:
    """The file `path` leads to once its links are followed inside the image's tree (an
    absolute link means the image's /, not the host's); None if it leads to no file there."""
    for _ in range(16):
        if path.is_symlink():
            target = Path(str(path.readlink()))
            path = root / target.relative_to("/") if target.is_absolute() else path.parent / target
            continue
        try:
            inside = path.resolve().is_relative_to(root) and path.is_file()
        except OSError:
            return None
        return path if inside else None
    return None


# Root's SSH login files on a build machine started from a vendor's image: cloud-init wrote
# the build key into them, and the first boot kept what they were (baker.backends.nocloud).
_ROOT_KEYS = "root/.ssh/authorized_keys"


def capture_rules(root: Path) -> tuple[generalize.Rule, ...]:
    """The generalize rules for a vendor image's build machine mounted at `root`: root's
    authorized_keys out (restore_root_ssh puts the image's own back), and root's .ssh too
    if the image had none."""
    why = "the build key, which cloud-init authorized"
    marker = root / KEPT / "root-ssh"
    if not marker.is_file():
        raise BuildError(
            f"the build machine's first boot left no /{KEPT}/root-ssh: its cloud-init did not "
            "run the seed's bootcmd, so root's SSH files cannot be put back as they were."
        )
    had_dir = marker.read_text().strip() == "had"
    return (*generalize.RULES, generalize.Rule(_ROOT_KEYS if had_dir else "root/.ssh", why))


# The same, on the build machine itself, for a disk published as it is (base.capture: as-is):
# before the generalize rules take /usr/local/lib/baker away.
RESTORE_ROOT_SSH_IN_GUEST = "sh -c " + shlex.quote(f"""set -e
d=/{KEPT}
if [ ! -f "$d/root-ssh" ]; then
  echo "no $d/root-ssh: cloud-init did not run the seed's bootcmd" >&2; exit 3
fi
if [ "$(cat "$d/root-ssh")" = had ]; then
  rm -f /root/.ssh/authorized_keys
  if [ -f "$d/authorized_keys" ]; then cp -a "$d/authorized_keys" /root/.ssh/; fi
else
  rm -rf /root/.ssh
fi
""")
# Free space trimmed (the build machine's disk discards, so it reads as zeros), so a disk
# published as it is carries none of what was deleted and takes no room for it.
TRIM_IN_GUEST = "fstrim --all --verbose || echo 'fstrim: nothing trimmed'"


def restore_root_ssh(root: Path, into: Path) -> list[str]:
    """Root's authorized_keys as the image had it, if it had one."""
    kept = root / KEPT / "authorized_keys"
    if not kept.is_file() or kept.is_symlink():
        return []
    target = into / _ROOT_KEYS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(kept.read_bytes())
    target.chmod(kept.stat().st_mode & 0o7777)
    return [f"./{_ROOT_KEYS}"]
