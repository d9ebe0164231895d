"""MariaDB: the fingerprint recorded at backup proves a faithful restore equal and names each difference.

Real server, real mariadb-dump and client, a real user with real grants.  Damage is real SQL on the
restored database (see fingerprint_support for the one seam).  MariaDB keeps grants on the server,
outside the dump, so they are compared by a restore into the snapshot's own database, not by the
restore test's scratch database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from relstep import fingerprint as fp
from relstep.databases import mysql
from relstep.databases.base import DumpPlan
from tests.apps import make_app
from tests.conftest import MY_HOST, MY_PORT, MY_USER
from tests.databases.fingerprint_support import (
    backup,
    cli,
    damage_after_restore,
    execute,
    problems,
    proof_line,
    snapshots,
)
from tests.helpers import relstep, write_config

EXTRA_SCHEMA = (
    "CREATE INDEX post_title ON Post (title(20))",
    "CREATE TABLE invoice (id int AUTO_INCREMENT PRIMARY KEY, total decimal(10, 2))",
    "INSERT INTO invoice (total) VALUES (1.50), (2.25)",
    "ALTER TABLE invoice AUTO_INCREMENT = 42",
    "CREATE VIEW post_titles AS SELECT title FROM Post",
    "CREATE PROCEDURE noop() SELECT 1",
    "CREATE TRIGGER invoice_check BEFORE INSERT ON invoice FOR EACH ROW SET NEW.total = ABS(NEW.total)",
)


@pytest.fixture
def app(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    folder, url = make_app(tmp_path, request, "mysql")
    execute(url, *EXTRA_SCHEMA)
    return folder, url


@pytest.fixture
def reader(app: tuple[Path, str]) -> Iterator[str]:
    """A real account with a real grant on the app's Post table, dropped after the test."""
    name = f"fp_{uuid.uuid4().hex[:8]}"
    database = app[1].rsplit("/", 1)[1]
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{name}'@'%'")
            cur.execute(f"GRANT SELECT ON `{database}`.`Post` TO '{name}'@'%'")
        yield f"'{name}'@'%'"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        conn.close()


FAITHFUL = ("restored database equals the snapshot: 3 tables (content), 1 view, 5 indexes, 1 constraint, "
            "1 procedure, 1 trigger, 3 owners, 3 auto_increment values")


