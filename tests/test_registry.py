"""baker push / promote against a real registry (docker-registry on 127.0.0.1, TLS and
logins), with small artifact directories made here; the e2e tests pull and verify real
builds. skopeo, an independent client, reads what baker wrote."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support import registry_server
from support.registry_server import Registry

from baker import artifact
from baker.edge.ssh import free_port
from baker.errors import BuildError, InputError
from baker.registry import client as client_mod
from baker.registry import containerdisk, oci, promote, push, referrers
from baker.registry.client import connect
from baker.registry.ref import parse

BAKER = Path(sys.executable).parent / "baker"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = registry_server.start(tmp_path_factory.mktemp("reg") / "tls")
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = registry_server.start(tmp_path_factory.mktemp("reg") / "plain", tls=False)
    yield reg
    reg.stop()


@pytest.fixture
def logged_in(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(registry.auth_file))
    monkeypatch.setenv("HOME", str(registry.root))  # no login of the machine's own
    return registry


def make_artifact(
    directory: Path,
    disk: bytes = b"QFI\xfb" + bytes(4096),
    sde: int = 1700000000,
    scanned: bool = False,
) -> Path:
    """A small artifact directory with every file of the layout (the disk is not bootable)."""
    directory.mkdir(parents=True)
    (directory / artifact.IMAGE).write_bytes(disk)
    record = {
        "baker_version": "0.test",
        "source_date_epoch": sde,
        "recipe": {"name": directory.name, "file": "images/x.yaml", "digest": "sha256:" + "1" * 64},
        "image": {"file": artifact.IMAGE},
    }
    (directory / artifact.BUILD).write_text(json.dumps(record))
    for name in (
        artifact.BOOT,
        artifact.SBOM_CDX,
        artifact.SBOM_SPDX,
        artifact.PROVENANCE,
        artifact.DSSE,
    ):
        (directory / name).write_text(json.dumps({"file": name}))
    (directory / artifact.JUNIT).write_text("<testsuites/>")
    (directory / artifact.SIGNATURE).write_text("c2lnbmF0dXJl\n")
    if scanned:
        (directory / artifact.VULNS).write_text(json.dumps({"file": artifact.VULNS}))
    (directory / artifact.SUMS).write_text(artifact.sha256sums(directory))
    return directory


def baker(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BAKER), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_push_twice_sends_nothing_the_second_time_and_gives_the_same_digest(
    logged_in: Registry, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path / "small")
    ref = parse(f"{logged_in.host}/team/small:v1")
    c = connect(ref, ca_bundle=logged_in.ca)
    first = push.push(c, art, ref)
    second = push.push(c, art, ref)
    assert first.sent > 0 and second.sent == 0
    assert first.ref.digest == second.ref.digest
    assert first.referrers == 4


def test_cli_push_prints_ref_at_digest_and_skopeo_reads_the_manifest(
    logged_in: Registry, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path / "cli")
    target = f"{logged_in.host}/team/cli:nightly"
    proc = baker("push", art, target, "--ca-bundle", logged_in.ca_bundle)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{target}@sha256:")
    digest = last.rsplit("@", 1)[1]
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", *logged_in.tls_args(), f"docker://{target}"],
        capture_output=True,
        check=True,
    ).stdout
    assert oci.digest_of(raw) == digest
    manifest = json.loads(raw)
    assert manifest["artifactType"] == oci.ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == oci.CONFIG
    assert manifest["layers"][0]["annotations"][oci.TITLE] == artifact.IMAGE
    assert manifest["annotations"][oci.CREATED] == "2023-11-14T22:13:20Z"  # the source date
    # The evidence is found through the referrers tag schema (distribution 2.8 has no API).
    index = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            *logged_in.tls_args(),
            f"docker://{logged_in.host}/team/cli:{oci.referrers_tag(digest)}",
        ],
        capture_output=True,
        check=True,
    ).stdout
    kinds = sorted(m["artifactType"] for m in json.loads(index)["manifests"])
    assert kinds == sorted(t for f, t in oci.REFERRERS.items() if f != artifact.VULNS)


def test_a_dropped_connection_mid_upload_resumes_from_the_registrys_offset(
    logged_in: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_mod, "CHUNK", 1024)
    art = make_artifact(tmp_path / "resume", disk=os.urandom(10 * 1024))
    ref = parse(f"{logged_in.host}/team/resume:v1")
    c = connect(ref, ca_bundle=logged_in.ca)
    real = c.session.request
    patches = []

    def flaky(method: str, url: str, **kw: Any) -> requests.Response:
        if method == "PATCH":
            patches.append(kw["headers"]["Content-Range"])
            if patches.count("3072-4095") == 1 and kw["headers"]["Content-Range"] == "3072-4095":
                raise requests.exceptions.ConnectionError("Connection reset by peer")
        return real(method, url, **kw)

    monkeypatch.setattr(c.session, "request", flaky)
    pushed = push.push(c, art, ref)
    # The disk's fourth chunk was lost and sent again from offset 3072, the offset the
    # registry reported; no other chunk went twice.
    at = patches.index("3072-4095")
    assert patches[at - 3 : at + 2] == [
        "0-1023",
        "1024-2047",
        "2048-3071",
        "3072-4095",
        "3072-4095",
    ]
    assert patches[at + 2] == "4096-5119"
    got = c.get_manifest("team/resume", pushed.ref.digest or "")
    assert got is not None
    layer = json.loads(got[0])["layers"][0]
    assert layer["digest"] == oci.digest_of((art / artifact.IMAGE).read_bytes())
    fetched = tmp_path / "fetched"
    c.fetch_blob("team/resume", layer, fetched)  # the registry checked the digest on PUT too
    assert fetched.read_bytes() == (art / artifact.IMAGE).read_bytes()


def test_without_the_ca_tls_is_refused_in_one_line(logged_in: Registry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "noca")
    proc = baker("push", art, f"{logged_in.host}/team/noca:v1")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"baker: error: {logged_in.host}: TLS failed")
    )
    assert "--ca-bundle" in proc.stderr and "Traceback" not in proc.stderr


def test_without_a_login_access_is_refused_in_one_line(registry: Registry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "nologin")
    proc = baker(
        "push",
        art,
        f"{registry.host}/team/nologin:v1",
        "--ca-bundle",
        registry.ca_bundle,
        env={"HOME": str(tmp_path), "REGISTRY_AUTH_FILE": ""},
    )
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"baker: error: {registry.host}: access denied (401)"), line


def test_a_loopback_registry_without_tls_is_used_over_plain_http(
    plain_registry: Registry, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path / "plain")
    proc = baker("push", art, f"{plain_registry.host}/dev/plain:v1")
    assert proc.returncode == 0, proc.stderr


def test_loopback_is_told_from_other_hosts() -> None:
    assert parse("localhost:5000/a:b").is_loopback() and parse("[::1]:5000/a:b").is_loopback()
    assert parse("127.0.0.2:5000/a:b").is_loopback()
    assert not parse("registry.example.invalid:5000/team/x:v1").is_loopback()


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("team/x:v1", "name the registry host first"),
        ("127.0.0.1:5000/Team/x:v1", "lowercase"),
        ("127.0.0.1:5000/team/x@sha256:abc", "sha256:<64 hex digits>"),
        ("127.0.0.1:5000/team/x:bad!tag", "not a valid tag"),
    ],
)
def test_bad_references_are_one_line_and_exit_2(text: str, fault: str, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "ref")
    proc = baker("push", art, text)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and fault in proc.stderr, proc.stderr


def test_promote_mounts_blobs_and_refuses_to_move_a_tag_without_force(
    logged_in: Registry, tmp_path: Path
) -> None:
    a, b = (
        make_artifact(tmp_path / "a"),
        make_artifact(tmp_path / "b", disk=b"QFI\xfb" + b"\1" * 4096),
    )
    host = logged_in.host
    c = connect(parse(f"{host}/x:y"), ca_bundle=logged_in.ca)
    pa = push.push(c, a, parse(f"{host}/dev/app:1"))
    pb = push.push(c, b, parse(f"{host}/dev/app:2"))
    at, sent = promote.promote(
        c, parse(f"{host}/dev/app:1"), c, parse(f"{host}/prod/app:stable"), False
    )
    assert at.digest == pa.ref.digest and sent == 0  # mounted, not sent
    assert referrers.listed(c, "prod/app", at.digest or "") != []
    env = {"REGISTRY_AUTH_FILE": str(logged_in.auth_file)}
    proc = baker(
        "promote",
        f"{host}/dev/app:2",
        f"{host}/prod/app:stable",
        "--ca-bundle",
        logged_in.ca_bundle,
        env=env,
    )
    assert proc.returncode == 2
    assert "already names" in proc.stderr and "--force" in proc.stderr
    proc = baker(
        "promote",
        f"{host}/dev/app:2",
        f"{host}/prod/app:stable",
        "--force",
        "--ca-bundle",
        logged_in.ca_bundle,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"@{pb.ref.digest}")


def test_containerdisk_layer_holds_the_disk_under_disk(logged_in: Registry, tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "cd", disk=os.urandom(5000))
    ref = parse(f"{logged_in.host}/team/cd:v1-containerdisk")
    c = connect(ref, ca_bundle=logged_in.ca)
    at, sent = containerdisk.push_containerdisk(c, art, ref)
    again, sent_again = containerdisk.push_containerdisk(c, art, ref)
    assert at.digest == again.digest and sent > 0 and sent_again == 0
    got = c.get_manifest("team/cd", at.digest or "")
    assert got is not None
    layer = json.loads(got[0])["layers"][0]
    blob = tmp_path / "layer.tar"
    c.fetch_blob("team/cd", layer, blob)
    with tarfile.open(blob) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"disk", "disk/image.qcow2"}
        assert (members["disk/image.qcow2"].uid, members["disk/image.qcow2"].gid) == (107, 107)
        data = tar.extractfile("disk/image.qcow2")
        assert data is not None and data.read() == (art / artifact.IMAGE).read_bytes()


def test_tar_stream_reads_the_same_at_any_offset(tmp_path: Path) -> None:
    disk = tmp_path / "d"
    disk.write_bytes(os.urandom(3001))
    stream = containerdisk.TarStream(disk, 0)
    whole = stream.read_at(0, stream.size)
    pieces = b"".join(stream.read_at(o, 700) for o in range(0, stream.size, 700))
    assert whole == pieces and len(whole) == stream.size
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        assert tar.getnames() == ["disk", "disk/image.qcow2"]


def test_a_registry_that_is_down_is_one_line(tmp_path: Path) -> None:
    art = make_artifact(tmp_path / "down")
    proc = baker("push", art, f"127.0.0.1:{free_port()}/x/y:z")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].endswith("cannot connect (connection refused).")


def test_a_tampered_artifact_is_not_pushed(logged_in: Registry, tmp_path: Path) -> None:
    """A file that does not match SHA256SUMS is found while it is sent (hashed as it goes),
    and its upload is cancelled: nothing of it is stored under its claimed digest."""
    art = make_artifact(tmp_path / "tampered")
    (art / artifact.BOOT).write_text("{}")
    ref = parse(f"{logged_in.host}/team/tampered:v1")
    c = connect(ref, ca_bundle=logged_in.ca)
    with pytest.raises(InputError, match=r"boot\.json: does not match SHA256SUMS"):
        push.push(c, art, ref)
    claimed = artifact.read_sums(art)[artifact.BOOT]
    assert not c.has_blob("team/tampered", f"sha256:{claimed}")
    assert c.get_manifest("team/tampered", "v1") is None


@pytest.fixture
def standin():
    from support.registry_standin import StandIn

    reg = StandIn()
    yield reg
    reg.stop()


def test_a_registry_with_the_referrers_api_gets_no_referrers_tag(standin, tmp_path: Path) -> None:
    """The OCI 1.1 path, against the in-test stand-in (no installable registry has the API):
    the registry answers each referrer with OCI-Subject, so no sha256-<hex> tag is written,
    and the referrers are listed through GET /v2/<name>/referrers/<digest>; promote carries
    them over the same way."""
    art = make_artifact(tmp_path / "api")
    ref = parse(f"{standin.host}/team/api:v1")
    c = connect(ref)
    pushed = push.push(c, art, ref)
    digest = pushed.ref.digest or ""
    assert standin.tags("team/api") == {"v1"}
    listed = referrers.listed(c, "team/api", digest)
    assert sorted(e["artifactType"] for e in listed) == sorted(
        t for f, t in oci.REFERRERS.items() if f != artifact.VULNS
    )
    at, sent = promote.promote(c, ref, c, parse(f"{standin.host}/prod/api:stable"), False)
    assert at.digest == digest and sent == 0
    assert standin.tags("prod/api") == {"stable"}
    assert len(referrers.listed(c, "prod/api", digest)) == 4


def test_a_scanned_artifacts_vulnerability_report_goes_up_as_a_referrer_of_its_own_type(
    standin, tmp_path: Path
) -> None:
    art = make_artifact(tmp_path / "scanned", scanned=True)
    ref = parse(f"{standin.host}/team/scanned:v1")
    c = connect(ref)
    digest = push.push(c, art, ref).ref.digest or ""
    kinds = sorted(e["artifactType"] for e in referrers.listed(c, "team/scanned", digest))
    assert kinds == sorted(oci.REFERRERS.values())
    # Not the SBOM's type: a registry user asks for one or the other.
    assert kinds.count("application/vnd.cyclonedx+json") == 1
    assert "application/vnd.baker.vulnerabilities.v1+json" in kinds


def test_pull_refuses_before_fetching_when_the_disk_cannot_hold_it(
    logged_in: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baker.registry import pull

    art = make_artifact(tmp_path / "big")
    ref = parse(f"{logged_in.host}/team/big:v1")
    c = connect(ref, ca_bundle=logged_in.ca)
    push.push(c, art, ref)
    fetched: list[str] = []

    def fetch_blob(*_args: object, **_kwargs: object) -> str:
        fetched.append("x")
        return ""

    monkeypatch.setattr(c, "fetch_blob", fetch_blob)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: type("U", (), {"free": 100})())
    into = tmp_path / "into"
    with pytest.raises(BuildError, match="has 0 MB free"):
        pull.pull(c, ref, into, tmp_path / "unused.pub")
    assert fetched == [] and not into.exists()


def test_token_authentication_with_the_login_from_the_auth_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry token flow (a Bearer challenge, a token for the Basic login from the
    Docker-style auth file), against the stand-in: distribution 2.8 needs a separate token
    server for it."""
    import base64

    from support.registry_standin import StandIn

    reg = StandIn(login=("robot", "pw"))
    try:
        art = make_artifact(tmp_path / "token")
        auth = tmp_path / "auth.json"
        login = base64.b64encode(b"robot:pw").decode()
        auth.write_text(json.dumps({"auths": {reg.host: {"auth": login}}}))
        env = {"REGISTRY_AUTH_FILE": str(auth), "HOME": str(tmp_path)}
        proc = baker("push", art, f"{reg.host}/team/token:v1", env=env)
        assert proc.returncode == 0, proc.stderr
        assert reg.tags("team/token") == {"v1"}
        proc = baker(
            "push", art, f"{reg.host}/team/token:v2", env={**env, "REGISTRY_AUTH_FILE": ""}
        )
        assert proc.returncode == 1
        assert "access denied (401)" in proc.stderr.strip().splitlines()[-1]
    finally:
        reg.stop()
