"""The one pipeline, driven through the fake backend: the steps in order for each kind of
backend, the machine cleaned up on failure at every step, cached images reused, a corrupted
entry rebuilt to the same digest. No VM; the disk hand-back makes small real disks (root)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from support.recipe_files import WriteRecipe
from support.tamper import flip_byte

from baker import recipe
from baker.artifact import ImageRecord, read_record
from baker.backends.base import BootPlan, CloudImage
from baker.backends.fake import FAKE_RAW_DIGEST, FakeBackend, ResumingFakeBackend
from baker.build.options import Options
from baker.build.pipeline import build, steps
from baker.build.state import Made
from baker.build.steps import measure
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.progress import Reporter
from baker.recipe.safety import PerAccel
from baker.recipe.spec import Recipe, Spec

RECIPE = """\
name: fake-image
base:
  boot: bios  # the fake's small disk has no EFI binaries to put on an ESP
provisioners:
  - name: first
    inline: echo first
  - name: second
    shell: second.sh
    sha256: {sha}
"""
SCRIPT = "echo second\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="loop-mounts a disk: needs root")


def _spec(write_recipe: WriteRecipe, script: str = SCRIPT, tests: str = "") -> recipe.Spec:
    sha = hashlib.sha256(script.encode()).hexdigest()
    files = {"second.sh": script}
    text = RECIPE.format(sha=sha)
    if tests:
        files["test_fake.py"] = tests
        pin = hashlib.sha256(tests.encode()).hexdigest()
        text += f"tests:\n  - path: test_fake.py\n    sha256: {pin}\n"
    return recipe.load(write_recipe(text, files))


def _opts(tmp_path: Path, cache: Cache | None = None) -> Options:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Options(
        out=tmp_path / "out", cache=cache or Cache(tmp_path / "cache"), work_root=work,
        measure=False,
    )  # fmt: skip


def _reporter() -> Reporter:
    return Reporter(Console(file=io.StringIO(), width=200))


PLAIN = Spec(Recipe(name="plain"), Path("plain.yaml"), "0" * 64, "0" * 64)


def test_each_backend_kind_gets_its_steps() -> None:
    names = [s.name for s in steps(PLAIN, FakeBackend())]
    assert names == ["base", "boot", "provision", "verify", "generalize", "shutdown", "image",
                     "measure", "attest", "publish"]  # fmt: skip
    names = [s.name for s in steps(PLAIN, FakeBackend(hands_back="disk"))]
    assert names == ["base", "boot", "provision", "verify", "shutdown", "capture", "leak-check",
                     "image", "measure", "attest", "publish"]  # fmt: skip


def test_a_cloud_build_runs_in_order_and_cleans_up(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = FakeBackend()
    result = build(_spec(write_recipe), _opts(tmp_path), _reporter(), backend=fake)
    assert result.digest == "fake:fake-region:fake-image-1"
    events = [e.split()[0] if e.startswith(("run", "upload")) else e for e in fake.journal]
    assert events == [
        # each provisioner one command, its file as the command's input
        "resolve base", "start", "connect", "run", "run",
        # journald to /run, cloud-init's clean, the capture's rules, the copyrights
        # gathered and removed
        "run", "run", "run", "run", "run",
        "close guest", "stop", "hand back", "destroy",
    ]  # fmt: skip
    assert {p.name for p in result.artifact.iterdir()} == {
        "ami.json", "build.json", "verify.junit.xml", "SHA256SUMS",
        "sbom.cdx.json", "sbom.spdx.json", "provenance.json",
    }  # fmt: skip
    generalize = [e for e in fake.journal if "ssh_host_" in e]
    assert len(generalize) == 1 and generalize[0].startswith("run sh -c ")
    record = read_record(result.artifact)
    assert record.pins.base_ami == {"image_id": "fake-base-1"}
    assert record.pins.packages == {"fake-base": "1.0"}
    assert [s.status for s in record.steps.values()] == ["ran"] * 7
    assert record.generalized and record.generalized["rules"][0] == "etc/ssh/ssh_host_*"
    assert list(Path(tmp_path / "work").iterdir()) == []


def test_a_cloud_image_is_launched_to_measure_its_boot(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = FakeBackend()
    opts = dataclasses.replace(_opts(tmp_path), measure=True)
    result = build(_spec(write_recipe), opts, _reporter(), backend=fake)
    assert fake.journal[-5:] == ["hand back", "boot fake-image-1", "boot fake-image-1",
                                 "boot fake-image-1", "destroy"]  # fmt: skip
    boot = json.loads((result.artifact / "boot.json").read_text())
    assert boot["accel"] == "fake" and boot["runs"] == 3 and boot["image_id"] == "fake-image-1"
    assert boot["image"] == FAKE_RAW_DIGEST
    assert (boot["time_to_ssh_s"], boot["running_to_ssh_s"], boot["userspace_s"]) == (4, 3.5, 2)
    # Over budget fails the build; the budget is the recipe's entry for the cloud.
    image = CloudImage("r", "ami-1", FAKE_RAW_DIGEST, {})
    made = Made(image, image.ref, FAKE_RAW_DIGEST, "ami.json", ImageRecord(), {"image": "x"}, "")
    plan = BootPlan(accel="ec2", firmware=(("ec2", 3),), method="launches")
    runs = {"ec2": [dict(boot["each_run"][0], time_to_ssh_s=t) for t in (50.0, 70.0, 80.0)]}
    assert measure.record(runs, made, plan, PerAccel(ec2=70)).within_budget is True
    with pytest.raises(BuildError, match=r"median time to SSH over 3 boots on ec2 was 70\.0 s"):
        measure.record(runs, made, plan, PerAccel(ec2=69))


class TwoFirmwareFake(FakeBackend):
    def boot_plan(self, boot: str, runs: int) -> BootPlan:
        return BootPlan(accel="fake", firmware=(("uefi", runs), ("bios", 1)), method="fake")


def test_a_firmware_over_budget_fails_before_the_next_firmware_boots(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = TwoFirmwareFake()
    spec = _spec(write_recipe)
    spec = dataclasses.replace(
        spec, recipe=spec.recipe.model_copy(update={"boot_budget_s": 3.0, "boot_runs": 2})
    )
    opts = dataclasses.replace(_opts(tmp_path), measure=True)
    with pytest.raises(BuildError, match=r"over 2 boots under uefi \(fake\) was 4\.0 s"):
        build(spec, opts, _reporter(), backend=fake)
    assert [e for e in fake.journal if e.startswith("boot ")] == ["boot fake-image-1"] * 2


def test_the_recipes_boot_runs_are_measured_under_the_main_firmware_and_one_under_the_other(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    """The e2e session measures its images with fewer boots (--boot-runs): the recipe's
    default count is shown here."""
    fake = TwoFirmwareFake()
    opts = dataclasses.replace(_opts(tmp_path), measure=True)
    result = build(_spec(write_recipe), opts, _reporter(), backend=fake)
    boot = json.loads((result.artifact / "boot.json").read_text())
    assert {f: v["runs"] for f, v in boot["firmware"].items()} == {"uefi": 3, "bios": 1}


def test_boot_runs_on_the_command_line_sets_the_count_and_is_checked(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = TwoFirmwareFake()
    opts = dataclasses.replace(_opts(tmp_path), measure=True, boot_runs=1)
    result = build(_spec(write_recipe), opts, _reporter(), backend=fake)
    boot = json.loads((result.artifact / "boot.json").read_text())
    assert {f: v["runs"] for f, v in boot["firmware"].items()} == {"uefi": 1, "bios": 1}
    for runs in (0, 21):
        fake = TwoFirmwareFake()
        opts = dataclasses.replace(_opts(tmp_path), measure=True, boot_runs=runs)
        with pytest.raises(InputError, match=rf"^--boot-runs {runs}: give 1 to 20 boots\.$"):
            build(_spec(write_recipe), opts, _reporter(), backend=fake)
        assert fake.journal == []  # refused before anything started


@pytest.mark.parametrize(
    ("fail_on", "last"),
    [
        ("start", "start"),
        ("connect", "destroy"),
        ("steps/02", "destroy"),
        ("stop", "destroy"),
        ("hand back", "destroy"),
    ],
)
def test_a_failure_at_any_step_stops_the_machine_and_leaves_nothing(
    write_recipe: WriteRecipe, tmp_path: Path, fail_on: str, last: str
) -> None:
    fake = FakeBackend(fail_on=fail_on)
    with pytest.raises(BuildError):
        build(_spec(write_recipe), _opts(tmp_path), _reporter(), backend=fake)
    assert fake.journal[-1] == last
    if fail_on == "steps/02":
        # The session is closed before the machine goes: cleanups run in reverse.
        assert fake.journal[-2:] == ["close guest", "destroy"]
    assert not (tmp_path / "out").exists()
    assert list(Path(tmp_path / "work").iterdir()) == []


def test_a_failing_test_fails_the_build_and_cleans_up(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    tests = "def test_root_is_missing(host):\n    assert not host.file('/').exists\n"
    fake = FakeBackend()
    with pytest.raises(BuildError, match="1 of 1 testinfra tests failed"):
        build(_spec(write_recipe, tests=tests), _opts(tmp_path), _reporter(), backend=fake)
    assert fake.journal[-2:] == ["close guest", "destroy"]
    assert "stop" not in fake.journal


def test_an_unchanged_cloud_build_reuses_its_image_while_it_exists(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake, cache = FakeBackend(), Cache(tmp_path / "cache")
    spec = _spec(write_recipe, tests="def test_root(host):\n    assert host.file('/').exists\n")
    first = build(spec, _opts(tmp_path, cache), _reporter(), backend=fake)
    fake.journal.clear()
    again = build(spec, _opts(tmp_path, cache), _reporter(), backend=fake)
    assert again.digest == first.digest
    assert fake.journal == ["resolve base"]  # no machine at all
    record = read_record(again.artifact)
    assert {n: s.status for n, s in record.steps.items()} == {
        "base": "ran", "boot": "skipped", "provision": "skipped", "verify": "skipped",
        "generalize": "skipped", "shutdown": "skipped", "image": "reused",
    }  # fmt: skip
    assert record.tests.tests == 1
    # Gone from the cloud: built again.
    fake.images.clear()
    fake.journal.clear()
    third = build(spec, _opts(tmp_path, cache), _reporter(), backend=fake)
    assert "start" in fake.journal and third.digest != first.digest


@needs_root
def test_disk_images_are_cached_and_a_corrupted_entry_is_rebuilt(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake, cache = FakeBackend(hands_back="disk"), Cache(tmp_path / "cache")
    spec = _spec(write_recipe)
    first = build(spec, _opts(tmp_path, cache), _reporter(), backend=fake)
    assert first.digest.startswith("sha256:")
    assert {p.name for p in first.artifact.iterdir()} >= {
        "image.qcow2", "build.json", "sbom.cdx.json", "sbom.spdx.json", "provenance.json",
    }  # fmt: skip

    fake.journal.clear()
    again = build(spec, _opts(tmp_path, cache), _reporter(), backend=fake)
    assert again.digest == first.digest and "start" not in fake.journal
    steps_done = json.loads((again.artifact / "build.json").read_text())["steps"]
    assert steps_done["image"]["status"] == "reused" and steps_done["image"]["cached"]

    # A flipped byte in the cached image: found, dropped, made again, the same bytes.
    (entry,) = [e for e in cache.entries() if e.step == "image"]
    flip_byte(entry.path / "image.qcow2", 4096)
    fake.journal.clear()
    reporter = _reporter()
    rebuilt = build(spec, _opts(tmp_path, cache), reporter, backend=fake)
    assert "start" in fake.journal
    assert rebuilt.digest == first.digest
    assert "image.qcow2 does not match its recorded sha256" in reporter.console.file.getvalue()  # type: ignore[attr-defined]

    # A changed provisioner: a new image.
    fake.journal.clear()
    changed = build(_spec(write_recipe, "echo changed\n"), _opts(tmp_path, cache), _reporter(),
                    backend=fake)  # fmt: skip
    assert "start" in fake.journal and changed.digest != first.digest


def test_a_saved_build_machine_is_resumed_by_every_build_from_its_base(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    """The first build boots cold and saves the machine; it and every later build from the
    same base resume it, and before anything runs a resumed machine gets the host's clock
    and fresh random bytes."""
    fake, cache = ResumingFakeBackend(), Cache(tmp_path / "cache")
    assert [s.name for s in steps(PLAIN, fake)][:2] == ["base", "boot"]
    first = build(_spec(write_recipe), _opts(tmp_path, cache), _reporter(), backend=fake)
    assert fake.journal[:3] == ["resolve base", "start", "connect"]
    # Settled before it is saved: its boot finished, its timers stopped.
    assert "is-system-running --wait" in fake.journal[3] and "*.timer" in fake.journal[3]
    assert fake.journal[4:8] == [
        "close guest", "save", "destroy", f"resume the state of {fake.machines[0].name}",
    ]  # fmt: skip
    # A changed provisioner: the base's saved machine is resumed, not booted.
    fake.journal.clear()
    second = build(
        _spec(write_recipe, "echo changed\n"), _opts(tmp_path, cache), _reporter(), backend=fake
    )
    assert "start" not in fake.journal and fake.journal[1].startswith("resume the state of")
    fresh = [e for e in fake.journal if "0x5207" in e]
    assert len(fresh) == 1 and "date -u -s @" in fresh[0]
    record = read_record(second.artifact)
    assert record.steps["boot"].status == "reused"
    assert first.digest != second.digest
    (saved,) = [e for e in cache.entries() if e.step == "boot"]
    assert (saved.path / "keys.json").stat().st_mode & 0o777 == 0o600


def test_a_build_whose_cache_is_thrown_away_boots_and_saves_no_machine(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    """A rebuild's step cache goes with it: a machine saved there would never be resumed, so
    the machine is booted, as on a backend that cannot save one, to the same image."""
    fake, cache = ResumingFakeBackend(), Cache(tmp_path / "cache")
    assert [type(s).__name__ for s in steps(PLAIN, fake, save_machine=False)][1] == "Boot"
    opts = replace(_opts(tmp_path, cache), save_machine=False)
    booted = build(_spec(write_recipe), opts, _reporter(), backend=fake)
    assert "save" not in fake.journal and not any(e.startswith("resume") for e in fake.journal)
    # Settled as a machine about to be saved is: its boot finished, its timers stopped.
    assert any("is-system-running --wait" in e and "*.timer" in e for e in fake.journal)
    assert not [e for e in cache.entries() if e.step == "boot"]
    resumed = build(_spec(write_recipe), _opts(tmp_path, Cache(tmp_path / "other")), _reporter(),
                    backend=ResumingFakeBackend())  # fmt: skip
    assert booted.digest == resumed.digest


def test_a_saved_machine_that_cannot_resume_fails_the_build_and_cleans_up(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    fake = ResumingFakeBackend(fail_on="resume")
    with pytest.raises(BuildError, match="did not resume"):
        build(_spec(write_recipe), _opts(tmp_path), _reporter(), backend=fake)
    assert "destroy" in fake.journal
    assert list(Path(tmp_path / "work").iterdir()) == []
