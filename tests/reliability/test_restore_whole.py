"""Entirely the snapshot or unchanged: what made today's restore leave production half-built.

The unloadable snapshots (a redacted UNIQUE column, an excluded table a foreign key needs) are
ones this relstep refuses to write; they are written as an older relstep did
(restore_support.older_relstep), since such snapshots are still on disk and restore must cope.

Real large objects, a redacted UNIQUE column and an excluded table that a foreign key needs,
on both PostgreSQL paths (staged and swapped; one transaction for a role without CREATEDB)
and on MariaDB (proven on a staged database first).  A failure leaves the live database
exactly as it was: rows, schema objects and large objects compared, not only counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PLANTED_DB_PASSWORD

from tests.helpers import relstep
from tests.reliability.restore_support import (
    app_with_snapshot,
    as_role,
    pg_role_database,
    public_state,
    relstep_sessions,
)

PATHS = ["owner", "no-createdb"]


@pytest.fixture(params=PATHS)
def pg_db(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    with pg_role_database(request.param) as found:
        yield found


def _state(db: str) -> dict[str, Any]:
    """Everything a half-done restore would change: schema objects, every table's rows, large objects."""
    return public_state(db)


def test_large_objects_come_back(tmp_path: Path, pg_db: tuple[str, str]) -> None:
    url, db = pg_db
    as_role(url, "CREATE TABLE docs (id int PRIMARY KEY, body oid NOT NULL)",
             r"INSERT INTO docs VALUES (1, lo_from_bytea(0, '\x0001fe2062696e617279'::bytea)), "
             r"(2, lo_from_bytea(0, 'second'::bytea))")
    snapshot = _state(db)
    app = app_with_snapshot(tmp_path, url, schema=False)
    as_role(url, "SELECT lo_unlink(body) FROM docs WHERE id = 2", "DELETE FROM docs WHERE id = 2",
             r"UPDATE docs SET body = lo_from_bytea(0, 'changed'::bytea) WHERE id = 1")

    ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

    assert ran.code == 0, ran.err
    restored = _state(db)
    # The same large objects, byte for byte, each still referenced by its row.
    assert [bytes(b) for _oid, b in restored["blobs"]] == [b"\x00\x01\xfe binary", b"second"]
    assert restored["rows"]["docs"] == snapshot["rows"]["docs"]
    assert restored["blobs"] == snapshot["blobs"]
    assert relstep_sessions(db) == []


def _assert_unchanged(ran: Any, db: str, before: dict[str, Any]) -> None:
    assert ran.code == 9, ran.err
    assert f"{db} is unchanged" in ran.last_err, ran.last_err
    assert "relstep restore " in ran.last_err, "the way back is named"
    assert _state(db) == before
    assert relstep_sessions(db) == []


def test_a_redacted_unique_column_fails_the_restore_and_changes_nothing(tmp_path: Path,
                                                                        pg_db: tuple[str, str]) -> None:
    url, db = pg_db
    as_role(url, 'CREATE TABLE "Account" (id int PRIMARY KEY, email text NOT NULL, password text NOT NULL UNIQUE)',
             """INSERT INTO "Account" VALUES (1, 'a@x', 'pw-1'), (2, 'b@x', 'pw-2'), (3, 'c@x', 'pw-3')""")
    app = app_with_snapshot(tmp_path, url, schema=False, older=True)
    as_role(url, """INSERT INTO "Account" VALUES (4, 'd@x', 'pw-4')""")
    before = _state(db)

    ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

    # Every password comes back '' (NOT NULL, redacted): the UNIQUE index cannot be built.
    assert "could not create unique index" in ran.last_err or "duplicate key" in ran.last_err, ran.last_err
    _assert_unchanged(ran, db, before)


def test_an_excluded_table_that_a_foreign_key_needs_fails_the_restore_and_changes_nothing(
    tmp_path: Path, pg_db: tuple[str, str]
) -> None:
    url, db = pg_db
    app = app_with_snapshot(tmp_path, url, older=True, exclude_tables=["User"])
    as_role(url, """INSERT INTO "User" VALUES (77, 'late@example.com', 'pw', NULL)""")
    before = _state(db)

    ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

    assert "foreign key constraint" in ran.last_err, ran.last_err
    _assert_unchanged(ran, db, before)


def test_mysql_a_dump_that_does_not_load_never_touches_the_live_database(tmp_path: Path, mysql_url: str) -> None:
    from sqlalchemy import text

    from relstep.databases import create_engine

    engine = create_engine(mysql_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE Account (id int PRIMARY KEY, password varchar(50) NOT NULL UNIQUE)"))
            conn.execute(text("INSERT INTO Account VALUES (1, 'pw-1'), (2, 'pw-2')"))
        app = app_with_snapshot(tmp_path, mysql_url, schema=False, older=True)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO Account VALUES (3, 'pw-3')"))
            conn.execute(text("CREATE VIEW v AS SELECT id FROM Account"))

        ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

        assert ran.code == 9, ran.err
        assert "the snapshot does not load, tried on a staged copy" in ran.last_err, ran.last_err
        assert "is unchanged" in ran.last_err, ran.last_err
        with engine.connect() as conn:
            assert conn.execute(text("SELECT * FROM Account ORDER BY id")).all() == [
                (1, "pw-1"), (2, "pw-2"), (3, "pw-3")]
            assert conn.execute(text("SELECT id FROM v ORDER BY id")).scalars().all() == [1, 2, 3]
            staged = conn.execute(text("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                                       "WHERE SCHEMA_NAME LIKE :p"), {"p": mysql_url.rsplit("/", 1)[1] + "_relstep%"})
            assert staged.all() == []
    finally:
        engine.dispose()


def test_the_printed_way_back_puts_the_replaced_postgres_database_back(tmp_path: Path) -> None:
    import shlex
    import subprocess

    with pg_role_database("owner") as (url, db):
        app = app_with_snapshot(tmp_path, url)
        as_role(url, """INSERT INTO "User" VALUES (77, 'late@example.com', 'pw', NULL)""")
        before = _state(db)

        ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

        assert ran.code == 0, ran.err
        [kept_line] = [line for line in ran.out.splitlines() if line.startswith("the previous database is kept as ")]
        kept, _, command = kept_line.removeprefix("the previous database is kept as ").partition("; to put it back: ")
        assert kept.startswith(f"{db}_before_restore_")
        assert 77 not in [row[0] for row in _state(db)["rows"]["User"]]
        assert _state(kept) == before
        argv = shlex.split(command)
        assert argv[0] == "psql" and PLANTED_DB_PASSWORD not in command

        done = subprocess.run(argv, capture_output=True, text=True, check=False)

        assert done.returncode == 0, done.stderr
        assert _state(db) == before
