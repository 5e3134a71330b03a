from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from support.recipe_files import WriteRecipe

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
