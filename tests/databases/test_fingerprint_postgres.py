"""PostgreSQL: the fingerprint recorded at backup proves a faithful restore equal and names each difference.

Real server, real pg_dump/pg_restore, real roles, grants and large objects.  Damage is real SQL on
the restored database (see fingerprint_support for the one seam).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from relstep import fingerprint as fp
from relstep.databases import postgres
from relstep.databases.base import DumpPlan
from tests.apps import make_app
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.databases.fingerprint_support import (
    backup,
    cli,
    damage_after_restore,
    damage_before_the_proof,
    execute,
    manifest,
    problems,
    proof_line,
    snapshots,
)
from tests.helpers import relstep

# Beyond the app's two tables: one object of most kinds the fingerprint reads.
EXTRA_SCHEMA = (
    'CREATE INDEX post_title ON "Post" (title)',
    "CREATE SEQUENCE invoice_no",
    "SELECT setval('invoice_no', 42)",
    "CREATE TYPE mood AS ENUM ('sad', 'ok')",
    'CREATE VIEW post_titles AS SELECT title FROM "Post"',
    "CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql AS 'SELECT i + 1'",
    'COMMENT ON TABLE "Post" IS \'posts\'',
    "SELECT lo_from_bytea(0, 'first pdf')",
    "SELECT lo_from_bytea(0, 'second pdf')",
)


@pytest.fixture
def app(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    folder, url = make_app(tmp_path, request, "postgres")
    execute(url, *EXTRA_SCHEMA)
    return folder, url


@pytest.fixture
def role(app: tuple[Path, str]) -> Iterator[str]:
    """A real role of the cluster, dropped (with its grants) after the test."""
    name = f"fp_reporting_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} NOLOGIN")
    yield name
    dbname = app[1].rsplit("/", 1)[1]
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {name}")
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP ROLE {name}")


FAITHFUL = ("restored database equals the snapshot: 1 schema, 2 tables (content), 1 view, 3 sequences, 3 indexes, "
            "3 constraints, 1 grant, 1 function, 1 enum, 1 extension, 1 comment, 9 owners, 2 large objects")


def test_a_faithful_restore_proves_equal(app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _url = app
    backup(folder)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert ran.code == 0, ran.out + ran.err
    assert proof_line(ran.out) == FAITHFUL
    assert problems(ran.out) == []


@pytest.mark.parametrize(("damage", "named"), [
    ('UPDATE "Post" SET title = \'changed\' WHERE id = 3', "table Post: content differs"),
    ('DELETE FROM "Post" WHERE id = 3', "table Post: content differs (29 rows, the snapshot has 30)"),
    ("DROP INDEX post_title", "index public.post_title missing"),
    ("SELECT setval('invoice_no', 17)", "sequence public.invoice_no: value 17 != 42"),
    ("SELECT lo_unlink(min(oid)) FROM pg_largeobject_metadata", "large objects: 1 != 2"),
    ("ALTER TYPE mood ADD VALUE 'happy'", "enum public.mood: definition differs"),
], ids=["changed row", "deleted row", "missing index", "sequence value", "missing large object", "enum"])
def test_a_difference_in_the_restored_database_is_named_and_fails_verify(
    app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, damage: str, named: str
) -> None:
    folder, _url = app
    backup(folder)
    damaged = damage_after_restore(monkeypatch, postgres, damage)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert len(damaged) == 1
    assert ran.code == 8, ran.out + ran.err
    assert problems(ran.out) == [f"differs database main: {named}"]


def test_a_dropped_grant_is_named_and_fails_verify(
    app: tuple[Path, str], role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = app
    execute(url, f'GRANT SELECT ON "Post" TO {role}')
    snap = backup(folder)
    grants = manifest(snap)["databases"]["main"]["fingerprint"]["objects"]["grant"]
    assert f'SELECT on public."Post" to {role}' in grants
    damage_after_restore(monkeypatch, postgres, f'REVOKE ALL ON "Post" FROM {role}')

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert ran.code == 8, ran.out + ran.err
    assert problems(ran.out) == [f'differs database main: grant SELECT on public."Post" to {role} missing']


def test_the_real_restore_fails_with_exit_9_naming_the_difference(
    app: tuple[Path, str], pg_url2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _url = app
    snap = backup(folder)
    damaged = damage_before_the_proof(monkeypatch, "DROP INDEX post_title")

    ran = cli(folder, monkeypatch, "restore", snap.name, "--database-url", pg_url2, "--yes")

    assert ran.code == 9, ran.out + ran.err
    assert "the restored database differs: index public.post_title missing" in ran.err
    # The damage was on the staged copy, which never replaced the target: it is still empty.
    assert len(damaged) == 1 and damaged[0] != pg_url2
    assert postgres.is_empty(pg_url2)


def test_the_real_restore_prints_the_proof(app: tuple[Path, str], pg_url2: str) -> None:
    folder, _url = app
    snap = backup(folder)

    ran = relstep("restore", snap.name, "--database-url", pg_url2, "--yes", cwd=folder, input="")

    assert ran.code == 0, ran.out + ran.err
    assert f"): {FAITHFUL}" in ran.out


# Rows of seeded sizes from 20 to 1,900 bytes (under the TOAST threshold, so none is compressed or
# moved out of line): a page's end is left with gaps that later rows fit into, the way real tables
# of mixed row sizes load.  The second table is redacted, so relstep copies its rows itself.
ROWS_OF_MIXED_SIZES = (
    "CREATE TABLE ledger (id int, note text)",
    "INSERT INTO ledger SELECT i, repeat(md5(i::text), 1 + ((i * 7919) % 59)) FROM generate_series(1, 20000) i",
    "CREATE TABLE members (id int, email text, password text)",
    "INSERT INTO members SELECT i, repeat(md5(i::text), 1 + ((i * 104729) % 59)), 'pw' || i "
    "FROM generate_series(1, 20000) i",
)


def test_a_restored_table_of_mixed_row_sizes_reads_back_in_the_dumps_order(
    tmp_path: Path, request: pytest.FixtureRequest, pg_url2: str
) -> None:
    """The proof reads each restored table back in its physical order.  PostgreSQL keeps a COPY's rows
    in order only when the table's storage is new in the COPY's transaction; otherwise its free space
    map sends rows into earlier pages' gaps.  Loaded by separate pg_restore runs, such a table came
    back reordered and a faithful restore was refused: "table ledger: content differs" (exit 9)."""
    folder, url = make_app(tmp_path, request, "postgres")
    execute(url, *ROWS_OF_MIXED_SIZES)
    snap = backup(folder)

    ran = relstep("restore", snap.name, "--database-url", pg_url2, "--yes", cwd=folder, input="")

    assert ran.code == 0, ran.out + ran.err
    assert "restored database equals the snapshot: 1 schema, 4 tables (content)" in ran.out
    def physical_order(db_url: str) -> list[list[int]]:
        with psycopg.connect(db_url) as conn:
            return [[row[0] for row in conn.execute(f"SELECT id FROM {table}")] for table in ("ledger", "members")]

    assert physical_order(pg_url2) == physical_order(url)   # the dump's order, which is the source's


def test_the_fingerprint_is_read_at_the_dumps_instant(pg_url: str, tmp_path: Path) -> None:
    execute(pg_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 10)")

    def write_meanwhile(conn: object) -> None:
        # Committed by another session after the dump's snapshot was exported, before pg_dump runs.
        execute(pg_url, "INSERT INTO t VALUES (11)", "UPDATE t SET id = 100 WHERE id = 1")

    info = postgres.dump(pg_url, tmp_path, DumpPlan(), inspect=write_meanwhile)
    live = postgres.fingerprint(pg_url)

    assert info.fingerprint.content["t"].rows == 10
    assert fp.compare(info.fingerprint, live) == ["table t: content differs (11 rows, the snapshot has 10)"]
    with postgres.scratch_database(pg_url) as scratch:
        postgres.restore(tmp_path, scratch)
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch)) == []


def test_redacted_columns_are_digested_as_redacted(pg_url: str, tmp_path: Path) -> None:
    execute(pg_url, "CREATE TABLE u (id int PRIMARY KEY, password text NOT NULL, note text)",
            "INSERT INTO u VALUES (1, 'hunter2', 'a'), (2, 'secret', NULL)")
    info = postgres.dump(pg_url, tmp_path, DumpPlan(redact=("u.password",)))
    execute(pg_url, "UPDATE u SET password = ''")  # what the dump holds

    # like=: read back the way each table was recorded (the redacted one by its COPY's SHA-256), as the proof does.
    assert fp.compare(info.fingerprint, postgres.fingerprint(pg_url, like=info.fingerprint)) == []


@pytest.mark.parametrize(("setup", "config", "message"), [
    (('CREATE UNIQUE INDEX user_email ON "User" (email)',), {"redact": ["User.email"]},
     "cannot redact User.email: unique index user_email would reject its redacted '' values at restore; "
     "leave it out of database.redact or drop the constraint"),
    (('ALTER TABLE "User" ADD CONSTRAINT email_at CHECK (email LIKE \'%@%\')',), {"redact": ["User.email"]},
     "cannot redact User.email: CHECK constraint email_at would reject its redacted '' values at restore; "
     "leave it out of database.redact or drop the constraint"),
    ((), {"exclude_tables": ["User"]},
     'cannot back up: table Post keeps rows that reference the excluded table User (foreign key Post_authorId_fkey), '
     "so the snapshot could never be restored; exclude Post too, or keep User out of database.exclude_tables"),
], ids=["redacted unique", "redacted check", "excluded referenced table"])
def test_an_unrestorable_backup_is_refused_before_anything_is_written(
    tmp_path: Path, request: pytest.FixtureRequest, setup: tuple[str, ...], config: dict[str, object], message: str
) -> None:
    folder, url = make_app(tmp_path, request, "postgres")
    execute(url, *setup)
    from tests.helpers import write_config

    write_config(folder, {"database": {"url": url, **config}, "migrations": {"tool": "auto"}})

    ran = relstep("backup", "--version", "1.0.0", cwd=folder, input="")

    assert ran.code == 2, ran.out + ran.err
    assert ran.err.strip().splitlines()[-1] == f"relstep: config failed: {message}"
    assert [p.name for p in snapshots(folder)] == []


def test_show_prints_the_fingerprint_summary(app: tuple[Path, str]) -> None:
    folder, _url = app
    snap = backup(folder)

    text = relstep("show", snap.name, cwd=folder, input="")
    as_json = relstep("show", snap.name, "--json", cwd=folder, input="")

    recorded = manifest(snap)["databases"]["main"]["fingerprint"]
    assert f"fingerprint (main): {FAITHFUL.split(': ', 1)[1]}; total {recorded['total']}" in text.out
    assert "redacted (main): User.password, User.passwordHash" in text.out
    import json

    assert json.loads(as_json.out)["databases"]["main"]["fingerprint"]["counts"]["large object"] == 2
