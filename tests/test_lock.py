"""baker.lock: a lock that is not one baker wrote is refused in one line; apt's "no such
package" becomes UnknownPackage; the mmdebstrap command lines, locked and unlocked."""

from __future__ import annotations

from pathlib import Path
from string import Template

import pytest

from baker.edge import tools
from baker.errors import BuildError, InputError
from baker.image import apt, debian
from baker.image.apt import AptWatch, UnknownPackage
from baker.recipe import lock
from baker.recipe.lock import Lock, LockedPackage
from baker.recipe.spec import Base

SHA = "ab" * 32
PACKAGES = (
    LockedPackage("apt", "2.6.1", "amd64", "debian", "pool/main/a/apt/apt_2.6.1_amd64.deb", SHA, 1),
    LockedPackage(
        "base-files", "12.4+deb12u9", "amd64", "debian",
        "pool/main/b/base-files/base-files_12.4+deb12u9_amd64.deb", SHA, 2,
    ),
    LockedPackage(
        "libssl3", "3.0.15-1~deb12u1", "amd64", "debian-security",
        "pool/updates/main/o/openssl/libssl3_3.0.15-1~deb12u1_amd64.deb", SHA, 3,
    ),
    LockedPackage(
        "nginx", "1.22.1-9", "amd64", "debian", "pool/main/n/nginx/nginx_1.22.1-9_amd64.deb", SHA, 4
    ),
)  # fmt: skip
LOCK = Lock("bookworm", "amd64", ("apt", "nginx"), "2025-01-11T10:00:00+00:00", PACKAGES)


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "demo.lock"
    path.write_text(LOCK.dump())
    assert lock.load(path) == LOCK
    assert LOCK.dump().splitlines()[1] == "# 4 packages"


def _cut_after(text: str, marker: str) -> str:
    return text[: text.index(marker) + len(marker)]


