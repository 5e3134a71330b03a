"""Commands for the cloud: publish an image to EC2 (issue: cloud backend). Registered on the
main CLI by baker.cli."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
