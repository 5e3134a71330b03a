"""baker.recipe.load: every user mistake is one InputError naming file, line and field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from string import Template

import pytest
from support.recipe_files import WriteRecipe

from baker import recipe
from baker.errors import BuildError, InputError
from baker.recipe import messages
from baker.recipe.spec import FileUpload, LibvirtBackend, Recipe, ShellFile, ShellInline

REPO = Path(__file__).resolve().parents[1]

STEP = "#!/bin/sh\necho step\n"
STEP_SHA = hashlib.sha256(STEP.encode()).hexdigest()
PAGE = "<h1>hello</h1>\n"
PAGE_SHA = hashlib.sha256(PAGE.encode()).hexdigest()
WRONG_SHA = "a" * 64
FILES = {"step.sh": STEP, "index.html": PAGE}

# (id, recipe text, --var overrides, expected message). In the message, $recipe is the
# recipe's path, $dir its directory, $recipe_fields the recipe's top-level fields, sorted.
# Files in FILES sit beside the recipe.
BAD: list[tuple[str, str | bytes | None, dict[str, str], str]] = [
    (
        "unknown-top-level-key",
        "name: demo\nfoo: 1\n",
        {},
        "$recipe:2: foo: unknown field (known: $recipe_fields).",
    ),
    (
        "unknown-nested-key",
        "name: demo\nbase:\n  suite: bookworm\n  pakages: [nginx]\n",
        {},
        "$recipe:4: base.pakages: unknown field (did you mean packages?).",
    ),
    (
        "unknown-provisioner-key",
        "name: demo\nprovisioners:\n  - inline: echo hi\n    evn: {A: b}\n",
        {},
        "$recipe:4: provisioners.0.evn: unknown field (did you mean env?).",
    ),
    (
        "wrong-type",
        "name: demo\nbackend:\n  memory_mib: 2048\n  cpus: two\n",
        {},
        "$recipe:4: backend.cpus: expected an integer (got 'two').",
    ),
    (
        "wrong-type-name",
        "name: 12\n",
        {},
        "$recipe:1: name: expected a string (got 12).",
    ),
    (
        "host-key-type-twice",
        "name: demo\nbase:\n  ssh_host_keys: [ed25519, ecdsa, ed25519]\n",
        {},
        "$recipe:3: base.ssh_host_keys: each key type once (got ['ed25519', 'ecdsa', 'ed25519']).",
    ),
    (
        "no-host-key-type",
        "name: demo\nbase:\n  ssh_host_keys: []\n",
        {},
        "$recipe:3: base.ssh_host_keys: at least one key type, or sshd can't start (got []).",
    ),
    (
        "unknown-host-key-type",
        "name: demo\nbase:\n  ssh_host_keys: [dsa]\n",
        {},
        "$recipe:3: base.ssh_host_keys.0: expected 'ed25519', 'ecdsa' or 'rsa' (got 'dsa').",
    ),
    (
        "below-minimum",
        "name: demo\nbase:\n  disk_size_mib: 512\n",
        {},
        "$recipe:3: base.disk_size_mib: must be at least 1024 (got 512).",
    ),
    (
        "not-one-of",
        "name: demo\nbackend:\n  accel: fast\n",
        {},
        "$recipe:3: backend.accel: expected 'auto', 'kvm' or 'tcg' (got 'fast').",
    ),
    (
        "missing-name",
        "description: no name here\nbase:\n  suite: bookworm\n",
        {},
        "$recipe:1: name: required field is missing.",
    ),
    (
        "bad-name-pattern",
        "name: Web Server\n",
        {},
        "$recipe:1: name: expected at most 63 lower-case letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (got 'Web Server').",
    ),
    (
        "bad-package-name",
        "name: demo\nbase:\n  packages: [nginx, Curl]\n",
        {},
        "$recipe:3: base.packages.1: expected a Debian package name (lower-case), optionally "
        "with =VERSION (got 'Curl').",
    ),
    (
        "long-input-is-shortened",
        f"name: {'A' * 150}\n",
        {},
        f"$recipe:1: name: expected at most 63 lower-case letters, digits, '.', '_' or '-', "
        f"starting with a letter or digit (got '{'A' * 96}...).",
    ),
    (
        "provisioner-without-kind",
        "name: demo\nprovisioners:\n  - name: step\n    env: {A: b}\n",
        {},
        "$recipe:3: provisioners.0: a provisioner needs one of the keys shell, inline or file.",
    ),
    (
        "provisioner-with-two-kinds",
        f"name: demo\nprovisioners:\n  - shell: step.sh\n    sha256: {STEP_SHA}\n"
        "    inline: echo hi\n",
        {},
        "$recipe:5: provisioners.0.inline: a provisioner takes only one of the keys shell, "
        "inline or file.",
    ),
    (
        "file-provisioner-relative-dest",
        f"name: demo\nprovisioners:\n  - inline: echo hi\n  - file: index.html\n"
        f"    sha256: {PAGE_SHA}\n    dest: var/www/html/index.html\n",
        {},
        "$recipe:6: provisioners.1.dest: expected an absolute path "
        "(got 'var/www/html/index.html').",
    ),
    (
        "file-provisioner-bad-mode",
        f"name: demo\nprovisioners:\n  - file: index.html\n    sha256: {PAGE_SHA}\n"
        "    dest: /index.html\n    mode: '0999'\n",
        {},
        "$recipe:6: provisioners.0.mode: expected an octal file mode like 0644, quoted "
        "(got '0999').",
    ),
    (
        "file-provisioner-missing-dest",
        f"name: demo\nprovisioners:\n  - file: index.html\n    sha256: {PAGE_SHA}\n",
        {},
        "$recipe:3: provisioners.0.dest: required field is missing.",
    ),
    (
        "missing-referenced-file",
        f"name: demo\nprovisioners:\n  - shell: missing.sh\n    sha256: {STEP_SHA}\n",
        {},
        "$recipe:3: provisioners.0.shell: no such file 'missing.sh' (looked in $dir).",
    ),
    (
        "missing-test-file",
        f"name: demo\ntests:\n  - path: testinfra/test_demo.py\n    sha256: {STEP_SHA}\n",
        {},
        "$recipe:3: tests.0.path: no such file 'testinfra/test_demo.py' (looked in $dir).",
    ),
    (
        "sha256-mismatch",
        # The sha256 key is on line 7, three lines below the file it pins.
        "name: demo\nprovisioners:\n  - name: step\n    shell: step.sh\n    env:\n"
        f"      A: b\n    sha256: {WRONG_SHA}\n",
        {},
        f"$recipe:7: provisioners.0.sha256: step.sh has sha256 {STEP_SHA}, but the recipe pins "
        f"{WRONG_SHA}.",
    ),
    (
        "malformed-sha256",
        "name: demo\nprovisioners:\n  - shell: step.sh\n    sha256: ABCDEF\n",
        {},
        "$recipe:4: provisioners.0.sha256: expected 64 lower-case hex digits (got 'ABCDEF').",
    ),
    (
        "malformed-sha256-upper-case",
        f"name: demo\nprovisioners:\n  - shell: step.sh\n    sha256: {STEP_SHA.upper()}\n",
        {},
        "$recipe:4: provisioners.0.sha256: expected 64 lower-case hex digits "
        f"(got '{STEP_SHA.upper()}').",
    ),
    (
        "boot-budget-per-accel-incomplete",
        "name: demo\nboot_budget_s: {kvm: 15}\n",
        {},
        "$recipe:2: boot_budget_s: give kvm and tcg together, and/or ec2 (got {'kvm': 15}).",
    ),
    (
        "boot-budget-negative",
        "name: demo\nboot_budget_s: -1\n",
        {},
        "$recipe:2: boot_budget_s: must be greater than 0 (got -1).",
    ),
    (
        "boot-budget-not-a-number",
        "name: demo\nboot_budget_s: fast\n",
        {},
        "$recipe:2: boot_budget_s: expected a number or a mapping (got 'fast').",
    ),
    (
        "variable-of-no-allowed-type",
        "name: demo\nvariables:\n  ports: [80, 443]\n",
        {},
        "$recipe:3: variables.ports: expected a string, a boolean, an integer or a number "
        "(got [80, 443]).",
    ),
    (
        "first-error-in-file-order",
        # pydantic checks `name` before `base`; the user reads base's mistake first.
        "base:\n  suite: bookworm\n  arch: arm64\nname: Demo\n",
        {},
        "$recipe:3: base.arch: expected 'amd64' (got 'arm64').",
    ),
    (
        "duplicate-key",
        "name: demo\nprovisioners:\n  - inline: echo one\nprovisioners:\n  - inline: echo two\n",
        {},
        "$recipe:4: provisioners: duplicate key (first given at line 2).",
    ),
    (
        "yaml-syntax-error",
        "name: demo\nbase:\n  suite: bookworm\n   arch: amd64\n",
        {},
        "$recipe:4: not valid YAML: mapping values are not allowed here.",
    ),
    (
        "yaml-unclosed-flow-mapping",
        "name: demo\nbase: {suite: bookworm\n",
        {},
        "$recipe:3: not valid YAML: expected ',' or '}', but got '<stream end>' "
        "(while parsing a flow mapping that starts at line 2).",
    ),
    (
        "yaml-two-documents",
        "name: demo\n---\nname: other\n",
        {},
        "$recipe:2: not valid YAML: expected a single document in the stream, "
        "but found another document.",
    ),
    (
        "jinja2-syntax-error",
        "name: demo\ndescription: x\n{% if %}\n",
        {},
        "$recipe:3: template error: Expected an expression, got 'end of statement block'.",
    ),
    (
        "jinja2-unknown-tag",
        "name: demo\n\n{% endif %}\n",
        {},
        "$recipe:3: template error: Encountered unknown tag 'endif'.",
    ),
    (
        "jinja2-undefined-variable",
        'name: demo\nvariables:\n  motd: hi\ndescription: "{{ colour }}"\n',
        {},
        "$recipe:4: template error: 'colour' is undefined.",
    ),
    (
        "jinja2-expression-raises",
        "name: demo\n\ndescription: '{{ 1 // 0 }}'\n",
        {},
        "$recipe:3: template error: ZeroDivisionError: integer division or modulo by zero.",
    ),
    (
        "jinja2-error-in-included-file",
        "name: demo\n{% include 'snippet.yaml' %}\n",
        {},
        "$dir/snippet.yaml:2: template error: 'suite' is undefined.",
    ),
    (
        "var-undeclared",
        "name: demo\nvariables:\n  motd: hi\n  port: 80\n",
        {"colour": "red"},
        "$recipe: --var colour: the recipe declares no such variable (it declares: motd, port).",
    ),
    (
        "var-undeclared-none-declared",
        "name: demo\n",
        {"colour": "red"},
        "$recipe: --var colour: the recipe declares no such variable (it declares: none).",
    ),
    (
        "var-not-an-int",
        "name: demo\nvariables:\n  port: 8080\n",
        {"port": "http"},
        "$recipe: --var port=http: expected an integer like the default (8080).",
    ),
    (
        "var-not-a-bool",
        "name: demo\nvariables:\n  debug: false\n",
        {"debug": "maybe"},
        "$recipe: --var debug=maybe: expected true or false like the default (False).",
    ),
    (
        "not-a-mapping",
        "- name: demo\n",
        {},
        "$recipe: a recipe is a YAML mapping of fields (at least `name`), not a list.",
    ),
    (
        "empty-document",
        "# nothing yet\n",
        {},
        "$recipe: a recipe is a YAML mapping of fields (at least `name`), not an empty document.",
    ),
    (
        "not-utf8",
        b"name: demo\ndescription: caf\xe9\n",
        {},
        "$recipe:2: the recipe is not UTF-8 text (byte 27 is 0xe9).",
    ),
    (
        "missing-recipe-file",
        None,
        {},
        "$recipe: cannot read the recipe: No such file or directory.",
    ),
]


@pytest.mark.parametrize(
    ("text", "overrides", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_bad_recipe_message(
    tmp_path: Path, text: str | bytes | None, overrides: dict[str, str], expected: str
) -> None:
    for rel, content in FILES.items():
        (tmp_path / rel).write_text(content)
    (tmp_path / "snippet.yaml").write_text(
        "description: from a snippet\nbase: {suite: {{ suite }}}\n"
    )
    path = tmp_path / "recipe.yaml"
    if text is not None:
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    with pytest.raises(InputError) as excinfo:
        recipe.load(path, overrides)

    # An InputError (YAML and render bounds have their own subclasses), never a BuildError.
    assert isinstance(excinfo.value, InputError)
    assert excinfo.value.exit_code == 2
    fields = ", ".join(sorted(Recipe.model_fields))
    assert {"name", "base", "backend", "provisioners", "tests", "variables"} <= set(
        Recipe.model_fields
    )
    assert str(excinfo.value) == Template(expected).substitute(
        recipe=path, dir=tmp_path, recipe_fields=fields
    )


def test_every_spec_pattern_has_a_hint() -> None:
    """A pattern added to baker/recipe/spec.py without words in messages.PATTERN_HINTS would show
    users a raw regular expression."""

    def patterns(node: object) -> set[str]:
        if isinstance(node, dict):
            found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
            return found.union(*(patterns(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(patterns(v) for v in node))
        return set()

    in_spec = patterns(Recipe.model_json_schema())
    assert len(in_spec) >= 5
    assert in_spec <= set(messages.PATTERN_HINTS)


# --- what a good recipe gives -------------------------------------------------------------

VARIABLES = """\
name: demo
description: "{{ motd }}"
variables:
  motd: baked by baker
  cpus: 2
  debug: true
  ratio: 0.5