def test_a_faithful_restore_proves_equal(app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _url = app
    backup(folder)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert ran.code == 0, ran.out + ran.err
    assert proof_line(ran.out) == FAITHFUL
    assert problems(ran.out) == []


@pytest.mark.parametrize(("damage", "named"), [
    ("UPDATE Post SET title = 'changed' WHERE id = 3", "table Post: content differs"),
    ("DELETE FROM Post WHERE id = 3", "table Post: content differs (29 rows, the snapshot has 30)"),
    ("DROP INDEX post_title ON Post", "index Post.post_title missing"),
    ("ALTER TABLE invoice AUTO_INCREMENT = 100", "auto_increment invoice: value 100 != 42"),
    ("DROP TRIGGER invoice_check", "trigger invoice_check on invoice missing"),
], ids=["changed row", "deleted row", "missing index", "auto_increment", "missing trigger"])
def test_a_difference_in_the_restored_database_is_named_and_fails_verify(
    app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, damage: str, named: str
) -> None:
    folder, _url = app
    backup(folder)
    damaged = damage_after_restore(monkeypatch, mysql, damage)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert len(damaged) == 1
    assert ran.code == 8, ran.out + ran.err
    assert problems(ran.out) == [f"differs database main: {named}"]


def test_a_dropped_grant_on_the_snapshots_own_database_is_named(
    app: tuple[Path, str], reader: str, tmp_path: Path
) -> None:
    # Grants live on the server under the database's name: a database of that name (the one
    # backed up, after a restore in place) is where a lost grant shows.
    _folder, url = app
    info = mysql.dump(url, tmp_path, DumpPlan(redact=()))  # the live rows, unredacted
    assert f"SELECT on Post to {reader}" in info.fingerprint.objects["grant"]
    assert fp.compare(info.fingerprint, mysql.fingerprint(url)) == []

    execute(url, f"REVOKE SELECT ON Post FROM {reader}")

    assert fp.compare(info.fingerprint, mysql.fingerprint(url)) == [f"grant SELECT on Post to {reader} missing"]


def test_the_restore_test_says_grants_were_not_compared(
    app: tuple[Path, str], reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _url = app
    backup(folder)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert ran.code == 0, ran.out + ran.err
    assert ("note:     database main: not compared: grants (the server keeps them under the database's name, "
            "outside the dump), since this restore went into another database") in ran.out


def test_the_fingerprint_is_read_at_the_dumps_instant(mysql_url: str, tmp_path: Path) -> None:
    execute(mysql_url, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t VALUES (1), (2), (3)")

    def write_meanwhile(conn: object) -> None:
        # Committed by another session while the dump's snapshot is open.
        execute(mysql_url, "INSERT INTO t VALUES (4)", "UPDATE t SET id = 100 WHERE id = 1")

    info = mysql.dump(mysql_url, tmp_path, DumpPlan(), inspect=write_meanwhile)

    assert info.fingerprint.content["t"].rows == 3
    assert fp.compare(info.fingerprint, mysql.fingerprint(mysql_url)) == [
        "table t: content differs (4 rows, the snapshot has 3)"]
    with mysql.scratch_database(mysql_url) as scratch:
        mysql.restore(tmp_path, scratch)
        assert fp.compare(info.fingerprint, mysql.fingerprint(scratch), mysql.FINGERPRINT_OUTSIDE_DUMP) == []


@pytest.mark.parametrize(("setup", "config", "message"), [
    (("CREATE UNIQUE INDEX user_email ON User (email)",), {"redact": ["User.email"]},
     "cannot redact User.email: unique index user_email would reject its redacted '' values at restore; "
     "leave it out of database.redact or drop the constraint"),
    (("ALTER TABLE User ADD CONSTRAINT email_at CHECK (email LIKE '%@%')",), {"redact": ["User.email"]},
     "cannot redact User.email: CHECK constraint email_at may reject its redacted values at restore; "
     "leave it out of database.redact or drop the constraint"),
    ((), {"exclude_tables": ["User"]},
     "cannot back up: table Post keeps rows that reference the excluded table User (foreign key Post_ibfk_1), "
     "so the snapshot could never be restored; exclude Post too, or keep User out of database.exclude_tables"),
], ids=["redacted unique", "redacted check", "excluded referenced table"])
def test_an_unrestorable_backup_is_refused_before_anything_is_written(
    tmp_path: Path, request: pytest.FixtureRequest, setup: tuple[str, ...], config: dict[str, object], message: str
) -> None:
    folder, url = make_app(tmp_path, request, "mysql")
    execute(url, *setup)
    write_config(folder, {"database": {"url": url, **config}, "migrations": {"tool": "auto"}})

    ran = relstep("backup", "--version", "1.0.0", cwd=folder, input="")

    assert ran.code == 2, ran.out + ran.err
    assert ran.err.strip().splitlines()[-1] == f"relstep: config failed: {message}"
    assert [p.name for p in snapshots(folder)] == []


def _title(url: str, post_id: int) -> str:
    from relstep.databases import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql(f"SELECT title FROM Post WHERE id = {post_id}").scalar_one())
    finally:
        engine.dispose()


def test_the_real_restore_into_the_snapshots_own_database_names_a_dropped_grant(
    app: tuple[Path, str], reader: str
) -> None:
    """Where a lost MariaDB grant shows at the CLI: ``relstep restore`` into the database of the
    snapshot's name.  (``verify --restore-test`` cannot: its scratch database has another name, under
    which the server keeps no grant, and it says so; see test_the_restore_test_says_grants_were_not_compared.)
    The grants are compared on the target before the proven staged copy replaces anything, so the
    target keeps its rows."""
    folder, url = app
    snap = backup(folder)
    execute(url, f"REVOKE SELECT ON Post FROM {reader}", "UPDATE Post SET title = 'after the backup' WHERE id = 3")

    ran = relstep("restore", snap.name, "--yes", cwd=folder, input="")

    assert ran.code == 9, ran.out + ran.err
    assert f"the restored database differs: grant SELECT on Post to {reader} missing" in ran.err
    assert _title(url, 3) == "after the backup"
