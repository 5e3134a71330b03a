"""Reading a recipe: jinja2 render, YAML parse, validation into the frozen Spec, file pins.

Every user mistake becomes one InputError naming the file, the line and the field at fault;
recipe_errors finds the words for what the validation refused. A recipe is untrusted input
that runs as a template, so each stage is bounded: the file's size, the render's output, time
and memory (a sandboxed jinja2), the YAML's nesting and what its aliases expand to; and every
file it names, includes too, must lie inside its project (project_root).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pydantic
import yaml

from baker.errors import InputError
from baker.hashing import sha256_file
from baker.recipe import render as recipe_render
from baker.recipe.bounded import decode, parse_yaml, read_limited
from baker.recipe.messages import PATTERN_HINTS, field_name, line_of, shown, validation_error
from baker.recipe.render import MAX_RECIPE_BYTES, Outside, RenderLimit, inside, render
from baker.recipe.spec import (
    RECIPE_PARENT,
    FileUpload,
    Recipe,
    ShellFile,
    Spec,
    VarValue,
    is_cloud_url,
    is_reference,
)

# PATTERN_HINTS lives with the other words for mistakes in recipe_errors, and is named here
# too, where spec.py's docstrings and the tests look for it; InputError, for callers that
# raise it as recipe.InputError.
__all__ = ["PATTERN_HINTS", "InputError", "load", "parse_var", "project_root"]


def load(path: Path, overrides: Mapping[str, str] | None = None, root: Path | None = None) -> Spec:
    """Render, parse, validate and pin the recipe at `path`. `root` is the project the recipe
    may name files in (--root); by default the one project_root finds."""
    overrides = dict(overrides or {})
    raw = read_limited(path, MAX_RECIPE_BYTES, "recipe", "move what is data into files it names")
    text = decode(path, raw, "recipe")
    project = project_root(path, root)
    deadline = time.monotonic() + recipe_render.RENDER_SECONDS
    variables = _variables(path, project, text, overrides, deadline)
    rendered = render(path, project, text, variables, jinja2.StrictUndefined, deadline)
    parsed = parse_yaml(path, rendered)
    if not isinstance(parsed.data, dict):
        data = parsed.data
        got = "an empty document" if data is None else f"a {_YAML_KIND.get(type(data), 'value')}"
        raise InputError(
            f"{path}: a recipe is a YAML mapping of fields (at least `name`), not {got}."
        )
    recipe = _validate(path, parsed.data, parsed.node, parsed.lines)
    _secrets_defined(path, recipe, parsed.node)
    parent_ref = _reference(recipe.base.image)
    parent_recipe = _parent_recipe(path, project, recipe.base.image, parsed.node)
    local_parent = cloud_image = None
    if recipe.base.image is not None and is_cloud_url(recipe.base.image):
        cloud_image = recipe.base.image
    elif not (parent_ref or parent_recipe):
        local_parent = _named(path, project, recipe.base.image, ("base", "image"), parsed.node)
    if local_parent is not None and local_parent.is_file():
        # A file, not an artifact directory: a vendor's cloud image, trusted by its pin alone.
        if recipe.base.trust is not None:
            where = f"{path}:{line_of(parsed.node, ('base', 'trust'))}"
            raise InputError(
                f"{where}: base.trust: a cloud image has no signature: leave trust out."
            )
        local_parent, cloud_image = None, str(local_parent)
    if recipe.base.capture == "as-is" and cloud_image is None:
        where = f"{path}:{line_of(parsed.node, ('base', 'capture'))}"
        raise InputError(
            f"{where}: base.capture: as-is takes a vendor's cloud image as it is; base.image "
            "names none (a URL, or an image file in the project)."
        )
    return Spec(
        recipe=recipe,
        source=path.resolve(),
        digest=hashlib.sha256(raw).hexdigest(),
        rendered_digest=hashlib.sha256(rendered.encode()).hexdigest(),
        variables=variables,
        files=_pinned_files(path, project, recipe, parsed.node),
        root=project,
        lines=parsed.lines,
        parent=local_parent,
        parent_ref=parent_ref,
        parent_recipe=parent_recipe,
        cloud_image=cloud_image,
        trust=_named(path, project, recipe.base.trust, ("base", "trust"), parsed.node),
    )


def parse_var(arg: str) -> tuple[str, str]:
    """`--var KEY=VALUE` as given on the command line."""
    key, sep, value = arg.partition("=")
    if not sep or not key.isidentifier():
        raise InputError(f"--var {arg!r}: expected KEY=VALUE with KEY a plain name.")
    return key, value


def parse_vars(args: list[str] | None) -> dict[str, str]:
    """Every `--var KEY=VALUE` given, the last one winning for a key given twice."""
    return dict(parse_var(a) for a in args or [])


def project_root(recipe: Path, root: Path | None = None) -> Path:
    """The directory a recipe may name files in: `root` when given, else the nearest directory
    at or above the recipe's own that holds `.git`, else the recipe's own directory."""
    here = recipe.parent.resolve()
    if root is None:
        return next((d for d in (here, *here.parents) if (d / ".git").exists()), here)
    top = root.resolve()
    if not top.is_dir():
        raise InputError(f"--root {root}: no such directory.")
    if not here.is_relative_to(top):
        raise InputError(f"{recipe}: the recipe is not inside its project root {top} (--root).")
    return top


def _variables(
    path: Path, project: Path, text: str, overrides: dict[str, str], deadline: float
) -> dict[str, VarValue]:
    """The recipe's declared defaults under `variables:`, overridden by --var."""
    # A first, lenient render just to read the `variables:` block; a recipe too broken for it
    # is reported by the strict render that follows. A bound it hits is reported now: the
    # strict render would only hit it again.
    try:
        lenient = render(path, project, text, overrides, jinja2.ChainableUndefined, deadline)
        data = parse_yaml(path, lenient).data
    except RenderLimit:
        raise
    except InputError:
        return dict(overrides)
    if not isinstance(data, dict):
        return dict(overrides)
    declared = data.get("variables") or {}
    if not isinstance(declared, dict):
        return dict(overrides)
    result: dict[str, VarValue] = dict(declared)
    for key, value in overrides.items():
        if key not in declared:
            known = ", ".join(sorted(map(str, declared))) or "none"
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
            f"{path}: --var {key}={value}: expected {kind} like the default ({shown(default)})."
        ) from None
    return value


