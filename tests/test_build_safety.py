"""Secrets, the leak check and the vulnerability scan in the one pipeline, through the fake
backend (whose disk holds every command and input the machine got, so what was sent to it is
in its image). Bad input is refused before anything starts, naming the field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from support.recipe_files import WriteRecipe

from baker import recipe
from baker.artifact import read_record
from baker.backends.fake import FakeBackend
from baker.build.options import Options
from baker.build.pipeline import build
from baker.cache import Cache
from baker.errors import BuildError, InputError
from baker.progress import Reporter

VALUE = "s3cr3t-Value-0192837465"
RECIPE = """\
name: safe
base:
  boot: bios
secrets:
  TOKEN: {env: BAKER_TEST_TOKEN}
provisioners:
  - inline: echo hello
"""
USES = """  - inline: 'curl -H "Authorization: $TOKEN" http://x'
    secrets: [TOKEN]
"""


def _run(tmp_path: Path, spec: recipe.Spec, **opts: object) -> tuple[object, str]:
    log = io.StringIO()
    reporter = Reporter(Console(file=log, width=300))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    options = Options(out=tmp_path / "out", cache=Cache(tmp_path / "cache"), work_root=work,
                      measure=False, **opts)  # type: ignore[arg-type]  # fmt: skip
    try:
        return build(spec, options, reporter, FakeBackend(hands_back="disk")), log.getvalue()
    except BuildError as e:
        return e, log.getvalue()


def test_an_unset_variable_is_refused_naming_the_field(
    write_recipe: WriteRecipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BAKER_TEST_TOKEN", raising=False)
    spec = recipe.load(write_recipe(RECIPE))
    with pytest.raises(InputError, match=r"recipe\.yaml:5: secrets\.TOKEN: the environment "
                       r"variable BAKER_TEST_TOKEN is not set\.$"):  # fmt: skip
        _run(tmp_path, spec)


def test_a_provisioner_naming_an_undefined_secret_is_refused_at_load(
    write_recipe: WriteRecipe,
) -> None:
    text = RECIPE + USES.replace("[TOKEN]", "[TOKNE]")
    with pytest.raises(InputError, match=r"recipe\.yaml:9: provisioners\.1\.secrets\.0: no "
                       r"secret TOKNE in secrets:"):  # fmt: skip
        recipe.load(write_recipe(text))


def test_a_secret_file_outside_the_project_is_refused(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    spec = recipe.load(write_recipe(RECIPE.replace("{env: BAKER_TEST_TOKEN}", "{file: ../x}")))
    with pytest.raises(InputError, match=r"secrets\.TOKEN: file: .*outside"):
        _run(tmp_path, spec)


def test_the_records_name_a_secret_never_its_value(
    write_recipe: WriteRecipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKER_TEST_TOKEN", VALUE)
    result, _ = _run(tmp_path, recipe.load(write_recipe(RECIPE)))
    assert not isinstance(result, BuildError), result
    artifact = tmp_path / "out" / "safe"
    assert read_record(artifact).secrets == {"TOKEN": "env:BAKER_TEST_TOKEN"}
    provenance = json.loads((artifact / "provenance.json").read_text())
    external = provenance["predicate"]["buildDefinition"]["externalParameters"]
    assert external["secrets"] == {"TOKEN": "env:BAKER_TEST_TOKEN"}
    for f in artifact.iterdir():
        assert VALUE.encode() not in f.read_bytes(), f


def test_a_secret_that_reached_the_image_fails_the_leak_check_and_is_never_shown(
    write_recipe: WriteRecipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKER_TEST_TOKEN", VALUE)
    result, log = _run(tmp_path, recipe.load(write_recipe(RECIPE + USES)))
    assert isinstance(result, BuildError)
    # The fake keeps what it was sent in its disk: the environment file with the value.
    message = str(result)
    assert message.startswith("the leak check found 1 secret in the image, nothing was "
                              "published: /etc/fake/")  # fmt: skip
    assert "(the value of secret TOKEN)" in message
    assert VALUE not in message and VALUE not in log
    assert "leak-check: 1 build secret" in log
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert list((tmp_path / "work").iterdir()) == []


def test_an_aws_key_a_provisioner_leaves_fails_the_build(
    write_recipe: WriteRecipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAKER_TEST_TOKEN", VALUE)
    text = RECIPE + "  - inline: echo aws_access_key_id=AKIAIOSFODNN7EXAMPLE >/root/creds\n"
    result, _ = _run(tmp_path, recipe.load(write_recipe(text)))
    assert isinstance(result, BuildError) and "(AWS Access Key)" in str(result)
    allowed = text + "leak_check:\n  allow:\n"
    allowed += "".join(f"    - {{path: /etc/fake/{i:02d}, reason: the fake keeps commands}}\n"
                       for i in range(12))  # fmt: skip
    result, _ = _run(tmp_path, recipe.load(write_recipe(allowed)))
    assert not isinstance(result, BuildError), result


def test_the_reporter_masks_a_value_and_each_long_line_of_it() -> None:
    out = io.StringIO()
    reporter = Reporter(Console(file=out, width=300))
    reporter.mask(["abc-123-secret", "line-one-long\nline-two-long"])
    reporter.info("token abc-123-secret and line-two-long")
    reporter.output("step", "abc-123-secret")
    assert "secret" not in out.getvalue().replace("baker", "")
    assert out.getvalue().count("***") == 3
