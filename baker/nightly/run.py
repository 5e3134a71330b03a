"""`baker nightly`: rebuild what changed, say what changed and why, remember every night.

For each recipe the night decides what determines its image: a committed lock pins it (the
team pins by hand); an unlocked recipe installs what the mirror serves, so the last good
image's packages are looked up in the mirror's indices (baker.nightly.mirror) and, when any
of them moved, the build runs without the step cache. Every recipe is then built as its own
`baker build` (N at a time, baker.build.parallel); with nothing changed every step comes from
the step cache and the digest is last night's: "unchanged", in seconds. A changed image is
compared with the last good one (the drift report) and held to the recipe's regression
gates; it replaces OUT/NAME only if it passed.

Recipes built on another recipe of the night (`base.image: recipe:FILE`) are built after it,
wave by wave (parents first; each wave N at a time), on the parent as it stands in OUT after
tonight: a changed parent rebuilds its descendants, an unchanged one leaves them cached, and
a failed one leaves them unbuilt (said in the report). A cycle is refused before anything
starts.

After the night, a recipe's `nightly.retention` decides which of its earlier images the
nightly keeps, and the revocations found beside OUT/NAME before it started are recorded
(baker.nightly.lifecycle).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from baker import artifact, recipe
from baker.build import parallel
from baker.build.options import Options, argv
from baker.errors import BakerError, InputError
from baker.evidence import verify, vuln_report
from baker.hashing import sha256_file
from baker.nightly import drift, gates, lifecycle, mirror
from baker.nightly.history import History
from baker.recipe import lock
from baker.recipe.spec import Spec


@dataclass(eq=False)  # one night's build of one recipe: the same only as itself
class Night:
    recipe: Path
    name: str
    spec: Spec | None  # None: the recipe is bad input, and fails tonight without a build
    mirror_state: str | None = None
    lock_digest: str | None = None
    no_cache: bool = False
    moved: tuple[mirror.Moved, ...] = ()
    status: str = "failed"  # built, unchanged, failed
    digest: str | None = None
    error: str | None = None
    seconds: float = 0.0
    drift: dict[str, Any] | None = None
    row: dict[str, Any] = field(default_factory=dict)
    parent: Night | None = None  # the night's build this one is built on (base.image)


def run(
    recipes: list[Path],
    out: Path,
    history: History,
    build_options: Options,
    jobs: int,
    say: Callable[[str], None],
    broker: str | None = None,
) -> tuple[str, list[Night]]:
    """One night over `recipes`; returns its id (the start, UTC) and each recipe's outcome."""
    night_id = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    indices: dict[str, mirror.Index] = {}
    nights = [_plan(path, history, out, indices) for path in recipes]
    for n in nights:
        if n.moved:
            listed = ", ".join(str(m) for m in n.moved[:5])
            more = f" and {len(n.moved) - 5} more" if len(n.moved) > 5 else ""
            say(
                f"[{n.name}] baker: the mirror moved {len(n.moved)} of its packages ({listed}"
                f"{more}): built without the step cache"
            )
    if clash := parallel.names_unique([(n.recipe, n.name) for n in nights]):
        raise InputError(clash)
    waves = order(nights)
    # Read before a build replaces the directory a revocation lies in.
    revoked = lifecycle.revocations(out, [n.name for n in nights], build_options.sign_key, say)
    out.mkdir(parents=True, exist_ok=True)
    tonight = Path(tempfile.mkdtemp(prefix=".nightly-", dir=out))
    errors: dict[str, str] = {}

    def sink(line: str) -> None:
        say(line)
        name, _, rest = line.partition("] ")
        if rest.startswith("baker: error: "):
            errors[name.lstrip("[")] = rest.removeprefix("baker: error: ")

    try:
        for wave in waves:
            ready = []
            for n in wave:
                if n.parent is not None and n.parent.status == "failed":
                    n.error = f"not built: its parent {n.parent.name} failed tonight"
                elif n.spec is not None:
                    ready.append(n)
            jobs_now = [parallel.Job(n.name, _argv(n, tonight, out, build_options, broker))
                        for n in ready]  # fmt: skip
            done = {j.name: j for j in parallel.run_all(jobs_now, jobs, sink)} if ready else {}
            for n in wave:
                job = done.get(n.name)
                if job is not None:
                    n.seconds = job.seconds
                    if job.code != 0:
                        n.error = errors.get(n.name, f"the build exited {job.code}")
                    else:  # build prints DIGEST, submit NAME DIGEST
                        digest = job.digest.split()[-1]
                        _judge(n, digest, tonight / n.name, out / n.name, history, say)
                n.row = _row(night_id, n, out / n.name if n.status != "failed" else None)
                history.record(n.row)
    finally:
        shutil.rmtree(tonight, ignore_errors=True)
    lifecycle.record_revoked(history, revoked)
    lifecycle.prune(history, lifecycle.policies(n.spec for n in nights), night_id, say)
    return night_id, [n for wave in waves for n in wave]


