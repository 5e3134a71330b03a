"""Recipe mistakes in words: a pydantic ValidationError on a recipe turned into the one-line
`FILE:LINE: field: message.` sentence that names where in the YAML the user went wrong, and
the words for what PyYAML refused.

pydantic reports every failure, in the model's field order, in its own terms and at its own
locations (union member tags included); a person needs the first mistake in the file, at the
line they wrote it, said plainly. Whatever of the input a message shows is bounded first: a
recipe may be a megabyte, and a message is one line.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydantic
import yaml

from baker.errors import InputError
from baker.recipe.safety import (
    Allowed,
    Ignore,
    LeakCheck,
    Nightly,
    PerAccel,
    Retention,
    Scan,
    Secret,
)
from baker.recipe.spec import (
    AmiFilter,
    Base,
    Ec2Backend,
    FileUpload,
    LibvirtBackend,
    Recipe,
    ShellFile,
    ShellInline,
    TestFile,
)


def validation_error(
    path: Path,
    data: dict[str, Any],
    root: yaml.Node | None,
    error: pydantic.ValidationError,
    lines: dict[str, int] | None = None,
) -> InputError:
    """The one sentence for a recipe that `Recipe` refused: the first mistake in the file,
    with its line (from `lines`, the field -> line map of the YAML, else found in `root`, the
    node tree of `data`) and field."""
    top = root.start_mark.line + 1 if root is not None else 1
    errors = []
    for err in error.errors():
        loc = _user_loc(err, data)
        # The map, when there is one: walking the tree for each of 20,000 errors is quadratic.
        line = line_of(root, loc) if lines is None else nearest_line(lines, loc, top)
        errors.append((line, loc, err))
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
            return InputError(_located(path, line, loc, f"expected {_one_of(words)}", err))
        err = next(x[2] for x in deepest if x[2]["type"] not in _TYPE_WORDS)
    return InputError(_located(path, line, loc, _message(err, data), err))


def _located(path: Path, line: int, loc: tuple[Any, ...], msg: str, err: Any) -> str:
    field = field_name(loc) or "(top level)"
    if "input" in err and err["type"] not in _NO_INPUT:
        msg = f"{msg} (got {shown(err['input'])})"
    return f"{path}:{line}: {field}: {msg}."


# repr of a big structure is built whole before anything can cut it: this one stops early
# (strings and unknown types are cut to 200 characters, at most 10 items and 3 levels).
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 200
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 10


def shown(value: Any, limit: int = 100) -> str:
    """`value` as a message shows it: its repr, bounded while it is made, on one line, at most
    `limit` characters."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_PLAIN_KEY = re.compile(r"[\w.+-]{1,64}")


def field_name(loc: Iterable[Any]) -> str:
    """A dotted field path (base.packages.1) for a message; a key that is long or not plain
    text is quoted and cut, so no key can stretch a message or break its line."""
    return ".".join(
        p if isinstance(p, str) and _PLAIN_KEY.fullmatch(p) else
        str(p) if isinstance(p, int) else shown(p, 40)
        for p in loc
    )  # fmt: skip


def yaml_problem(error: Any) -> tuple[int | None, str]:
    """The 1-based line and the words (one line, no final stop) of a yaml.MarkedYAMLError."""
    mark = error.problem_mark or error.context_mark
    what = error.problem or error.context or "syntax error"
    if error.problem and error.context and not error.context.startswith("while "):
        what = (
            f"{error.context}, {error.problem}"  # "expected a single document ..., but found ..."
        )
    elif (
        error.problem
        and error.context
        and error.context_mark
        and mark is not None
        and error.context_mark.line != mark.line
    ):
        # "found unexpected end of stream": say where the unfinished thing began.
        what += f" ({error.context} that starts at line {error.context_mark.line + 1})"
    what = " ".join(str(what).split())  # an anchor's name can carry anything; keep one line
    return (mark.line + 1 if mark else None), what if len(what) <= 200 else what[:197] + "..."


_NO_INPUT = {"missing", "extra_forbidden", "provisioner_kind", "parent"}

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
    r"^[A-Z_][A-Z0-9_]{0,63}$": "expected a secret's NAME: upper-case letters, digits and '_'",
    r"^[A-Za-z_][A-Za-z0-9_]{0,127}$": "expected an environment variable's name",
    r"^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$": "expected a vulnerability id like CVE-2024-1234",
    r"^[A-Za-z0-9_.:*?\[\]!-]{1,200}$": (
        "expected a tag or a pattern of tags like release-*: letters, digits, '.', '_', '-', "
        "':' and the wildcards *, ? and [...]"
    ),
}

_PROVISIONER_KINDS = ("shell", "inline", "file")
_PROVISIONER_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "shell": ShellFile,
    "inline": ShellInline,
    "file": FileUpload,
}


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
        case ("secrets", str()):
            return Secret
        case ("leak_check",):
            return LeakCheck
        case ("leak_check", "allow", int()):
            return Allowed
        case ("scan",):
            return Scan
        case ("scan", "ignore", int()):
            return Ignore
        case ("nightly",):
            return Nightly
        case ("nightly", "retention"):
            return Retention
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


def nearest_line(lines: dict[str, int], loc: tuple[Any, ...], default: int) -> int:
    """The line of the deepest field on `loc` that `lines` (Spec.lines) knows."""
    for end in range(len(loc), 0, -1):
        line = lines.get(".".join(map(str, loc[:end])))
        if line is not None:
            return line
    return default


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node on `loc` (the parent, for a missing key)."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            # The last of equal keys is the one that counts: a `<<` merge puts the merged
            # keys before the mapping's own. A bad value is reported where its key stands.
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line = key.start_mark.line + 1
                    child = value
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
