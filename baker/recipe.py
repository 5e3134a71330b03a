"""Reading a recipe: jinja2 render, YAML parse, validation into the frozen Spec, file pins.

Every user mistake becomes one InputError naming the file, the line and the field at fault;
recipe_errors finds the words for what the validation refused.
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
from baker.recipe_errors import PATTERN_HINTS, line_of, validation_error
from baker.spec import FileUpload, Recipe, ShellFile, Spec, VarValue

# PATTERN_HINTS lives with the other words for mistakes in recipe_errors, and is named here
# too, where spec.py's docstrings and the tests look for it; InputError, for callers that
# raise it as recipe.InputError.
__all__ = ["PATTERN_HINTS", "InputError", "load", "parse_var"]


def load(path: Path, overrides: Mapping[str, str] | None = None) -> Spec:
    overrides = dict(overrides or {})
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the recipe: {e.strerror}.") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{path}:{line}: the recipe is not UTF-8 text (byte {e.start} is {raw[e.start]:#04x})."
        ) from None

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
        kind = _KIND_OF_DEFAULT[type(default)]
        raise InputError(
            f"{path}: --var {key}={value}: expected {kind} like the default ({default!r})."
        ) from None
    return value


_KIND_OF_DEFAULT = {bool: "true or false", int: "an integer", float: "a number"}


class _Loader(jinja2.FileSystemLoader):
    """Remembers the files `{% include %}` read, to tell their errors from the recipe's own."""

    def __init__(self, searchpath: str) -> None:
        super().__init__(searchpath)
        self.files: set[str] = set()

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        source, filename, uptodate = super().get_source(environment, template)
        self.files.add(filename)
        return source, filename, uptodate


def _environment(path: Path, undefined: type[jinja2.Undefined]) -> jinja2.Environment:
    return jinja2.Environment(
        loader=_Loader(str(path.parent.resolve())),
        undefined=undefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render(path: Path, text: str, variables: Mapping[str, VarValue]) -> str:
    env = _environment(path, jinja2.StrictUndefined)
    try:
        return env.from_string(text).render(**variables)
    except jinja2.TemplateSyntaxError as e:
        # e.filename is set when the error is in a file the recipe includes.
        where = f"{e.filename or path}:{e.lineno}"
        raise InputError(f"{where}: template error: {_sentence(e.message or str(e))}") from None
    except Exception as e:
        # Undefined names, and whatever an expression raises ({{ 1 // 0 }}, {{ "a" + 1 }}).
        assert isinstance(env.loader, _Loader)
        where = _template_where(e, path, env.loader.files)
        what = e.message if isinstance(e, jinja2.TemplateError) else f"{type(e).__name__}: {e}"
        raise InputError(f"{where}: template error: {_sentence(what or str(e))}") from None


def _sentence(text: str) -> str:
    return text.rstrip(". ") + "."


def _template_where(error: BaseException, path: Path, included: set[str]) -> str:
    # jinja2 rewrites tracebacks so that the templates' own lines appear as frames: the
    # recipe's as "<template>", an included file's under its own name.
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == "<template>":
            return f"{path}:{frame.lineno}"
        if frame.filename in included:
            return f"{frame.filename}:{frame.lineno}"
    return str(path)


def _parse(path: Path, rendered: str) -> tuple[Any, yaml.Node | None]:
    try:
        root = yaml.compose(rendered, Loader=yaml.SafeLoader)
        data = yaml.safe_load(rendered)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        what = e.problem or e.context or "syntax error"
        if e.problem and e.context and not e.context.startswith("while "):
            what = f"{e.context}, {e.problem}"  # "expected a single document ..., but found ..."
        elif (
            e.problem
            and e.context
            and e.context_mark
            and mark is not None
            and e.context_mark.line != mark.line
        ):
            # "found unexpected end of stream": say where the unfinished thing began.
            what += f" ({e.context} that starts at line {e.context_mark.line + 1})"
        raise InputError(f"{path}{line}: not valid YAML: {_sentence(what)}") from None
    if not isinstance(data, dict):
        got = "an empty document" if data is None else f"a {_YAML_KIND.get(type(data), 'value')}"
        raise InputError(
            f"{path}: a recipe is a YAML mapping of fields (at least `name`), not {got}."
        )
    _check_duplicates(path, root)
    return data, root


_YAML_KIND = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def _check_duplicates(path: Path, root: yaml.Node | None) -> None:
    """YAML loaders keep the last of two equal keys without a word: a second `provisioners:`
    would silently drop the first. A recipe must say each thing once."""
    visited: set[int] = set()  # an alias can make the node graph cyclic

    def check(node: yaml.Node, loc: tuple[Any, ...]) -> None:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None:
                    line = key.start_mark.line + 1
                    if name in seen:
                        field = ".".join(str(p) for p in (*loc, name))
                        raise InputError(
                            f"{path}:{line}: {field}: duplicate key "
                            f"(first given at line {seen[name]})."
                        )
                    seen[name] = line
                check(value, (*loc, name))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                check(item, (*loc, i))

    if root is not None:
        check(root, ())


def _validate(path: Path, data: dict[str, Any], root: yaml.Node | None) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as e:
        raise validation_error(path, data, root, e) from None


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
        where = f"{path}:{line_of(root, loc)}"
        target = (here / rel).resolve()
        if not target.is_file():
            raise InputError(f"{where}: {field}: no such file {rel!r} (looked in {here}).")
        actual = sha256_file(target)
        if actual != expected:
            pin = (*loc[:-1], "sha256")
            where = f"{path}:{line_of(root, pin)}"
            raise InputError(
                f"{where}: {'.'.join(str(p) for p in pin)}: {rel} has sha256 {actual}, "
                f"but the recipe pins {expected}."
            )
        files[rel] = (target, actual)
    return files
