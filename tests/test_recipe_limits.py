"""baker.recipe.load on hostile input: every bound (size, render time and memory, YAML nesting
and aliases) and the project boundary give one InputError line, exit 2, fast and small."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import threading
import time
import tracemalloc
from pathlib import Path
from string import Template

import pytest

from baker import recipe
from baker.errors import InputError
from baker.recipe import render as recipe_render

STEP = "#!/bin/sh\necho step\n"
STEP_SHA = hashlib.sha256(STEP.encode()).hexdigest()

# Nine levels of nine aliases each: 9**9 (387 million) strings once expanded.
LAUGHS = "name: demo\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def _one_line(error: InputError) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 400, text
    assert error.exit_code == 2
    return text


# (id, recipe text, expected message; $recipe is the recipe's path)
BAD: list[tuple[str, str, str]] = [
    (
        "billion-laughs",
        LAUGHS,
        # Line 7: l5's aliases (*l4) are the first to stand for more than the bound.
        "$recipe:7: the recipe expands to more than 20000 nodes through its aliases (&/*); "
        "write the repeated part out once, or repeat it less.",
    ),
    (
        "alias-inside-itself",
        "name: demo\nbase: &b {packages: *b}\n",
        "$recipe:2: *b stands for a collection it is in; a recipe cannot contain itself.",
    ),
    (
        "too-deep",
        "name: demo\nbase: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "$recipe:2: the recipe nests collections more than 64 deep; a recipe is not that deep.",
    ),
    (
        "too-many-nodes",
        "name: demo\nbase:\n  packages: [" + ", ".join(["a"] * 30_000) + "]\n",
        "$recipe:3: the recipe has more than 20000 YAML nodes; a recipe is not that big.",
    ),
    (
        "undefined-alias",
        "name: demo\nbase: *nowhere\n",
        "$recipe:2: not valid YAML: found undefined alias 'nowhere'.",
    ),
    (
        "tab-indent",
        "name: demo\nbase:\n\tsuite: bookworm\n",
        "$recipe:3: not valid YAML: found character '\\t' that cannot start any token.",
    ),
    (
        "control-character",
        "name: demo\ndescription: a\x07b\n",
        "$recipe:2: not valid YAML: control characters are not allowed (0x07).",
    ),
    (
        "bad-date",
        "name: demo\ndescription: 2023-13-45\n",
        "$recipe:2: not valid YAML: cannot read this value (month must be in 1..12).",
    ),
    (
        "output-too-big",
        "name: demo\ndescription: '{% for i in range(99999) %}{{ 'x' * 20 }}{% endfor %}'\n",
        "$recipe: the rendered recipe is more than 1 MiB; its loops and includes write too much.",
    ),
    (
        "string-times-a-billion",
        "name: demo\ndescription: '{{ \"x\" * 10**9 }}'\n",
        "$recipe:2: template error: OverflowError: the result of * would be too big for a recipe.",
    ),
    (
        "huge-power",
        "name: demo\ndescription: '{{ 10 ** 100000000 }}'\n",
        "$recipe:2: template error: OverflowError: the result of ** would be too big for a recipe.",
    ),
    (
        "huge-value-by-filter",
        "name: demo\n\ndescription: '{{ \"x\"|center(10**9) }}'\n",
        "$recipe:3: the template needs more than 512 MiB of memory to render; a recipe's "
        "template is small and makes small values.",
    ),
    (
        "doubling-in-a-loop",
        "name: demo\n{% set ns = namespace(a='x') %}{% for i in range(40) %}"
        "{% set ns.a = ns.a ~ ns.a %}{% endfor %}description: '{{ ns.a }}'\n",
        "$recipe:2: the template needs more than 512 MiB of memory to render; a recipe's "
        "template is small and makes small values.",
    ),
    (
        "sandbox-refuses-internals",
        "name: demo\ndescription: '{{ ''.__class__.__mro__ }}'\n",
        "$recipe:2: template error: access to attribute '__class__' of 'str' object is unsafe.",
    ),
    (
        "huge-input-is-not-shown",
        "name: [" + ", ".join(["aaaaaaaaaa"] * 10_000) + "]\n",
        "$recipe:1: name: expected a string (got ['aaaaaaaaaa', 'aaaaaaaaaa', 'aaaaaaaaaa', "
        "'aaaaaaaaaa', 'aaaaaaaaaa', 'aaaaaaaaaa', 'aaaaaaaaaa'...).",
    ),
    (
        "key-with-a-newline",
        'name: demo\nbase:\n  "two\\nlines": 1\n',
        "$recipe:3: base.'two\\nlines': unknown field (known: arch, boot, capture, "
        "cloud_init, compression, disk_size_mib, image, kernel, mirror, packages, sha256, "
        "ssh_host_keys, suite, trust).",
    ),
    (
        "duplicate-key-under-an-alias",
        "name: demo\nx: &x {a: 1, a: 2}\n",
        "$recipe:2: x.a: duplicate key (first given at line 2).",
    ),
    (
        "absolute-path",
        f"name: demo\nprovisioners:\n  - inline: echo hi\n  - shell: /etc/passwd\n"
        f"    sha256: {STEP_SHA}\n",
        "$recipe:4: provisioners.1.shell: '/etc/passwd' is an absolute path; a recipe names "
        "its files relative to itself.",
    ),
    (
        "absolute-path-inside-the-project",
        f"name: demo\nprovisioners:\n  - file: $root/step.sh\n    sha256: {STEP_SHA}\n"
        "    dest: /x\n",
        "$recipe:3: provisioners.0.file: '$root/step.sh' is an absolute path; a recipe names "
        "its files relative to itself ('step.sh' from the recipe's directory).",
    ),
    (
        "dot-dot-escape",
        f"name: demo\ntests:\n  - path: ../../../../../../../etc/passwd\n    sha256: {STEP_SHA}\n",
        "$recipe:3: tests.0.path: '../../../../../../../etc/passwd' leaves the project $root; "
        "a recipe may name only files inside it (see --root).",
    ),
    (
        "symlink-escape",
        f"name: demo\nprovisioners:\n  - file: link.sh\n    sha256: {STEP_SHA}\n    dest: /x\n",
        "$recipe:3: provisioners.0.file: 'link.sh' (a link to $outside/step.sh) leaves the "
        "project $root; a recipe may name only files inside it (see --root).",
    ),
    (
        "include-escape-by-link",
        "name: demo\n\n{% include 'link.sh' %}\n",
        "$recipe:3: include 'link.sh' (a link to $outside/step.sh) leaves the project $root; a "
        "recipe may name only files inside it (see --root).",
    ),
    (
        "include-escape-absolute",
        "name: demo\n{% include '/etc/hostname' %}\n",
        "$recipe:2: include '/etc/hostname' is an absolute path; a recipe names its files "
        "relative to itself.",
    ),
    (
        "include-missing",
        "name: demo\n{% include 'nothing.yaml' %}\n",
        "$recipe:2: template error: no file 'nothing.yaml' to include (looked in $root).",
    ),
]


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A project (a .git in it) with step.sh inside, and a link in it to a file outside."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    (root / ".git").mkdir(parents=True)
    outside.mkdir()
    (outside / "step.sh").write_text(STEP)
    (root / "step.sh").write_text(STEP)
    (root / "link.sh").symlink_to(outside / "step.sh")
    return root, outside


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_hostile_recipe_message(project: tuple[Path, Path], text: str, expected: str) -> None:
    root, outside = project
    path = root / "recipe.yaml"
    path.write_text(Template(text).safe_substitute(root=root))
    started = time.monotonic()
    with pytest.raises(InputError) as excinfo:
        recipe.load(path)
    assert time.monotonic() - started < 5
    assert _one_line(excinfo.value) == Template(expected).substitute(
        recipe=path, root=root, outside=outside
    )


def test_billion_laughs_fails_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="through its aliases"):
            recipe.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Refused before the aliases are expanded: a few MiB at most, never the gigabytes of the
    # expansion (memory, not time: a busy host makes any time bound flaky).
    assert peak < 4 << 20


def test_a_big_recipe_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: demo\ndescription: '" + "x" * (2 << 20) + "'\n")
    with pytest.raises(InputError) as excinfo:
        recipe.load(path)
    assert _one_line(excinfo.value) == (
        f"{path}: the recipe is more than 1 MiB; move what is data into files it names."
    )
    # /dev/zero never ends: only a bounded read can refuse it.
    endless = tmp_path / "endless.yaml"
    endless.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="is more than 1 MiB"):
        recipe.load(endless)


def test_a_big_include_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text("#" * ((1 << 20) + 1))
    path = tmp_path / "recipe.yaml"
    path.write_text("name: demo\n{% include 'big.yaml' %}\n")
    with pytest.raises(InputError) as excinfo:
        recipe.load(path)
    assert _one_line(excinfo.value) == (
        f"{tmp_path / 'big.yaml'}: the included file is more than 1 MiB; include less."
    )


def test_a_runaway_template_stops_at_the_time_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recipe_render, "RENDER_SECONDS", 0.5)
    path = tmp_path / "loop.yaml"
    path.write_text(
        "name: demo\n"
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}\n"
    )
    handler = signal.getsignal(signal.SIGALRM)
    limit = resource.getrlimit(resource.RLIMIT_AS)
    started = time.monotonic()
    with pytest.raises(InputError) as excinfo:
        recipe.load(path)
    assert time.monotonic() - started < 2
    assert _one_line(excinfo.value) == (
        f"{path}:2: the template is still rendering after 0.5 s; a loop runs too long."
    )
    # Everything the bound took is given back.
    assert signal.getsignal(signal.SIGALRM) is handler
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert resource.getrlimit(resource.RLIMIT_AS) == limit


def test_the_default_time_bound_is_ten_seconds() -> None:
    assert recipe_render.RENDER_SECONDS == 10.0


def test_someone_elses_alarm_survives_a_load(tmp_path: Path) -> None:
    fired: list[int] = []
    old = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        path = tmp_path / "recipe.yaml"
        path.write_text("name: demo\n")
        recipe.load(path)
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.3
        time.sleep(0.5)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_loads_outside_the_main_thread(tmp_path: Path) -> None:
    """No timer there (signals are the main thread's), but the other bounds hold."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("name: demo\n")
    bad.write_text(LAUGHS)
    results: list[object] = []

    def work() -> None:
        results.append(recipe.load(good).name)
        try:
            recipe.load(bad)
        except InputError as e:
            results.append(str(e))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert results[0] == "demo"
    assert "through its aliases" in str(results[1])


# --- the project root ------------------------------------------------------------------------


def test_the_project_is_the_nearest_directory_with_git(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "provisioners").mkdir()
    (tmp_path / "provisioners/step.sh").write_text(STEP)
    (tmp_path / "images/include").mkdir(parents=True)
    (tmp_path / "images/include/part.yaml").write_text("description: from a part\n")
    path = tmp_path / "images/demo.yaml"
    path.write_text(
        "name: demo\n{% include '../images/include/part.yaml' %}\nprovisioners:\n"
        f"  - shell: ../provisioners/step.sh\n    sha256: {STEP_SHA}\n"
    )
    spec = recipe.load(path)
    assert spec.root == tmp_path
    assert spec.recipe.description == "from a part"
    assert spec.files["../provisioners/step.sh"] == (tmp_path / "provisioners/step.sh", STEP_SHA)


def test_without_git_the_project_is_the_recipes_directory(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "step.sh").write_text(STEP)
    path = tmp_path / "images/demo.yaml"
    path.write_text(f"name: demo\nprovisioners:\n  - shell: ../step.sh\n    sha256: {STEP_SHA}\n")
    with pytest.raises(InputError, match=f"leaves the project {tmp_path / 'images'};"):
        recipe.load(path)
    assert recipe.load(path, root=tmp_path).root == tmp_path
    assert recipe.project_root(path) == tmp_path / "images"


def test_a_root_must_hold_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = tmp_path / "a/demo.yaml"
    path.write_text("name: demo\n")
    with pytest.raises(InputError) as excinfo:
        recipe.load(path, root=tmp_path / "b")
    assert _one_line(excinfo.value) == (
        f"{path}: the recipe is not inside its project root {tmp_path / 'b'} (--root)."
    )
    with pytest.raises(InputError) as excinfo:
        recipe.load(path, root=tmp_path / "c")
    assert _one_line(excinfo.value) == f"--root {tmp_path / 'c'}: no such directory."


def test_a_link_inside_the_project_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real.sh").write_text(STEP)
    os.symlink("real.sh", tmp_path / "step.sh")
    path = tmp_path / "demo.yaml"
    path.write_text(f"name: demo\nprovisioners:\n  - shell: step.sh\n    sha256: {STEP_SHA}\n")
    assert recipe.load(path).files["step.sh"] == (tmp_path / "real.sh", STEP_SHA)


# --- where each field is written -------------------------------------------------------------


def test_lines_and_where(tmp_path: Path) -> None:
    (tmp_path / "step.sh").write_text(STEP)
    path = tmp_path / "demo.yaml"
    path.write_text(
        "# a comment\n"
        "name: demo\n"
        "base:\n"
        "  packages:\n"
        "    - nginx\n"
        "provisioners:\n"
        "  - inline: echo hi\n"
        "  - name: step\n"
        "    shell: step.sh\n"
        f"    sha256: {STEP_SHA}\n"
    )
    spec = recipe.load(path)
    assert spec.lines == {
        "name": 2,
        "base": 3,
        "base.packages": 4,
        "base.packages.0": 5,
        "provisioners": 6,
        "provisioners.0": 7,
        "provisioners.0.inline": 7,
        "provisioners.1": 8,
        "provisioners.1.name": 8,
        "provisioners.1.shell": 9,
        "provisioners.1.sha256": 10,
    }
    source = path.resolve()
    assert spec.where("provisioners.1.shell") == f"{source}:9"
    assert spec.where("base.packages.0") == f"{source}:5"
    assert spec.where("base.packages.7") == f"{source}:4"  # the nearest parent written
    assert spec.where("backend.cpus") == str(source)  # nothing of it written


def test_lines_follow_aliases_to_where_the_anchor_is_written(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(
        "name: demo\nvariables: &v\n  motd: hi\nbase:\n  packages: &p\n    - nginx\n"
        "backend: {cpus: 2}\n"
    )
    spec = recipe.load(path)
    assert spec.where("base.packages.0") == f"{path.resolve()}:6"
    assert spec.where("variables.motd") == f"{path.resolve()}:3"
