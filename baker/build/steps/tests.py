"""The verify step: the recipe's testinfra tests against the live machine, as JUnit XML; a
failing test fails the build."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from baker.artifact import JUNIT
from baker.backends.base import SshTarget
from baker.build.runner import Step
from baker.build.state import BuildState, Context, TestResults, need
from baker.edge import tools
from baker.errors import BuildError
from baker.hashing import content_key
from baker.progress import Reporter
from baker.recipe.spec import Spec

TIMEOUT_S = 1800
PLUGIN = "baker.edge.testinfra_host"


class Verify(Step):
    name = "verify"
    keepable = True
    uses_machine = True
    code = ("baker.edge.testinfra_host",)

    def describe(self, ctx: Context) -> str:
        return f"{len(ctx.spec.recipe.tests)} testinfra files"

    def key(self, ctx: Context, state: BuildState, previous: str | None) -> str:
        config = {
            "tests": [t.model_dump() for t in ctx.spec.recipe.tests],
            "tools": tools.versions("pytest-testinfra"),
            "code": self.code_digest(),
        }
        return content_key("verify", config, previous)

    def run(self, ctx: Context, state: BuildState, cleanup: contextlib.ExitStack) -> None:
        machine = need(state.machine, "the build machine")
        state.junit = ctx.work / JUNIT
        state.tests = run(ctx.spec, machine.test_target(), ctx.work, state.junit, ctx.reporter)


def run(
    spec: Spec,
    target: SshTarget | str,
    workdir: Path,
    junit: Path,
    reporter: Reporter,
) -> TestResults:
    """Run the recipe's tests against `target`: the machine over SSH with its host key
    pinned, or a testinfra host spec (the fake backend's)."""
    if not spec.recipe.tests:
        junit.write_text(
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<testsuites><testsuite name="pytest" tests="0"/></testsuites>\n'
        )
        return TestResults(0, 0, 0, 0, ())
    # What runs is a copy of exactly the pinned bytes, in a directory of its own, isolated from
    # any pytest configuration of the project around the recipe.
    testdir = workdir / "tests"
    testdir.mkdir()
    (testdir / "pytest.ini").write_text("[pytest]\n")
    paths = []
    for test in spec.recipe.tests:
        copy = testdir / Path(test.path).name
        if copy.exists():
            raise BuildError(f"two test files share the name {copy.name}.")
        copy.write_bytes(spec.read(test.path))
        paths.append(copy.name)
    keyfile = workdir / "keys.json"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if isinstance(target, SshTarget):
        keyfile.touch(mode=0o600)
        keyfile.write_text(json.dumps(target.keys.as_dict()))
        env.update(
            BAKER_SSH_HOST=target.endpoint.host,
            BAKER_SSH_PORT=str(target.endpoint.port),
            BAKER_SSH_USER=target.user,
            BAKER_SSH_KEYS=str(keyfile),
        )
    else:
        env["BAKER_TESTINFRA_HOST"] = target
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:pytest11.testinfra",
        "-p",
        "no:cacheprovider",
        "-p",
        PLUGIN,
        "-c",
        "pytest.ini",
        "--rootdir",
        ".",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit2",
        "-v",
        "--color=no",
        *paths,
    ]
    with subprocess.Popen(
        argv, cwd=testdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            reporter.output("testinfra", raw.decode(errors="replace").rstrip())
        try:
            code = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BuildError(f"the testinfra tests ran longer than {TIMEOUT_S} s.") from None
    keyfile.unlink(missing_ok=True)
    results = parse_junit(junit) if junit.exists() else None
    if results is None:
        raise BuildError(f"the testinfra run wrote no results (pytest exit {code}).")
    if code == 5 or results.tests == 0:
        raise BuildError("the recipe's test files hold no tests.")
    if code != 0 or results.failures or results.errors:
        names = ", ".join(results.failed[:5]) or f"pytest exit {code}"
        raise BuildError(
            f"{results.failures + results.errors} of {results.tests} testinfra tests failed: "
            f"{names}."
        )
    return results


def parse_junit(path: Path) -> TestResults:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    count = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    for suite in suites:
        for key in count:
            count[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
    return TestResults(failed=tuple(failed), **count)
