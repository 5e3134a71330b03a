"""`baker prune --ec2` and the EC2 part of `baker revoke` (baker.ami.lifecycle) against a moto
server over HTTP: AMIs registered and tagged the way publish does, decided by the retention
rules, deregistered with their snapshots, and deprecated when revoked.

moto 5.2 has no EnableImageDeprecation, so this module runs its own moto server (moto_launch.py's,
plus that one action as AWS documents it) by running this file as a script. Each scenario lives
in its own region: prune takes every baker AMI of the region into account."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.ec2_endpoint import ACCESS_KEY, SECRET_KEY, MotoServer, client, free_port
from support.recording_proxy import Proxy

from baker import artifact
from baker.ami import lifecycle
from baker.ami.publish import (
    TAG_DIGEST,
    TAG_PARENTS,
    TAG_RAW,
    TAG_RECIPE,
    Artifact,
    parent_tags,
    publish,
)
from baker.edge.aws import Aws, snapshots_of
from baker.errors import BuildError
from baker.evidence import signing
from baker.lifecycle.retention import Decision, Policy

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

DRY, KEEP, TAGS, PARENT, AGE, FAIL, REVOKE, PUBLISH = (
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "eu-central-1",
    "us-west-2",
    "us-east-2",
    "ca-central-1",
)


# --- the server ----------------------------------------------------------------------------------


def _enable_image_deprecation(self: Any) -> Any:
    """EnableImageDeprecation as AWS documents it: seconds are rounded to the nearest minute,
    a time in the past is refused, and DescribeImages then shows DeprecationTime."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.exceptions import InvalidParameterValueError

    image = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    at = self._get_param("DeprecateAt")
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    at = (at.astimezone(UTC) + timedelta(seconds=30)).replace(second=0, microsecond=0)
    if at < utcnow().replace(tzinfo=UTC):
        raise InvalidParameterValueError(f"DeprecateAt {at:%Y-%m-%dT%H:%M:%SZ} (in the past)")
    image.deprecation_time = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


class DeprecatingMoto(MotoServer):
    """MotoServer, started from this file (below) instead of moto_launch.py."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        amis = workdir / "amis.json"
        amis.write_text("[]")  # no public AMIs: none is needed here
        self.log = (workdir / "moto.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "MOTO_AMIS_PATH": str(amis)},
        )
        self._wait_ready()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeprecatingMoto]:
    s = DeprecatingMoto(tmp_path_factory.mktemp("moto-lifecycle"))
    yield s
    s.stop()


@pytest.fixture
def env(server: DeprecatingMoto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """What a user sets to point AWS tools at another endpoint (as ec2_endpoint.aws_env)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    return server.url


# --- AMIs as publish leaves them -----------------------------------------------------------------


@dataclass(frozen=True)
class Ami:
    id: str
    digest: str
    snapshots: tuple[str, ...]


@dataclass
class Fleet:
    url: str
    amis: dict[str, list[Ami]] = field(default_factory=dict)  # "region/name" -> oldest first

    def ec2(self, region: str) -> EC2Client:
        return client("ec2", region, self.url)

    def register(
        self,
        region: str,
        name: str,
        extra: dict[str, str] | None = None,
        ami_name: str = "",
        digest: str = "",
    ) -> Ami:
        """An AMI tagged as publish tags one (plus `extra`), registered from a snapshot of its
        own as publish registers it (moto puts a snapshot of its own behind every AMI)."""
        ec2 = self.ec2(region)
        key = f"{region}/{name}"
        gen = len(self.amis.setdefault(key, []))
        digest = digest or "sha256:" + hashlib.sha256(f"{key}/{gen}".encode()).hexdigest()
        volume = ec2.create_volume(Size=1, AvailabilityZone=f"{region}a")["VolumeId"]
        snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
        tagged_name = f"{name}-{digest.removeprefix('sha256:')[:16]}"
        values = {
            "Name": tagged_name,
            TAG_RECIPE: name,
            TAG_DIGEST: digest,
            TAG_RAW: "sha256:" + "0" * 64,
            **(extra or {}),
        }
        image_id = ec2.register_image(
            Name=ami_name or tagged_name,
            Architecture="x86_64",
            VirtualizationType="hvm",
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}],
        )["ImageId"]
        ec2.create_tags(
            Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in values.items()]
        )
        image = ec2.describe_images(ImageIds=[image_id])["Images"]
        ami = Ami(image_id, digest, tuple(sorted(snapshots_of(image))))
        self.amis[key].append(ami)
        return ami

    def exists(self, region: str, ami: Ami) -> tuple[bool, bool]:
        """Whether the AMI, and each of its snapshots, is still there."""
        ec2 = self.ec2(region)
        images = ec2.describe_images(Owners=["self"])["Images"]
        snaps = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
        return (
            any(i["ImageId"] == ami.id for i in images),
            all(s in snaps for s in ami.snapshots),
        )


