"""The build record (build.json), written from the build state for every backend."""

from __future__ import annotations

import datetime as dt
import os
import platform

from baker import __version__
from baker.artifact import (
    BuildRecord,
    LockPin,
    Pins,
    RecipeRef,
    StepRecord,
    TestCounts,
)
from baker.build import secrets
from baker.build.options import display_path
from baker.build.state import BasePin, BuildState, Context, need
from baker.build.steps.leak_check import leak_record
from baker.edge import tools
from baker.recipe.safety import PerAccel


def tool_versions() -> dict[str, str]:
    import libvirt  # only for its version: a cloud build has no other use for it

    return {
        "python": platform.python_version(),
        "libvirt": ".".join(str(libvirt.getVersion() // 10**i % 1000) for i in (6, 3, 0)),
        **tools.versions("qemu", "qemu-img", "mmdebstrap", "mke2fs", "grub-mkimage", "tar"),
        "kernel": platform.release(),
    }


def build_record(ctx: Context, state: BuildState) -> BuildRecord:
    spec, recipe = ctx.spec, ctx.spec.recipe
    locked = ctx.locked
    base = state.base or BasePin()
    made = need(state.made, "the image")
    pins = Pins(
        lock=(
            LockPin(
                file=display_path(ctx.lock_file), digest=locked.digest, resolved=locked.resolved
            )
            if locked
            else None
        ),
        debs={p.name: f"sha256:{p.sha256}" for p in locked.packages} if locked else {},
        files={rel: f"sha256:{h}" for rel, (_, h) in sorted(spec.files.items())},
        base=base.config,
        base_digest=base.digest,
        base_ami=base.cloud,
        packages={p.name: p.version for p in state.packages},
    )
    budget = recipe.boot_budget_s
    return BuildRecord(
        baker_version=__version__,
        recipe=RecipeRef(
            name=spec.name,
            file=display_path(spec.source),
            digest=f"sha256:{spec.digest}",
            rendered_digest=f"sha256:{spec.rendered_digest}",
            root=os.path.relpath(spec.root, spec.source.parent),
        ),
        variables=spec.variables,
        source_date_epoch=ctx.source_date_epoch,
        pins=pins,
        steps={
            name: StepRecord(
                key=o.key, seconds=o.seconds, status=o.status, cached=o.status != "ran"
            )
            for name, o in state.outcomes.items()
        },
        timings_s={n: o.seconds for n, o in state.outcomes.items() if o.seconds is not None},
        # The virtual hardware it was built and tested on (an OVF export describes it).
        backend=recipe.backend.model_dump(),
        tests=TestCounts(**state.tests.as_dict()) if state.tests else TestCounts(),
        image=made.record,
        boot_budget_s=(
            budget.model_dump(exclude_none=True) if isinstance(budget, PerAccel) else budget
        ),
        tools=tool_versions(),
        generalized=state.generalized.as_dict() if state.generalized else None,
        parent=ctx.parent.pin if ctx.parent else None,
        secrets=secrets.names(ctx.spec),
        scan=state.scan,
        leak_check=leak_record(ctx.spec) if "leak-check" in state.outcomes else None,
        started=ctx.started.isoformat(timespec="seconds"),
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # What only the backend knows: the accelerator it built under, a cloud machine's ids.
        **ctx.backend.record_fields(state.machine_record),
    )
