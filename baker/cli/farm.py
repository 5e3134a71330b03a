"""The farm's commands: `baker worker` (a build host) and `baker submit` (send builds to it)."""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from baker.build.options import Options
from baker.cli.shared import (
    Interrupted,
    JsonOpt,
    VarOpt,
    app,
    command,
    err,
    reporter,
    with_options,
)
from baker.errors import BakerError, BuildError, InputError

if TYPE_CHECKING:
    from collections.abc import Callable

    from baker.leftovers import Leftover
    from baker.recipe.spec import Spec

farm_app = typer.Typer(no_args_is_help=True, help="The build farm as it stands: status.")
app.add_typer(farm_app, name="farm")

BrokerOpt = Annotated[
    str, typer.Option("--broker", help="The Redis broker: redis://host:port/db.", metavar="URL")
]


def _check_broker(broker: str) -> None:
    if not broker.startswith(("redis://", "rediss://")):
        raise InputError(f"--broker {broker}: give a redis:// URL (the farm's broker is Redis).")


@command()
@with_options("sign_key")
def worker(
    broker: BrokerOpt,
    queues: Annotated[
        str | None,
        typer.Option(
            help="Queues to take (default: what this host can build; baker.ec2 too with AWS "
            "credentials in the environment or AWS files).",
            metavar="Q,…",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Builds at once (one a slot).", metavar="N")] = 1,
    artifacts: Annotated[
        Path | None, typer.Option(help="Shared directory to store artifacts in.", metavar="DIR")
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            help="Push artifacts under host[:port]/prefix instead.", metavar="HOST/PREFIX"
        ),
    ] = None,
    history: Annotated[
        str | None,
        typer.Option(help="Record builds in this history (postgresql://…).", metavar="DB"),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The worker's name (default baker-HOST-PID).", metavar="NAME")
    ] = None,
    *,
    options: Options,
) -> None:
    """Run a build worker of the farm. It takes jobs from the broker's queues this host can
    serve, builds each with `baker build`, stores the artifact and only then acknowledges
    the job; first it removes what a killed predecessor left (a machine kept with --on-error
    keep stays, for `baker clean`)."""
    _check_broker(broker)
    if concurrency < 1:
        raise InputError(f"--concurrency {concurrency}: expected 1 or more.")
    if artifacts is None and registry is None:
        raise InputError(
            "give --artifacts DIR or --registry HOST/PREFIX: where finished images go."
        )
    if artifacts is not None and not artifacts.is_dir():
        raise InputError(f"--artifacts {artifacts}: no such directory.")
    from baker.backends.accel import choose
    from baker.backends.libvirt import stale_domains
    from baker.farm.app import make_app
    from baker.farm.queues import for_host
    from baker.leftovers import stale_work_dirs, work_root

    rep = reporter()
    try:
        domains = stale_domains("qemu:///system")
    except BakerError as e:  # a host without libvirt (an EC2 builder) has no domains to leave
        rep.info(f"no libvirt domains looked at: {e}")
        domains = []
    clear_leftovers([*domains, *stale_work_dirs(work_root())], rep.info)
    for key, value in (
        ("BAKER_FARM_ARTIFACTS", artifacts),
        ("BAKER_FARM_REGISTRY", registry),
        ("BAKER_FARM_HISTORY", history),
        ("BAKER_SIGN_KEY", options.sign_key),
    ):
        if value is not None:
            os.environ[key] = str(value)
    if queues:
        served = queues.split(",")
    else:
        from baker.edge.aws import has_credentials

        # A host with AWS credentials builds EC2 recipes too (the machine runs in the cloud).
        served = for_host(choose("auto"), ec2=has_credentials())
    rep.info(f"serving {', '.join(served)}")
    app = make_app(broker)
    app.worker_main(
        [
            "worker",
            "-Q",
            ",".join(served),
            "-c",
            str(concurrency),
            "--prefetch-multiplier=1",
            "-n",
            name or f"baker-{socket.gethostname()}-{os.getpid()}",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
            "-P",
            "prefork",
        ]
    )


@command()
def submit(
    recipe_files: Annotated[list[Path], typer.Argument(help="The recipes.", metavar="RECIPE")],
    broker: BrokerOpt,
    var: VarOpt = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for each build; exit 1 if any failed.")
    ] = False,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Build every step again on the worker.")
    ] = False,
    boot_runs: Annotated[
        int | None,
        typer.Option(
            "--boot-runs",
            min=1,
            max=20,
            metavar="N",
            help="Measured boots under each image's main firmware, instead of its recipe's.",
        ),
    ] = None,
    timeout: Annotated[
        str,
        typer.Option(
            help="With --wait: how long to wait in all (90s, 10m, 6h); then exit 1 with the "
            "jobs' states (they stay queued).",
            metavar="DURATION",
        ),
    ] = "6h",
    out: Annotated[
        Path | None,
        typer.Option(
            help="With --wait: copy each finished artifact from the shared directory to OUT/NAME."
        ),
    ] = None,
    parents: Annotated[
        Path | None,
        typer.Option(
            help="Where a `recipe:FILE` parent's artifact is (DIR/NAME; default OUT, else out): "
            "the worker builds on that digest, taken from the farm's store.",
            metavar="DIR",
        ),
    ] = None,
) -> None:
    """Send recipes to the farm as build jobs. Each goes with its lock and every file it
    pins to a queue that can build it; a queue no worker listens on is said at once. Prints
    NAME TASK-ID; with --wait, the worker and step of each job as they change, and NAME DIGEST
    (or NAME failed: why) as each finishes."""
    _check_broker(broker)
    from baker import recipe
    from baker.farm import queues, watch
    from baker.farm.app import make_app

    seconds = watch.duration(timeout)
    variables = recipe.parse_vars(var)
    specs = [recipe.load(f, variables) for f in recipe_files]
    asked = {"no_cache": no_cache, "boot_runs": boot_runs}
    jobs = [_job(s, variables, parents or out or Path("out")) | asked for s in specs]
    app = make_app(broker)
    sent: list[watch.Job] = []
    finished: set[str] = set()  # the ids of the jobs whose result came
    try:
        listening = {q for qs in watch.listeners(app).values() for q in qs}
        for queue in sorted({queues.route(job) for job in jobs} - listening):
            _say(f"no worker listens on queue {queue}; the job waits in the queue")
        for spec, job in zip(specs, jobs, strict=True):
            result = app.send_task("baker.build", args=[job], queue=queues.route(job))
            sent.append(watch.Job(spec.name, result))
            if not wait:
                typer.echo(f"{spec.name} {result.id}")
        if wait:
            failed = _wait(sent, seconds, out, finished)
            if failed:
                raise BuildError(
                    f"{len(failed)} of {len(sent)} builds failed: {', '.join(failed)}."
                )
    except KeyboardInterrupt:
        # Nothing to clean up here: what was queued is the farm's now, and goes on.
        left = [job.name for job in sent if job.result.id not in finished]
        raise Interrupted(
            f"interrupted; {', '.join(left)} still queued or building on the farm "
            "(`baker farm status` shows where)."
            if left
            else "interrupted; nothing was queued."
        ) from None
    finally:
        # Celery's results unsubscribe from the broker when collected: now, not while the
        # interpreter shuts down (where that fails with a traceback).
        sent.clear()
        gc.collect()
        app.close()


