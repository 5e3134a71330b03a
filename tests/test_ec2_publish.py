"""`baker publish --to ec2` against a moto server over HTTP: the EBS direct API upload (what
each block carries), register and copy, tags, reuse of a published digest, and cleanup after
failures injected by real means (zero timeouts, the endpoint dying mid-way)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.ec2_endpoint import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    aws,
    aws_env,
    client,
    dying_proxy,
    moto_server,
    proxy,
    shared_proxy,
)
from support.recording_proxy import Call, Proxy

from baker import artifact
from baker.ami.publish import BLOCK, TAG_DIGEST, Published, Timeouts, publish
from baker.errors import BuildError, InputError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef

__all__ = ["aws_env", "dying_proxy", "moto_server", "proxy", "shared_proxy"]  # fixtures

BAKER = Path(sys.executable).parent / "baker"
COPIES = ("us-east-1", "eu-central-1")
# Blocks 0, 2 and a 4 KiB tail past block 3 hold data; blocks 1 and 3 are zeros.
LAYOUT = [True, False, True, False]
TAIL = 4096


def make_artifact(tmp: Path, *, record_raw: bool = True, boot: str = "bios") -> dict[str, Any]:
    """An artifact directory whose image is unique to the test (so is its digest)."""
    raw = bytearray()
    for filled in LAYOUT:
        raw += os.urandom(BLOCK) if filled else bytes(BLOCK)
    raw += os.urandom(TAIL)
    src = tmp / "disk.raw"
    src.write_bytes(raw)
    art = tmp / "out" / "demo"
    art.mkdir(parents=True)
    qcow2 = art / "image.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", src, qcow2], check=True
    )
    digest = f"sha256:{hashlib.sha256(qcow2.read_bytes()).hexdigest()}"
    raw_digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    image = artifact.ImageRecord(
        file=artifact.IMAGE,
        digest=digest,
        raw_digest=raw_digest if record_raw else None,
        boot=boot,
    )
    recipe = artifact.RecipeRef(name="demo", file="images/demo.yaml", digest="sha256:" + "e" * 64)
    record = artifact.BuildRecord(baker_version="0-test", recipe=recipe, image=image)
    (art / artifact.BUILD).write_bytes(record.dump())
    return {"dir": art, "raw": bytes(raw), "digest": digest, "raw_digest": raw_digest}


def run(art: dict[str, Any], logs: list[str], **kwargs: Any) -> Published:
    return publish(
        art["dir"], REGION, aws=aws(), log=logs.append, work_root=art["dir"].parent, **kwargs
    )


def ec2(region: str = REGION) -> EC2Client:
    return client("ec2", region)


def tagged(region: str, digest: str) -> tuple[list[str], list[str]]:
    """The images and snapshots of this account tagged with `digest` in `region`."""
    flt: list[FilterTypeDef] = [{"Name": f"tag:{TAG_DIGEST}", "Values": [digest]}]
    images = ec2(region).describe_images(Owners=["self"], Filters=flt)["Images"]
    snaps = ec2(region).describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]
    return [i["ImageId"] for i in images], [s["SnapshotId"] for s in snaps]


def actions(calls: list[Call], region: str | None = None) -> list[str]:
    return [c.action for c in calls if region is None or c.region == region]


def read_back(snapshot: str, size: int) -> bytes:
    """The snapshot's content as the EBS direct API serves it, zeros where nothing was put."""
    ebs = client("ebs")
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    data = bytearray(math_ceil(size, BLOCK) * BLOCK)
    for block in listed:
        got = ebs.get_snapshot_block(
            SnapshotId=snapshot, BlockIndex=block["BlockIndex"], BlockToken=block["BlockToken"]
        )["BlockData"].read()
        start = block["BlockIndex"] * BLOCK
        data[start : start + BLOCK] = got
    return bytes(data[:size])


