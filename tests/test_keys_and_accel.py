"""Content keys and hashes (baker.hashing, pipeline.step_keys) and the accelerator choice."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from string import Template

import pytest
from support.recipe_files import WriteRecipe

from baker import recipe
from baker.backends import accel
from baker.build.pipeline import step_keys
from baker.errors import InputError
from baker.hashing import canonical_json, content_key, sha256_file

# --- hashing --------------------------------------------------------------------------------


def test_canonical_json_is_sorted_and_compact() -> None:
    value = {"b": [3, {"z": 1, "a": None}], "a": "é", "c": True}
    assert canonical_json(value) == '{"a":"é","b":[3,{"a":null,"z":1}],"c":true}'.encode()
    assert canonical_json(value) == canonical_json(json.loads(json.dumps(value)))


def test_content_key_ignores_dict_order() -> None:
    one = {"suite": "bookworm", "packages": ["a", "b"], "nested": {"x": 1, "y": 2}}
    two = {"nested": {"y": 2, "x": 1}, "packages": ["a", "b"], "suite": "bookworm"}
    assert list(one) != list(two)
    assert content_key("base", one) == content_key("base", two)
    assert content_key("base", one, "prev") == content_key("base", two, "prev")


def test_content_key_is_the_sha256_of_its_canonical_payload() -> None:
    key = content_key("disk", {"size": 2048}, "abc")
    payload = b'{"config":{"size":2048},"previous":"abc","step":"disk"}'
    assert key == hashlib.sha256(payload).hexdigest()


def test_content_key_changes_with_each_input() -> None:
    config = {"size_mib": 2048, "packages": ["nginx"]}
    base = content_key("disk", config, "k0")
    variants = {
        content_key("disk", {**config, "size_mib": 4096}, "k0"),
        content_key("disk", {**config, "packages": ["nginx", "curl"]}, "k0"),
        content_key("disk", config, "k1"),
        content_key("disk", config, None),
        content_key("image", config, "k0"),
    }
    assert base not in variants
    assert len(variants) == 5
    # A list's order is part of the config (provisioners run in order).
    assert content_key("s", ["a", "b"]) != content_key("s", ["b", "a"])


def test_sha256_file_matches_hashlib_on_a_multi_megabyte_file(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)  # several chunks and a partial one
    f = tmp_path / "blob"
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()

    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


# --- accelerator ----------------------------------------------------------------------------

CPUINFO = """\
processor\t: 0
vendor_id\t: {vendor}
model name\t: Some CPU
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep {extra} sse sse2 ht syscall nx lm
bugs\t\t: spectre_v1 spectre_v2
{vmx_line}
"""


def _cpuinfo(tmp_path: Path, extra: str = "", vmx_line: str = "") -> Path:
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO.format(vendor="GenuineIntel", extra=extra, vmx_line=vmx_line))
    return f


@pytest.fixture
def kvm_dev(tmp_path: Path) -> Path:
    """A /dev/kvm stand-in that opens read-write (a regular file)."""
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    return dev


@pytest.mark.parametrize("flag", ["vmx", "svm"])
def test_kvm_usable_with_device_and_cpu_flag(tmp_path: Path, kvm_dev: Path, flag: str) -> None:
    assert accel.kvm_usable(kvm_dev, _cpuinfo(tmp_path, extra=flag)) is True


def test_kvm_not_usable_without_cpu_flag(tmp_path: Path, kvm_dev: Path) -> None:
    # Nested hosts: /dev/kvm opens but the CPU shows no vmx/svm (guests crash there).
    assert accel.kvm_usable(kvm_dev, _cpuinfo(tmp_path)) is False


def test_only_the_flags_line_counts(tmp_path: Path, kvm_dev: Path) -> None:
    # Newer kernels print a "vmx flags" line; it is not the CPU's flags.
    cpuinfo = _cpuinfo(tmp_path, vmx_line="vmx flags\t: vnmi preemption_timer svm")
    assert accel.kvm_usable(kvm_dev, cpuinfo) is False


def test_kvm_not_usable_without_device(tmp_path: Path) -> None:
    assert accel.kvm_usable(tmp_path / "no-such-kvm", _cpuinfo(tmp_path, extra="vmx")) is False


def test_kvm_not_usable_without_cpuinfo(kvm_dev: Path, tmp_path: Path) -> None:
    assert accel.kvm_usable(kvm_dev, tmp_path / "no-cpuinfo") is False


@pytest.mark.parametrize(
    ("requested", "usable", "expected"),
    [
        ("auto", True, "kvm"),
        ("auto", False, "tcg"),
        ("kvm", True, "kvm"),
        ("tcg", True, "tcg"),
        ("tcg", False, "tcg"),
    ],
)
def test_choose(requested: str, usable: bool, expected: str) -> None:
    assert accel.choose(requested, usable) == expected


def test_choose_kvm_where_unusable_is_an_input_error() -> None:
    with pytest.raises(InputError) as excinfo:
        accel.choose("kvm", usable=False)
    assert excinfo.value.exit_code == 2
    assert str(excinfo.value).startswith("--accel kvm: KVM is not usable here")


@pytest.mark.parametrize("usable", [True, False])
def test_choose_unknown_accel(usable: bool) -> None:
    with pytest.raises(InputError) as excinfo:
        accel.choose("hvf", usable)
    assert str(excinfo.value) == "--accel hvf: expected auto, kvm or tcg."


# --- step keys ------------------------------------------------------------------------------

STEP = "#!/bin/sh\necho step\n"
STEP_SHA = hashlib.sha256(STEP.encode()).hexdigest()
TEST = "def test_ok(host):\n    assert host\n"
TEST_SHA = hashlib.sha256(TEST.encode()).hexdigest()

RECIPE = Template("""\
name: demo
variables:
  greeting: hello
  packages: nginx
