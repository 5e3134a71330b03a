"""Reading a recipe: jinja2 render, YAML parse, validation into the frozen Spec, file pins.

Every user mistake becomes one InputError naming the file, the line and the field at fault.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pydantic
import yaml

from baker.errors import InputError
from baker.hashing import sha256_file
from baker.spec import FileUpload, Recipe, ShellFile, Spec, VarValue


def load(path: Path, overrides: Mapping[str, str] | None = None) -> Spec:
    overrides = dict(overrides or {})
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the recipe: {e.strerror}.") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the recipe is not UTF-8 text (byte {e.start}).") from None

    variables = _variables(path, text, overrides)
    rendered = _render(path, text, variables)
    data, root = _parse(path, rendered)
    recipe = _validate(path, data, root)
    files = _pinned_files(path, recipe, root)
    return Spec(
        recipe=recipe,
        source=path.resolve(),
        digest=hashlib.sha256(raw).hexdigest(),
        rendered_digest=hashlib.sha256(rendered.encode()).hexdigest(),
        variables=variables,
        files=files,
    )


def parse_var(arg: str) -> tuple[str, str]:
    """`--var KEY=VALUE` as given on the command line."""
    key, sep, value = arg.partition("=")
    if not sep or not key.isidentifier():
        raise InputError(f"--var {arg!r}: expected KEY=VALUE with KEY a plain name.")
    return key, value


def _variables(path: Path, text: str, overrides: dict[str, str]) -> dict[str, VarValue]:
    """The recipe's declared defaults under `variables:`, overridden by --var."""
    # A first, lenient render just to read the `variables:` block; a recipe too broken for it
    # is reported by the strict render that follows.
    try:
        env = _environment(path, jinja2.ChainableUndefined)
        lenient = env.from_string(text).render(**overrides)
        declared = (yaml.safe_load(lenient) or {}).get("variables") or {}
    except Exception:
        return dict(overrides)
    if not isinstance(declared, dict):
        return dict(overrides)
    result: dict[str, VarValue] = dict(declared)
    for key, value in overrides.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InputError(
                f"{path}: --var {key}: the recipe declares no such variable (it declares: {known})."
            )
        result[key] = _coerce(path, key, value, declared[key])
    return result


def _coerce(path: Path, key: str, value: str, default: Any) -> VarValue:
    """Give an override the type of the variable's default, so templates compare alike."""
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "yes", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        kind = type(default).__name__
        raise InputError(
            f"{path}: --var {key}={value}: expected a {kind} like the default."
        ) from None
    return value


def _environment(path: Path, undefined: type[jinja2.Undefined]) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent.resolve())),
        undefined=undefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render(path: Path, text: str, variables: Mapping[str, VarValue]) -> str:
    env = _environment(path, jinja2.StrictUndefined)
    try:
        return env.from_string(text).render(**variables)
    except jinja2.TemplateSyntaxError as e:
        raise InputError(f"{path}:{e.lineno}: template error: {e.message}.") from None
    except jinja2.TemplateError as e:
        line = _template_line(e)
        where = f"{path}:{line}" if line else str(path)
        raise InputError(f"{where}: template error: {e.message or e}.") from None


def _template_line(error: BaseException) -> int | None:
    # jinja2 rewrites tracebacks so that the template's own lines appear as frames.
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == "<template>"]
    return frames[-1].lineno if frames else None


def _parse(path: Path, rendered: str) -> tuple[Any, yaml.Node | None]:
    try:
        root = yaml.compose(rendered, Loader=yaml.SafeLoader)
        data = yaml.safe_load(rendered)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{path}{line}: not valid YAML: {e.problem or e.context}.") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe is a YAML mapping with at least `name` and `base`.")
    return data, root


def _validate(path: Path, data: dict[str, Any], root: yaml.Node | None) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        loc = _user_loc(err["loc"])
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("provisioner_kind",):
            msg = f"{msg} (got {err['input']!r})"
        raise InputError(f"{path}:{line}: {field}: {msg}.") from None


def _user_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-member tags so the location reads like the YAML."""
    tags = {"shell", "inline", "file"}
    out: list[Any] = []
    for i, part in enumerate(loc):
        # ('provisioners', 0, 'file', 'dest'): the tag follows an index inside `provisioners`.
        if part in tags and i >= 2 and loc[0] == "provisioners" and isinstance(loc[i - 1], int):
            continue
        if isinstance(part, str) and part.startswith(("float", "function-")):
            continue  # union branches of boot_budget_s
        out.append(part)
    return tuple(out)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node on `loc` (the parent, for a missing key)."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # A bad value is reported where its key stands.
                    line = key.start_mark.line + 1
                    child = value
                    break
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _pinned_files(
    path: Path, recipe: Recipe, root: yaml.Node | None
) -> dict[str, tuple[Path, str]]:
    """Resolve every file the recipe names, relative to the recipe, and check its sha256 pin."""
    here = path.parent.resolve()
    pinned: list[tuple[tuple[Any, ...], str, str]] = []
    for i, step in enumerate(recipe.provisioners):
        if isinstance(step, ShellFile | FileUpload):
            key = "shell" if isinstance(step, ShellFile) else "file"
            pinned.append((("provisioners", i, key), step.path, step.sha256))
    for i, test in enumerate(recipe.tests):
        pinned.append((("tests", i, "path"), test.path, test.sha256))

    files: dict[str, tuple[Path, str]] = {}
    for loc, rel, expected in pinned:
        field = ".".join(str(p) for p in loc)
        where = f"{path}:{_line_of(root, loc)}"
        target = (here / rel).resolve()
        if not target.is_file():
            raise InputError(f"{where}: {field}: no such file {rel!r} (looked in {here}).")
        actual = sha256_file(target)
        if actual != expected:
            where = f"{path}:{_line_of(root, (*loc[:-1], 'sha256'))}"
            raise InputError(
                f"{where}: {field}: {rel} has sha256 {actual}, but the recipe pins {expected}."
            )
        files[rel] = (target, actual)
    return files
