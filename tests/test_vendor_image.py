"""A vendor's cloud image as the base (base.image naming a URL or a file, pinned by sha256):
recognised at load, downloaded once (resumed, hashed as it streams) from a real HTTP server,
and checked before anything boots, each refusal one line naming the recipe's file, line and
field. The images are small real disks (GPT, one ext4 root) holding just what the checks
read; the e2e test builds on an image mkosi made (tests/e2e/test_e2e_vendor.py)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.vendor_images import DEBIAN_12, make_vendor_image, write_recipe

from baker import recipe
from baker.backends import nocloud
from baker.build import vendor
from baker.cache import Cache
from baker.edge import download
from baker.edge.ssh import BuildKeys
from baker.errors import InputError
from baker.hashing import sha256_file


def opened(path: Path, cache: Cache, work: Path) -> vendor.Opened:
    spec = recipe.load(path)
    work.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        return vendor.open_tree(spec, vendor.obtain(spec, cache, lambda _l: None), work, stack)


def refusal(path: Path, tmp_path: Path) -> str:
    with pytest.raises(InputError) as e:
        opened(path, Cache(tmp_path / "cache"), tmp_path / "work")
    return str(e.value)


def test_a_url_or_a_file_is_a_cloud_image_and_a_directory_a_parent(tmp_path: Path) -> None:
    url = write_recipe(tmp_path, "https://cloud.example/debian-12.qcow2", "a" * 64)
    spec = recipe.load(url)
    assert spec.cloud_image == "https://cloud.example/debian-12.qcow2"
    assert spec.parent is None and spec.parent_ref is None
    (tmp_path / "vendor.qcow2").write_bytes(b"x")
    assert recipe.load(write_recipe(tmp_path, "../vendor.qcow2", "a" * 64)).cloud_image == str(
        tmp_path / "vendor.qcow2"
    )
    (tmp_path / "parent").mkdir()
    spec = recipe.load(write_recipe(tmp_path, "../parent", "a" * 64))
    assert spec.cloud_image is None and spec.parent == tmp_path / "parent"


def test_a_cloud_image_takes_no_trust_key(tmp_path: Path) -> None:
    (tmp_path / "vendor.qcow2").write_bytes(b"x")
    path = write_recipe(tmp_path, "../vendor.qcow2", "a" * 64)
    path.write_text(path.read_text() + "  trust: ../keys/k.pub\n")
    with pytest.raises(InputError) as e:
        recipe.load(path)
    expected = "base.trust: a cloud image has no signature: leave trust out."
    assert str(e.value) == f"{path}:6: {expected}"


class _Ranges(http.server.SimpleHTTPRequestHandler):
    """Serves files with `Range: bytes=N-` honoured (206), unless the server says not."""

    honour = True

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
        if start and not self.honour:
            start = 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, type[_Ranges]]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_Ranges,), {})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, handler
    httpd.shutdown()


@pytest.mark.parametrize("honoured", [True, False])
def test_an_interrupted_download_is_resumed(
    tmp_path: Path, server: tuple[str, Path, type[_Ranges]], honoured: bool
) -> None:
    url, root, handler = server
    handler.honour = honoured
    data = bytes(range(256)) * 40000  # ~10 MiB
    (root / "image.qcow2").write_bytes(data)
    part = tmp_path / "image.part"
    part.write_bytes(data[:3_000_000])  # what an interrupted download left
    lines: list[str] = []
    got = download.fetch(f"{url}/image.qcow2", part, lines.append)
    assert got == hashlib.sha256(data).hexdigest()
    assert part.read_bytes() == data
    assert any(line.startswith("resuming") for line in lines) == honoured


def test_a_downloaded_image_is_kept_once_and_a_wrong_one_refused_with_both_digests(
    tmp_path: Path, server: tuple[str, Path, type[_Ranges]]
) -> None:
    url, root, _ = server
    image = make_vendor_image(tmp_path / "made")
    (root / "debian.qcow2").write_bytes(image.read_bytes())
    pin = sha256_file(image)
    cache = Cache(tmp_path / "cache")
    path = write_recipe(tmp_path / "project", f"{url}/debian.qcow2", pin)
    found = vendor.obtain(recipe.load(path), cache, lambda _l: None)
    assert found.path == cache.root / "images" / pin and sha256_file(found.path) == pin
    assert opened(path, cache, tmp_path / "work").boots == {"bios"}
    (root / "debian.qcow2").unlink()  # a second build needs no server
    assert vendor.obtain(recipe.load(path), cache, lambda _l: None).path == found.path

    (root / "other.qcow2").write_bytes(b"not the pinned image")
    wrong = write_recipe(tmp_path / "project", f"{url}/other.qcow2", pin)
    with pytest.raises(InputError) as e:
        vendor.obtain(recipe.load(wrong), Cache(tmp_path / "other-cache"), lambda _l: None)
    actual = hashlib.sha256(b"not the pinned image").hexdigest()
    assert str(e.value) == (
        f"{wrong}:4: base.sha256: {url}/other.qcow2 has sha256 {actual}, but the recipe pins {pin}."
    )
    assert list((tmp_path / "other-cache" / "images").iterdir()) == []  # nothing half-kept


def test_a_compressed_image_is_expanded_once(tmp_path: Path) -> None:
    image = make_vendor_image(tmp_path / "made")
    subprocess.run(["xz", "-0", "-k", image], check=True)
    packed = image.with_name(image.name + ".xz")
    path = write_recipe(tmp_path, f"../made/{packed.name}", sha256_file(packed))
    found = vendor.obtain(recipe.load(path), Cache(tmp_path / "cache"), lambda _l: None)
    assert found.path.read_bytes() == image.read_bytes()


@pytest.mark.parametrize(
    ("leave_out", "files", "boot", "expected"),
    [
        (("var/lib/dpkg/status",), {}, "bios",
         "base.image: {image}: it has no dpkg database (/var/lib/dpkg/status), which baker "
         "reads its packages from; an RPM-based image is not supported."),
        (("usr/bin/cloud-init",), {}, "bios",
         "base.image: {image}: it has no cloud-init (/usr/bin/cloud-init), through which "
         "baker reaches a vendor's image."),
        (("initrd.img",), {}, "bios",
         "base.image: {image}: its root has no /initrd.img (its kernel boots from elsewhere), "
         "so baker cannot re-make its layout; write base.capture: as-is to take its disk as "
         "it is (not reproducible)."),
        ((), {"etc/os-release": 'ID=fedora\nPRETTY_NAME="Fedora Linux 41"\n'}, "bios",
         "base.image: {image}: it is Fedora Linux 41; baker bakes on Debian's and Ubuntu's "
         "cloud images."),
        ((), {}, "hybrid", "base.boot: {image} boots under bios, not hybrid."),
    ],
)  # fmt: skip
def test_an_image_baker_cannot_build_on_is_refused_before_anything_boots(
    tmp_path: Path, leave_out: tuple[str, ...], files: dict[str, str], boot: str, expected: str
) -> None:
    image = make_vendor_image(tmp_path / "made", leave_out, files)
    path = write_recipe(tmp_path, "../made/vendor.qcow2", sha256_file(image), boot)
    message = refusal(path, tmp_path)
    assert message.split(": ", 1)[1] == expected.format(image=image), message
    assert message.startswith(f"{path}:")


def test_an_image_of_another_suite_names_it(tmp_path: Path) -> None:
    trixie = DEBIAN_12.replace("bookworm", "trixie")
    image = make_vendor_image(tmp_path / "made", files={"etc/os-release": trixie})
    path = write_recipe(tmp_path, "../made/vendor.qcow2", sha256_file(image))
    assert refusal(path, tmp_path) == (
        f"{path}:2: base.suite: {image} is Debian trixie, not bookworm; write the image's suite."
    )


UBUNTU_24_04 = (
    'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n'
    "VERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n"
)


def test_an_ubuntu_image_is_taken_for_its_own_suite_and_refused_for_debians(
    tmp_path: Path,
) -> None:
    image = make_vendor_image(tmp_path / "made", files={"etc/os-release": UBUNTU_24_04})
    noble = write_recipe(
        tmp_path, "../made/vendor.qcow2", sha256_file(image), extra="  suite: noble\n"
    )
    assert opened(noble, Cache(tmp_path / "cache"), tmp_path / "work").boots == {"bios"}
    bookworm = write_recipe(tmp_path, "../made/vendor.qcow2", sha256_file(image))
    (tmp_path / "again").mkdir()
    assert refusal(bookworm, tmp_path / "again") == (
        f"{bookworm}:2: base.suite: {image} is Ubuntu noble, not bookworm; write the image's suite."
    )


def test_an_ubuntu_suite_needs_ubuntus_cloud_image(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    path = tmp_path / "noble.yaml"
    path.write_text("name: noble\nbase:\n  suite: noble\n")
    with pytest.raises(InputError) as e:
        recipe.load(path)
    assert str(e.value) == (
        f"{path}:2: base: noble is Ubuntu's: baker bakes Ubuntu on Ubuntu's cloud images (give "
        "image: its URL or file); it makes Debian trees only."
    )


def test_an_unreadable_image_file_is_named(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "../made/vendor.qcow2", "a" * 64)
    (tmp_path / "made").mkdir()
    image = tmp_path / "made" / "vendor.qcow2"
    image.write_bytes(b"x")
    image.chmod(0)
    spec = recipe.load(path)
    image.unlink()
    with pytest.raises(InputError) as e:
        vendor.obtain(spec, Cache(tmp_path / "cache"), lambda _l: None)
    assert str(e.value) == (
        f"{path}:3: base.image: cannot read {image}: No such file or directory."
    )


def test_the_seed_lets_the_build_key_in_and_pins_the_host_key(tmp_path: Path) -> None:
    keys = BuildKeys.generate()
    text = nocloud.user_data(keys)
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert config["ssh_authorized_keys"] == [keys.client_public]
    assert config["ssh_keys"] == {
        "ed25519_private": keys.host_private, "ed25519_public": keys.host_public
    }  # fmt: skip
    assert "ssh_genkeytypes" not in config and config["users"] == []
    assert config["preserve_hostname"] is True
    iso = nocloud.make(keys, tmp_path / "seed.iso")
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", iso], capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    assert label == nocloud.LABEL
    # The measured boots' seed: a fresh instance (cloud-init makes its host keys), one key.
    nocloud.launch_seed(keys.client_public, tmp_path / "launch.iso")
    launch = yaml.safe_load((tmp_path / "launch.d" / "user-data").read_text())
    assert launch == {"disable_root": False, "ssh_authorized_keys": [keys.client_public]}
    meta = (tmp_path / "launch.d" / "meta-data").read_text()
    assert meta != (tmp_path / "seed.d" / "meta-data").read_text()


@pytest.mark.parametrize("had", ["had", "none"])
def test_capture_puts_roots_ssh_files_back_as_the_image_had_them(tmp_path: Path, had: str) -> None:
    root = tmp_path / "root"
    kept = root / nocloud.KEPT
    kept.mkdir(parents=True)
    (kept / "root-ssh").write_text(f"{had}\n")
    if had == "had":
        (kept / "authorized_keys").write_text("ssh-ed25519 AAAA vendor\n")
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 BBBB baker-build\n")
    rules = vendor.capture_rules(root)
    removed = "root/.ssh/authorized_keys" if had == "had" else "root/.ssh"
    assert rules[-1].pattern == removed
    names = vendor.restore_root_ssh(root, tmp_path / "extra")
    if had == "had":
        assert names == ["./root/.ssh/authorized_keys"]
        assert (tmp_path / "extra/root/.ssh/authorized_keys").read_text() == (
            "ssh-ed25519 AAAA vendor\n"
        )
    else:
        assert names == []


def test_the_published_tree_is_the_images_with_bakers_fstab(tmp_path: Path) -> None:
    """The base step's tree: the image's files, generalized, with /etc/fstab naming baker's
    root (the image's own line for / dropped, its other lines kept)."""
    from baker.build.steps.vendor_tree import ROOT_LINE, _fstab

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text(
        "# static\nPARTUUID=1234 / ext4 rw 0 1\nPARTUUID=5678 /boot/efi vfat umask=077 0 1\n"
        "/swapfile none swap sw 0 0\n"
    )
    assert _fstab(root, tmp_path / "into") == ["./etc/fstab"]
    lines = (tmp_path / "into/etc/fstab").read_text().splitlines()
    assert lines == [ROOT_LINE, "# static", "/swapfile none swap sw 0 0"]