# (id, how to spoil the dumped lock, expected message). $lock is the lock's path.
GOOD = LOCK.dump()
REMAKE = "`baker lock --update images/demo.yaml` remakes it."
# Seven levels of ten aliases (10**7 nodes): x5's, on line 8, are the first to stand for more
# than the lock's own, larger bound.
BOMB = "format: 1\nx: &a [l, l, l, l, l, l, l, l, l, l]\n" + "".join(
    f"x{i}: &a{i} [{', '.join([f'*a{i - 1}' if i else '*a'] * 10)}]\n" for i in range(6)
)
BAD: list[tuple[str, str | bytes, str]] = [
    ("not-utf8", b"format: 1\n\xff\xfe", "$lock:2: not a valid lock: byte 10 is not UTF-8 text; "),
    (
        "control-characters",
        b"\x7fELF\x02\x01\x01\x00",
        "$lock:1: not a valid lock: control characters are not allowed (0x7f); ",
    ),
    (
        "not-a-mapping",
        "- a\n- b\n",
        "$lock:1: not a valid lock: expected a mapping of fields, not ['a', 'b']; ",
    ),
    ("empty", "", "$lock: not a valid lock: expected a mapping of fields, not None; "),
    (
        "cut-mid-line",
        _cut_after(GOOD, "{name: 'base-files', vers"),
        "$lock:12: not a valid lock: expected ',' or '}', but got '<stream end>'; ",
    ),
    (
        "cut-at-a-line-end",
        _cut_after(GOOD, "libssl3_3.0.15-1~deb12u1_amd64.deb', sha256: '" + SHA + "', size: 3}\n"),
        "$lock:9: not a valid lock: requested.1: nginx is not among the packages (cut short?); ",
    ),
    (
        "cut-before-a-requested-one",
        GOOD.replace("  - {name: 'libssl3'", "# - {name: 'libssl3'"),
        "$lock:10: not a valid lock: packages: 3 packages where the lock's header says 4 (cut "
        "short?); ",
    ),
    (
        "yaml-syntax",
        GOOD.replace("arch: amd64\n", "arch: amd64\n  bad: indent\n"),
        "$lock:6: not a valid lock: mapping values are not allowed here; ",
    ),
    (
        "duplicate-key",
        GOOD.replace("arch: amd64\n", "arch: amd64\narch: arm64\n"),
        "$lock:6: not a valid lock: arch: duplicate key (first given at line 5); ",
    ),
    (
        "wrong-format",
        GOOD.replace("format: 1", "format: 2"),
        "$lock:3: not a valid lock: format: expected 1 (got 2); ",
    ),
    ("unknown-field", GOOD + "extra: 1\n", "$lock:15: not a valid lock: extra: unknown field; "),
    (
        "missing-field",  # reported where the fields start
        GOOD.replace("suite: bookworm\n", ""),
        "$lock:3: not a valid lock: suite is missing; ",
    ),
    (
        "bad-date",
        GOOD.replace("'2025-01-11T10:00:00+00:00'", "'yesterday'"),
        "$lock:6: not a valid lock: resolved: expected an ISO 8601 time (got 'yesterday'); ",
    ),
    (
        "bad-sha256",
        GOOD.replace(f"sha256: '{SHA}', size: 2", "sha256: 'XYZ', size: 2"),
        "$lock:12: not a valid lock: packages.1.sha256: expected 64 lower-case hex digits "
        "(got 'XYZ'); ",
    ),
    (
        "unquoted-version",
        GOOD.replace("version: '2.6.1'", "version: 2.6"),
        "$lock:11: not a valid lock: packages.0.version: expected text (got 2.6); ",
    ),
    (
        "negative-size",
        GOOD.replace("size: 4}", "size: -4}"),
        "$lock:14: not a valid lock: packages.3.size: expected a size in bytes (got -4); ",
    ),
    (
        "path-out-of-the-pool",
        GOOD.replace("pool/main/n/nginx/nginx", "pool/../../etc/nginx"),
        "$lock:14: not a valid lock: packages.3.path: expected a pool/... path to a .deb (got "
        "'pool/../../etc/nginx_1.22.1-9_amd64.deb'); ",
    ),
    (
        "package-field-missing",
        GOOD.replace(
            ", arch: 'amd64', archive: 'debian', path: 'pool/main/a", ", path: 'pool/main/a"
        ),
        "$lock:11: not a valid lock: packages.0: arch is missing; ",
    ),
    (
        "package-not-a-mapping",
        GOOD.replace("  - {name: 'apt'", "  - 'apt'\n  - {name: 'apt'"),
        "$lock:11: not a valid lock: packages.0: expected a mapping of the package's fields; ",
    ),
    (
        "alias-bomb",
        BOMB,
        "$lock:8: not a valid lock: the lock expands to more than 250000 nodes through its "
        "aliases (&/*); ",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_lock_message(tmp_path: Path, text: str | bytes, expected: str) -> None:
    path = tmp_path / "demo.lock"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(InputError) as excinfo:
        lock.load(path, Path("images/demo.yaml"))
    message = str(excinfo.value)
    assert excinfo.value.exit_code == 2
    assert "\n" not in message
    assert message == Template(expected).substitute(lock=path) + REMAKE


def test_a_huge_lock_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "demo.lock"
    path.symlink_to("/dev/zero")
    with pytest.raises(InputError) as excinfo:
        lock.load(path)
    assert str(excinfo.value) == (
        f"{path}: the lock is more than 16 MiB; `baker lock --update RECIPE` remakes it."
    )


def test_an_unreadable_lock(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the lock: No such file or directory"):
        lock.load(tmp_path / "none.lock")


def test_a_lock_without_the_count_header_still_loads(tmp_path: Path) -> None:
    """Locks written before the header carry no count: the other checks still apply."""
    path = tmp_path / "demo.lock"
    path.write_text(GOOD.replace("# 4 packages\n", ""))
    assert lock.load(path) == LOCK


# --- apt cannot find a package --------------------------------------------------------------

# What mmdebstrap 1.3.5 printed here for --include=nosuchpkg-xyz,nginx=9.9-1,foo.bar.
MMDEBSTRAP_OUTPUT = """\
I: automatically chosen mode: root
I: chroot architecture amd64 is equal to the host's architecture
I: running apt-get update...
I: downloading packages with apt...
I: extracting archives...
I: installing essential packages...
I: installing remaining packages inside the chroot...
Reading package lists...
Building dependency tree...
Package nginx is not available, but is referred to by another package.
This may mean that the package is missing, has been obsoleted, or
is only available from another source
However the following packages replace it:
  nginx-common

E: Unable to locate package nosuchpkg-xyz
E: Version '9.9-1' for 'nginx' was not found
E: Unable to locate package foo.bar
E: Couldn't find any package by glob 'foo.bar'
E: Couldn't find any package by regex 'foo.bar'
E: setup failed: E: apt-get --yes install nosuchpkg-xyz nginx=9.9-1 foo.bar failed
I: removing tempdir /tmp/mmdebstrap.EAgTkxaBva...
E: mmdebstrap failed to run
"""


def _watched(output: str) -> tuple[AptWatch, list[str]]:
    seen: list[str] = []
    watch = AptWatch(seen.append)
    for line in output.splitlines():
        watch(line)
    return watch, seen


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        (
            ("curl", "nosuchpkg-xyz"),
            "base.packages: nosuchpkg-xyz: no such package in bookworm on the mirror "
            "(apt: Unable to locate package nosuchpkg-xyz).",
        ),
        (
            ("nginx=9.9-1",),
            "base.packages: nginx=9.9-1: no such version in bookworm on the mirror "
            "(apt: Version '9.9-1' for 'nginx' was not found).",
        ),
        (
            ("nosuchpkg-xyz=1.0",),  # no version of it at all
            "base.packages: nosuchpkg-xyz=1.0: no such package in bookworm on the mirror "
            "(apt: Unable to locate package nosuchpkg-xyz).",
        ),
        (
            ("foo.bar",),
            "base.packages: foo.bar: no such package in bookworm on the mirror "
            "(apt: Unable to locate package foo.bar).",
        ),
    ],
)
def test_unknown_package_from_apt_output(packages: tuple[str, ...], expected: str) -> None:
    watch, seen = _watched(MMDEBSTRAP_OUTPUT)
    assert seen == MMDEBSTRAP_OUTPUT.splitlines()  # every line still reaches the caller
    unknown = watch.unknown(Base(packages=packages))
    assert isinstance(unknown, UnknownPackage) and isinstance(unknown, InputError)
    assert unknown.exit_code == 2
    assert str(unknown) == expected
    assert unknown.field == f"base.packages.{len(packages) - 1}"
    assert unknown.package == packages[-1]


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("E: Package 'python' has no installation candidate", "python"),
        ("E: Couldn't find any package by glob 'lib*'", "lib*"),
        ("E: Couldn't find any package by regex 'x.+y'", "x.+y"),
    ],
)
def test_other_apt_words(line: str, name: str) -> None:
    watch, _ = _watched(f"Reading package lists...\n{line}\n")
    assert watch.missing[-1] == (name, line.removeprefix("E: "))