base:
  packages: [{{ packages }}]
  # A fixed mirror: the keys must not depend on this host's apt sources.
  mirror: http://deb.example.org/debian
provisioners:
  - shell: step.sh
    sha256: $step
    env:
      GREETING: "{{ greeting }}"
  - inline: echo second
tests:
  - path: test_demo.py
    sha256: $test
""").substitute(step=STEP_SHA, test=TEST_SHA)

STEPS = ["base", "disk", "boot", "provision", "verify", "shutdown", "capture", "leak-check",
         "image"]  # fmt: skip
KEYED = [s for s in STEPS if s != "shutdown"]


@pytest.fixture
def demo(write_recipe: WriteRecipe) -> Path:
    return write_recipe(RECIPE, files={"step.sh": STEP, "test_demo.py": TEST})


def test_step_keys_are_deterministic_hashes(demo: Path) -> None:
    keys = step_keys(recipe.load(demo))
    assert list(keys) == STEPS
    assert keys["shutdown"] is None  # it makes nothing of its own
    assert all(re.fullmatch(r"[0-9a-f]{64}", keys[s] or "") for s in KEYED)
    assert len({keys[s] for s in KEYED}) == len(KEYED)
    assert step_keys(recipe.load(demo)) == keys


def test_provisioner_env_changes_only_the_later_keys(demo: Path) -> None:
    before = step_keys(recipe.load(demo))
    after = step_keys(recipe.load(demo, {"greeting": "bonjour"}))
    assert [s for s in KEYED if before[s] == after[s]] == ["base", "disk", "boot"]
    assert [s for s in KEYED if before[s] != after[s]] == ["provision", "verify", "capture",
                                                           "leak-check", "image"]  # fmt: skip


def test_base_packages_change_every_key(demo: Path) -> None:
    before = step_keys(recipe.load(demo))
    after = step_keys(recipe.load(demo, {"packages": "curl"}))
    assert all(before[s] != after[s] for s in KEYED)


def test_test_files_change_verify_and_capture(demo: Path, tmp_path: Path) -> None:
    before = step_keys(recipe.load(demo))
    changed = TEST + "# one more line\n"
    (tmp_path / "test_demo.py").write_text(changed)
    demo.write_text(RECIPE.replace(TEST_SHA, hashlib.sha256(changed.encode()).hexdigest()))
    after = step_keys(recipe.load(demo))
    assert [s for s in KEYED if before[s] != after[s]] == ["verify", "capture", "leak-check",
                                                           "image"]  # fmt: skip