_KIND_OF_DEFAULT = {bool: "true or false", int: "an integer", float: "a number"}


_YAML_KIND = {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def _validate(
    path: Path, data: dict[str, Any], root: yaml.Node | None, lines: dict[str, int]
) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except pydantic.ValidationError as e:
        raise validation_error(path, data, root, e, lines) from None


def _secrets_defined(path: Path, recipe: Recipe, root: yaml.Node | None) -> None:
    for i, step in enumerate(recipe.provisioners):
        for j, name in enumerate(getattr(step, "secrets", ())):
            if name not in recipe.secrets:
                loc = ("provisioners", i, "secrets", j)
                raise InputError(
                    f"{path}:{line_of(root, loc)}: {field_name(loc)}: no secret {name} in "
                    "secrets: (define it there, with env: or file:)."
                )


def _named(
    path: Path, project: Path, rel: str | None, loc: tuple[Any, ...], root: yaml.Node | None
) -> Path | None:
    """A path the recipe names outside its pinned files (a parent image's directory, a trust
    key), resolved relative to the recipe and inside its project; whether it is there is for
    its user to say."""
    if rel is None:
        return None
    try:
        target = inside(path.parent.resolve(), rel, project)
    except Outside as e:
        raise InputError(f"{path}:{line_of(root, loc)}: {field_name(loc)}: {e}.") from None
    return target if target is not None else path.parent.resolve() / rel


def _reference(image: str | None) -> str | None:
    """base.image's registry reference (None for a local directory or a recipe): pinned by
    its manifest digest, or a tag pinned by the recipe's lock (baker.build.parent)."""
    return image if image is not None and is_reference(image) else None


def _parent_recipe(
    path: Path, project: Path, image: str | None, root: yaml.Node | None
) -> Path | None:
    """base.image's `recipe:FILE`, inside the project and not the recipe itself."""
    if image is None or not image.startswith(RECIPE_PARENT):
        return None
    target = _named(path, project, image.removeprefix(RECIPE_PARENT), ("base", "image"), root)
    where = f"{path}:{line_of(root, ('base', 'image'))}: base.image"
    if target is None or not target.is_file():
        raise InputError(f"{where}: no such recipe {shown(image.removeprefix(RECIPE_PARENT))}.")
    if target == path.resolve():
        raise InputError(f"{where}: a recipe cannot be its own parent.")
    return target


def _pinned_files(
    path: Path, project: Path, recipe: Recipe, root: yaml.Node | None
) -> dict[str, tuple[Path, str]]:
    """Resolve every file the recipe names, relative to the recipe and inside its project,
    and check its sha256 pin."""
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
        field = field_name(loc)
        where = f"{path}:{line_of(root, loc)}"
        try:
            target = inside(here, rel, project)
        except Outside as e:
            raise InputError(f"{where}: {field}: {e}.") from None
        if target is None or not target.is_file():
            raise InputError(f"{where}: {field}: no such file {shown(rel)} (looked in {here}).")
        actual = sha256_file(target)
        if actual != expected:
            pin = (*loc[:-1], "sha256")
            where = f"{path}:{line_of(root, pin)}"
            raise InputError(
                f"{where}: {field_name(pin)}: {rel} has sha256 {actual}, "
                f"but the recipe pins {expected}."
            )
        files[rel] = (target, actual)
    return files
