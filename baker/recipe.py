"""Reading a recipe: jinja2 render, YAML parse, validation into the frozen Spec, file pins.

Every user mistake becomes one InputError naming the file, the line and the field at fault.
"""

from __future__ import annotations

import difflib
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
from baker.spec import (
    AmiFilter,
    Base,
    Ec2Backend,
    FileUpload,
    LibvirtBackend,
    PerAccel,
    Recipe,
    ShellFile,
    ShellInline,
    Spec,
    TestFile,
    VarValue,
)


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
        elif e.problem and e.context and e.context_mark and e.context_mark.line != mark.line:
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
        errors = []
        for err in e.errors():
            loc = _user_loc(err, data)
            errors.append((_line_of(root, loc), loc, err))
    # The first mistake in the file, not in the model's field order.
    _, first, _ = min(errors, key=lambda x: x[0])
    # A union (boot_budget_s, a variable's value) fails once per member, all at one place:
    # the member that got furthest tells most; if none got past the type, name them all.
    related = [x for x in errors if x[1][: len(first)] == first or first[: len(x[1])] == x[1]]
    depth = max(len(x[1]) for x in related)
    deepest = [x for x in related if len(x[1]) == depth]
    line, loc, err = deepest[0]
    if len(deepest) > 1:
        kinds = [_TYPE_WORDS.get(x[2]["type"], "") for x in deepest]
        if all(kinds):
            words = [_IN_A_LIST.get(k, k) for k in dict.fromkeys(kinds)]
            raise InputError(_located(path, line, loc, f"expected {_one_of(words)}", err)) from None
        err = next(x[2] for x in deepest if x[2]["type"] not in _TYPE_WORDS)
    raise InputError(_located(path, line, loc, _message(err, data), err)) from None


def _located(path: Path, line: int, loc: tuple[Any, ...], msg: str, err: Any) -> str:
    field = ".".join(str(p) for p in loc) or "(top level)"
    if "input" in err and err["type"] not in _NO_INPUT:
        got = repr(err["input"])
        msg = f"{msg} (got {got if len(got) <= 100 else got[:97] + '...'})"
    return f"{path}:{line}: {field}: {msg}."


_NO_INPUT = {"missing", "extra_forbidden", "provisioner_kind"}

# What a type error expects, in words (pydantic's own: "Input should be a valid integer, unable
# to parse string as an integer").
_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}
_IN_A_LIST = {"true or false": "a boolean"}

# The spec's patterns (baker/spec.py), said the way a person would.
PATTERN_HINTS = {
    r"^[0-9a-f]{64}$": "expected 64 lower-case hex digits",
    r"^[a-z0-9][a-z0-9._-]{0,62}$": (
        "expected at most 63 lower-case letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    ),
    r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$": (
        "expected a Debian package name (lower-case), optionally with =VERSION"
    ),
    r"^0?[0-7]{3,4}$": "expected an octal file mode like 0644, quoted",
    r"^/[^\x00]*$": "expected an absolute path",
    r"^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$": "expected USER or USER:GROUP",
}

_PROVISIONER_KINDS = ("shell", "inline", "file")
_PROVISIONER_MODELS = {"shell": ShellFile, "inline": ShellInline, "file": FileUpload}


def _one_of(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _message(err: Any, data: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field(err["loc"], data)
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return PATTERN_HINTS.get(pattern, f"expected text matching {pattern}")
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    bounds = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in bounds:
        # Field(gt=0) on a float reads "0.0"; a person wrote 0.
        limits = {
            k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()
        }
        return bounds[kind].format(**limits)
    return str(err["msg"])


def _unknown_field(raw_loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    *parent, name = raw_loc
    if parent and parent[0] == "provisioners" and name in _PROVISIONER_KINDS:
        return f"a provisioner takes only one of the keys {_one_of(list(_PROVISIONER_KINDS))}"
    model = _model_at(tuple(parent))
    if model is None:
        return "unknown field"
    known = sorted(model.model_fields)
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        return f"unknown field (did you mean {close[0]}?)"
    return f"unknown field (known: {', '.join(known)})"


def _model_at(raw_loc: tuple[Any, ...]) -> type[pydantic.BaseModel] | None:
    """The model whose fields sit at a pydantic location, for the known-fields hint."""
    match raw_loc:
        case ():
            return Recipe
        case ("base",):
            return Base
        case ("backend",) | ("backend", "libvirt"):
            return LibvirtBackend
        case ("backend", "ec2"):
            return Ec2Backend
        case ("backend", "ec2", "ami_filter"):
            return AmiFilter
        case ("provisioners", int(), str(kind)):
            return _PROVISIONER_MODELS.get(kind)
        case ("tests", int()):
            return TestFile
        case ("boot_budget_s", "PerAccel"):
            return PerAccel
    return None


def _user_loc(err: Any, data: Any) -> tuple[Any, ...]:
    """pydantic's location as it reads in the YAML: without the tags it gives union members
    ('provisioners', 0, 'shell', 'dest'; 'boot_budget_s', 'constrained-float'), which are
    told apart from the user's own keys by not being in the input."""
    loc = err["loc"]
    out: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        if i == 2 and loc[0] == "provisioners" and isinstance(loc[1], int):
            continue  # the provisioner's kind tag, which is also one of its keys
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif not (i == len(loc) - 1 and err["type"] == "missing"):
            continue  # a union member's tag
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
            pin = (*loc[:-1], "sha256")
            where = f"{path}:{_line_of(root, pin)}"
            raise InputError(
                f"{where}: {'.'.join(str(p) for p in pin)}: {rel} has sha256 {actual}, "
                f"but the recipe pins {expected}."
            )
        files[rel] = (target, actual)
    return files
