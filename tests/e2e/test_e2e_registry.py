"""A real build through a real registry (docker-registry with TLS and logins): push, pull
into a fresh directory, verify; push again sends nothing; promote by digest; skopeo reads and
copies it; the containerDisk image holds the disk; and every kind of tampering is refused by
pull with one line, the target directory never appearing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import registry_server
from support.bakerun import Baked, run_baker
from support.tamper import flip_byte

from baker import artifact
from baker.evidence import signing
from baker.registry import oci, referrers
from baker.registry.client import connect
from baker.registry.ref import parse

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module):
    reg = registry_server.start(tmp_path_factory.mktemp("registry") / "tls")
    monkeypatch_module.setenv("REGISTRY_AUTH_FILE", str(reg.auth_file))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def pushed(registry, base_image: Baked, work_root: Path) -> tuple[str, str, Baked]:
    """The session's base build, pushed once: (tag ref, manifest digest, the build)."""
    target = f"{registry.host}/golden/base:1"
    proc = run_baker(
        "push",
        base_image.artifact,
        target,
        "--containerdisk",
        "--ca-bundle",
        registry.ca,
        work=work_root,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith(f"{target}@sha256:")
    assert lines[0].startswith(f"{registry.host}/golden/base:1-containerdisk@sha256:")
    return target, lines[-1].rsplit("@", 1)[1], base_image


@pytest.fixture(scope="module")
def pub(signing_key: Path) -> Path:
    return signing_key.with_name("baker.pub")


def _pull(
    ref: str, into: Path, pub: Path, registry, work: Path
) -> subprocess.CompletedProcess[str]:
    return run_baker(
        "pull", ref, "--into", into, "--pub", pub, "--ca-bundle", registry.ca, work=work
    )


def _refused(proc: subprocess.CompletedProcess[str], into: Path, expect: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("baker: error:") and expect in last, last
    assert not into.exists()
    assert not [p for p in into.parent.iterdir() if p.name.startswith(f".{into.name}.pull-")]


def test_pull_rebuilds_a_verifying_artifact_with_the_builds_digest(
    pushed, registry, pub, tmp_path, work_root
) -> None:
    ref, digest, base = pushed
    into = tmp_path / "pulled"
    proc = _pull(ref, into, pub, registry, work_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{registry.host}/golden/base@{digest}"
    check = run_baker("verify", into, "--pub", pub, work=work_root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert artifact.read_record(into).image.digest == base.digest
    assert sorted(p.name for p in into.iterdir()) == sorted(p.name for p in base.artifact.iterdir())
    # The scanned base's vulnerability report went up as a referrer of its own and came back.
    assert "ok   vulns.cdx.json" in check.stdout
    report = artifact.VULNS
    assert (into / report).read_bytes() == (base.artifact / report).read_bytes()
    client = connect(parse(ref), ca_bundle=registry.ca)
    kinds = {e["artifactType"] for e in referrers.listed(client, "golden/base", digest)}
    assert oci.REFERRERS[report] in kinds


def test_push_again_sends_nothing_and_gives_the_same_digest(pushed, registry, work_root) -> None:
    ref, digest, base = pushed
    proc = run_baker("push", base.artifact, ref, "--ca-bundle", registry.ca, work=work_root)
    assert proc.returncode == 0, proc.stderr
    assert "sent 0 bytes" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{ref}@{digest}"


def test_promote_by_digest_and_skopeo_inspects_and_copies_it(
    pushed, registry, pub, tmp_path, work_root
) -> None:
    _ref, digest, _ = pushed
    stable = f"{registry.host}/prod/base:stable"
    proc = run_baker(
        "promote",
        f"{registry.host}/golden/base@{digest}",
        stable,
        "--ca-bundle",
        registry.ca,
        work=work_root,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{stable}@{digest}"
    assert "sent 0 bytes" in proc.stderr  # mounted across repositories
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", *registry.tls_args(), f"docker://{stable}"],
        capture_output=True,
        check=True,
    ).stdout
    assert oci.digest_of(raw) == digest
    copy = subprocess.run(
        [
            "skopeo",
            "copy",
            "--preserve-digests",
            *_skopeo_src(registry),
            f"docker://{stable}",
            f"dir:{tmp_path / 'skopeo'}",
        ],
        capture_output=True,
        text=True,
    )
    assert copy.returncode == 0, copy.stderr
    disk_layer = json.loads(raw)["layers"][0]
    assert (tmp_path / "skopeo" / disk_layer["digest"].split(":")[1]).stat().st_size == disk_layer[
        "size"
    ]
    # The promoted copy carries its referrers: it pulls and verifies on its own.
    proc = _pull(stable, tmp_path / "from-prod", pub, registry, work_root)
    assert proc.returncode == 0, proc.stderr


def _skopeo_src(registry) -> list[str]:
    return [
        a.replace("--cert-dir", "--src-cert-dir").replace("--authfile", "--src-authfile")
        for a in registry.tls_args()
    ]


def test_containerdisk_lists_disk_image_qcow2(pushed, registry, tmp_path) -> None:
    ref, _, _base = pushed
    c = connect(parse(ref), ca_bundle=registry.ca)
    got = c.get_manifest("golden/base", "1-containerdisk")
    assert got is not None
    layer = json.loads(got[0])["layers"][0]
    listing = subprocess.run(
        ["tar", "-tvf", registry.blob_file(layer["digest"])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listing.stdout.split("\n")[1].split()[-1] == "disk/image.qcow2"
    assert "107/107" in listing.stdout.split("\n")[1]


def test_a_flipped_byte_in_the_disk_blob_is_refused(
    pushed, registry, pub, tmp_path, work_root
) -> None:
    ref, _digest, base = pushed
    blob = registry.blob_file(base.digest)
    original = flip_byte(blob, 1 << 20)
    try:
        _refused(
            _pull(ref, tmp_path / "flipped", pub, registry, work_root),
            tmp_path / "flipped",
            "does not match its digest",
        )
    finally:
        with blob.open("r+b") as f:
            f.seek(1 << 20)
            f.write(original)


def test_a_swapped_sbom_referrer_is_refused(pushed, registry, pub, tmp_path, work_root) -> None:
    ref, digest, base = pushed
    repo = "swap/base"
    c = connect(parse(ref), ca_bundle=registry.ca)
    _copy(registry, digest, f"{repo}:1", work_root)
    # Another SBOM, attached in place of the real one: valid JSON, a plausible document.
    sbom = json.loads((base.artifact / artifact.SBOM_CDX).read_bytes())
    sbom["components"] = sbom["components"][1:]
    layer = c.upload_bytes(repo, oci.canonical(sbom))
    empty = c.upload_bytes(repo, oci.EMPTY_BLOB)
    kind = oci.REFERRERS[artifact.SBOM_CDX]
    manifest = c.get_manifest(repo, digest)
    assert manifest is not None
    subject = oci.descriptor(oci.MANIFEST, digest, len(manifest[0]))
    body = oci.image_manifest(
        oci.descriptor(oci.EMPTY, empty["digest"], empty["size"]),
        [
            oci.descriptor(
                kind, layer["digest"], layer["size"], annotations={oci.TITLE: artifact.SBOM_CDX}
            )
        ],
        {},
        artifact_type=kind,
        subject=subject,
    )
    c.put_manifest(repo, oci.digest_of(body), body, oci.MANIFEST)
    entries = [e for e in referrers.listed(c, repo, digest) if e.get("artifactType") != kind]
    entries.append(oci.descriptor(oci.MANIFEST, oci.digest_of(body), len(body), artifactType=kind))
    c.put_manifest(repo, oci.referrers_tag(digest), oci.referrers_index(entries), oci.INDEX)
    _refused(
        _pull(f"{registry.host}/{repo}:1", tmp_path / "swapped", pub, registry, work_root),
        tmp_path / "swapped",
        "SHA256SUMS",
    )


def test_a_signature_by_another_key_is_refused(pushed, registry, tmp_path, work_root) -> None:
    ref, _, _ = pushed
    _, other = signing.keygen(tmp_path / "other-key")
    _refused(
        _pull(ref, tmp_path / "other", other, registry, work_root), tmp_path / "other", "signature"
    )


def test_a_manifest_pointing_at_a_missing_blob_is_refused(
    pushed, registry, pub, tmp_path, work_root
) -> None:
    ref, digest, _ = pushed
    host = registry.host
    c = connect(parse(ref), ca_bundle=registry.ca)
    # The build's blobs in a repository of its own (mounted), plus one small blob that the
    # disk's layer will point at; distribution checks a manifest's blobs when it is put, so
    # the blob is deleted after the put, as a registry's garbage collection or a lost
    # replica leaves it.
    _copy(registry, digest, "broken/base:keep", work_root)
    got = c.get_manifest("golden/base", digest)
    assert got is not None
    doc = json.loads(got[0])
    gone = c.upload_bytes("broken/base", b"soon gone")
    doc["layers"][0]["digest"], doc["layers"][0]["size"] = gone["digest"], gone["size"]
    c.put_manifest("broken/base", "1", oci.canonical(doc), oci.MANIFEST)
    deleted = c.request("DELETE", c.url("broken/base", f"blobs/{gone['digest']}"))
    assert deleted.status_code == 202
    _refused(
        _pull(f"{host}/broken/base:1", tmp_path / "missing", pub, registry, work_root),
        tmp_path / "missing",
        "is missing",
    )


def _copy(registry, digest: str, dst: str, work: Path) -> None:
    """The pushed build promoted to another repository of the registry, for a test to spoil."""
    proc = run_baker(
        "promote",
        f"{registry.host}/golden/base@{digest}",
        f"{registry.host}/{dst}",
        "--ca-bundle",
        registry.ca,
        work=work,
    )
    assert proc.returncode == 0, proc.stderr
