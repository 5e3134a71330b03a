"""The farm's routing and retry rules, with Celery's own test worker on an in-memory broker:
a failed build is reported once and never retried; a failed store is retried, a bounded
number of times; a job is laid out from content alone, its digests checked."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]

from baker import recipe
from baker.edge import aws
from baker.errors import InputError
from baker.farm import payload, queues, store, tasks
from baker.farm.app import make_app


def test_routes_follow_what_a_recipe_needs() -> None:
    job = {"backend": "libvirt", "arch": "amd64", "accel": "auto"}
    assert queues.route(job) == "baker.libvirt.amd64.any"
    assert queues.route({**job, "accel": "kvm"}) == "baker.libvirt.amd64.kvm"
    assert queues.route({**job, "backend": "ec2"}) == "baker.ec2"
    assert queues.for_host("kvm") == [
        "baker.libvirt.amd64.kvm",
        "baker.libvirt.amd64.tcg",
        "baker.libvirt.amd64.any",
    ]
    # A TCG-only host never takes a job that asked for KVM.
    assert "baker.libvirt.amd64.kvm" not in queues.for_host("tcg")


def test_a_host_with_aws_credentials_serves_ec2_and_none_is_asked_over_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    # An instance role would be asked at this address: it listens, and nothing comes.
    with socket.create_server(("127.0.0.1", 0)) as metadata:
        port = metadata.getsockname()[1]
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{port}")
        assert aws.has_credentials() is False
        metadata.setblocking(False)
        with pytest.raises(BlockingIOError):
            metadata.accept()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert aws.has_credentials() is True


def test_an_image_is_stored_under_its_digest_whatever_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.key("sha256:" + "ab" * 32) == "ab" * 32
    assert store.key("ec2:eu-west-1:ami-0123") == "ec2-eu-west-1-ami-0123"
    shared, built = tmp_path / "shared", tmp_path / "built"
    shared.mkdir()
    built.mkdir()
    (built / "ami.json").write_text("{}")  # an EC2 build's artifact: the image is the cloud's
    monkeypatch.setenv("BAKER_FARM_ARTIFACTS", str(shared))
    monkeypatch.delenv("BAKER_FARM_REGISTRY", raising=False)
    monkeypatch.delenv("BAKER_FARM_HISTORY", raising=False)
    one = store.put(built, "app", "ec2:eu-west-1:ami-0123")
    other = store.put(built, "app", "ec2:us-east-1:ami-0456")
    assert one != other and Path(one).name == "ec2-eu-west-1-ami-0123"
    assert (Path(other) / "ami.json").is_file()


def _project(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "motd").write_text("hello\n")
    import hashlib

    digest = hashlib.sha256(b"hello\n").hexdigest()
    (tmp_path / "images").mkdir()
    r = tmp_path / "images" / "farm.yaml"
    r.write_text(
        f"name: farm\nprovisioners:\n  - file: ../files/motd\n    sha256: {digest}\n"
        "    dest: /etc/motd\n"
    )
    return r


def test_a_job_is_laid_out_again_from_content_and_checked(tmp_path: Path) -> None:
    job = payload.make(recipe.load(_project(tmp_path / "src")), {"who": "ci"})
    assert job["name"] == "farm" and job["recipe"] == "images/farm.yaml"
    assert sorted(f["path"] for f in job["files"]) == ["files/motd", "images/farm.yaml"]
    again = payload.lay_out(job, tmp_path / "worker")
    # Its files resolve in the new place, the worker's copy being the project (--root).
    assert recipe.load(again, root=tmp_path / "worker").name == "farm"
    job["files"][0]["data"] = "aGFja2Vk"  # "hacked"
    with pytest.raises(InputError, match="does not match its sha256"):
        payload.lay_out(job, tmp_path / "worker2")
    job["files"][0]["path"] = "../../etc/passwd"
    with pytest.raises(InputError, match="outside its project"):
        payload.lay_out(job, tmp_path / "worker3")


@pytest.fixture
def memory_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("BAKER_WORK_DIR", str(tmp_path))
    monkeypatch.setattr(tasks, "RETRY_DELAY_S", 0.01)
    app = make_app("memory://", backend="cache+memory://")
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield app


def _job(tmp_path: Path) -> dict[str, Any]:
    return payload.make(recipe.load(_project(tmp_path / "src")), {})


def _builds(monkeypatch: pytest.MonkeyPatch, code: int, stderr: str) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_build(argv: list[str], on_line: Any = None) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, code, "sha256:" + "ab" * 32 + "\n", stderr)

    monkeypatch.setattr(tasks, "run_build", fake_build)
    return calls


def test_a_failed_build_is_reported_once_with_its_error_line(
    memory_worker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _builds(
        monkeypatch, 1, "baker: ==> provision\nbaker: error: the provisioner step failed (exit 3)\n"
    )
    result = memory_worker.send_task("baker.build", args=[_job(tmp_path)])
    value = result.get(timeout=30, propagate=False)
    assert result.failed() and str(value) == "the provisioner step failed (exit 3)"
    assert len(calls) == 1  # not retried: it would fail the same way


def test_a_failed_store_is_retried_and_then_succeeds(
    memory_worker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _builds(monkeypatch, 0, "")
    attempts: list[int] = []

    def flaky_store(directory: Path, name: str, digest: str) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("the shared directory is not mounted")
        return f"/srv/{name}"

    monkeypatch.setattr(store, "put", flaky_store)
    value = memory_worker.send_task("baker.build", args=[_job(tmp_path)]).get(timeout=30)
    assert value["stored"] == "/srv/farm" and len(attempts) == 3 and len(calls) == 3


def test_a_jobs_build_options_reach_the_workers_build(
    memory_worker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = _builds(monkeypatch, 0, "")
    monkeypatch.setattr(store, "put", lambda directory, name, digest: f"/srv/{name}")
    job = _job(tmp_path) | {"no_cache": True, "boot_runs": 1}
    memory_worker.send_task("baker.build", args=[job]).get(timeout=30)
    assert "--no-cache" in calls[0] and "--boot-runs=1" in calls[0]


def test_store_retries_are_bounded(
    memory_worker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _builds(monkeypatch, 0, "")
    attempts: list[int] = []

    def broken_store(directory: Path, name: str, digest: str) -> str:
        attempts.append(1)
        raise OSError("no space left on device")

    monkeypatch.setattr(store, "put", broken_store)
    result = memory_worker.send_task("baker.build", args=[_job(tmp_path)])
    value = result.get(timeout=30, propagate=False)
    assert result.failed() and "no space left on device" in str(value)
    assert len(attempts) == tasks.STORE_RETRIES + 1
    assert not list(tmp_path.glob("baker-job-*"))  # each attempt's job dir is gone
