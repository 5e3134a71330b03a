"""The measure step: boot the published image fresh, several times, the way a user's
hypervisor would (baker.backends.plainqemu), and record how long it takes to be usable
(boot.json).

Times are the host's monotonic clock from starting qemu: to the first console output and to
the first successful SSH command; the guest's own view comes from `systemd-analyze`.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
from pathlib import Path
from typing import Any

import paramiko

from baker import interrupts
from baker.backends import plainqemu
from baker.backends.accel import Accel
from baker.backends.plainqemu import Firmware
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, need
from baker.cache import Entry
from baker.edge import tools
from baker.errors import BuildError
from baker.hashing import code_digest, content_key
from baker.progress import Reporter
from baker.recipe.spec import PerAccel

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
_STARTUP = re.compile(r"Startup finished in (.*?)(?:= .*)?$", re.M)


def timespan_s(text: str) -> float:
    """systemd's time spans ("1min 2.345s", "812ms") in seconds."""
    total = 0.0
    parts = re.findall(r"([\d.]+)(us|ms|min|h|s)\b", text)
    if not parts:
        raise ValueError(f"not a systemd time span: {text!r}")
    for number, unit in parts:
        total += float(number) * _UNITS[unit]
    return total


def parse_startup(text: str) -> dict[str, float]:
    """`systemd-analyze time`: {"kernel_s": …, "initrd_s": …, "userspace_s": …}."""
    found = _STARTUP.search(text)
    if not found:
        raise ValueError(f"unexpected systemd-analyze output: {text.strip()!r}")
    out = {}
    for span, phase in re.findall(r"([\d.]+\w+(?: [\d.]+\w+)*) \((\w+)\)", found.group(1)):
        out[f"{phase}_s"] = round(timespan_s(span), 3)
    return out


def parse_blame(text: str, top: int = 10) -> list[dict[str, object]]:
    rows = []
    for line in text.splitlines():
        span, _, unit = line.strip().rpartition(" ")
        if not unit or not span:
            continue
        try:
            rows.append({"unit": unit, "seconds": round(timespan_s(span), 3)})
        except ValueError:
            continue
    return rows[:top]


def budget_for(budget: float | PerAccel | None, accel: str) -> float | None:
    """The recipe's budget where a boot was measured: an accelerator, or "ec2"."""
    if budget is None or isinstance(budget, float | int):
        return budget
    value = getattr(budget, accel, None)
    return None if value is None else float(value)


def _guest(client: paramiko.SSHClient, command: str) -> str:
    _, out, err = client.exec_command(command, timeout=300)
    code = out.channel.recv_exit_status()
    text = out.read().decode(errors="replace")
    if code != 0:
        raise BuildError(f"`{command}` failed in the booted image: {err.read().decode().strip()}")
    return text


_SEPARATOR = "----- baker: blame -----"
# systemd-analyze answers only once the boot transaction is complete.
_TIME = "systemctl is-system-running --wait >/dev/null || true; systemd-analyze time"
_BLAME = f" && echo '{_SEPARATOR}' && systemd-analyze blame --no-pager"


def one_run(
    image: Path,
    workdir: Path,
    accel: Accel,
    timeout: float,
    firmware: Firmware = "bios",
    units: bool = True,
) -> dict[str, Any]:
    """One boot, measured. `units`: also the slowest units (systemd-analyze blame), which
    asks systemd about every unit and took 4-5 s under TCG: worth it once per image and
    firmware, not on every boot."""
    with plainqemu.boot(image, workdir, accel, firmware=firmware) as machine:
        client, to_ssh = machine.wait_for_ssh(timeout)
        with client:
            # One command, not several: each costs a session and a process start in the guest.
            time_text, _, blame_text = _guest(client, _TIME + (_BLAME if units else "")).partition(
                _SEPARATOR
            )
            startup = parse_startup(time_text)
            blame = parse_blame(blame_text) if units else None
    return {
        "time_to_first_output_s": (
            round(machine.first_output_s, 3) if machine.first_output_s is not None else None
        ),
        "time_to_ssh_s": round(to_ssh, 3),
        "kernel_s": startup.get("kernel_s"),
        "initrd_s": startup.get("initrd_s"),
        "userspace_s": startup.get("userspace_s"),
        **({"slowest_units": blame} if blame is not None else {}),
    }


METHOD = (
    "qemu-system-x86_64 -drive (no -kernel), snapshot=on, user-mode NIC; host monotonic clock "
    "from process start; bios: SeaBIOS (pc), uefi: OVMF with Secure Boot enforcing and "
    "Microsoft's keys (q35, SMM); slowest_units (systemd-analyze blame) on each firmware's "
    "first boot"
)
RUNS_FILE = "runs.json"
# The boot paths an image claims, each measured (and held to the budget) on its own.
FIRMWARE: dict[str, tuple[Firmware, ...]] = {
    "bios": ("bios",),
    "hybrid": ("bios", "uefi"),
    "uefi": ("uefi",),
}


