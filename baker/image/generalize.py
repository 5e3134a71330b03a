"""What a golden image must not carry from the machine it was baked on.

The capture step walks the build machine's filesystem and leaves out every path these rules
match; /etc/machine-id is kept, empty. Extend RULES to add to it: each rule is a glob on the
path relative to / (`*` matches within one path component) with the reason it exists.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    pattern: str
    why: str
    # Only regular files and links: the directories stay, since services expect them.
    files_only: bool = False
    # A directory baker may have made for files of its own: it goes only when nothing else
    # in it is kept (what a provisioner put there stays, and the directory with it).
    if_empty: bool = False

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.files_only and is_dir:
            return False
        return _compile(self.pattern).fullmatch(rel) is not None


# The build machine's timers are held (a drop-in for every timer unit, baker/guest/rootfs):
# a daily job that ran during one build and not during its rebuild would make the two differ.
TIMERS_HELD = "etc/systemd/system/timer.d"
HELD = "build-time timers held"

RULES: tuple[Rule, ...] = (
    Rule("etc/ssh/ssh_host_*", "SSH host keys: every machine makes its own at first boot"),
    Rule("etc/ssh/sshd_config.d/baker-build.conf", "build-time SSH access"),
    Rule("etc/systemd/system/baker-build-access.service", "build-time SSH access"),
    Rule("etc/systemd/system/*.wants/baker-build-access.service", "build-time SSH access"),
    Rule("usr/local/lib/baker", "build-time SSH access"),
    Rule(f"{TIMERS_HELD}/baker-build.conf", HELD),
    Rule(TIMERS_HELD, HELD, if_empty=True),
    Rule("var/lib/dbus/machine-id", "the machine id is made at first boot"),
    Rule("var/lib/systemd/random-seed", "a seed must never be shared between machines"),
    Rule("var/lib/systemd/credential.secret", "per-machine secret"),
    Rule("var/log/journal/*", "the build machine's journal"),
    Rule("var/log/**", "the build machine's logs", files_only=True),
    Rule("var/cache/apt/*.bin", "apt caches"),
    Rule("var/cache/apt/archives/*.deb", "apt caches"),
    Rule("var/lib/apt/lists/**", "apt caches", files_only=True),
    Rule("var/cache/ldconfig/aux-cache", "ldconfig's cache of inode numbers and times"),
    Rule("var/lib/cloud/*", "cloud-init's state of the build machine's boots"),
    Rule("var/lib/dhcp/*", "the build machine's DHCP leases", files_only=True),
    # What cloud-init writes again at each new instance's first boot.
    Rule("etc/network/interfaces.d/50-cloud-init", "cloud-init's network for the build machine"),
    Rule("etc/netplan/50-cloud-init.yaml", "cloud-init's network for the build machine"),
    Rule("tmp/*", "temporary files"),
    Rule("var/tmp/*", "temporary files"),
    Rule("root/.bash_history", "shell history"),
    Rule("home/*/.bash_history", "shell history"),
    Rule("root/.lesshst", "shell history"),
    Rule("root/.viminfo", "shell history"),
    Rule("root/.python_history", "shell history"),
)

EMPTIED = ("etc/machine-id",)  # kept as empty files: systemd's "first boot" marker

# Run in a cloud build machine just before it powers off, since the cloud makes its image from
# the disk as it is: what the image's own tools provide to make it generic again, then the
# rules above (guest_script). A local disk needs none of this: the capture applies the rules.
# journald moves to /run first: it would write the journal the rules remove again, and on
# through the power-off.
IN_GUEST = (
    "if command -v journalctl >/dev/null; then journalctl --relinquish-var; fi",
    "if command -v cloud-init >/dev/null; then cloud-init clean --logs --seed; fi",
)
REMOVED = "removed "  # guest_script's output line for each path it removed


@functools.cache
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(_regex(pattern))


def _regex(pattern: str) -> str:
    # `**` crosses directories, `*` does not.
    parts = [
        fnmatch.translate(p).removesuffix(r"\Z").removeprefix("(?s:").removesuffix(")")
        for p in pattern.split("**")
    ]
    return "(?s:" + ".*".join(p.replace(".*", "[^/]*") for p in parts) + ")"


@functools.cache
def _any_of(rules: tuple[Rule, ...], is_dir: bool) -> re.Pattern[str]:
    """One regex for every rule that applies to a directory (or to anything else): a capture
    tests each of ~15,000 paths once, not once per rule."""
    kept = [_regex(r.pattern) for r in rules if not (r.files_only and is_dir) and not r.if_empty]
    return re.compile("|".join(kept) or "(?!)")


@functools.cache
def _if_empty(rules: tuple[Rule, ...]) -> re.Pattern[str]:
    """One regex for the rules on directories that go only when left empty."""
    return re.compile("|".join(_regex(r.pattern) for r in rules if r.if_empty) or "(?!)")


def _removed(rel: str, is_dir: bool, rules: tuple[Rule, ...]) -> bool:
    return _any_of(rules, is_dir).fullmatch(rel) is not None


def _left_empty(directory: str, rel: str, rules: tuple[Rule, ...]) -> bool:
    """Whether `rules` leave nothing in `directory` (at `rel`) but what they remove."""
    if not _if_empty(rules).fullmatch(rel):
        return False
    with os.scandir(directory) as it:
        children = [(f"{rel}/{e.name}", e.is_dir(follow_symlinks=False)) for e in it]
    return all(c not in EMPTIED and _removed(c, is_dir, rules) for c, is_dir in children)


def walk(root: Path, rules: tuple[Rule, ...] = RULES) -> Iterator[str]:
    """Every path under `root` that the image keeps, as './rel', parents before children, in
    byte order of names (one order on every machine), never leaving root's filesystem."""
    dev = root.stat().st_dev
    yield "."

    def visit(directory: Path, prefix: str) -> Iterator[str]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if rel in EMPTIED or _removed(rel, is_dir, rules):
                continue
            if is_dir and _left_empty(entry.path, rel, rules):
                continue
            yield f"./{rel}"
            if is_dir and st.st_dev == dev:
                yield from visit(Path(entry.path), f"{rel}/")

    yield from visit(root, "")