backend:
  cpus: {{ cpus }}
provisioners:
  - inline: echo {{ motd }}
{%- if debug %}
  - name: debug-step
    inline: echo debug
{%- endif %}
"""


def test_variable_defaults_render(write_recipe: WriteRecipe) -> None:
    spec = recipe.load(write_recipe(VARIABLES))
    assert spec.variables == {"motd": "baked by baker", "cpus": 2, "debug": True, "ratio": 0.5}
    assert spec.recipe.description == "baked by baker"
    assert isinstance(spec.recipe.backend, LibvirtBackend)
    assert spec.recipe.backend.cpus == 2
    steps = spec.recipe.provisioners
    assert [s.inline for s in steps if isinstance(s, ShellInline)] == [
        "echo baked by baker",
        "echo debug",
    ]


def test_overrides_render_and_are_coerced_to_the_defaults_type(write_recipe: WriteRecipe) -> None:
    path = write_recipe(VARIABLES)
    spec = recipe.load(path, {"motd": "hello", "cpus": "4", "debug": "false", "ratio": "2"})

    assert spec.variables == {"motd": "hello", "cpus": 4, "debug": False, "ratio": 2.0}
    assert type(spec.variables["cpus"]) is int
    assert type(spec.variables["debug"]) is bool
    assert type(spec.variables["ratio"]) is float
    assert spec.recipe.description == "hello"
    assert isinstance(spec.recipe.backend, LibvirtBackend)
    assert spec.recipe.backend.cpus == 4
    # "false" as a string would be true in the template: the debug step must be gone.
    assert len(spec.recipe.provisioners) == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [("true", True), ("yes", True), ("1", True), ("FALSE", False), ("no", False), ("0", False)],
)
def test_bool_override_spellings(write_recipe: WriteRecipe, given: str, expected: bool) -> None:
    spec = recipe.load(write_recipe(VARIABLES), {"debug": given})
    assert spec.variables["debug"] is expected


def test_digests(write_recipe: WriteRecipe) -> None:
    path = write_recipe(VARIABLES)
    plain = recipe.load(path)
    overridden = recipe.load(path, {"motd": "other"})

    assert plain.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert overridden.digest == plain.digest  # the same file
    assert plain.rendered_digest != overridden.rendered_digest  # rendered differently
    assert plain.source == path.resolve()


def test_files_are_resolved_relative_to_the_recipe_and_pinned(
    write_recipe: WriteRecipe, tmp_path: Path
) -> None:
    text = f"""\
