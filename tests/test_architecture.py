"""The house's rules, checked: packages import only those on a lower floor (never one above,
never in a cycle), and no module grows past what one can hold in one's head."""

from __future__ import annotations

import graphlib
from pathlib import Path

from baker.hashing import CODE_ROOT, imported

BAKER = CODE_ROOT / "baker"
MAX_LINES = 400

# Lowest first: a package may import from its own floor or a lower one.
FLOORS: list[set[str]] = [
    # ground: errors and exit codes, hashes and keys, the artifact contract, the step cache
    {"baker.errors", "baker.hashing", "baker.interrupts", "baker.progress", "baker.artifact",
     "baker.cache"},
    # the input, and the edge of the outside world
    {"baker.recipe", "baker.edge", "baker.leftovers"},
    # what images are made of, the evidence about them, the rules of their later life
    {"baker.image", "baker.formats", "baker.ami", "baker.evidence", "baker.lifecycle"},
    # where machines run; what reads, moves and checks artifacts
    {"baker.backends", "baker.inspect", "baker.registry", "baker.bundle", "baker.security"},
    {"baker.build"},
    {"baker.nightly", "baker.farm"},
    {"baker.cli"},
]  # fmt: skip


def _modules() -> list[str]:
    out = []
    for path in BAKER.rglob("*.py"):
        parts = list(path.relative_to(CODE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return sorted(out)


def _node(module: str) -> str:
    """A package (baker.build), or a module at the top (baker.cache)."""
    parts = module.split(".")
    if len(parts) > 1 and (BAKER / parts[1]).is_dir():
        return f"baker.{parts[1]}"
    return module


def _edges() -> dict[str, set[tuple[str, str]]]:
    """package -> {(importing module, imported module)} across packages."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for module in _modules():
        if module in ("baker", "baker.__main__"):  # the entry points reach everything
            continue
        for target in imported(module, CODE_ROOT):
            if target != "baker" and _node(target) != _node(module):
                edges.setdefault(_node(module), set()).add((module, target))
    return edges


def _floor(node: str) -> int:
    (found,) = [i for i, floor in enumerate(FLOORS) if node in floor]
    return found


def test_every_package_has_a_floor() -> None:
    nodes = {_node(m) for m in _modules()} - {"baker", "baker.__main__"}
    assert nodes == set().union(*FLOORS)


def test_no_package_imports_one_above_it() -> None:
    upward = [
        f"{module} imports {target}"
        for node, pairs in _edges().items()
        for module, target in sorted(pairs)
        if _floor(_node(target)) > _floor(node)
    ]
    assert upward == []


def test_no_import_cycle_between_packages() -> None:
    graph = {node: {_node(t) for _, t in pairs} for node, pairs in _edges().items()}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError, naming the cycle


def test_no_module_is_longer_than_one_can_hold_in_ones_head() -> None:
    long = {
        str(p.relative_to(CODE_ROOT)): n
        for p in sorted(BAKER.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_floors_name_only_what_exists() -> None:
    for floor in FLOORS:
        for node in floor:
            assert (BAKER / node.removeprefix("baker.")).is_dir() or Path(
                BAKER / f"{node.removeprefix('baker.')}.py"
            ).is_file(), node
