"""The recipe's jinja2 render, bounded: sandboxed, its output, time and memory capped, and the
files it includes, like every file a recipe names, kept inside the recipe's project.

A recipe is a template anyone may hand baker. jinja2's sandbox keeps it from Python's
internals and caps range(), but not from `{% for %}` nested in `{% for %}`, `"x" * 10**9`,
or `{{ 10 ** 10 ** 8 }}`: those are bounded here.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from baker.errors import InputError
from baker.recipe.bounded import decode, read_limited
from baker.recipe.messages import shown

# A real recipe is a few kilobytes and renders in milliseconds: each bound is far above that
# and far below harm.
MAX_RECIPE_BYTES = 1 << 20  # the recipe, each included file, and the rendered text
RENDER_SECONDS = 10.0  # every render of one recipe together (main thread only: SIGALRM)
RENDER_MEMORY = 512 << 20  # address space a render may add (main thread only: RLIMIT_AS)
MAX_INT_BITS = 1 << 16  # `**` and `*` on integers: what one uninterruptible C call computes


class Outside(Exception):
    """A file a recipe names resolves outside its project (raised through jinja2 too): the
    words, for the caller to put after `FILE:LINE: field:`."""


def inside(here: Path, rel: str, root: Path) -> Path | None:
    """`rel` (relative to `here`) resolved with its symbolic links; None if it cannot be
    resolved at all. Raises Outside when it leads out of `root`, or is an absolute path:
    that names one machine's directories, and a project carried elsewhere (a bundle's
    sources, a rebuild on another host) would not find it."""
    if os.path.isabs(rel):
        lexical = Path(os.path.normpath(rel))
        hint = (
            f" ({os.path.relpath(lexical, here)!r} from the recipe's directory)"
            if lexical.is_relative_to(root)
            else ""
        )
        raise Outside(
            f"{shown(rel)} is an absolute path; a recipe names its files relative to itself{hint}"
        )
    try:
        target = (here / rel).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        return None
    if not target.is_relative_to(root):
        lexical = Path(os.path.normpath(here / rel))
        link = f" (a link to {target})" if lexical.is_relative_to(root) else ""
        raise Outside(
            f"{shown(rel)}{link} leaves the project {root}; "
            "a recipe may name only files inside it (see --root)"
        )
    return target


def project_file(here: Path, rel: str, root: Path, where: str) -> Path:
    """A file a recipe field names for the build to read when it starts (a secret's, the
    vulnerability snapshot): inside the project and there; else InputError after `where`
    (`FILE:LINE: field`)."""
    try:
        path = inside(here, rel, root)
    except Outside as e:
        raise InputError(f"{where}: {e}.") from None
    if path is None or not path.is_file():
        raise InputError(f"{where}: no such file {rel}.")
    return path


class _Includes(jinja2.BaseLoader):
    """What `{% include %}` (and import, extends) read: files beside the recipe, inside its
    project, bounded as the recipe is. Remembers them, to tell their errors from the recipe's."""

    def __init__(self, directory: Path, root: Path) -> None:
        self.directory, self.root = directory, root
        self.files: set[str] = set()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        target = inside(self.directory, template, self.root)
        if target is None or not target.is_file():
            raise jinja2.TemplateNotFound(template)
        found: Path = target
        raw = read_limited(found, MAX_RECIPE_BYTES, "included file", "include less")
        name = os.path.normpath(self.directory / template)
        self.files.add(name)
        mtime = _mtime(found)
        return decode(found, raw, "included file"), name, lambda: _mtime(found) == mtime


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# --- the render, bounded ------------------------------------------------------------------------


class RenderLimit(InputError):
    """The render hit a bound: its time, its memory or the size of what it wrote."""


