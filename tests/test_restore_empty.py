"""Empty means empty: a target holding any user object is overwritten only with --yes, after a safety snapshot.

Each case creates one kind of object, nothing else, in a real database and asks the engine;
the issue's case (a PostgreSQL database with a materialized view, functions, a sequence and an
enum but no table) goes through the real CLI.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from relstep.databases import create_engine, engine_for
from tests.apps import make_app
from tests.helpers import relstep

PG_OBJECTS = {
    "materialized view": ["CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x"],
    "view": ["CREATE VIEW v AS SELECT 1 AS x"],
    "function": ["CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'"],
    "sequence": ["CREATE SEQUENCE s"],
    "enum": ["CREATE TYPE mood AS ENUM ('ok', 'sad')"],
    "domain": ["CREATE DOMAIN positive AS int CHECK (VALUE > 0)"],
    "composite type": ["CREATE TYPE pair AS (a int, b int)"],
    "large object": ["SELECT lo_create(0)"],
    "extra schema": ["CREATE SCHEMA reporting"],
}
MYSQL_OBJECTS = {
    "procedure": ["CREATE PROCEDURE p() SELECT 1"],
    "function": ["CREATE FUNCTION f() RETURNS int DETERMINISTIC RETURN 1"],
    "event": ["CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1"],
    "view": ["CREATE VIEW v AS SELECT 1 AS x"],
    "sequence": ["CREATE SEQUENCE s"],
}
SQLITE_OBJECTS = {
    "view": ["CREATE VIEW v AS SELECT 1 AS x"],
    "table": ["CREATE TABLE t (x)"],
}


def _execute(url: str, statements: list[str]) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def test_a_fresh_database_is_empty(pg_url: str, mysql_url: str, tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "fresh.db").close()
    for url in (pg_url, mysql_url, f"sqlite:///{tmp_path / 'fresh.db'}", f"sqlite:///{tmp_path / 'none.db'}"):
        assert engine_for(url).is_empty(url) is True, url


@pytest.mark.parametrize("kind", PG_OBJECTS)
def test_postgres_one_object_of_any_kind_is_not_empty(pg_url: str, kind: str) -> None:
    _execute(pg_url, PG_OBJECTS[kind])
    assert engine_for(pg_url).is_empty(pg_url) is False


@pytest.mark.parametrize("kind", MYSQL_OBJECTS)
def test_mysql_one_object_of_any_kind_is_not_empty(mysql_url: str, kind: str) -> None:
    _execute(mysql_url, MYSQL_OBJECTS[kind])
    assert engine_for(mysql_url).is_empty(mysql_url) is False


@pytest.mark.parametrize("kind", SQLITE_OBJECTS)
def test_sqlite_one_schema_object_of_any_kind_is_not_empty(tmp_path: Path, kind: str) -> None:
    with sqlite3.connect(tmp_path / "app.db") as conn:
        for statement in SQLITE_OBJECTS[kind]:
            conn.execute(statement)
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert engine_for(url).is_empty(url) is False


def test_the_issues_tableless_postgres_target_needs_yes_and_gets_a_safety_snapshot(
    tmp_path: Path, request: pytest.FixtureRequest, pg_url2: str
) -> None:
    app, _url = make_app(tmp_path, request, "postgres")
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    _execute(pg_url2, [*PG_OBJECTS["materialized view"], *PG_OBJECTS["function"], *PG_OBJECTS["sequence"],
                       *PG_OBJECTS["enum"]])

    refused = relstep("restore", "1.0.0", "--database-url", pg_url2, cwd=app, input="")

    assert refused.code == 2, refused.err
    assert "is not empty; pass --yes" in refused.last_err and "nothing was changed" in refused.last_err
    assert engine_for(pg_url2).is_empty(pg_url2) is False
    assert not (app / "backups" / "pre-restore").exists()

    ran = relstep("restore", "1.0.0", "--database-url", pg_url2, "--yes", cwd=app, input="")

    assert ran.code == 0, ran.err
    [safety] = [p for p in sorted((app / "backups" / "pre-restore").iterdir()) if not p.name.startswith(".")]
    assert f"safety snapshot of the previous database: {safety}" in ran.out
    engine = create_engine(pg_url2)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_matviews WHERE matviewname = 'mv'")).scalar() == 0
            assert conn.execute(text('SELECT count(*) FROM "User"')).scalar() == 10
    finally:
        engine.dispose()
