"""The measure step of a cloud backend: the new image launched `boot_runs` times as a user
would launch it, each boot timed to its first SSH command and asked for systemd's startup
times (boot.json, `accel: ec2`), the recipe's `boot_budget_s` (its `ec2` entry) applied."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from baker.backends.base import BootsImages, CloudBoot
from baker.build.runner import Saved, Step
from baker.build.state import BuildState, Context, need
from baker.build.steps.measure import RUNS_FILE, budget_for, median, parse_startup
from baker.cache import Entry
from baker.errors import BuildError
from baker.hashing import code_digest, content_key
from baker.recipe.spec import PerAccel

METHOD = (
    "one instance launched from the image per run, with a throwaway key pair for the login "
    "user; host monotonic clock from the RunInstances call (to_ssh) and from the instance "
    "seen running by polling (running_to_ssh, within the poll interval) to the first SSH "
    "command; kernel/initrd/userspace from systemd-analyze time in the instance"
)


class CloudMeasure(Step):
    """Keyed by what it measures: the image (its id and raw digest), where it runs, and how
    many boots; the same image is measured once."""

    name = "measure"
    cached = True
    static = False

    def describe(self, ctx: Context) -> str:
        return f"{ctx.spec.recipe.boot_runs} launches of the new {ctx.backend.kind} image"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        image = need(state.cloud_image, "the cloud image")
        config = {
            "image": [image.image_id, image.record.get("raw_digest")],
            "backend": ctx.backend.key_config(),
            "runs": ctx.spec.recipe.boot_runs,
            "baker": code_digest(),
        }
        return content_key("measure", config)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        backend = ctx.backend
        if not isinstance(backend, BootsImages):
            raise RuntimeError(f"the {backend.kind} backend cannot boot what it made")
        image = need(state.cloud_image, "the cloud image")
        runs = []
        for i in range(ctx.spec.recipe.boot_runs):
            one = run_record(backend.boot_image(image, state.label))
            ctx.reporter.info(
                f"boot {i + 1}/{ctx.spec.recipe.boot_runs} of {image.image_id}: SSH after "
                f"{one['time_to_ssh_s']:.1f} s ({one['running_to_ssh_s']:.1f} s after running)"
            )
            runs.append(one)
        state.boot = record(runs, state, ctx.spec.recipe.boot_budget_s, backend.kind)
        (ctx.work / RUNS_FILE).write_text(json.dumps(runs))

    def save(self, ctx: Context, state: BuildState) -> Saved:
        return Saved({RUNS_FILE: ctx.work / RUNS_FILE})

    def load(self, ctx: Context, state: BuildState, entry: Entry) -> None:
        runs = json.loads(entry.file(RUNS_FILE).read_text())
        state.boot = record(runs, state, ctx.spec.recipe.boot_budget_s, ctx.backend.kind)


def run_record(boot: CloudBoot) -> dict[str, Any]:
    try:
        startup = parse_startup(boot.startup)
    except ValueError as e:
        raise BuildError(f"the booted image's {e}") from None
    return {
        "time_to_ssh_s": boot.to_ssh_s,
        "running_to_ssh_s": boot.running_to_ssh_s,
        "kernel_s": startup.get("kernel_s"),
        "initrd_s": startup.get("initrd_s"),
        "userspace_s": startup.get("userspace_s"),
        **boot.machine,
    }


def record(
    runs: list[dict[str, Any]], state: BuildState, budget: float | PerAccel | None, cloud: str
) -> dict[str, Any]:
    """boot.json's content, `accel` being the cloud's name (ec2); BuildError when the median
    time to SSH is over the budget (a number, or the budget's entry for the cloud)."""
    image = need(state.cloud_image, "the cloud image")

    limit = budget_for(budget, cloud)
    to_ssh = median(runs, "time_to_ssh_s")
    if limit is not None and to_ssh is not None and to_ssh > limit:
        raise BuildError(
            f"boot budget exceeded: the median time to SSH over {len(runs)} launch"
            f"{'es' if len(runs) != 1 else ''} of {image.image_id} was {to_ssh:.1f} s, over "
            f"the recipe's boot_budget_s of {limit:g} s for {cloud}."
        )
    return {
        "image": image.record.get("raw_digest"),
        "image_id": image.image_id,
        "accel": cloud,
        "instance_type": runs[0].get("instance_type") if runs else None,
        "runs": len(runs),
        "time_to_ssh_s": to_ssh,
        "running_to_ssh_s": median(runs, "running_to_ssh_s"),
        "kernel_s": median(runs, "kernel_s"),
        "initrd_s": median(runs, "initrd_s"),
        "userspace_s": median(runs, "userspace_s"),
        "budget_s": limit,
        "within_budget": None if limit is None else True,
        "each_run": runs,
        "method": METHOD,
    }
