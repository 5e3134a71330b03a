"""The measure step: the published image booted fresh, the way users launch it, and timed
(boot.json), through the backend's one `boot_image`: plain qemu under each firmware the image
claims for a local disk, launches of the image for a cloud's.

Times are the host's monotonic clock from the start (qemu's, a launch request) to the first
console output and to the first successful SSH command; the guest's own view comes from
`systemd-analyze`. A firmware whose median time to SSH is over the recipe's boot budget
fails the build.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
from typing import Any

from baker import interrupts
from baker.artifact import BootRecord, BootRun, FirmwareBoots
from baker.backends.base import BootPlan, MeasuredBoot
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, Made, need
from baker.cache import Entry
from baker.errors import BuildError
from baker.hashing import code_digest, content_key
from baker.recipe.safety import PerAccel

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
_STARTUP = re.compile(r"Startup finished in (.*?)(?:= .*)?$", re.M)
RUNS_FILE = "runs.json"
_FIGURES = ("time_to_ssh_s", "time_to_first_output_s", "kernel_s", "initrd_s", "userspace_s")


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
    """The recipe's budget where a boot was measured: an accelerator, or a cloud (ec2)."""
    if budget is None or isinstance(budget, float | int):
        return budget
    value = getattr(budget, accel, None)
    return None if value is None else float(value)


def run_record(boot: MeasuredBoot) -> dict[str, Any]:
    """One boot as boot.json lists it."""
    try:
        startup = parse_startup(boot.startup)
    except ValueError as e:
        raise BuildError(f"the booted image's {e}") from None
    return {
        "time_to_first_output_s": boot.first_output_s,
        "time_to_ssh_s": boot.to_ssh_s,
        "kernel_s": startup.get("kernel_s"),
        "initrd_s": startup.get("initrd_s"),
        "userspace_s": startup.get("userspace_s"),
        **({"slowest_units": parse_blame(boot.blame)} if boot.blame is not None else {}),
        **boot.extra,
    }


class Measure(Step):
    """Keyed by what it measures (the image, where and how it boots, how many times), not by
    the steps before it: the same image is measured once."""

    name = "measure"
    cached = True
    static = False

    def plan(self, ctx: Context) -> BootPlan:
        recipe = ctx.spec.recipe
        return ctx.backend.boot_plan(recipe.base.boot, ctx.opts.boot_runs or recipe.boot_runs)

    def describe(self, ctx: Context) -> str:
        plan = self.plan(ctx)
        each = ", ".join(f"{runs} under {firmware}" for firmware, runs in plan.firmware)
        return f"boots of the published image: {each} ({plan.accel})"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        plan = self.plan(ctx)
        config = {
            "image": need(state.made, "the image").ids,
            "accel": plan.accel,
            "firmware": [list(f) for f in plan.firmware],
            "plan": plan.key,
            "code": code_digest(type(self).__module__, type(ctx.backend).__module__),
        }
        return content_key("measure", config)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        made = need(state.made, "the image")
        plan = self.plan(ctx)
        budget = ctx.spec.recipe.boot_budget_s
        runs: dict[str, list[dict[str, Any]]] = {}
        for firmware, count in plan.firmware:
            for i in range(count):
                interrupts.check()
                boot = ctx.backend.boot_image(made.image, firmware, ctx.work, state.label, i == 0)
                one = run_record(boot)
                ctx.reporter.info(
                    f"boot {i + 1}/{count} ({firmware}): SSH after {one['time_to_ssh_s']:.1f} s "
                    f"(kernel {one['kernel_s']} s, userspace {one['userspace_s']} s)"
                )
                runs.setdefault(firmware, []).append(one)
            # A firmware over budget fails the build at once: the other firmware's boots
            # would not change that.
            within_budget(firmware, runs[firmware], plan, budget_for(budget, plan.accel))
        # Over budget fails here, before the measurement is stored.
        state.boot = record(runs, made, plan, budget)
        (ctx.work / RUNS_FILE).write_text(json.dumps(runs))

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({RUNS_FILE: ctx.work / RUNS_FILE})

    def load(
        self, ctx: Context, state: BuildState, entry: Entry, cleanup: contextlib.ExitStack
    ) -> None:
        runs = json.loads(entry.file(RUNS_FILE).read_text())
        # The budget is the recipe's of today, also for a reused measurement.
        made = need(state.made, "the image")
        state.boot = record(runs, made, self.plan(ctx), ctx.spec.recipe.boot_budget_s)


def median(results: list[dict[str, Any]], key: str) -> float | None:
    """The median of the runs' `key` (those that have a number for it), to the millisecond."""
    values = [float(r[key]) for r in results if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 3) if values else None


def _medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"runs": len(results), **{key: median(results, key) for key in _FIGURES}}


def within_budget(
    firmware: str, results: list[dict[str, Any]], plan: BootPlan, limit: float | None
) -> bool | None:
    """Whether `firmware`'s median time to SSH is within `limit` (None: no budget, or no
    figure); raises BuildError when it is over."""
    ssh_s = median(results, "time_to_ssh_s")
    if limit is None or ssh_s is None:
        return None
    if ssh_s > limit:
        n = len(results)
        # A cloud has one way to boot, named like the cloud; a local image has several.
        where = f"on {plan.accel}" if firmware == plan.accel else f"under {firmware} ({plan.accel})"
        raise BuildError(
            f"boot budget exceeded: the median time to SSH over {n} boot{'s' if n != 1 else ''}"
            f" {where} was {ssh_s:.1f} s, over the recipe's boot_budget_s of {limit:g} s."
        )
    return True


def record(
    runs: dict[str, list[dict[str, Any]]],
    made: Made,
    plan: BootPlan,
    budget: float | PerAccel | None,
) -> BootRecord:
    """boot.json's content: per firmware its medians and runs; the top-level figures are the
    first firmware's. Raises BuildError when a firmware's median time to SSH is over budget."""
    limit = budget_for(budget, plan.accel)
    per_firmware: dict[str, FirmwareBoots] = {}
    for firmware, results in runs.items():
        medians = _medians(results)
        within = within_budget(firmware, results, plan, limit)
        per_firmware[firmware] = FirmwareBoots(
            **medians, within_budget=within, each_run=[BootRun(**r) for r in results]
        )
    first = next(iter(runs.values()))
    # The other numbers a backend's runs carry (a cloud's running_to_ssh_s) get medians too.
    own = sorted({k for r in first for k, v in r.items() if isinstance(v, float)} - set(_FIGURES))
    return BootRecord(
        **made.ids,
        accel=plan.accel,
        **_medians(first),
        budget_s=limit,
        within_budget=None if limit is None else True,
        each_run=next(iter(per_firmware.values())).each_run,
        firmware=per_firmware,
        method=plan.method,
        **plan.labels,
        **{key: median(first, key) for key in own},
    )
