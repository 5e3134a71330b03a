"""Commands for an image's later life: revoke, prune, revocations export (baker.lifecycle)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from baker.cli.registry import CaOpt, InsecureOpt, registry_client
from baker.cli.shared import app, command, reporter
from baker.errors import InputError

if TYPE_CHECKING:
    from baker.lifecycle.retention import Decision

revocations_app = typer.Typer(
    no_args_is_help=True, help="Revocation statements: carry them to an air-gapped site."
)
app.add_typer(revocations_app, name="revocations")

Ec2Opt = Annotated[
    str | None,
    typer.Option(
        "--ec2",
        help="The AWS region of AMIs `baker publish` made (the usual credentials).",
        metavar="REGION",
    ),
]


@command()
def revoke(
    target: Annotated[
        str, typer.Argument(help="An artifact directory, or host/repository:tag or …@sha256:….")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why it must not be used.")],
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="The private key the statement is signed with.",
            envvar="BAKER_SIGN_KEY",
            metavar="KEY",
        ),
    ] = None,
    ec2: Ec2Opt = None,
    insecure: InsecureOpt = False,
    ca_bundle: CaOpt = None,
) -> None:
    """Revoke an image, and with it every image built on it. A signed statement goes beside
    the artifact, or to the registry as a referrer of the image; pull, verify and import
    refuse the image and its children. With --ec2, its AMIs are deprecated and tagged."""
    from baker import artifact
    from baker.evidence import revocation, signing

    if sign_key is None:
        raise InputError("--sign-key: a revocation is signed; give the key (or $BAKER_SIGN_KEY).")
    key = signing.load_private_key(sign_key)
    now = datetime.now(UTC)
    local = Path(target)
    if local.is_dir():
        record = artifact.read_record(local)
        if record.image.digest is None:
            raise InputError(f"{local}: its build.json records no image digest.")
        image, name = record.image.digest, record.recipe.name
        envelope = revocation.sign(key, name, image, reason, now)
        artifact.write_atomically(local / revocation.FILE, artifact.dump_json(envelope))
        typer.echo(f"revoked {name} ({image}): {local / revocation.FILE}")
    else:
        image, name = _revoke_in_registry(target, key, reason, now, insecure, ca_bundle)
    if ec2:
        from baker.ami import lifecycle as amis

        ids = amis.deprecate(amis.client(ec2), image, reason, now, reporter().info)
        typer.echo(f"deprecated {', '.join(ids)} in {ec2}" if ids else f"no AMI of it in {ec2}")


def _revoke_in_registry(
    target: str, key: object, reason: str, now: datetime, insecure: bool, ca: Path | None
) -> tuple[str, str]:
    from baker.evidence import revocation
    from baker.registry import oci, pull, revocations
    from baker.registry.client import RegistryError
    from baker.registry.ref import parse

    ref = parse(target, "TARGET")
    client = registry_client(ref, insecure, ca)
    got = client.get_manifest(ref.repository, ref.reference)
    if got is None:
        raise RegistryError(f"{ref}: no such manifest in the registry.")
    notes = pull.baker_manifest(got[0], ref).get("annotations") or {}
    image, name = str(notes.get(oci.BAKER_DIGEST, "")), str(notes.get(oci.TITLE, ""))
    if not image.startswith("sha256:"):
        raise RegistryError(f"{ref}: its manifest names no image digest.")
    envelope = revocation.sign(key, name, image, reason, now)  # type: ignore[arg-type]
    subject = oci.descriptor(oci.MANIFEST, got[2], len(got[0]))
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    revocations.attach(client, ref.repository, subject, image, envelope, stamp)
    typer.echo(f"revoked {ref.repo()}@{got[2]} ({name}, {image})")
    return image, name


@command()
def prune(
    repo: Annotated[
        str | None,
        typer.Argument(help="host/repository whose images to prune (or --ec2 REGION)."),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option("--keep", help="Keep the newest N images of each name.", metavar="N"),
    ] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than", help="Delete only images built more than DAYS ago.", metavar="DAYS"
        ),
    ] = None,
    keep_tag: Annotated[
        list[str] | None,
        typer.Option(
            "--keep-tag",
            help="Never delete an image a tag matching PATTERN names (fnmatch; repeatable).",
            metavar="PATTERN",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Delete; without it, only say what would go.")
    ] = False,
    ec2: Ec2Opt = None,
    insecure: InsecureOpt = False,
    ca_bundle: CaOpt = None,
) -> None:
    """Delete old images, never one a rollback needs. Kept: the newest N of each name, the
    ones younger than DAYS, any a --keep-tag names, and the parents of every kept image. A
    dry run unless --yes."""
    from baker.lifecycle.retention import Policy

    if (repo is None) == (ec2 is None):
        raise InputError("name a repository (host/repository) or --ec2 REGION, not both.")
    policy = Policy(keep, older_than, tuple(keep_tag or ()))
    now, rep = datetime.now(UTC), reporter()
    if ec2:
        from baker.ami import lifecycle as amis

        decisions = amis.prune(amis.client(ec2), policy, now, yes, rep.info)
        _report(decisions, yes, f"AMIs in {ec2}")
        return
    from baker.registry import prune as pruner
    from baker.registry.ref import parse

    ref = parse(f"{repo}", "REPO")
    if "@" in f"{repo}" or ":" in f"{repo}".split("/", 1)[1]:
        raise InputError(f"REPO {repo}: name the repository alone, without a tag or digest.")
    client = registry_client(ref, insecure, ca_bundle)
    from baker.lifecycle.retention import decide

    images = pruner.images(client, ref.repository, rep.info)
    decisions = decide([i.candidate for i in images], policy, now)
    if yes:
        for d in decisions:
            if not d.keep:
                pruner.delete(client, ref.repository, d.candidate.key)
    _report(decisions, yes, ref.repo())


def _report(decisions: list[Decision], yes: bool, where: str) -> None:
    for d in decisions:
        c = d.candidate
        verb = "keep  " if d.keep else ("delete" if yes else "would delete")
        tags = f" [{', '.join(c.tags)}]" if c.tags else ""
        typer.echo(f"{verb} {c.key} {c.name}{tags}: {d.why}")
    gone = sum(not d.keep for d in decisions)
    if yes:
        typer.echo(f"deleted {gone} of {len(decisions)} images in {where}")
    else:
        typer.echo(f"dry run: {gone} of {len(decisions)} images in {where} would be deleted; "
                   "run again with --yes to delete them")  # fmt: skip


@command("export", on=revocations_app)
def export_revocations(
    repo: Annotated[str, typer.Argument(help="host/repository whose revocations to export.")],
    to: Annotated[
        Path, typer.Option("--to", help="The revocations file to write.", metavar="FILE")
    ],
    insecure: InsecureOpt = False,
    ca_bundle: CaOpt = None,
) -> None:
    """Write every revocation statement of a repository to FILE, for `baker import
    --revocations FILE` and `baker verify --revocations FILE` where the registry is out of
    reach. The statements stay signed: the reader checks them with its own key."""
    from baker import artifact
    from baker.evidence import revocation
    from baker.registry import revocations
    from baker.registry.ref import parse

    ref = parse(repo, "REPO")
    if not to.parent.is_dir():
        raise InputError(f"--to {to}: its directory does not exist.")
    client = registry_client(ref, insecure, ca_bundle)
    envelopes = [e for e, _ in revocations.of_repository(client, ref.repository)]
    artifact.write_atomically(to, revocation.dump_file(envelopes))  # type: ignore[arg-type]
    typer.echo(f"{len(envelopes)} revocation statements of {ref.repo()} written to {to}")
