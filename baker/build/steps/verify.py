"""The verify step: the recipe's testinfra tests against the live machine, as JUnit XML."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from baker.edge.ssh import BuildKeys, Endpoint
from baker.errors import BuildError
from baker.progress import Reporter
from baker.spec import Spec

TIMEOUT_S = 1800


@dataclass(frozen=True)
class Results:
    tests: int
    failures: int
    errors: int
    skipped: int
    failed: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def run(
    spec: Spec,
    endpoint: Endpoint,
    keys: BuildKeys,
    workdir: Path,
    junit: Path,
    reporter: Reporter,
) -> Results:
    if not spec.recipe.tests:
        junit.write_text(
            '<?xml version="1.0" encoding="utf-8"?>\n'
            '<testsuites><testsuite name="pytest" tests="0"/></testsuites>\n'
        )
        return Results(0, 0, 0, 0, ())
    # What runs is a copy of exactly the pinned bytes, in a directory of its own, isolated from
    # any pytest configuration of the project around the recipe.
    testdir = workdir / "tests"
    testdir.mkdir()
    (testdir / "pytest.ini").write_text("[pytest]\n")
    paths = []
    for test in spec.recipe.tests:
        target = testdir / Path(test.path).name
        if target.exists():
            raise BuildError(f"two test files share the name {target.name}.")
        target.write_bytes(spec.read(test.path))
        paths.append(target.name)
    keyfile = workdir / "keys.json"
    keyfile.touch(mode=0o600)
    keyfile.write_text(json.dumps(dataclasses.asdict(keys)))
    env = {
        **os.environ,
        "BAKER_SSH_HOST": endpoint.host,
        "BAKER_SSH_PORT": str(endpoint.port),
        "BAKER_SSH_KEYS": str(keyfile),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:pytest11.testinfra",
        "-p",
        "no:cacheprovider",
        "-p",
        "baker.build.steps.testinfra_plugin",
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
    keyfile.unlink()
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


def parse_junit(path: Path) -> Results:
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
    return Results(failed=tuple(failed), **count)