def order(nights: list[Night]) -> list[list[Night]]:
    """Tonight's builds in waves, each recipe in the wave after its parent's (a parent
    recipe that is not in the night is taken as OUT holds it). A cycle is InputError."""
    by_source = {n.spec.source: n for n in nights if n.spec is not None}
    for n in nights:
        if n.spec is not None and n.spec.parent_recipe is not None:
            n.parent = by_source.get(n.spec.parent_recipe)
    depth: dict[int, int] = {}
    for n in nights:
        chain, at = [n], n.parent
        while at is not None and id(at) not in depth:
            if at in chain:
                loop = [*chain[chain.index(at) :], at]
                raise InputError(
                    "a dependency cycle among the recipes: "
                    + " → ".join(str(c.recipe) for c in loop)
                    + "; a recipe cannot be built on its own descendant."
                )
            chain.append(at)
            at = at.parent
        below = depth[id(at)] + 1 if at is not None else 0
        for c in reversed(chain):
            depth[id(c)] = below
            below += 1
    waves: list[list[Night]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in nights:
        waves[depth[id(n)]].append(n)
    return waves


def _argv(
    n: Night, tonight: Path, out: Path, build_options: Options, broker: str | None
) -> list[str]:
    """The command that builds `n` into `tonight`: here, or on the farm through `broker`
    (the workers' shared artifact directory is where `submit --out` copies it from). Its
    parent, if it has one, is found in `out`, where tonight's judged builds went."""
    options = dataclasses.replace(build_options, out=tonight, parents=out, no_cache=n.no_cache)
    if broker:
        no_cache = ["--no-cache"] if n.no_cache else []
        return [
            sys.executable,
            "-m",
            "baker",
            "submit",
            str(n.recipe),
            f"--broker={broker}",
            "--wait",
            f"--out={tonight}",
            f"--parents={out}",
            *no_cache,
        ]
    return [
        sys.executable,
        "-m",
        "baker",
        "build",
        str(n.recipe),
        *argv(options),
    ]


def _plan(path: Path, history: History, out: Path, indices: dict[str, mirror.Index]) -> Night:
    try:
        spec = recipe.load(path)
    except InputError as e:  # one bad recipe fails itself, not the night
        return Night(path, path.stem, None, error=str(e))
    n = Night(path, spec.name, spec)
    lock_file = lock.path_for(spec.source)
    if lock_file.exists():
        n.lock_digest = f"sha256:{sha256_file(lock_file)}"
        return n
    sbom = out / spec.name / artifact.SBOM_CDX
    if not (history.last_good(spec.name) and sbom.is_file()):
        return n  # a first night: nothing to compare with, the build decides
    tonight = mirror.compare(spec.recipe.base, {
        name: p["version"] for name, p in drift.packages(sbom).items()
    }, indices)  # fmt: skip
    if tonight is not None:
        n.mirror_state, n.moved = tonight.state, tonight.moved
        # The mirror moved what the image holds: tonight's packages, not the cached base.
        n.no_cache = bool(tonight.moved)
    return n


def _judge(
    n: Night,
    digest: str,
    built: Path,
    current: Path,
    history: History,
    say: Callable[[str], None],
) -> None:
    """Tonight's build against the last good one: unchanged, or built and gated."""
    assert n.spec is not None
    n.digest = digest
    last = history.last_good(n.name)
    if last and last.get("digest") == digest and current.is_dir():
        n.status = "unchanged"
        return
    if current.is_dir():
        try:
            n.drift = drift.report(current, built)
        except (BakerError, OSError, ValueError) as e:
            # The image is good; only the comparison could not be made: say so, go on.
            say(f"[{n.name}] baker: no drift report against {current}: {e}")
    broken = gates.check(
        n.spec.recipe.nightly,
        history.good(n.name, n.spec.recipe.nightly.window),
        drift.boot_median(built),
        (built / artifact.IMAGE).stat().st_size,
    )
    if broken:
        n.error = "; ".join(broken)
        return
    if current.exists():
        shutil.rmtree(current)
    built.rename(current)
    n.status = "built"


def _row(night_id: str, n: Night, directory: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "night": night_id,
        "recipe": n.name,
        "status": n.status,
        "digest": n.digest,
        "lock_digest": n.lock_digest,
        "mirror_state": n.mirror_state,
        "duration_s": round(n.seconds, 1),
        "error": n.error,
        "drift": n.drift,
        "parent": n.parent.name if n.parent is not None else None,
    }
    if directory is None or not directory.is_dir():
        return row
    record = artifact.read_record(directory)
    boot = _json(directory / artifact.BOOT)
    each = [r.get("time_to_ssh_s") for r in boot.get("each_run") or [] if isinstance(r, dict)]
    runs = [float(r) for r in each if isinstance(r, int | float)]
    row.update(
        packages=len(drift.packages(directory / artifact.SBOM_CDX)),
        size=(directory / artifact.IMAGE).stat().st_size,
        boot_median_s=boot.get("time_to_ssh_s"),
        boot_min_s=min(runs) if runs else None,
        boot_max_s=max(runs) if runs else None,
        boot=boot.get("firmware") or {},
        tests_passed=record.tests.tests - record.tests.failures - record.tests.errors,
        tests_failed=record.tests.failures + record.tests.errors,
        signer=verify.signer(directory),
        artifact=str(directory.resolve()),
        vulns=_vulns(directory / artifact.VULNS),
        ancestors=lifecycle.ancestors(record),
    )
    return row


def _vulns(report: Path) -> dict[str, Any] | None:
    """What the night's report says is open: counts, and the fixable ids (time to patch)."""
    if not report.is_file():
        return None
    summary = vuln_report.read_report(report.read_bytes())
    return {
        "fixable": sum(by["fixable"] for by in summary.counts.values()),
        "no_fix": sum(by["no-fix"] for by in summary.counts.values()),
        "fixable_ids": list(summary.fixable),
        "db": summary.db_digest,
    }


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold (a console's escape sequences end up
    in an error message), so the report stays readable to every JUnit consumer."""
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "", text)


def junit(night_id: str, nights: list[Night], path: Path) -> None:
    """One test case per recipe: failed with its error, or passed (built or unchanged)."""
    suite = ElementTree.Element(
        "testsuite",
        name=f"baker nightly {night_id}",
        tests=str(len(nights)),
        failures=str(sum(n.status == "failed" for n in nights)),
    )
    for n in nights:
        case = ElementTree.SubElement(
            suite, "testcase", classname="baker.nightly", name=n.name, time=f"{n.seconds:.1f}"
        )
        if n.status == "failed":
            ElementTree.SubElement(case, "failure", message=_xml_text(n.error or "failed"))
        else:
            ElementTree.SubElement(case, "system-out").text = f"{n.status} {n.digest}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