class _Timeout(Exception):
    """Raised from SIGALRM into the render; an Exception, so that jinja2 maps its traceback to
    the template's lines like any error's."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja2's sandbox (no private attributes, no changing lists or dicts, range() capped at
    100000) with the operators that make big values out of small ones checked first: their
    work happens in one C call, which neither the timer nor the output bound can stop."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        big = False
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if operator == "**":
                bits = left.bit_length() * right if abs(left) > 1 and right > 0 else 0
            big = bits > MAX_INT_BITS
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    big = big or len(seq) * times > MAX_RECIPE_BYTES
        if big:
            raise OverflowError(f"the result of {operator} would be too big for a recipe")
        return super().call_binop(context, operator, left, right)


def render(
    path: Path,
    project: Path,
    text: str,
    variables: Mapping[str, Any],
    undefined: type[jinja2.Undefined],
    deadline: float,
) -> str:
    """The recipe `text` (at `path`) rendered with `variables`, within the bounds above (time
    shared by every render up to `deadline`, a time.monotonic() value); every mistake an
    InputError, RenderLimit for a bound."""
    loader = _Includes(path.parent.resolve(), project)
    env = _Sandbox(loader=loader, undefined=undefined, keep_trailing_newline=True, autoescape=False)
    try:
        with _bounded(deadline):
            chunks, size = [], 0
            for chunk in env.from_string(text).generate(**variables):
                size += len(chunk.encode())
                if size > MAX_RECIPE_BYTES:
                    raise RenderLimit(
                        f"{path}: the rendered recipe is more than {MAX_RECIPE_BYTES >> 20} MiB; "
                        "its loops and includes write too much."
                    )
                chunks.append(chunk)
            return "".join(chunks)
    except InputError:
        raise
    except jinja2.TemplateSyntaxError as e:
        # e.filename is set when the error is in a file the recipe includes.
        where = f"{e.filename or path}:{e.lineno}"
        raise InputError(f"{where}: template error: {_sentence(e.message or str(e))}") from None
    except _Timeout as e:
        where = _template_where(e, path, loader.files)
        raise RenderLimit(
            f"{where}: the template is still rendering after {RENDER_SECONDS:g} s; "
            "a loop runs too long."
        ) from None
    except MemoryError as e:
        where = _template_where(e, path, loader.files)
        raise RenderLimit(
            f"{where}: the template needs more than {RENDER_MEMORY >> 20} MiB of memory to "
            "render; a recipe's template is small and makes small values."
        ) from None
    except Outside as e:
        where = _template_where(e, path, loader.files)
        raise InputError(f"{where}: include {e}.") from None
    except Exception as e:
        # Undefined names, and whatever an expression raises ({{ 1 // 0 }}, {{ "a" + 1 }}).
        where = _template_where(e, path, loader.files)
        what = e.message if isinstance(e, jinja2.TemplateError) else f"{type(e).__name__}: {e}"
        if isinstance(e, jinja2.TemplateNotFound):
            what = f"no file {shown(e.name)} to include (looked in {loader.directory})"
        raise InputError(f"{where}: template error: {_sentence(what or str(e))}") from None


@contextlib.contextmanager
def _bounded(deadline: float) -> Iterator[None]:
    """Bound the time (SIGALRM at `deadline`) and the memory (RLIMIT_AS) of what runs inside,
    each put back as it was after. Both are the process's: only the main thread takes them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout
    armed = True

    def expire(signum: int, frame: Any) -> None:
        if armed:  # a signal already on its way as the render ends is not a timeout
            raise _Timeout

    old_handler = signal.signal(signal.SIGALRM, expire)
    old_timer = signal.setitimer(signal.ITIMER_REAL, remaining)
    started = time.monotonic()
    old_limit = None
    try:
        old_limit = _limit_memory()
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        if old_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, old_limit)
        signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
        if old_timer[0] > 0:  # someone else's alarm: it still goes off, when it would have
            left = max(old_timer[0] - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, old_timer[1])


def _limit_memory() -> tuple[int, int] | None:
    """Lower the soft address-space limit to what the process has now plus RENDER_MEMORY, so
    that a template making a huge value gets a MemoryError instead of the machine's memory.
    Returns the limit to put back, or None when nothing was lowered."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = pages * os.sysconf("SC_PAGE_SIZE") + RENDER_MEMORY
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft <= wanted:
        return None
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
    return soft, hard


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= 300 else text[:297] + "..."
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
