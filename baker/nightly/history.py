"""The nightly history: every build of every night and its figures, in a real database.

SQLite by default (one file, nothing to start); PostgreSQL (`postgresql://…`) for a team
whose builders share one history; the same SQLAlchemy Core code for both, and the schema made
and moved forward by Alembic migrations (baker/nightly/migrations), so an older history file
or database is upgraded in place the first time a newer baker opens it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from baker.errors import InputError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

metadata = sa.MetaData()
builds = sa.Table(
    "builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("night", sa.String(40), nullable=False, index=True),  # the run's start, UTC ISO
    sa.Column("recipe", sa.String(200), nullable=False, index=True),  # the image name
    sa.Column("status", sa.String(20), nullable=False),  # built, unchanged, failed
    sa.Column("digest", sa.String(80)),
    sa.Column("lock_digest", sa.String(80)),
    sa.Column("mirror_state", sa.String(80)),  # digest of the candidate versions of its packages
    sa.Column("packages", sa.Integer),
    sa.Column("size", sa.BigInteger),
    sa.Column("boot_median_s", sa.Float),
    sa.Column("boot_min_s", sa.Float),
    sa.Column("boot_max_s", sa.Float),
    sa.Column("boot", sa.Text),  # boot.json's per-firmware figures, as JSON
    sa.Column("tests_passed", sa.Integer),
    sa.Column("tests_failed", sa.Integer),
    sa.Column("duration_s", sa.Float),
    sa.Column("signer", sa.String(120)),
    sa.Column("artifact", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("drift", sa.Text),  # the drift report against the previous good build, JSON
    sa.Column("parent", sa.String(200)),  # the image it was built on that night (base.image)
    sa.Column("vulns", sa.Text),  # open vulnerabilities from its report, JSON (report.vulns)
    # Its image's life after the night (baker.nightly.lifecycle), JSON: the image digests of
    # its parent and the parent's ancestors; the revocation found beside it; the night the
    # recipe's retention stopped keeping it, and why.
    sa.Column("ancestors", sa.Text),
    sa.Column("revoked", sa.Text),
    sa.Column("pruned", sa.Text),
)
GOOD = ("built", "unchanged")
_JSON = ("boot", "drift", "vulns", "ancestors", "revoked", "pruned")


def url_for(history: str) -> str:
    """A database URL from --history: a postgresql:// URL, or a path to an SQLite file."""
    if history.startswith(("postgresql://", "postgresql+psycopg://")):
        return history.replace("postgresql://", "postgresql+psycopg://", 1)
    if "://" in history:
        raise InputError(f"--history {history}: give a file path (SQLite) or a postgresql:// URL.")
    path = Path(history)
    if path.exists() and not path.is_file():
        raise InputError(f"--history {history}: not a file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path.resolve()}"


class History:
    def __init__(self, history: str) -> None:
        self.source = history
        self.engine = sa.create_engine(url_for(history), future=True)
        self.migrate()

    def migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def record(self, row: dict[str, Any]) -> int:
        values = {
            k: (json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v)
            for k, v in row.items()
        }
        with self.engine.begin() as conn:
            result = conn.execute(sa.insert(builds).values(**values))
            key = result.inserted_primary_key
            return int(key[0]) if key else 0

    def annotate(self, recipe: str, digest: str, **values: dict[str, Any]) -> int:
        """Set `values` (columns holding JSON) on every row of `recipe`'s image `digest`;
        returns how many rows."""
        encoded = {k: json.dumps(v, sort_keys=True) for k, v in values.items()}
        where = (builds.c.recipe == recipe, builds.c.digest == digest)
        with self.engine.begin() as conn:
            return conn.execute(sa.update(builds).where(*where).values(**encoded)).rowcount

    def last_good(self, recipe: str) -> dict[str, Any] | None:
        good = self.good(recipe, 1)
        return good[0] if good else None

    def good(self, recipe: str, n: int) -> list[dict[str, Any]]:
        """The last `n` good builds of `recipe`, newest first."""
        query = (
            sa.select(builds)
            .where(builds.c.recipe == recipe, builds.c.status.in_(GOOD))
            .order_by(builds.c.id.desc())
            .limit(n)
        )
        return self._rows(query)

    def all(self, recipe: str | None = None) -> list[dict[str, Any]]:
        """Every build, oldest first (of one recipe when given)."""
        query = sa.select(builds).order_by(builds.c.id)
        if recipe is not None:
            query = query.where(builds.c.recipe == recipe)
        return self._rows(query)

    def recipes(self) -> list[str]:
        with self.engine.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    sa.select(builds.c.recipe).distinct().order_by(builds.c.recipe)
                )
            ]

    def _rows(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            for key in _JSON:
                if row.get(key):
                    row[key] = json.loads(row[key])
        return rows

    def close(self) -> None:
        self.engine.dispose()