class Measure(Step):
    """Keyed by what it measures (the image digest, the accelerator, the firmware and the
    number of boots), not by the steps before it: the same image is measured once."""

    name = "measure"
    cached = True
    static = False

    def describe(self, ctx: Context) -> str:
        firmware = " and ".join(FIRMWARE[ctx.spec.recipe.base.boot])
        return f"{ctx.spec.recipe.boot_runs} plain boots each under {firmware} ({ctx.accel})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "image": need(state.image, "the image").digest,
            "accel": ctx.accel,
            "runs": ctx.spec.recipe.boot_runs,
            "firmware": list(FIRMWARE[ctx.spec.recipe.base.boot]),
            "tools": tools.versions("qemu", "ovmf"),
            "baker": code_digest(),
        }
        return content_key("measure", config)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        image = need(state.image, "the image")
        runs: dict[str, list[dict[str, Any]]] = {}
        for firmware in FIRMWARE[ctx.spec.recipe.base.boot]:
            runs[firmware] = boot_runs(
                image.path, ctx.work, ctx.accel, ctx.spec.recipe.boot_runs, ctx.reporter,
                firmware=firmware,
            )  # fmt: skip
        # Over budget fails here, before the measurement is stored.
        state.boot = record(runs, image.digest, ctx.accel, ctx.spec.recipe.boot_budget_s)
        (ctx.work / RUNS_FILE).write_text(json.dumps(runs))

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({RUNS_FILE: ctx.work / RUNS_FILE})

    def load(self, ctx: Context, state: BuildState, entry: Entry) -> None:
        runs = json.loads(entry.file(RUNS_FILE).read_text())
        # The budget is the recipe's of today, also for a reused measurement.
        state.boot = record(
            runs, need(state.image, "the image").digest, ctx.accel, ctx.spec.recipe.boot_budget_s
        )


def boot_runs(
    image: Path,
    workdir: Path,
    accel: Accel,
    runs: int,
    reporter: Reporter,
    timeout: float = 300,
    firmware: Firmware = "bios",
) -> list[dict[str, Any]]:
    """Boot `image` `runs` times under `firmware` and measure each boot."""
    results = []
    for i in range(runs):
        interrupts.check()
        result = one_run(image, workdir, accel, timeout, firmware, units=i == 0)
        reporter.info(
            f"boot {i + 1}/{runs} ({firmware}): SSH after {result['time_to_ssh_s']:.1f} s "
            f"(kernel {result['kernel_s']} s, userspace {result['userspace_s']} s)"
        )
        results.append(result)
    return results


def median(results: list[dict[str, Any]], key: str) -> float | None:
    """The median of the runs' `key` (those that have a number for it), to the millisecond."""
    values = [float(r[key]) for r in results if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def _medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(results),
        **{
            key: median(results, key)
            for key in (
                "time_to_first_output_s",
                "time_to_ssh_s",
                "kernel_s",
                "initrd_s",
                "userspace_s",
            )
        },
    }


def record(
    runs: dict[str, list[dict[str, Any]]],
    digest: str,
    accel: Accel,
    budget: float | PerAccel | None,
) -> dict[str, Any]:
    """boot.json's content: per firmware its medians and runs; the top-level figures are the
    first firmware's (SeaBIOS for a hybrid image). Raises BuildError when a firmware's median
    time to SSH is over budget."""
    limit = budget_for(budget, accel)
    per_firmware: dict[str, Any] = {}
    for firmware, results in runs.items():
        medians = _medians(results)
        ssh_s = medians["time_to_ssh_s"]
        within = None if limit is None or ssh_s is None else ssh_s <= limit
        per_firmware[firmware] = {**medians, "within_budget": within, "each_run": results}
        if within is False:
            n = medians["runs"]
            raise BuildError(
                f"boot budget exceeded: the median time to SSH over {n} boot{'s' if n != 1 else ''}"
                f" under {firmware} was {ssh_s:.1f} s under {accel}, over the recipe's "
                f"boot_budget_s of {limit:g} s."
            )
    first = next(iter(per_firmware.values()))
    return {
        "image": digest,
        "accel": accel,
        **{k: v for k, v in first.items() if k not in ("within_budget", "each_run")},
        "budget_s": limit,
        "within_budget": None if limit is None else True,
        "each_run": first["each_run"],
        "firmware": per_firmware,
        "method": METHOD,
    }