def math_ceil(a: int, b: int) -> int:
    return -(-a // b)


# --- the whole publish -------------------------------------------------------------------------


def test_publish_uploads_registers_copies_and_tags(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    logs: list[str] = []
    result = run(art, logs, copy_to=COPIES)

    assert result.image_digest == art["digest"] and result.raw_digest == art["raw_digest"]
    assert [i.region for i in result.images] == [REGION, *COPIES]
    assert not any(i.reused for i in result.images)

    ebs = [c for c in aws_env.calls if c.service == "ebs"]
    assert actions(ebs) == ["StartSnapshot", *["PutSnapshotBlock"] * 3, "CompleteSnapshot"]
    puts = sorted((c for c in ebs if c.action == "PutSnapshotBlock"), key=lambda c: c.path)
    assert [int(c.path.rsplit("/", 1)[1]) for c in puts] == [0, 2, 4]  # zero blocks skipped
    for put in puts:
        index = int(put.path.rsplit("/", 1)[1])
        expected = art["raw"][index * BLOCK : (index + 1) * BLOCK].ljust(BLOCK, b"\0")
        assert put.body == expected
        assert (
            put.headers["x-amz-checksum"]
            == base64.b64encode(hashlib.sha256(expected).digest()).decode()
        )
        assert put.headers["x-amz-checksum-algorithm"] == "SHA256"
        assert put.headers["x-amz-data-length"] == str(BLOCK)
    complete = ebs[-1]
    assert complete.headers["x-amz-changedblockscount"] == "3"
    start = json.loads(ebs[0].body)
    assert start["VolumeSize"] == 1 and start["Timeout"] == 60
    assert {"Key": TAG_DIGEST, "Value": art["digest"]} in start["Tags"]

    assert actions(aws_env.calls, REGION) == [
        "DescribeImages",  # already published?
        "StartSnapshot",
        *["PutSnapshotBlock"] * 3,
        "CompleteSnapshot",
        "CreateTags",  # the snapshot, now with the raw digest
        "DescribeSnapshots",  # waiter: completed
        "RegisterImage",
        "CreateTags",
        "DescribeImages",  # waiter: available
    ]
    for region in COPIES:
        assert actions(aws_env.calls, region) == [
            "DescribeImages",  # already there?
            "CopyImage",
            "CreateTags",
            "DescribeImages",  # waiter: available
            "DescribeImages",
            "CreateTags",  # the copy's snapshots
        ]
    register = next(c.params for c in aws_env.calls if c.action == "RegisterImage")
    assert register["BootMode"] == "legacy-bios"
    assert register["EnaSupport"] == "true"
    assert register["RootDeviceName"] == "/dev/xvda"
    assert register["Architecture"] == "x86_64"
    assert register["BlockDeviceMapping.1.DeviceName"] == "/dev/xvda"
    snapshot = register["BlockDeviceMapping.1.Ebs.SnapshotId"]
    assert result.images[0].snapshot_ids == (snapshot,)
    assert register["TagSpecification.1.ResourceType"] == "image"
    copy = next(c for c in aws_env.calls if c.action == "CopyImage")
    assert copy.params["SourceImageId"] == result.images[0].image_id
    assert copy.params["SourceRegion"] == REGION

    # The bytes in the snapshot are the raw image, and hash to its digest.
    back = read_back(snapshot, len(art["raw"]))
    assert back == art["raw"]
    assert f"sha256:{hashlib.sha256(back).hexdigest()}" == art["raw_digest"]

    # Everything is tagged with the digests.
    for image in result.images:
        found = ec2(image.region).describe_images(ImageIds=[image.image_id])["Images"][0]
        values = {t["Key"]: t["Value"] for t in found["Tags"]}
        assert values[TAG_DIGEST] == art["digest"]
        assert values["baker:raw-digest"] == art["raw_digest"]
        assert values["baker:recipe"] == "demo"
    snap = ec2().describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]
    assert {t["Key"]: t["Value"] for t in snap["Tags"]}["baker:raw-digest"] == art["raw_digest"]
    assert any("matches build.json" in line for line in logs)


def test_publishing_a_digest_again_reuses_its_amis(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    first = run(art, [], copy_to=COPIES[:1])
    aws_env.clear()
    logs: list[str] = []
    again = run(art, logs, copy_to=COPIES)
    assert [i.image_id for i in again.images[:2]] == [i.image_id for i in first.images]
    assert [i.reused for i in again.images] == [True, True, False]
    made = set(actions(aws_env.calls))
    assert not made & {"StartSnapshot", "PutSnapshotBlock", "RegisterImage"}
    assert actions(aws_env.calls).count("CopyImage") == 1  # only to the new region
    assert again.raw_digest == art["raw_digest"]
    assert sum("already published" in line for line in logs) == 2
    for region in (REGION, COPIES[0]):
        assert len(tagged(region, art["digest"])[0]) == 1


def test_an_ami_tagged_with_other_raw_bytes_is_not_reused(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    first = run(art, [])
    ec2().create_tags(
        Resources=[first.images[0].image_id],
        Tags=[{"Key": "baker:raw-digest", "Value": "sha256:" + "1" * 64}],
    )
    with pytest.raises(BuildError, match="not reusing it"):
        run(art, [])


def test_raw_digest_is_reported_when_the_build_recorded_none(
    aws_env: Proxy, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path, record_raw=False, boot="uefi")
    logs: list[str] = []
    result = run(art, logs)
    assert result.raw_digest == art["raw_digest"]
    assert any(
        f"raw-content digest {art['raw_digest']} (build.json records none" in line for line in logs
    )
    register = next(c.params for c in aws_env.calls if c.action == "RegisterImage")
    assert register["BootMode"] == "uefi"


# --- refusals -----------------------------------------------------------------------------------


def test_a_raw_digest_mismatch_uploads_nothing(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    record = json.loads((art["dir"] / "build.json").read_text())
    record["image"]["raw_digest"] = "sha256:" + "0" * 64
    (art["dir"] / "build.json").write_text(json.dumps(record))
    with pytest.raises(BuildError, match="refusing to publish bytes the build did not make"):
        run(art, [])
    assert "StartSnapshot" not in actions(aws_env.calls)


def test_a_changed_image_is_refused(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    with (art["dir"] / "image.qcow2").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="was changed after it was built"):
        run(art, [])
    assert aws_env.calls == []


def test_not_an_artifact(aws_env: Proxy, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an artifact directory"):
        publish(tmp_path, REGION, aws=aws())
    assert aws_env.calls == []


def test_a_bad_build_record_is_refused(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    record = art["dir"] / "build.json"
    good = json.loads(record.read_text())
    for text, message in (
        ("{not json", r"build\.json: not a baker build record"),
        (json.dumps({**good, "recipe": {"name": "demo"}}), r"\(recipe\.file: field required"),
        (json.dumps({**good, "image": {"boot": "bios"}}), r"\(image\.digest: missing\)"),
        (
            json.dumps({**good, "image": {**good["image"], "boot": "pxe"}}),
            "expected bios, hybrid or uefi",
        ),
    ):
        record.write_text(text)
        with pytest.raises(InputError, match=message):
            run(art, [])
    record.unlink()
    with pytest.raises(InputError, match=r"no build\.json here"):
        run(art, [])
    assert aws_env.calls == []


# --- cleanup after failures ----------------------------------------------------------------------


def test_snapshot_timeout_zero_deletes_the_snapshot(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    with pytest.raises(BuildError, match="to complete: not done"):
        run(art, [], timeouts=Timeouts(snapshot_s=0))
    assert "DeleteSnapshot" in actions(aws_env.calls)
    assert tagged(REGION, art["digest"]) == ([], [])


def test_image_timeout_zero_deregisters_the_half_made_ami(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    logs: list[str] = []
    with pytest.raises(BuildError, match="to become available: not done"):
        run(art, logs, timeouts=Timeouts(image_s=0))
    assert {"DeregisterImage", "DeleteSnapshot"} <= set(actions(aws_env.calls))
    assert tagged(REGION, art["digest"]) == ([], [])
    assert not any("NOT cleaned up" in line for line in logs)
    # And a later publish starts afresh.
    assert not run(art, []).images[0].reused


def test_copy_timeout_zero_removes_only_the_copy(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    with pytest.raises(BuildError, match="in us-east-1 to become available: not done"):
        run(art, [], copy_to=COPIES[:1], timeouts=Timeouts(copy_s=0))
    assert tagged(COPIES[0], art["digest"]) == ([], [])
    primary, _ = tagged(REGION, art["digest"])
    assert len(primary) == 1
    aws_env.clear()
    again = run(art, [], copy_to=COPIES[:1])
    assert [i.reused for i in again.images] == [True, False]
    assert again.images[0].image_id == primary[0]


def test_endpoint_dying_during_upload_reports_the_snapshot(
    dying_proxy: Proxy, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path)
    puts = []

    def second_put(call: Call) -> bool:
        if call.action == "PutSnapshotBlock":
            puts.append(call)
        return len(puts) == 2

    dying_proxy.cut_at = second_put
    logs: list[str] = []
    with pytest.raises(BuildError, match="cannot reach the AWS API"):
        publish(art["dir"], REGION, log=logs.append, work_root=tmp_path)
    snapshot = json.loads(dying_proxy.calls[1].body or b"{}").get("SnapshotId") or next(
        c.path.split("/")[2] for c in dying_proxy.calls if c.action == "PutSnapshotBlock"
    )
    left = [line for line in logs if "NOT cleaned up" in line]
    assert len(left) == 1 and f"snapshot {snapshot}" in left[0]
    # It is really there: the endpoint died, not the service.
    direct = client("ec2", endpoint=dying_proxy.upstream.geturl())
    assert direct.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"]


def test_endpoint_dying_after_register_reports_image_and_snapshot(
    dying_proxy: Proxy, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path)
    seen: list[str] = []

    def after_register(call: Call) -> bool:
        seen.append(call.action)
        return "RegisterImage" in seen[:-1]

    dying_proxy.cut_at = after_register
    logs: list[str] = []
    with pytest.raises(BuildError, match="cannot reach the AWS API"):
        publish(art["dir"], REGION, log=logs.append, work_root=tmp_path)
    left = "\n".join(line for line in logs if "NOT cleaned up" in line)
    direct = client("ec2", endpoint=dying_proxy.upstream.geturl())
    # By name: moto ignores register_image's TagSpecifications, and the create_tags that
    # follows it never arrived.
    name = f"demo-{art['digest'].removeprefix('sha256:')[:16]}"
    images = direct.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    snapshots = tagged_direct(direct, art["digest"])[1]
    assert len(images["Images"]) == 1 and len(snapshots) == 1
    image = images["Images"][0]["ImageId"]
    assert f"image {image} (" in left
    assert f"snapshot {snapshots[0]} (" in left


def tagged_direct(c: Any, digest: str) -> tuple[list[str], list[str]]:
    flt: list[FilterTypeDef] = [{"Name": f"tag:{TAG_DIGEST}", "Values": [digest]}]
    images = c.describe_images(Owners=["self"], Filters=flt)["Images"]
    snaps = c.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]
    return [i["ImageId"] for i in images], [s["SnapshotId"] for s in snaps]


# --- the command line ---------------------------------------------------------------------------


def baker(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BAKER), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )


def test_cli_publish_and_its_errors(aws_env: Proxy, tmp_path: Path) -> None:
    art = make_artifact(tmp_path)
    proc = baker("publish", art["dir"], "--to", "ec2", "--region", REGION, "--copy-to", COPIES[0])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [REGION, COPIES[0]]
    assert all(line.split()[1].startswith("ami-") for line in lines)
    again = baker("publish", art["dir"], "--region", REGION, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["images"][REGION]["reused"] is True
    for p in (proc, again):
        assert ACCESS_KEY not in p.stdout + p.stderr and SECRET_KEY not in p.stdout + p.stderr

    for args, code, message in (
        (("--to", "gcs", "--region", REGION), 2, "--to gcs: the only publish target is ec2."),
        (("--region", REGION, "--copy-to", "x"), 2, "--copy-to 'x': expected an AWS region"),
    ):
        bad = baker("publish", art["dir"], *args)
        assert bad.returncode == code
        assert "Traceback" not in bad.stderr
        assert bad.stderr.strip().splitlines()[-1].startswith(f"baker: error: {message}")


def test_cli_endpoint_down_is_one_error_line(
    aws_env: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    art = make_artifact(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    proc = baker("publish", art["dir"], "--region", REGION)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("baker: error: could not look for an AMI of sha256:")
    assert "cannot reach the AWS API at http://127.0.0.1:9" in last
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    nocreds = baker("publish", art["dir"], "--region", REGION)
    assert nocreds.returncode == 2
    assert "no AWS credentials found" in nocreds.stderr.strip().splitlines()[-1]
