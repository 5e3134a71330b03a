"""The build, as one straight pipeline (DESIGN.md): read it top to bottom.

resolve (done by the caller: a Spec) -> base -> disk -> boot -> provision -> verify ->
shutdown -> capture -> image -> measure -> attest -> publish. Every step's content key is
known before the build starts; the base and disk steps are cached under theirs. Whatever
happens, the ExitStack destroys the machine and removes the work directory, and nothing
reaches `out/` before the last step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any

import paramiko

from baker import __version__, lock
from baker.artifact import publish
from baker.backends import Machine
from baker.backends.accel import Accel, choose
from baker.backends.libvirt import Libvirt
from baker.build.options import Options, Result, display_path, tool_versions, workdir
from baker.build.steps import attest, capture, measure, provision, verify
from baker.build.steps import base as rootfs
from baker.cache import Cache
from baker.edge import ssh
from baker.errors import BuildError
from baker.evidence import signing
from baker.hashing import content_key, sha256_file
from baker.image import disk
from baker.image.generalize import RULES
from baker.image.packages import Package, parse_status
from baker.progress import Reporter
from baker.spec import Ec2Backend, PerAccel, Spec

SHUTDOWN_TIMEOUT_S = 120


def step_keys(spec: Spec, locked: lock.Lock | None = None) -> dict[str, str]:
    """Each step's content key: the hash of its own inputs and of the key before it."""
    recipe = spec.recipe
    keys: dict[str, str] = {}
    keys["base"] = content_key("base", rootfs.config(recipe.base, locked))
    keys["disk"] = content_key(
        "disk", {"size_mib": recipe.base.disk_size_mib, "grub": disk.grub_config()}, keys["base"]
    )
    keys["provision"] = content_key("provision", provision.describe(spec), keys["disk"])
    keys["verify"] = content_key(
        "verify", [t.model_dump() for t in recipe.tests], keys["provision"]
    )
    keys["capture"] = content_key(
        "capture",
        {
            "rules": [r.pattern for r in RULES],
            "name": spec.name,
            "source_date_epoch": source_date_epoch(locked),
        },
        keys["verify"],
    )
    return keys


def source_date_epoch(locked: lock.Lock | None) -> int:
    """The time every file in the image is clamped to: the lock's Release date, if locked."""
    return locked.source_date_epoch if locked else rootfs.DEFAULT_SOURCE_DATE_EPOCH


def load_lock(spec: Spec) -> tuple[lock.Lock | None, Path]:
    """The recipe's lock, if it has one, checked against the recipe's packages."""
    path = lock.path_for(spec.source)
    if not path.exists():
        return None, path
    locked = lock.load(path)
    lock.check_matches(locked, path, spec.recipe.base, rootfs.wanted(spec.recipe.base))
    return locked, path


def build(spec: Spec, opts: Options, reporter: Reporter) -> Result:
    recipe = spec.recipe
    if isinstance(recipe.backend, Ec2Backend):
        from baker.build import cloudbuild

        return cloudbuild.build(spec, opts, reporter)
    accel = choose(recipe.backend.accel if opts.accel == "auto" else opts.accel)
    # Bad keys and stale locks are bad input: found before any VM starts.
    sign_key = signing.load_private_key(opts.sign_key) if opts.sign_key else None
    locked, lock_file = load_lock(spec)
    keys = step_keys(spec, locked)
    started = dt.datetime.now(dt.UTC)
    sde = source_date_epoch(locked)
    cached: dict[str, bool] = {}

    with contextlib.ExitStack() as cleanup:
        work = cleanup.enter_context(workdir(opts.work_root))
        reporter.open_log(work / "build.log")
        cleanup.callback(reporter.close)
        reporter.info(f"baking {spec.name} from {spec.source} (accel {accel}, work {work})")
        if locked:
            reporter.info(f"packages locked by {display_path(lock_file)} ({locked.digest})")

        with reporter.step("base", "Debian root filesystem (mmdebstrap)"):
            root_tar = rootfs.build(
                recipe.base,
                keys["base"],
                opts.cache,
                work,
                lambda line: reporter.output("mmdebstrap", line),
                locked,
            )
            cached["base"] = root_tar.cached

        with reporter.step("disk", "bootable base disk"):
            base_disk, cached["disk"] = _base_disk(
                root_tar.path, keys["disk"], recipe.base.disk_size_mib, sde, opts.cache
            )

        with reporter.step("boot", f"build machine ({accel}), waiting for SSH"):
            access = ssh.BuildKeys.generate()
            backend = Libvirt(recipe.backend, accel)
            machine = backend.start(base_disk, access, work, _domain_name(spec.name))
            cleanup.callback(machine.destroy)
            client, waited = ssh.wait_for_ssh(
                machine.endpoint,
                lambda: ssh.connect(
                    machine.endpoint, access.client_key(), host_key=access.host_key(), timeout=5
                ),
                recipe.backend.ssh_timeout_s,
                machine.alive,
                machine.console_tail,
            )
            cleanup.callback(client.close)
            reporter.info(f"SSH answered after {waited:.1f} s on {machine.endpoint.port}")

        with reporter.step("provision", f"{len(recipe.provisioners)} provisioners over SSH"):
            provision.run_all(spec, client, reporter, sde)

        junit = work / "verify.junit.xml"
        with reporter.step("verify", f"{len(recipe.tests)} testinfra files"):
            results = verify.run(spec, machine.endpoint, access, work, junit, reporter)

        with reporter.step("shutdown", "clean power-off"):
            _shutdown(client, machine)

        captured_tar = work / "captured.tar"
        with reporter.step("capture", "generalize and re-pack the filesystem"):
            captured = capture.to_tar(machine.disk, captured_tar, work, sde)
            machine.disk.unlink()

        image = work / "image.qcow2"
        with reporter.step("image", "canonical disk, qcow2, digest"):
            raw = work / "image.raw"
            disk.assemble(
                captured_tar,
                raw,
                recipe.base.disk_size_mib,
                disk.DiskIds.derive(f"image:{spec.name}"),
                sde,
            )
            captured_tar.unlink()
            disk.to_qcow2(raw, image)
            # The raw bytes' digest ties the image to copies in other formats (an AMI's
            # snapshot, a converted disk) whose container bytes differ.
            raw_digest = f"sha256:{sha256_file(raw)}"
            raw.unlink()
            digest = f"sha256:{sha256_file(image)}"

        measured = {}
        if opts.measure:
            with reporter.step("measure", f"{recipe.boot_runs} plain boots ({accel})"):
                boot = measure.measure(
                    image, digest, work, accel, recipe.boot_runs, recipe.boot_budget_s, reporter
                )
                (work / "boot.json").write_bytes(attest.dump(boot))
                measured["boot.json"] = work / "boot.json"

        packages = parse_status(captured.dpkg_status)
        record = _build_record(
            spec, keys, reporter.timings, cached, accel, results, packages, root_tar, digest,
            raw_digest, image, started, locked, lock_file, sde,
        )  # fmt: skip
        (work / "build.json").write_bytes(attest.dump(record))

        with reporter.step("attest", "SBOMs, provenance" + (", signature" if sign_key else "")):
            evidence = attest.write(
                work,
                image=image,
                record=record,
                packages=packages,
                copyrights=captured.copyrights,
                invocation_id=str(uuid.uuid4()),
                key=sign_key,
            )

        with reporter.step("publish", f"{opts.out / spec.name}"):
            artifact = publish(
                opts.out,
                spec.name,
                {
                    "image.qcow2": image,
                    "build.json": work / "build.json",
                    **measured,
                    "verify.junit.xml": junit,
                    **evidence,
                },
            )
    return Result(digest, artifact)


