"""The build record (build.json), written from the build state for every backend."""

from __future__ import annotations

import datetime as dt
import os
import platform

from baker import __version__
from baker.artifact import (
    IMAGE,
    BuildRecord,
    ImageRecord,
    LockPin,
    Pins,
    RecipeRef,
    StepRecord,
    TestCounts,
)
from baker.build.options import display_path
from baker.build.state import BuildState, Context
from baker.edge import tools
from baker.image import debian
from baker.recipe.spec import PerAccel


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
        base=debian.config(recipe.base, locked) if ctx.backend.starts_from == "debian" else None,
        base_digest=state.base_digest,
        base_ami=state.cloud_base.pin() if state.cloud_base is not None else None,
        packages={p.name: p.version for p in state.packages},
    )
    if state.image is not None:
        image = ImageRecord(
            file=IMAGE,
            digest=state.image.digest,
            raw_digest=state.image.raw_digest,
            size=state.image.size,
            virtual_size=recipe.base.disk_size_mib * 1024 * 1024,
            format="qcow2",
            boot=recipe.base.boot,
        )
    else:
        image = ImageRecord(ami=state.cloud_image.record if state.cloud_image else None)
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
        accel=ctx.accel if ctx.backend.starts_from == "debian" else None,
        # The virtual hardware it was built and tested on (an OVF export describes it).
        backend=recipe.backend.model_dump(),
        tests=TestCounts(**state.tests.as_dict()) if state.tests else TestCounts(),
        image=image,
        boot_budget_s=(
            budget.model_dump(exclude_none=True) if isinstance(budget, PerAccel) else budget
        ),
        tools=tool_versions(),
        ec2=(state.machine_record or None) if ctx.backend.kind == "ec2" else None,
        generalized=state.generalized,
        started=ctx.started.isoformat(timespec="seconds"),
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
