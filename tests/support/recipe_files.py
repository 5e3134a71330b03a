"""The type of conftest's `write_recipe` fixture, for the tests that take it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol


class WriteRecipe(Protocol):
    """Writes `files` under the test's directory, then the recipe text at `name` there;
    returns the recipe's path. File contents may be str or bytes."""

    def __call__(
        self,
        text: str | bytes,
        files: Mapping[str, str | bytes] | None = None,
        name: str = "recipe.yaml",
    ) -> Path: ...