name: demo
provisioners:
  - shell: ../provisioners/step.sh
    sha256: {STEP_SHA}
  - file: ../provisioners/files/index.html
    sha256: {PAGE_SHA}
    dest: /var/www/html/index.html
tests:
  - path: testinfra/test_demo.py
    sha256: {STEP_SHA}
"""
    path = write_recipe(
        text,
        files={
            "provisioners/step.sh": STEP,
            "provisioners/files/index.html": PAGE,
            "images/testinfra/test_demo.py": STEP,
        },
        name="images/demo.yaml",
    )
    # tmp_path holds no .git: without root= the project would be images/ alone.
    spec = recipe.load(path, root=tmp_path)
    assert spec.root == tmp_path.resolve()

    assert spec.files == {
        "../provisioners/step.sh": (tmp_path / "provisioners/step.sh", STEP_SHA),
        "../provisioners/files/index.html": (tmp_path / "provisioners/files/index.html", PAGE_SHA),
        "testinfra/test_demo.py": (tmp_path / "images/testinfra/test_demo.py", STEP_SHA),
    }
    assert all(p.is_absolute() for p, _ in spec.files.values())
    step, upload = spec.recipe.provisioners
    assert isinstance(step, ShellFile) and isinstance(upload, FileUpload)
    assert spec.read("../provisioners/step.sh") == STEP.encode()
    assert spec.step_name(0, step) == "01-step"
    assert spec.step_name(1, upload) == "02-index"


def test_read_rechecks_the_pin(write_recipe: WriteRecipe, tmp_path: Path) -> None:
    path = write_recipe(
        f"name: demo\nprovisioners:\n  - shell: step.sh\n    sha256: {STEP_SHA}\n",
        files={"step.sh": STEP},
    )
    spec = recipe.load(path)
    assert spec.read("step.sh") == STEP.encode()

    (tmp_path / "step.sh").write_text(STEP + "rm -rf /\n")
    with pytest.raises(BuildError) as excinfo:
        spec.read("step.sh")
    assert excinfo.value.exit_code == 1
    assert str(excinfo.value) == (
        f"{tmp_path / 'step.sh'} changed during the build (it no longer matches its pin)."
    )

    (tmp_path / "step.sh").unlink()
    with pytest.raises(BuildError) as excinfo:
        spec.read("step.sh")
    assert str(excinfo.value) == (
        f"{tmp_path / 'step.sh'} can no longer be read during the build: No such file or directory."
    )


def test_spec_is_frozen(write_recipe: WriteRecipe) -> None:
    spec = recipe.load(write_recipe("name: demo\n"))
    with pytest.raises(Exception, match="frozen"):
        spec.recipe.name = "other"  # type: ignore[misc]
    assert spec.recipe.base.disk_size_mib == 2048
    assert isinstance(spec.recipe.backend, LibvirtBackend)
    assert spec.recipe.backend.accel == "auto"


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("motd=hello", ("motd", "hello")),
        ("motd=a=b", ("motd", "a=b")),
        ("motd=", ("motd", "")),
        ("admin_user=ops team", ("admin_user", "ops team")),
    ],
)
def test_parse_var(arg: str, expected: tuple[str, str]) -> None:
    assert recipe.parse_var(arg) == expected


@pytest.mark.parametrize("arg", ["motd", "=hello", "1st=x", "admin-user=x", "a b=c"])
def test_parse_var_errors(arg: str) -> None:
    with pytest.raises(InputError) as excinfo:
        recipe.parse_var(arg)
    assert excinfo.value.exit_code == 2
    assert str(excinfo.value) == f"--var {arg!r}: expected KEY=VALUE with KEY a plain name."


def test_real_base_recipe_loads() -> None:
    spec = recipe.load(REPO / "images/debian-12-base.yaml")
    assert spec.name == "debian-12-base"
    assert spec.variables == {"motd": "baked by baker"}
    (motd,) = spec.recipe.provisioners
    assert isinstance(motd, ShellInline)
    assert "baked by baker (debian-12-base)" in motd.inline
    assert set(spec.files) == {"testinfra/test_base.py"}
    assert spec.files["testinfra/test_base.py"][0] == REPO / "images/testinfra/test_base.py"


def test_the_debian_13_base_differs_from_the_12_only_in_suite_and_name() -> None:
    twelve = recipe.load(REPO / "images/debian-12-base.yaml")
    thirteen = recipe.load(REPO / "images/debian-13-base.yaml")
    assert thirteen.name == "debian-13-base" and thirteen.recipe.base.suite == "trixie"
    assert thirteen.recipe.base.model_dump() == {
        **twelve.recipe.base.model_dump(),
        "suite": "trixie",
    }
    assert set(thirteen.files) == set(twelve.files)


def test_the_layered_example_recipes_load() -> None:
    base = recipe.load(REPO / "images/org-base.yaml")
    assert base.recipe.base.image is None and len(base.recipe.provisioners) == 3
    app = recipe.load(REPO / "images/org-app.yaml", {"org_base_sha256": "0" * 64})
    assert app.recipe.base.image == "../out/org-base" and app.recipe.base.sha256 == "0" * 64
    assert app.parent == REPO / "out/org-base" and app.trust == REPO / "keys/baker.pub"
    assert set(app.files) == {f"testinfra/test_{n}.py" for n in ("base", "org", "org_app")}
    # Without the parent's digest, the recipe says which field wants it.
    with pytest.raises(InputError, match=r"org-app.yaml:17: base.sha256: "):
        recipe.load(REPO / "images/org-app.yaml")


def test_real_web_recipe_loads_and_takes_overrides() -> None:
    path = REPO / "images/debian-12-web.yaml"
    spec = recipe.load(path)
    assert spec.name == "debian-12-web"
    assert spec.recipe.base.packages == ("nginx",)
    assert len(spec.recipe.provisioners) == 8
    assert "../provisioners/create-user.sh" in spec.files
    assert all(p.is_file() for p, _ in spec.files.values())
    admin = spec.recipe.provisioners[1]
    assert isinstance(admin, ShellFile) and admin.env == {"USER_NAME": "web-admin"}

    other = recipe.load(path, {"admin_user": "ops"})
    admin = other.recipe.provisioners[1]
    assert isinstance(admin, ShellFile) and admin.env == {"USER_NAME": "ops"}