def _say(line: str) -> None:
    err.print(f"baker: {line}", markup=False, highlight=False, soft_wrap=True)


def _wait(sent: list[Any], seconds: float, out: Path | None, finished: set[str]) -> list[str]:
    from baker.farm import watch

    failed: list[str] = []

    def done(job: watch.Job) -> None:
        finished.add(job.result.id)
        value = job.result.result
        if job.result.successful():
            if out is not None:
                _fetch(Path(value["stored"]), out / job.name)
            typer.echo(f"{job.name} {value['digest']}")
            _say(f"{job.name} built by {value['worker']}, stored at {value['stored']}")
        else:
            typer.echo(f"{job.name} failed: {value}")
            failed.append(job.name)

    try:
        watch.wait(sent, seconds, done, _say)
    except BakerError:
        raise
    except Exception as e:  # the broker went away, or answered nonsense
        raise BuildError(f"waiting for the farm: {e}") from None
    return failed


@command("status", on=farm_app)
def status(broker: BrokerOpt, as_json: JsonOpt = False) -> None:
    """Show the farm: each worker with the queues it takes and the job it builds (and the
    step it is at), the jobs queued, and the last ones finished with their digest or error."""
    import json

    from baker.farm import status as farm
    from baker.farm.app import make_app

    _check_broker(broker)
    app = make_app(broker)
    try:
        state = farm.gather(app, broker)
    except Exception as e:  # redis's and kombu's own errors: the broker is not there
        # kombu quotes the error of the client it wraps: the sentence is the client's.
        said = str(e).splitlines()[0].strip("'\"").rstrip(".") if str(e) else repr(e)
        raise BuildError(f"--broker {broker}: the broker does not answer: {said}.") from None
    finally:
        app.close()
    if as_json:
        typer.echo(json.dumps(state.as_dict(), indent=2, sort_keys=True))
    else:
        typer.echo("\n".join(farm.render(state)))


