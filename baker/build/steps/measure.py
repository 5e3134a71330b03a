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

from baker.backends import plainqemu
from baker.backends.accel import Accel
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, need
from baker.cache import Entry
from baker.edge import tools
from baker.errors import BuildError
from baker.hashing import code_digest, content_key
from baker.progress import Reporter
from baker.spec import PerAccel

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


def budget_for(budget: float | PerAccel | None, accel: Accel) -> float | None:
    if budget is None or isinstance(budget, float | int):
        return budget
    return float(getattr(budget, accel))


def _guest(client: paramiko.SSHClient, command: str) -> str:
    _, out, err = client.exec_command(command, timeout=300)
    code = out.channel.recv_exit_status()
    text = out.read().decode(errors="replace")
    if code != 0:
        raise BuildError(f"`{command}` failed in the booted image: {err.read().decode().strip()}")
    return text


def one_run(image: Path, workdir: Path, accel: Accel, timeout: float) -> dict[str, Any]:
    with plainqemu.boot(image, workdir, accel) as machine:
        client, to_ssh = machine.wait_for_ssh(timeout)
        with client:
            # systemd-analyze answers only once the boot transaction is complete.
            _guest(client, "systemctl is-system-running --wait >/dev/null || true")
            startup = parse_startup(_guest(client, "systemd-analyze time"))
            blame = parse_blame(_guest(client, "systemd-analyze blame --no-pager"))
    return {
        "time_to_first_output_s": (
            round(machine.first_output_s, 3) if machine.first_output_s is not None else None
        ),
        "time_to_ssh_s": round(to_ssh, 3),
        "kernel_s": startup.get("kernel_s"),
        "initrd_s": startup.get("initrd_s"),
        "userspace_s": startup.get("userspace_s"),
        "slowest_units": blame,
    }


METHOD = (
    "qemu-system-x86_64 -drive (no -kernel), snapshot=on, user-mode NIC; "
    "host monotonic clock from process start"
)
RUNS_FILE = "runs.json"


class Measure(Step):
    """Keyed by what it measures (the image digest, the accelerator, the number of boots),
    not by the steps before it: the same image is measured once."""

    name = "measure"
    cached = True
    static = False

    def describe(self, ctx: Context) -> str:
        return f"{ctx.spec.recipe.boot_runs} plain boots ({ctx.accel})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "image": need(state.image, "the image").digest,
            "accel": ctx.accel,
            "runs": ctx.spec.recipe.boot_runs,
            "tools": tools.versions("qemu"),
            "baker": code_digest(),
        }
        return content_key("measure", config)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        image = need(state.image, "the image")
        runs = boot_runs(image.path, ctx.work, ctx.accel, ctx.spec.recipe.boot_runs, ctx.reporter)
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
    image: Path, workdir: Path, accel: Accel, runs: int, reporter: Reporter, timeout: float = 300
) -> list[dict[str, Any]]:
    """Boot `image` `runs` times and measure each boot."""
    results = []
    for i in range(runs):
        result = one_run(image, workdir, accel, timeout)
        reporter.info(
            f"boot {i + 1}/{runs}: SSH after {result['time_to_ssh_s']:.1f} s "
            f"(kernel {result['kernel_s']} s, userspace {result['userspace_s']} s)"
        )
        results.append(result)
    return results


def record(
    results: list[dict[str, Any]], digest: str, accel: Accel, budget: float | PerAccel | None
) -> dict[str, Any]:
    """boot.json's content; raises BuildError when the median time to SSH is over budget."""
    runs = len(results)

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in results if isinstance(r.get(key), int | float)]
        return round(statistics.median(values), 3) if values else None

    limit = budget_for(budget, accel)
    median_ssh = median("time_to_ssh_s")
    boot: dict[str, Any] = {
        "image": digest,
        "accel": accel,
        "runs": runs,
        "time_to_first_output_s": median("time_to_first_output_s"),
        "time_to_ssh_s": median_ssh,
        "kernel_s": median("kernel_s"),
        "initrd_s": median("initrd_s"),
        "userspace_s": median("userspace_s"),
        "budget_s": limit,
        "within_budget": None,
        "each_run": results,
        "method": METHOD,
    }
    if limit is not None and median_ssh is not None:
        boot["within_budget"] = median_ssh <= limit
        if median_ssh > limit:
            raise BuildError(
                f"boot budget exceeded: the median time to SSH over {runs} "
                f"boot{'s' if runs != 1 else ''} was "
                f"{median_ssh:.1f} s under {accel}, over the recipe's boot_budget_s of {limit:g} s."
            )
    return boot
