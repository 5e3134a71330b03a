"""The nightly history through one code path on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from support import pg_server

from baker.errors import InputError
from baker.nightly.history import History, url_for


@pytest.fixture(scope="module")
def postgres():
    pg = pg_server.start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        h = History(str(tmp_path / "history.db"))
    else:
        pg = request.getfixturevalue("postgres")
        h = History(pg.url)
        with h.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM builds"))
    yield h
    h.close()


def test_builds_are_recorded_and_the_last_good_one_found(history: History) -> None:
    history.record(
        {
            "night": "2026-12-01T02:00:00Z",
            "recipe": "web",
            "status": "built",
            "digest": "sha256:aa",
            "size": 100,
            "boot": {"bios": {"time_to_ssh_s": 15.0}},
        }
    )
    history.record(
        {
            "night": "2026-12-02T02:00:00Z",
            "recipe": "web",
            "status": "failed",
            "error": "test failed",
        }
    )
    history.record(
        {
            "night": "2026-12-02T02:00:00Z",
            "recipe": "base",
            "status": "unchanged",
            "digest": "sha256:bb",
        }
    )
    last = history.last_good("web")
    assert last is not None and last["digest"] == "sha256:aa"
    assert last["boot"] == {"bios": {"time_to_ssh_s": 15.0}}
    assert [r["status"] for r in history.all("web")] == ["built", "failed"]
    assert history.recipes() == ["base", "web"]
    assert history.last_good("nothing") is None


def test_opening_again_migrates_nothing_and_keeps_rows(history: History) -> None:
    history.record({"night": "n1", "recipe": "r", "status": "built"})
    again = History(history.source)
    assert [r["recipe"] for r in again.all()] == ["r"]
    with again.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    again.close()


def test_a_history_from_before_parents_is_upgraded_in_place(tmp_path: Path) -> None:
    """A history an earlier baker wrote (schema 0001, no `parent`) keeps its rows and gains
    the column the first time this baker opens it."""
    from alembic import command
    from alembic.config import Config

    from baker.nightly.history import MIGRATIONS

    path = tmp_path / "old.db"
    engine = sa.create_engine(url_for(str(path)))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        row = "INSERT INTO builds (night, recipe, status) VALUES ('n0', 'old', 'built')"
        conn.execute(sa.text(row))
    engine.dispose()
    history = History(str(path))
    history.record({"night": "n1", "recipe": "app", "status": "built", "parent": "old"})
    assert [(r["recipe"], r["parent"]) for r in history.all()] == [("old", None), ("app", "old")]
    history.close()


def test_bad_history_arguments_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="postgresql:// URL"):
        url_for("mysql://x/y")
    with pytest.raises(InputError, match="not a file"):
        url_for(str(tmp_path))
