from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from support import sharing
from support.recipe_files import WriteRecipe

# the session: shared across workers, in an order that keeps both busy ---------------------

# Handed out first (`--dist loadfile`: a module goes to one worker whole, its module fixtures
# made once), longest first: the modules that make the session's images or their own (the
# third and fourth queue behind the first two), so the modules that reuse the session's base
# image rarely wait for it. Then the other e2e modules, which are short; last those with a
# test that runs alone (`exclusive`): the other worker is on a short module or the unit tests
# by then, which need no host service and never wait for one. A long module handed out just
# before them would keep them waiting for its end.
FIRST = ("test_e2e_export", "test_e2e_bake", "test_e2e_nightly", "test_e2e_debian13",
         "test_e2e_vendor", "test_e2e_layers", "test_e2e_farm")  # fmt: skip
LAST = ("test_e2e_cache", "test_e2e_failures", "test_e2e_faults")
_SHARED = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        config.stash[_SHARED] = sharing.make_root()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SHARED in config.stash:
        sharing.remove_root(config.stash[_SHARED])


def _rank(item: pytest.Item) -> int:
    module = item.path.stem
    if module in FIRST:
        return FIRST.index(module)
    if item.get_closest_marker("e2e") is None:
        return len(FIRST) + 2
    return len(FIRST) + (1 if module in LAST else 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: each module keeps its own order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    if item.get_closest_marker("e2e") is None:  # no VM, no libvirtd: nothing to share
        return (yield)
    with sharing.host_services(exclusive=item.get_closest_marker("exclusive") is not None):
        return (yield)


# unit-test fixtures ------------------------------------------------------------------------
# Small helpers for the fast tests (no VM). Keep this section separate from the e2e one.


@pytest.fixture
def write_recipe(tmp_path: Path) -> WriteRecipe:
    """Write files under tmp_path, then the recipe text at tmp_path/recipe.yaml (or `name`);
    returns the recipe's path. File contents may be str or bytes."""

    def write(
        text: str | bytes,
        files: Mapping[str, str | bytes] | None = None,
        name: str = "recipe.yaml",
    ) -> Path:
        for rel, content in (files or {}).items():
            f = tmp_path / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(content.encode() if isinstance(content, str) else content)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    return write
