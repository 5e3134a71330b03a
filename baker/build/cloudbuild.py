"""The build on a cloud API (EC2): the same provisioners and testinfra tests as a libvirt
build, read top to bottom: resolve the base AMI -> launch -> provision -> verify -> image
(release access, stop, create the AMI) -> publish. There is no local disk, so no capture,
measurement or image digest: the artifact is ami.json with build.json, verify.junit.xml and
SBOMs read from the machine's own package database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from baker import __version__
from baker.artifact import publish
from baker.backends.ec2 import BuildTags, Ec2, resolve_base
from baker.build.options import Options, Result, display_path, tool_versions, workdir
from baker.build.steps import attest, provision, verify
from baker.build.steps.base import DEFAULT_SOURCE_DATE_EPOCH
from baker.edge import ssh
from baker.edge.aws import Aws
from baker.hashing import content_key
from baker.image.packages import parse_status
from baker.progress import Reporter
from baker.spec import Ec2Backend, Spec


def build(spec: Spec, opts: Options, reporter: Reporter) -> Result:
    recipe = spec.recipe
    cfg = recipe.backend
    assert isinstance(cfg, Ec2Backend)
    started = dt.datetime.now(dt.UTC)
    aws = Aws(cfg.region)
    with reporter.step("base", f"base AMI in {cfg.region}"):
        base = resolve_base(aws, cfg)
        reporter.info(f"base AMI {base.pin()}")
    keys = {"base": content_key("base", base.pin())}
    keys["provision"] = content_key("provision", provision.describe(spec), keys["base"])
    keys["verify"] = content_key(
        "verify", [t.model_dump() for t in recipe.tests], keys["provision"]
    )

    with contextlib.ExitStack() as cleanup:
        work = cleanup.enter_context(workdir(opts.work_root))
        reporter.open_log(work / "build.log")
        cleanup.callback(reporter.close)

        with reporter.step("boot", f"{cfg.instance_type} instance, waiting for SSH"):
            access = ssh.BuildKeys.generate()
            backend = Ec2(cfg, BuildTags.new(spec.name, keys), aws=aws, log=reporter.info)
            machine = backend.start(access, base)
            cleanup.callback(machine.destroy)
            assert machine.keys is not None
            pinned = machine.keys
            client, waited = ssh.wait_for_ssh(
                machine.endpoint,
                lambda: ssh.connect(
                    machine.endpoint, access.client_key(), host_key=pinned.host_key(), timeout=10
                ),
                cfg.ssh_timeout_s,
                machine.alive,
                machine.console_tail,
            )
            cleanup.callback(client.close)
            reporter.info(f"SSH answered after {waited:.1f} s")

        with reporter.step("provision", f"{len(recipe.provisioners)} provisioners over SSH"):
            # No lock applies to a cloud base: the source date is the recipe's default.
            provision.run_all(spec, client, reporter, DEFAULT_SOURCE_DATE_EPOCH)

        junit = work / "verify.junit.xml"
        with reporter.step("verify", f"{len(recipe.tests)} testinfra files"):
            results = verify.run(spec, machine.endpoint, pinned, work, junit, reporter)
            packages = parse_status(_read(client, "/var/lib/dpkg/status"))

        with reporter.step("image", "release access, stop, create the AMI"):
            machine.release_access(client)
            machine.stop()
            ami = machine.create_image(description=f"baker {spec.name}")
            (work / "ami.json").write_bytes(attest.dump(ami.as_json()))

        record: dict[str, Any] = {
            "baker_version": __version__,
            "recipe": {
                "name": spec.name,
                "file": display_path(spec.source),
                "digest": f"sha256:{spec.digest}",
                "rendered_digest": f"sha256:{spec.rendered_digest}",
            },
            "variables": spec.variables,
            "pins": {
                "files": {rel: f"sha256:{h}" for rel, (_, h) in sorted(spec.files.items())},
                "base_ami": base.pin(),
                "packages": {p.name: p.version for p in packages},
            },
            "steps": {
                name: {"key": key, "seconds": reporter.timings.get(name)}
                for name, key in keys.items()
            },
            "timings_s": reporter.timings,
            "tests": results.as_dict(),
            "ec2": machine.record(),
            "image": {"ami": ami.as_json()},
            "tools": tool_versions(),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (work / "build.json").write_bytes(attest.dump(record))

        with reporter.step("publish", f"{opts.out / spec.name}"):
            artifact = publish(
                opts.out,
                spec.name,
                {"ami.json": work / "ami.json", "build.json": work / "build.json",
                 "verify.junit.xml": junit},
            )  # fmt: skip
    return Result(f"ec2:{ami.region}:{ami.image_id}", artifact)


def _read(client: Any, path: str) -> str:
    with client.open_sftp() as sftp, sftp.open(path, "r") as f:
        return f.read().decode(errors="replace")