def _next_second() -> None:
    # CreationDate is in whole seconds: each generation a second after the one before.
    time.sleep(1.02 - time.time() % 1)


@pytest.fixture(scope="module")
def fleet(server: DeprecatingMoto) -> Fleet:
    """Every scenario's AMIs, made generation by generation (one sleep for them all)."""
    f = Fleet(server.url)
    for gen in range(4):
        if gen:
            _next_second()
        for region, name in ((DRY, "dry"), (KEEP, "app"), (AGE, "aged"), (FAIL, "flaky")):
            if gen < 3:
                f.register(region, name)
        if gen < 2:
            f.register(KEEP, "db")
        # web 0 is tagged channel=release, web 1 registered as "web-lts-1" (not its Name tag)
        extra = {"channel": "release"} if gen == 0 else {}
        f.register(TAGS, "web", extra, ami_name="web-lts-1" if gen == 1 else "")
        if gen < 3:
            f.register(PARENT, "base")
        if gen == 2:
            grandparents = ("sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64)
            named = parent_tags((*grandparents, f.amis[f"{PARENT}/base"][1].digest))
            f.register(PARENT, "child", named)
    # The same image registered twice (an AMI that publish did not find in time, say).
    twin = f.register(REVOKE, "revoked")
    f.register(REVOKE, "revoked", digest=twin.digest)
    f.register(REVOKE, "other")
    f.register(REVOKE, "late")
    return f


def by_key(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.candidate.key: d for d in decisions}


# --- prune -------------------------------------------------------------------------------------


def test_a_dry_run_decides_and_removes_nothing(env: str, fleet: Fleet) -> None:
    amis = fleet.amis[f"{DRY}/dry"]
    logs: list[str] = []
    decisions = lifecycle.prune(
        lifecycle.client(DRY), Policy(keep=1), datetime.now(UTC), False, logs.append
    )
    assert [(d.candidate.key, d.keep) for d in decisions] == [
        (amis[2].id, True),
        (amis[1].id, False),
        (amis[0].id, False),
    ]
    assert decisions[0].why == "one of the newest 1 of dry"
    assert decisions[1].candidate.image == amis[1].digest
    assert f"Name=dry-{amis[1].digest[7:23]}" in decisions[1].candidate.tags
    assert f"dry-{amis[1].digest[7:23]}" in decisions[1].candidate.tags  # the AMI name
    assert logs == []
    assert all(fleet.exists(DRY, a) == (True, True) for a in amis)


def test_keep_one_deregisters_the_older_and_deletes_their_snapshots(env: str, fleet: Fleet) -> None:
    app, db = fleet.amis[f"{KEEP}/app"], fleet.amis[f"{KEEP}/db"]
    logs: list[str] = []
    decisions = lifecycle.prune(
        lifecycle.client(KEEP), Policy(keep=1), datetime.now(UTC), True, logs.append
    )
    assert {d.candidate.key for d in decisions if d.keep} == {app[2].id, db[1].id}
    for gone in (app[0], app[1], db[0]):
        assert fleet.exists(KEEP, gone) == (False, False)
        (line,) = [line for line in logs if gone.id in line]
        assert line.startswith(f"deregistered {gone.id} (") and gone.snapshots[0] in line
    for kept in (app[2], db[1]):
        assert fleet.exists(KEEP, kept) == (True, True)
    assert len(logs) == 3
    # Again: nothing more to do.
    again = lifecycle.prune(lifecycle.client(KEEP), Policy(keep=1), datetime.now(UTC), True, print)
    assert all(d.keep for d in again) and len(again) == 2


def test_keep_tag_patterns_match_a_tag_or_the_ami_name(env: str, fleet: Fleet) -> None:
    web = fleet.amis[f"{TAGS}/web"]
    policy = Policy(keep=1, keep_tags=("channel=rel*", "web-lts-*"))
    decisions = by_key(
        lifecycle.prune(lifecycle.client(TAGS), policy, datetime.now(UTC), True, print)
    )
    assert decisions[web[0].id].why == "tag channel=release matches --keep-tag"
    # "web-lts-*" matches the AMI name alone, not the tag "Name=…".
    assert decisions[web[1].id].why == "tag web-lts-1 matches --keep-tag"
    assert not decisions[web[2].id].keep
    assert decisions[web[3].id].keep
    assert [fleet.exists(TAGS, a)[0] for a in web] == [True, True, False, True]


def test_an_ancestor_of_a_kept_ami_is_kept(env: str, fleet: Fleet) -> None:
    base, (child,) = fleet.amis[f"{PARENT}/base"], fleet.amis[f"{PARENT}/child"]
    decisions = by_key(
        lifecycle.prune(lifecycle.client(PARENT), Policy(keep=1), datetime.now(UTC), True, print)
    )
    # The child names base[1] in its second baker:parent-digests tag (after three others).
    assert decisions[child.id].candidate.ancestors[3] == base[1].digest
    assert decisions[base[1].id].keep
    assert decisions[base[1].id].why.startswith("the parent of kept child")
    assert decisions[base[2].id].keep and decisions[child.id].keep
    assert not decisions[base[0].id].keep
    assert [fleet.exists(PARENT, a)[0] for a in base] == [False, True, True]


def test_the_age_rule_counts_from_the_creation_date(env: str, fleet: Fleet) -> None:
    aged = fleet.amis[f"{AGE}/aged"]
    ec2 = lifecycle.client(AGE)
    now = datetime.now(UTC)
    policy = Policy(older_than_days=1)
    assert all(d.keep for d in lifecycle.prune(ec2, policy, now, False, print))
    later = lifecycle.prune(ec2, policy, now + timedelta(days=2), False, print)
    assert [d.keep for d in later] == [False, False, False]
    assert later[0].why.startswith("built 2.0 days ago")
    both = lifecycle.prune(ec2, Policy(1, 1), now + timedelta(days=2), False, print)
    assert [d.candidate.key for d in both if d.keep] == [aged[2].id]
    assert all(fleet.exists(AGE, a) == (True, True) for a in aged)


def test_a_failed_removal_is_reported_and_the_rest_go_on(
    env: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = fleet.amis[f"{FAIL}/flaky"]
    proxy = Proxy(env)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    # The endpoint dies as the first snapshot is being deleted: that AMI is deregistered, its
    # snapshot is left, and the next AMI is still tried (and fails).
    proxy.cut_at = lambda call: call.action == "DeleteSnapshot"
    logs: list[str] = []
    try:
        with pytest.raises(BuildError, match=r"could not remove 4 AMI\(s\) or snapshot\(s\)") as e:
            lifecycle.prune(
                lifecycle.client(FAIL), Policy(keep=1), datetime.now(UTC), True, logs.append
            )
    finally:
        proxy.close()
    left = [
        f"snapshot {flaky[1].snapshots[0]}",
        f"snapshots of image {flaky[0].id}",
        f"image {flaky[0].id}",
        f"snapshot {flaky[0].snapshots[0]}",
    ]
    assert [line.split(" (")[0] for line in logs] == [f"NOT removed: {item}" for item in left]
    assert all(f"{item} (could not" in str(e.value) for item in left)
    assert "cannot reach the AWS API" in str(e.value)
    assert fleet.exists(FAIL, flaky[1]) == (False, True)
    assert fleet.exists(FAIL, flaky[0]) == (True, True)


# --- revoke ------------------------------------------------------------------------------------


def test_deprecate_sets_the_deprecation_time_and_tags_the_reason(env: str, fleet: Fleet) -> None:
    revoked, (other,) = fleet.amis[f"{REVOKE}/revoked"], fleet.amis[f"{REVOKE}/other"]
    ec2 = lifecycle.client(REVOKE)
    now = datetime.now(UTC)
    logs: list[str] = []
    reason = "CVE-2099-0001 in  openssl:\n" + "x" * 300
    ids = lifecycle.deprecate(ec2, revoked[0].digest, reason, now, logs.append)
    # Published twice under one digest (two AMIs): both go.
    assert ids == sorted(a.id for a in revoked) and len(ids) == 2
    at = lifecycle.deprecation_time(now).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert timedelta(seconds=30) <= lifecycle.deprecation_time(now) - now < timedelta(seconds=90)
    for image in fleet.ec2(REVOKE).describe_images(ImageIds=ids)["Images"]:
        assert image.get("DeprecationTime") == at
        values = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        assert len(values[lifecycle.TAG_REVOKED]) == 256
        assert values[lifecycle.TAG_REVOKED].startswith("CVE-2099-0001 in openssl: xxx")
        assert values[lifecycle.TAG_REVOKED].endswith("x…")
        assert values[lifecycle.TAG_REVOKED_AT] == now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(logs) == len(ids) and all(line.startswith("deprecated ami-") for line in logs)
    (untouched,) = fleet.ec2(REVOKE).describe_images(ImageIds=[other.id])["Images"]
    assert "DeprecationTime" not in untouched
    # Revoked again later: the deprecation stays as early as it was; the tags say the latest.
    logs.clear()
    again = lifecycle.deprecate(
        ec2, revoked[0].digest, "again", now + timedelta(hours=1), logs.append
    )
    assert again == ids and all("deprecated already" in line for line in logs)
    for image in fleet.ec2(REVOKE).describe_images(ImageIds=ids)["Images"]:
        assert image.get("DeprecationTime") == at
        assert {"Key": lifecycle.TAG_REVOKED, "Value": "again"} in image.get("Tags", [])


def test_deprecate_of_an_image_not_published_here_finds_none(env: str, fleet: Fleet) -> None:
    ec2 = lifecycle.client(REVOKE)
    assert lifecycle.deprecate(ec2, "sha256:" + "9" * 64, "bad", datetime.now(UTC), print) == []


def test_a_refused_deprecation_is_reported_and_the_ami_still_tagged(env: str, fleet: Fleet) -> None:
    (late,) = fleet.amis[f"{REVOKE}/late"]
    logs: list[str] = []
    past = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(BuildError, match=r"1 AMI\(s\) of sha256:\w+ could not be deprecated"):
        lifecycle.deprecate(lifecycle.client(REVOKE), late.digest, "late", past, logs.append)
    assert logs[0].startswith(f"NOT revoked: {late.id} (could not deprecate {late.id}: ")
    assert "InvalidParameterValue" in logs[0]
    (image,) = fleet.ec2(REVOKE).describe_images(ImageIds=[late.id])["Images"]
    assert "DeprecationTime" not in image
    assert {"Key": lifecycle.TAG_REVOKED, "Value": "late"} in image.get("Tags", [])


def test_the_deprecation_time_is_a_whole_minute_at_least_30_s_ahead() -> None:
    def at(minute: int, second: int, micro: int = 0) -> datetime:
        return lifecycle.deprecation_time(datetime(2030, 1, 1, 10, minute, second, micro, UTC))

    assert at(58, 0) == datetime(2030, 1, 1, 10, 59, tzinfo=UTC)
    assert at(58, 29, 999_999) == datetime(2030, 1, 1, 10, 59, tzinfo=UTC)
    assert at(58, 30) == datetime(2030, 1, 1, 11, 0, tzinfo=UTC)
    assert at(59, 59, 990_000) == datetime(2030, 1, 1, 11, 1, tzinfo=UTC)


# --- publish's parent tags -----------------------------------------------------------------------


def test_parent_digests_fill_tags_of_at_most_256_characters() -> None:
    digests = tuple(f"sha256:{n:064x}" for n in range(7))
    tagged = parent_tags(digests)
    assert list(tagged) == [TAG_PARENTS, f"{TAG_PARENTS}.2", f"{TAG_PARENTS}.3"]
    assert all(len(v) <= 256 for v in tagged.values())
    assert lifecycle.parents(tagged) == digests
    assert parent_tags(()) == {}


def _child_artifact(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    raw = tmp / "disk.raw"
    raw.write_bytes(os.urandom(64 * 1024))
    art = tmp / "out" / "child"
    art.mkdir(parents=True)
    qcow2 = art / artifact.IMAGE
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2], check=True
    )
    lineage = ("sha256:" + "a" * 64, "sha256:" + "b" * 64)
    parent = artifact.ParentRecord(
        name="base",
        digest=lineage[0],
        provenance_digest="sha256:" + "c" * 64,
        source="oci://registry.example/base@" + lineage[0],
        signer="f" * 16,
        ancestors=[artifact.Ancestor(name="debian", digest=lineage[1])],
    )
    image = artifact.ImageRecord(
        file=artifact.IMAGE,
        digest=f"sha256:{hashlib.sha256(qcow2.read_bytes()).hexdigest()}",
        raw_digest=f"sha256:{hashlib.sha256(raw.read_bytes()).hexdigest()}",
    )
    recipe = artifact.RecipeRef(name="child", file="images/child.yaml", digest="sha256:" + "e" * 64)
    record = artifact.BuildRecord(baker_version="0-test", recipe=recipe, image=image, parent=parent)
    (art / artifact.BUILD).write_bytes(record.dump())
    return art, lineage


def test_publish_tags_a_child_with_its_parents_digests(env: str, tmp_path: Path) -> None:
    art, lineage = _child_artifact(tmp_path)
    assert Artifact.load(art).tags("sha256:raw")[TAG_PARENTS] == " ".join(lineage)
    published = publish(art, PUBLISH, aws=Aws(PUBLISH), work_root=tmp_path)
    (image,) = client("ec2", PUBLISH, env).describe_images(ImageIds=[published.images[0].image_id])[
        "Images"
    ]
    values = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert values[TAG_PARENTS] == " ".join(lineage)
    (decision,) = lifecycle.prune(
        lifecycle.client(PUBLISH), Policy(keep=1), datetime.now(UTC), False, print
    )
    assert decision.candidate.ancestors == lineage and decision.candidate.name == "child"
    # The command line: revoke deprecates the AMI published of the artifact, prune lists it.
    key, _ = signing.keygen(tmp_path / "keys")
    baker = str(Path(sys.executable).parent / "baker")
    argv = [baker, "revoke", str(art), "--reason", "bad base", "--sign-key", str(key)]
    revoked = subprocess.run([*argv, "--ec2", PUBLISH], capture_output=True, text=True)
    assert revoked.returncode == 0, revoked.stderr
    ami = published.images[0].image_id
    assert revoked.stdout.splitlines()[-1] == f"deprecated {ami} in {PUBLISH}"
    (image,) = client("ec2", PUBLISH, env).describe_images(ImageIds=[ami])["Images"]
    assert "DeprecationTime" in image
    assert {"Key": lifecycle.TAG_REVOKED, "Value": "bad base"} in image["Tags"]
    pruned = subprocess.run([baker, "prune", "--ec2", PUBLISH, "--keep", "1"],
                            capture_output=True, text=True)  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert f"keep   {ami} child" in pruned.stdout
    assert pruned.stdout.splitlines()[-1].startswith(f"dry run: 0 of 1 images in AMIs in {PUBLISH}")


if __name__ == "__main__":
    # The server DeprecatingMoto starts: moto_launch.py's, with EnableImageDeprecation.
    import support.moto_launch  # noqa: F401  (its EBS patches, on import)
    from moto.ec2.responses.amis import AmisResponse
    from moto.server import main

    AmisResponse.enable_image_deprecation = _enable_image_deprecation  # type: ignore[attr-defined]
    main(sys.argv[1:])
