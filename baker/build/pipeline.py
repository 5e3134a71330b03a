"""The build, as one straight pipeline (DESIGN.md): read it top to bottom.

resolve (done by the caller: a Spec) -> base -> disk -> boot -> provision -> verify ->
shutdown -> capture -> leak-check -> image -> scan (with a snapshot) -> measure -> attest ->
publish, for a backend that starts from a local Debian disk and hands back a disk; a cloud
backend starts from its own base image and hands back an image of its own (base -> boot ->
provision -> verify -> generalize (on the machine) -> shutdown -> image (with its raw digest)
-> scan -> measure (launches of the image) -> attest -> publish). The runner
(baker.build.runner) runs the steps, reuses what the step cache holds, and cleans up; nothing
reaches `out/` before the publish step.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from baker import artifact
from baker.backends.accel import Accel, choose
from baker.backends.base import Backend, BuildLabel, Resumes
from baker.backends.factory import open_backend
from baker.build import runner, secrets, vendor
from baker.build.options import Options, Result, display_path
from baker.build.parent import Parent
from baker.build.parent import resolve as resolve_parent
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.build.steps import scan
from baker.build.steps.attest import Attest
from baker.build.steps.base import CloudBaseImage, DebianBase
from baker.build.steps.boot import Boot, ResumeOrBoot
from baker.build.steps.capture import Capture
from baker.build.steps.cloud_image import MakeCloudImage
from baker.build.steps.disk import Disk
from baker.build.steps.generalize import GeneralizeInGuest
from baker.build.steps.image import Image
from baker.build.steps.image_as_is import ImageAsIs
from baker.build.steps.leak_check import LeakCheck
from baker.build.steps.measure import Measure
from baker.build.steps.parent_tree import ParentTree
from baker.build.steps.provision import Provision
from baker.build.steps.publish import Publish
from baker.build.steps.scan import Scan
from baker.build.steps.shutdown import Shutdown
from baker.build.steps.tests import Verify
from baker.build.steps.vendor_disk import VendorDisk
from baker.build.steps.vendor_tree import VendorTree
from baker.errors import InputError
from baker.evidence import signing
from baker.image import debian
from baker.leftovers import workdir
from baker.progress import Reporter
from baker.recipe import lock
from baker.recipe.spec import MAX_BOOT_RUNS, Spec


def steps(
    spec: Spec,
    backend: Backend,
    measure: bool = True,
    snapshot: Path | None = None,
    save_machine: bool = True,
) -> list[Step]:
    """The steps of a build of `spec` on `backend`, in the order they run: the one place
    they are put together, from what the build starts from and the backend hands back
    (Packer's builders each have their step list the same way)."""
    # A backend that can save a running machine resumes the one saved from this base (unless
    # the saved one would be thrown away with the build's cache: boot, save and resume cost
    # more than a boot).
    boot: Step = Boot()
    if isinstance(backend, Resumes):
        boot = ResumeOrBoot() if save_machine else Boot(settle=True)
    if backend.starts_from == "debian" and vendor.as_is(spec):
        # A vendor's disk taken as it is: booted, generalized and trimmed in place, imaged.
        in_place = GeneralizeInGuest(first=(vendor.RESTORE_ROOT_SSH_IN_GUEST,),
                                     last=(vendor.TRIM_IN_GUEST,))  # fmt: skip
        machine_steps = [boot, Provision(), Verify(), in_place, Shutdown()]
        as_is: list[Step] = [VendorDisk(), *machine_steps, ImageAsIs(), LeakCheck()]
        return [*as_is, *_checked(measure, snapshot), Attest(), Publish()]
    if backend.starts_from == "debian":
        # A child starts from its parent image's tree, a build on a vendor's cloud image from
        # that image's, the rest from a Debian one.
        tree: Step = DebianBase()
        if spec.cloud_image:
            tree = VendorTree()
        elif spec.recipe.base.image:
            tree = ParentTree()
        start: list[Step] = [tree, Disk()]
    else:
        start = [CloudBaseImage()]
    if backend.hands_back == "disk":
        # The disk is captured and generalized off the machine, after it stopped.
        machine: list[Step] = [boot, Provision(), Verify(), Shutdown()]
        made: list[Step] = [Capture(), LeakCheck(), Image()]
    else:
        # A cloud images the disk as it is: generalized on the machine, before it stops.
        machine = [boot, Provision(), Verify(), GeneralizeInGuest(), Shutdown()]
        made = [MakeCloudImage()]
    return [*start, *machine, *made, *_checked(measure, snapshot), Attest(), Publish()]


def _checked(measure: bool, snapshot: Path | None) -> list[Step]:
    # The scan first: a gate that fails costs no measured boot.
    return [*([Scan(snapshot)] if snapshot else []), *([Measure()] if measure else [])]


def step_keys(spec: Spec, backend: Backend | None = None) -> dict[str, str | None]:
    """The content keys of `spec`'s steps that the spec alone decides, as a build computes
    them before anything runs."""
    locked, lock_file = load_lock(spec)
    backend = backend or open_backend(spec.recipe.backend, "tcg", lambda _line: None)
    ctx = _context(spec, Options(), "tcg", backend, Path("/nonexistent"), Reporter(), locked,
                   lock_file, None, resolve_parent(spec))  # fmt: skip
    return runner.static_keys(
        steps(spec, backend), ctx, BuildState(label=BuildLabel.new(spec.name))
    )


def _context(
    spec: Spec,
    opts: Options,
    accel: Accel,
    backend: Backend,
    work: Path,
    reporter: Reporter,
    locked: lock.Lock | None,
    lock_file: Path,
    sign_key: ec.EllipticCurvePrivateKey | None,
    parent: Parent | None,
    secret_values: dict[str, str] | None = None,
) -> Context:
    return Context(
        spec=spec,
        opts=opts,
        accel=accel,
        backend=backend,
        work=work,
        reporter=reporter,
        locked=locked,
        lock_file=lock_file,
        source_date_epoch=source_date_epoch(spec, locked, parent),
        sign_key=sign_key,
        started=dt.datetime.now(dt.UTC),
        parent=parent,
        secrets=secret_values or {},
    )


def source_date_epoch(spec: Spec, locked: lock.Lock | None, parent: Parent | None) -> int:
    """The time every file in the image is clamped to: the lock's, else the parent's (a
    child of a parent is made from its files), else the suite's."""
    if locked:
        return locked.source_date_epoch
    if parent and parent.record.source_date_epoch:
        return parent.record.source_date_epoch
    return debian.default_source_date_epoch(spec.recipe.base)


def load_lock(spec: Spec) -> tuple[lock.Lock | None, Path]:
    """The recipe's lock, if it has one, checked against the recipe's packages."""
    path = lock.path_for(spec.source)
    if not path.exists():
        return None, path
    locked = lock.load(path, recipe=spec.source)
    base = spec.recipe.base
    # A child's lock pins its own packages (and a tagged parent's digest), not a Debian set.
    wanted = tuple(sorted(base.packages)) if base.image is not None else debian.wanted(base)
    lock.check_matches(locked, path, base, wanted)
    return locked, path


def build(spec: Spec, opts: Options, reporter: Reporter, backend: Backend | None = None) -> Result:
    """Build `spec`; `backend` replaces the one the recipe names (the unit tests' fake)."""
    # Bad input is found before anything starts: the accelerator, the key, the lock, out/.
    accel = choose(getattr(spec.recipe.backend, "accel", "auto") if opts.accel == "auto"
                   else opts.accel)  # fmt: skip
    sign_key = signing.load_private_key(opts.sign_key) if opts.sign_key else None
    if opts.boot_runs is not None and not 1 <= opts.boot_runs <= MAX_BOOT_RUNS:
        raise InputError(f"--boot-runs {opts.boot_runs}: give 1 to {MAX_BOOT_RUNS} boots.")
    locked, lock_file = load_lock(spec)
    secret_values = secrets.resolve(spec)
    vuln_db = scan.snapshot(spec, opts.vuln_db)  # one that is not there is bad input, found now
    reporter.mask(secret_values.values())
    artifact.check_out_dir(opts.out)
    tag_pin = locked.parent if locked else None
    parent = resolve_parent(spec, opts.cache, reporter.info, opts.parents or opts.out, tag_pin,
                            opts.carried_parent)  # fmt: skip
    backend = backend or open_backend(spec.recipe.backend, accel, reporter.info)
    if opts.on_error != "abort" and backend.kind == "ec2":
        raise InputError(
            f"--on-error {opts.on_error}: a failed EC2 build machine is not kept (it costs "
            "while it runs); run the build on libvirt to look into a failure."
        )
    with workdir(opts.work_root) as work:
        reporter.open_log(work / "build.log")
        try:
            ctx = _context(spec, opts, accel, backend, work, reporter, locked, lock_file,
                           sign_key, parent, secret_values)  # fmt: skip
            reporter.info(f"baking {spec.name} from {spec.source} ({backend.kind}, accel {accel})")
            if locked:
                reporter.info(f"packages locked by {display_path(lock_file)} ({locked.digest})")
            state = BuildState(label=BuildLabel.new(spec.name))
            if parent:
                pin = parent.pin
                reporter.info(f"on the parent image {pin.name} {pin.digest}, verified")
            runner.run(steps(spec, backend, opts.measure, vuln_db, opts.save_machine), ctx, state)
        finally:
            reporter.close()
    made = need(state.made, "the image")
    return Result(made.result, need(state.artifact, "the published artifact"))