def _job(spec: Spec, variables: dict[str, str], parents: Path) -> dict[str, Any]:
    """The job for `spec`. A parent named by its recipe goes as that recipe's name and the
    digest of its artifact in `parents`; a parent directory cannot go (images travel
    through the farm's store, not the broker)."""
    from baker import recipe
    from baker.artifact import read_record
    from baker.farm import payload
    from baker.recipe.spec import is_cloud_url

    if spec.cloud_image is not None and not is_cloud_url(spec.cloud_image):
        raise InputError(
            f"{spec.where('base.image')}: base.image: a cloud image file does not travel with a "
            "farm job; name it by its URL."
        )
    if spec.parent is not None:
        raise InputError(
            f"{spec.where('base.image')}: base.image: a parent directory does not travel with a "
            "farm job; name the parent by its registry reference or by its recipe (recipe:FILE)."
        )
    if spec.parent_recipe is None:
        return payload.make(spec, variables)
    parent = recipe.load(spec.parent_recipe)
    artifact = parents / parent.name
    try:
        digest = read_record(artifact).image.digest
    except BakerError:
        raise InputError(
            f"{spec.where('base.image')}: base.image: no {parent.name} artifact in {parents} to "
            "build on; build it on the farm first (`baker nightly --broker` builds parents "
            "first)."
        ) from None
    return payload.make(spec, variables, parent, digest)


def _fetch(stored: Path, target: Path) -> None:
    """A finished artifact, from the farm's shared directory into `target`, checked first."""
    import shutil

    from baker.evidence import verify

    if not stored.is_dir():
        raise BuildError(
            f"{stored}: not a directory here; --out needs the workers' shared --artifacts "
            "directory."
        )
    if failed := [f for f in verify.verify(stored, None) if f.ok is False]:
        raise BuildError(f"{stored}: does not verify: {failed[0].name}: {failed[0].detail}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.fetch")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(stored, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def clear_leftovers(found: list[Leftover], say: Callable[[str], None]) -> None:
    """What builds that are gone left on this host, removed as a worker starts; a machine
    kept on purpose (--on-error keep) stays, for whoever is looking at it."""
    for item in found:
        if item.kept:
            say(f"left {item.kind} {item.name}: {item.why} (`baker clean` ends it)")
            continue
        item.remove()
        say(f"removed {item.kind} {item.name}: {item.why}")