def _base_disk(
    root_tar: Path, key: str, size_mib: int, sde: int, cache: Cache
) -> tuple[Path, bool]:
    target = cache.path("disk", f"{key}.raw")
    if target.exists():
        return target, True
    with cache.staging(target) as tmp:
        disk.assemble(root_tar, tmp, size_mib, disk.DiskIds.derive(f"base:{key}"), sde)
    return target, False


def _domain_name(image: str) -> str:
    return f"baker-{image}-{os.urandom(4).hex()}"


def _shutdown(client: paramiko.SSHClient, machine: Machine) -> None:
    # The connection drops as the machine goes down; what counts is that it stops.
    with contextlib.suppress(Exception):
        client.exec_command("systemctl poweroff", timeout=10)
    client.close()
    if not machine.wait_stopped(SHUTDOWN_TIMEOUT_S):
        raise BuildError(
            f"the build machine did not power off within {SHUTDOWN_TIMEOUT_S} s; its console "
            f"ended with: {machine.console_tail()}"
        )


def _build_record(
    spec: Spec,
    keys: dict[str, str],
    timings: dict[str, float],
    cached: dict[str, bool],
    accel: Accel,
    results: verify.Results,
    packages: list[Package],
    root_tar: rootfs.RootTar,
    digest: str,
    raw_digest: str,
    image: Path,
    started: dt.datetime,
    locked: lock.Lock | None,
    lock_file: Path,
    sde: int,
) -> dict[str, Any]:
    recipe = spec.recipe
    return {
        "baker_version": __version__,
        "recipe": {
            "name": spec.name,
            "file": display_path(spec.source),
            "digest": f"sha256:{spec.digest}",
            "rendered_digest": f"sha256:{spec.rendered_digest}",
        },
        "variables": spec.variables,
        "source_date_epoch": sde,
        "pins": {
            "lock": (
                {
                    "file": display_path(lock_file),
                    "digest": locked.digest,
                    "resolved": locked.resolved,
                }
                if locked
                else None
            ),
            "debs": {p.name: f"sha256:{p.sha256}" for p in locked.packages} if locked else {},
            "files": {rel: f"sha256:{h}" for rel, (_, h) in sorted(spec.files.items())},
            "base": rootfs.config(recipe.base, locked),
            "base_digest": root_tar.digest,
            "packages": {p.name: p.version for p in packages},
        },
        "steps": {
            name: {"key": key, "seconds": timings.get(name), "cached": cached.get(name, False)}
            for name, key in keys.items()
        },
        "timings_s": timings,
        "accel": accel,
        # The virtual hardware it was built and tested on (an OVF export describes it).
        "backend": recipe.backend.model_dump(),
        "tests": results.as_dict(),
        "image": {
            "file": image.name,
            "digest": digest,
            "raw_digest": raw_digest,
            "size": image.stat().st_size,
            "virtual_size": recipe.base.disk_size_mib * 1024 * 1024,
            "format": "qcow2",
            "boot": "bios",
        },
        "boot_budget_s": (
            recipe.boot_budget_s.model_dump()
            if isinstance(recipe.boot_budget_s, PerAccel)
            else recipe.boot_budget_s
        ),
        "tools": tool_versions(),
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
