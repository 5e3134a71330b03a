"""Commands for carrying images across an air gap: convert, export, import (issue: air-gapped
export). Registered on the main CLI by baker.cli."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
