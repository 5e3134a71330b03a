"""The scan step: the image's packages against a pinned vulnerability snapshot (the recipe's
scan.db, or --vuln-db), for a build that names one (baker.security). The report goes beside
the SBOMs (vulns.cdx.json), the snapshot's digest into build.json and the provenance; the
recipe's gate fails the build before the image is measured or published.

Not cached and not keyed: the report is a function of the image and the snapshot (it names
both digests), and the gate of today's date (an ignore expires), so it runs every build."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from pathlib import Path

from baker.artifact import VULNS
from baker.build.options import display_path
from baker.build.runner import Step
from baker.build.state import BuildState, Context, need
from baker.errors import BuildError, InputError
from baker.recipe.render import project_file
from baker.recipe.spec import UBUNTU_SUITES, Spec
from baker.security import vulns


def snapshot(spec: Spec, given: Path | None) -> Path | None:
    """The snapshot file: --vuln-db, else the recipe's scan.db (inside its project). An
    Ubuntu image is refused here, before the build starts: the snapshots are Debian's."""
    suite = spec.recipe.base.suite
    ubuntu = f"{suite} is Ubuntu's, and {vulns.NOT_UBUNTU}."
    if given is not None:
        if not given.is_file():
            raise InputError(f"--vuln-db {given}: no such file.")
        if suite in UBUNTU_SUITES:
            raise InputError(f"--vuln-db {given}: {ubuntu}")
        return given
    scan = spec.recipe.scan
    if scan is None or scan.db is None:
        return None
    where = f"{spec.where('scan.db')}: scan.db"
    if suite in UBUNTU_SUITES:
        raise InputError(f"{where}: {ubuntu}")
    return project_file(spec.source.parent, scan.db, spec.root, where)


class Scan(Step):
    name = "scan"

    def __init__(self, snapshot: Path) -> None:
        self.snapshot = snapshot  # found, and checked there, before the build started

    def describe(self, ctx: Context) -> str:
        return "the packages against the pinned vulnerability snapshot"

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        path = self.snapshot
        made = need(state.made, "the image")
        release = ctx.spec.recipe.base.suite
        scanned = vulns.scan(path, release, state.packages, ctx.spec.name, made.digest)
        findings, report, db = scanned.findings, scanned.report, scanned.db
        (ctx.work / VULNS).write_bytes(report)
        state.files[VULNS] = ctx.work / VULNS
        gate = ctx.spec.recipe.scan
        ignores = [vulns.Ignore(i.id, i.reason, i.until) for i in gate.ignore] if gate else []
        verdict = vulns.gate(findings, gate.fail_on if gate else None,
                             gate.fixable_only if gate else True, ignores,
                             dt.datetime.now(dt.UTC).date())  # fmt: skip
        for lapsed in verdict.expired:
            ctx.reporter.info(f"scan.ignore: {lapsed.id} expired on {lapsed.until}; it counts")
        tally = vulns.counts(findings)
        fixable = sum(c["fixable"] for c in tally.values())
        ctx.reporter.info(
            f"{len(findings)} findings in {len(state.packages)} packages ({fixable} with a fix "
            f"in the suite) against {display_path(path)} ({db.kind}, {db.digest[:19]}…)"
        )
        state.scan = {
            "db": {"file": display_path(path), "digest": db.digest, "kind": db.kind},
            # Named in the signed provenance too (a byproduct), so the report is signed.
            "report": {"file": VULNS, "digest": f"sha256:{hashlib.sha256(report).hexdigest()}"},
            "release": release,
            "counts": tally,
            "fail_on": verdict.fail_on,
            "fixable_only": verdict.fixable_only,
            "failing": len(verdict.failing),
            "ignored": [
                {"id": f.id, "reason": i.reason, "until": i.until.isoformat()}
                for f, i in verdict.ignored
            ],
        }
        if (message := verdict.message()) is not None:
            raise BuildError(f"{message}; nothing was published.")