def test_a_package_of_bakers_own_set_is_no_fault_of_the_recipe() -> None:
    watch, _ = _watched("E: Unable to locate package linux-image-cloud-amd64\n")
    assert watch.unknown(Base(packages=("nginx",))) is None
    with pytest.raises(BuildError, match="mmdebstrap failed"), watch.failing(Base()):
        raise BuildError("mmdebstrap failed (exit 25): E: mmdebstrap failed to run")


def test_build_raises_unknown_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kwargs: object) -> str:
        on_line = kwargs["on_line"]
        assert callable(on_line)
        for line in MMDEBSTRAP_OUTPUT.splitlines():
            on_line(line)
        raise BuildError("mmdebstrap failed (exit 25): E: mmdebstrap failed to run")

    monkeypatch.setattr(tools, "run", fake_run)
    base = Base(packages=("nosuchpkg-xyz",), mirror="http://deb.example/debian")
    seen: list[str] = []
    with pytest.raises(UnknownPackage) as excinfo:
        debian.build(base, tmp_path / "root.tar", None, tmp_path, seen.append)  # type: ignore[arg-type]
    assert excinfo.value.field == "base.packages.0"
    assert "Unable to locate package nosuchpkg-xyz" in str(excinfo.value)
    assert len(seen) == len(MMDEBSTRAP_OUTPUT.splitlines())


