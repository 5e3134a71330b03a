"""`baker scan` (a published artifact against a vulnerability snapshot, and its image for
leaked secrets) and `baker vulndb fetch` (a current snapshot, where the network allows)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from baker.cli.shared import ArtifactArg, JsonOpt, app, command, err
from baker.errors import InputError

if TYPE_CHECKING:
    from baker.security.vulns import Finding

vulndb_app = typer.Typer(no_args_is_help=True, help="Vulnerability database snapshots.")
app.add_typer(vulndb_app, name="vulndb")

# baker.security.vulndb.DEFAULT_URL, not imported: `baker --help` stays light.
DEFAULT_URL = "https://security-tracker.debian.org/tracker/data/json"
Severity = Literal["critical", "high", "medium", "low"]


@command()
def scan(
    artifact: ArtifactArg,
    vuln_db: Annotated[
        Path | None,
        typer.Option(
            "--vuln-db", help="The snapshot to scan against (tracker JSON or OSV).", metavar="FILE"
        ),
    ] = None,
    secrets: Annotated[
        bool, typer.Option("--secrets", help="Look into the image for leaked secrets too.")
    ] = False,
    fail_on: Annotated[
        Severity | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 on a finding with a fix at or above this.",
            metavar="critical|high|medium|low",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write the CycloneDX vulnerability report here.", metavar="FILE"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Scan a published artifact: its packages (from its SBOM) against a vulnerability
    snapshot, and with --secrets its image for keys, credentials and tokens. Exit 1 on a
    leak, or on a fixable finding at or above --fail-on."""
    from baker.security import published, vulns

    if vuln_db is None and not secrets:
        raise InputError("give --vuln-db FILE to scan the packages, --secrets for the image, "
                         "or both.")  # fmt: skip
    out: dict[str, object] = {}
    failed: list[str] = []
    if vuln_db is not None:
        scanned = published.scan(artifact, vuln_db)
        findings, db = scanned.findings, scanned.db
        if report is not None:
            report.write_bytes(scanned.report)
        out["vulnerabilities"] = {"db": db.digest, "counts": vulns.counts(findings),
                                  "findings": [_row(f) for f in findings]}  # fmt: skip
        verdict = vulns.gate(findings, fail_on, True, [], dt.datetime.now(dt.UTC).date())
        if (message := verdict.message()) is not None:
            failed.append(message)
        if not as_json:
            for f in findings:
                if f.status != "not-affected":
                    typer.echo(_line(f))
            typer.echo(f"{len(findings)} findings against {vuln_db} ({db.kind}, {db.digest})")
    if secrets:
        found = published.leak_check(artifact, None)
        out["leaks"] = [{"path": f.path, "kind": f.kind} for f in found]
        if found:
            from baker.build.steps.leak_check import failure

            failed.append(failure(found, "the image"))
        elif not as_json:
            typer.echo("no leaks in the image")
    if as_json:
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
    for message in failed:
        err.print(f"baker: error: {message}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _row(f: Finding) -> dict[str, object]:
    keys = ("id", "source", "installed", "fixed", "severity", "status", "packages")
    return {k: getattr(f, k) for k in keys}


def _line(f: Finding) -> str:
    d = _row(f)
    fixed = f"fixed in {d['fixed']}" if d["fixed"] else "no fix yet"
    return f"{d['severity']:<8} {d['id']:<18} {d['source']} {d['installed']}: {fixed}"


@command("fetch", on=vulndb_app)
def fetch(
    to: Annotated[Path, typer.Option("--to", help="The snapshot file to write.", metavar="FILE")],
    url: Annotated[
        str, typer.Option("--url", help="Where to download it from.", metavar="URL")
    ] = DEFAULT_URL,
) -> None:
    """Download a current vulnerability snapshot (the Debian Security Tracker's JSON, or an
    OSV file or zip) into FILE, checked as a build would read it; print its digest. Commit it
    and name it in the recipe's scan.db: the same image and snapshot give the same report."""
    from baker.security import vulndb

    if to.is_dir():
        raise InputError(f"--to {to}: a directory; give the snapshot's file name.")
    digest = vulndb.fetch(url, to)
    typer.echo(f"{to} {digest}")
