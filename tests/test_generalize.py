"""baker.image.generalize.walk: what a captured image keeps of the build machine's tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from baker.image.generalize import (
    EMPTIED,
    REMOVED,
    RULES,
    TIMERS_HELD,
    Rule,
    guest_script,
    walk,
)

FILES = [
    "etc/hostname",
    "etc/machine-id",
    "etc/alpha",
    "etc/Zeta",
    "etc/é",
    "etc/ssh-x",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "etc/ssh/sshd_config",
    "etc/ssh/sshd_config.d/baker-build.conf",
    "etc/systemd/system/baker-build-access.service",
    "home/alice/.bash_history",
    "home/alice/notes",
    "root/.bash_history",
    "root/.profile",
    "tmp/x",
    "usr/lib/os-release",
    "usr/local/lib/baker/build-access",
    "usr/local/lib/bakery",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/archives/nginx_1.22.deb",
    "var/cache/ldconfig/aux-cache",
    "var/lib/apt/lists/foo_Packages",
    "var/lib/apt/lists/lock",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/log/dpkg.log",
    "var/log/journal/abc/system.journal",
    "var/log/nginx/access.log",
    "var/tmp/y",
]
DIRS = ["var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "tmp/.X11-unix/deep"]
LINKS = {
    "lib": "usr/lib",
    "etc/systemd/system/multi-user.target.wants/baker-build-access.service": "/etc/x",
    "etc/systemd/system/multi-user.target.wants/ssh.service": "/lib/systemd/system/ssh.service",
    "var/log/README": "../../usr/share/doc/systemd/README.logs",
}

# Parents before children; in each directory, names in byte order (upper case before lower,
# "ssh" and all under it before "ssh-x", UTF-8 names last).
KEPT = [
    ".",
    "./etc",
    "./etc/Zeta",
    "./etc/alpha",
    "./etc/hostname",
    "./etc/ssh",
    "./etc/ssh/sshd_config",
    "./etc/ssh/sshd_config.d",
    "./etc/ssh-x",
    "./etc/systemd",
    "./etc/systemd/system",
    "./etc/systemd/system/multi-user.target.wants",
    "./etc/systemd/system/multi-user.target.wants/ssh.service",
    "./etc/é",
    "./home",
    "./home/alice",
    "./home/alice/notes",
    "./lib",
    "./root",
    "./root/.profile",
    "./tmp",
    "./usr",
    "./usr/lib",
    "./usr/lib/os-release",
    "./usr/local",
    "./usr/local/lib",
    "./usr/local/lib/bakery",
    "./var",
    "./var/cache",
    "./var/cache/apt",
    "./var/cache/apt/archives",
    "./var/cache/apt/archives/partial",
    "./var/cache/ldconfig",
    "./var/lib",
    "./var/lib/apt",
    "./var/lib/apt/lists",
    "./var/lib/apt/lists/partial",
    "./var/lib/dbus",
    "./var/lib/systemd",
    "./var/log",
    "./var/log/journal",
    "./var/log/nginx",
    "./var/tmp",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    for rel in FILES:
        f = r / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"contents of {rel}\n")
    for rel in DIRS:
        (r / rel).mkdir(parents=True)
    for rel, target in LINKS.items():
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, r / rel)
    return r


def test_walk_keeps_exactly_the_expected_paths_in_order(root: Path) -> None:
    assert list(walk(root)) == KEPT


def test_machine_id_is_never_walked(root: Path) -> None:
    # The capture adds it back, empty; with no rules at all it is still left out.
    assert EMPTIED == ("etc/machine-id",)
    assert "./etc/machine-id" not in walk(root)
    everything = list(walk(root, rules=()))
    assert "./etc/machine-id" not in everything
    assert "./etc/ssh/ssh_host_ed25519_key" in everything
    assert "./var/lib/dbus/machine-id" in everything


def test_symlinked_directories_are_kept_but_not_followed(root: Path) -> None:
    kept = list(walk(root))
    assert "./lib" in kept
    assert not any(p.startswith("./lib/") for p in kept)


def test_extra_rules_apply(root: Path) -> None:
    kept = list(walk(root, rules=(*RULES, Rule("etc/alpha", "test"), Rule("home/*", "test"))))
    assert kept == [p for p in KEPT if p != "./etc/alpha" and not p.startswith("./home/")]


def test_the_held_timers_directory_goes_only_when_nothing_else_is_in_it(root: Path) -> None:
    held = root / TIMERS_HELD
    held.mkdir(parents=True)
    (held / "baker-build.conf").write_text("[Timer]\n")
    assert list(walk(root)) == KEPT
    # A provisioner's own drop-in for every timer stays, and its directory with it.
    (held / "site.conf").write_text("[Timer]\nAccuracySec=1s\n")
    kept = list(walk(root))
    assert f"./{TIMERS_HELD}" in kept and f"./{TIMERS_HELD}/site.conf" in kept
    assert f"./{TIMERS_HELD}/baker-build.conf" not in kept


@pytest.mark.parametrize("other", [False, True])
def test_the_guest_script_removes_the_held_timers_directory_as_walk_leaves_it_out(
    tmp_path: Path, other: bool
) -> None:
    held = tmp_path / TIMERS_HELD
    held.mkdir(parents=True)
    (held / "baker-build.conf").write_text("[Timer]\n")
    if other:
        (held / "site.conf").write_text("[Timer]\n")
    expected = list(walk(tmp_path))
    ran = subprocess.run(["sh", "-c", guest_script(), "sh", str(tmp_path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert list(walk(tmp_path, rules=())) == expected
    assert (f"{REMOVED}./{TIMERS_HELD}" in ran.stdout.splitlines()) is not other


def test_walk_of_an_empty_tree(tmp_path: Path) -> None:
    assert list(walk(tmp_path)) == ["."]


@pytest.mark.parametrize(
    ("pattern", "rel", "is_dir", "files_only", "expected"),
    [
        ("etc/ssh/ssh_host_*", "etc/ssh/ssh_host_rsa_key", False, False, True),
        # `*` stays within one path component.
        ("etc/ssh/ssh_host_*", "etc/ssh/ssh_host_dir/key", False, False, False),
        ("tmp/*", "tmp", True, False, False),
        # `**` crosses directories.
        ("var/log/**", "var/log/a/b/c.log", False, True, True),
        ("var/log/**", "var/log/a", True, True, False),  # files only: directories stay
        ("usr/local/lib/baker", "usr/local/lib/bakery", True, False, False),
        ("usr/local/lib/baker", "usr/local/lib/baker", True, False, True),
        # Literal dots in a pattern are not wildcards.
        ("root/.lesshst", "root/xlesshst", False, False, False),
    ],
)
def test_rule_matching(pattern: str, rel: str, is_dir: bool, files_only: bool, expected: bool):
    assert Rule(pattern, "why", files_only).matches(rel, is_dir) is expected


def test_the_guest_script_leaves_what_a_capture_keeps(root: Path) -> None:
    """On a cloud machine the rules run as shell in place; what is left is what a local
    capture would keep, the machine id emptied, and every removal is reported."""
    (root / "etc/machine-id").write_text("0123456789abcdef\n")
    before = set(walk(root, rules=()))
    done = subprocess.run(["sh", "-c", guest_script(), "sh", str(root)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    left = sorted(
        "./" + os.path.relpath(os.path.join(d, n), root)
        for d, dirs, files in os.walk(root)
        for n in dirs + files
    )
    assert [".", *left] == sorted([*KEPT, "./etc/machine-id"])
    assert (root / "etc/machine-id").read_text() == ""
    removed = {
        "." + line.removeprefix(REMOVED).removeprefix(".") for line in done.stdout.splitlines()
    }
    gone = before - set(left) - {"."}
    # A removed directory is reported, not the files in it.
    assert removed <= gone and all(any(g.startswith(r) for r in removed) for g in gone)


GUEST_ROOTFS = Path(__file__).resolve().parents[1] / "baker" / "guest" / "rootfs"


def test_what_only_the_build_machine_needs_never_reaches_the_image(tmp_path: Path) -> None:
    """Every file of baker's guest tree that says it is build-time only (its SSH access, the
    sshd drop-in that exempts baker from OpenSSH's per-source penalties) is left out by the
    rules, together with the unit's enablement link; the rest ships."""
    build_only = sorted(
        str(p.relative_to(GUEST_ROOTFS))
        for p in GUEST_ROOTFS.rglob("*")
        if p.is_file() and "Build-time only" in p.read_text()
    )
    assert "etc/ssh/sshd_config.d/baker-build.conf" in build_only
    shipped = sorted(
        str(p.relative_to(GUEST_ROOTFS))
        for p in GUEST_ROOTFS.rglob("*")
        if p.is_file() and str(p.relative_to(GUEST_ROOTFS)) not in build_only
    )
    tree = tmp_path / "root"
    for rel in build_only + shipped:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes((GUEST_ROOTFS / rel).read_bytes())
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    os.symlink(
        "/etc/systemd/system/baker-build-access.service", wants / "baker-build-access.service"
    )
    kept = set(walk(tree))
    assert not [rel for rel in build_only if f"./{rel}" in kept]
    assert "./etc/systemd/system/multi-user.target.wants/baker-build-access.service" not in kept
    assert [rel for rel in shipped if f"./{rel}" in kept] == shipped