def test_resolve_raises_unknown_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str], **kwargs: object) -> str:
        on_line = kwargs["on_line"]
        assert callable(on_line)  # watched even when the caller gives no on_line
        on_line("E: Unable to locate package nosuchpkg-xyz")
        raise BuildError("mmdebstrap (resolving the lock) failed (exit 25)")

    monkeypatch.setattr(tools, "run", fake_run)
    base = Base(packages=("nosuchpkg-xyz",))
    with pytest.raises(UnknownPackage, match=r"^base\.packages: nosuchpkg-xyz: no such package"):
        apt.resolve(base, ("nosuchpkg-xyz",), [], None, tmp_path)  # type: ignore[arg-type]


# --- the mmdebstrap command line ----------------------------------------------------------------

SOURCES = [
    "deb http://deb.example/debian bookworm main",
    "deb http://deb.example/debian bookworm-updates main",
]


def test_the_default_base_adds_uefi_boot_and_cloud_init() -> None:
    argv = debian.mmdebstrap_argv(Base(packages=("nginx",)), Path("/w/root.tar"), SOURCES)
    (include,) = [a for a in argv if a.startswith("--include=")]
    names = include.removeprefix("--include=").split(",")
    assert names == sorted(names)
    assert {"cloud-init", "grub-efi-amd64-signed", "shim-signed", "shim-helpers-amd64-signed",
            "nginx"} <= set(names)  # fmt: skip


def test_unlocked_argv_is_unchanged() -> None:
    """Every unlocked BIOS image without cloud-init of this baker comes from exactly this
    command: a change here is a change of every image, and must be meant."""
    base = Base(packages=("nginx",), boot="bios", cloud_init=False)
    argv = debian.mmdebstrap_argv(base, Path("/w/root.tar"), SOURCES)
    assert argv == [
        "mmdebstrap",
        "--variant=minbase",
        "--architectures=amd64",
        "--include=dbus,iproute2,linux-image-cloud-amd64,nginx,openssh-server,systemd,"
        "systemd-resolved,systemd-sysv,udev",
        '--aptopt=Acquire::Languages "none"',
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f'--essential-hook={debian.GUEST_DIR / "initramfs.sh"} "$1"',
        f'--customize-hook={debian.GUEST_DIR / "customize.sh"} "$1" ed25519,ecdsa',
        "--format=tar",
        "bookworm",
        "/w/root.tar",
        *SOURCES,
    ]


def test_the_generic_kernel_replaces_the_cloud_one() -> None:
    names = debian.wanted(Base(kernel="generic"))
    assert "linux-image-amd64" in names and "linux-image-cloud-amd64" not in names
    assert "linux-image-cloud-amd64" in debian.wanted(Base())


def test_rsa_host_keys_are_a_recipe_choice() -> None:
    base = Base(ssh_host_keys=("ed25519", "rsa"))
    argv = debian.mmdebstrap_argv(base, Path("/w/root.tar"), SOURCES)
    assert f'--customize-hook={debian.GUEST_DIR / "customize.sh"} "$1" ed25519,rsa' in argv
    assert debian.config(base)["ssh_host_keys"] != debian.config(Base())["ssh_host_keys"]


def test_locked_argv_installs_the_whole_locked_set() -> None:
    argv = debian.mmdebstrap_argv(
        Base(packages=("nginx",)), Path("/w/root.tar"), SOURCES, LOCK, Path("/w/repo")
    )
    assert argv == [
        "mmdebstrap",
        # Not minbase: the local repository's priorities are the .deb files' own.
        "--variant=essential",
        "--architectures=amd64",
        "--include=apt,base-files,libssl3,nginx",
        '--aptopt=Acquire::Languages "none"',
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        f'--essential-hook={debian.GUEST_DIR / "initramfs.sh"} "$1"',
        f'--customize-hook={debian.GUEST_DIR / "customize.sh"} "$1" ed25519,ecdsa',
        "--customize-hook=printf '%s' '" + "".join(f"{s}\n" for s in SOURCES)
        + "' >\"$1/etc/apt/sources.list\"",
        "--format=tar",
        "bookworm",
        "/w/root.tar",
        "deb [trusted=yes] copy:///w/repo ./",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="repository"):
        debian.mmdebstrap_argv(Base(), Path("/w/root.tar"), SOURCES, LOCK)