def guest_script() -> str:
    """POSIX shell (GNU find) that applies RULES and EMPTIED to the live tree under $1 (/ on a
    build machine), as `walk` would leave them out of a capture: a matched directory goes
    whole, `files_only` rules spare directories, nothing on another filesystem is touched.
    Prints REMOVED and the path for each path it removes."""
    lines = ["set -e", 'cd "${1:-/}"']
    lines += [_find(rule) for rule in RULES if not rule.if_empty]
    lines += [_rmdir(rule.pattern) for rule in RULES if rule.if_empty]
    lines += [f"if [ -f ./{rel} ]; then : >./{rel}; fi" for rel in EMPTIED]
    lines.append("sync")
    return "\n".join(lines) + "\n"


def _find(rule: Rule) -> str:
    parts = rule.pattern.split("/")
    fixed = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))
    start = "/".join([".", *parts[: fixed if fixed < len(parts) else len(parts) - 1]])
    kind = " ! -type d" if rule.files_only else ""
    return (
        f"if [ -d {start} ]; then find {start} -xdev -mindepth 1 -regextype posix-extended "
        f"-regex '{_ere(rule.pattern)}'{kind} -prune -printf '{REMOVED}%p\\n' "
        f"-exec rm -rf -- {{}} +; fi"
    )


def _rmdir(rel: str) -> str:
    return (
        f"if [ -d ./{rel} ] && rmdir ./{rel} 2>/dev/null; then printf '{REMOVED}%s\\n' ./{rel}; fi"
    )


_ERE_SPECIAL = {c: "\\" + c for c in r".[]()+{}|^$\\"}


def _ere(pattern: str) -> str:
    """A rule's glob as the POSIX extended regex find matches whole paths ('./rel') with."""
    out = [r"\./"]
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        c = pattern[i]
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else _ERE_SPECIAL.get(c, c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Generalized:
    """What build.json records of a generalization on the machine itself: the commands and
    rules applied, and every path they removed."""

    removed: tuple[str, ...]
    commands: tuple[str, ...] = IN_GUEST
    rules: tuple[str, ...] = tuple(r.pattern for r in RULES)
    emptied: tuple[str, ...] = EMPTIED

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "commands": list(self.commands),
            "rules": list(self.rules),
            "emptied": list(self.emptied),
            "removed": list(self.removed),
        }

    @classmethod
    def from_dict(cls, d: dict[str, list[str]]) -> Generalized:
        return cls(
            tuple(d["removed"]), tuple(d["commands"]), tuple(d["rules"]), tuple(d["emptied"])
        )
