"""A restore never waits unbounded, never leaves a statement behind, and never changes a database half-way.

Real sessions hold real locks: a PostgreSQL session idle in a transaction that read the table,
a MariaDB session whose open transaction read it (a metadata lock that blocks DROP TABLE).
Real signals reach relstep once the restore is seen on the server (pg_stat_activity, the
processlist), never after a guessed delay.  Afterwards the table is still there with its rows,
no relstep statement is left on the server, also once the holder commits.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MY_HOST, MY_PORT, MY_USER, _mysql_database, _need

from tests.helpers import relstep
from tests.reliability.restore_support import app_with_snapshot as _app_with_snapshot
from tests.reliability.restore_support import databases_like as _databases_like
from tests.reliability.restore_support import pg as _pg
from tests.reliability.restore_support import pg_role_database
from tests.reliability.restore_support import relstep_sessions as _relstep_sessions
from tests.reliability.support import start_relstep, wait_for


def _interrupted(proc: subprocess.Popen, signum: int, db: str, left_on_server: Callable[[], list[Any]]) -> list[Any]:
    """Send ``signum``; check exit code and the last line (target unchanged, the way back named);
    return what ``left_on_server`` finds the moment relstep is gone."""
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    left = left_on_server()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"relstep: restore failed: stopped by {name} before the restore finished"), err
    assert f"{db} is unchanged" in last and "relstep restore " in last, last
    return left


# --------------------------------------------------------------------------- PostgreSQL helpers


def _pg_rows(dbname: str) -> dict[str, list[tuple[Any, ...]]]:
    with _pg(dbname) as conn:
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in ("User", "Post")}


@pytest.fixture
def pg_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str, str]]:
    """(app, URL, database) on PostgreSQL with snapshot 1.0.0, then one more User row than the snapshot.

    ``request.param`` "owner" connects as a role that owns the database and may create
    databases (the staged swap); "no-createdb" as one that may not (the one-transaction path).
    """
    with pg_role_database(getattr(request, "param", "owner")) as (url, db):
        app = _app_with_snapshot(tmp_path, url)
        with _pg(db) as conn:
            conn.execute("""INSERT INTO "User" VALUES (77, 'late@example.com', 'pw', NULL)""")
        yield app, url, db


def _idle_in_transaction(url: str, name: str = "app-holder") -> Any:
    """A real app session (the app's role), idle in a transaction that read "User" (ACCESS SHARE on it)."""
    import psycopg

    conn = psycopg.connect(url, application_name=name)
    conn.execute('SELECT 1 FROM "User" LIMIT 1').fetchall()
    return conn


def _assert_nothing_left(db: str) -> None:
    assert _relstep_sessions(db) == []
    assert [d for d in _databases_like(db[:40]) if "relstep_staged" in d] == []


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.parametrize("pg_app", ["owner", "no-createdb"], indirect=True)
def test_pg_a_session_in_the_way_is_named_after_lock_wait_and_nothing_changes(pg_app: tuple[Path, str, str]) -> None:
    app, url, db = pg_app
    before = _pg_rows(db)
    holder = _idle_in_transaction(url)
    try:
        holder_pid = holder.info.backend_pid

        ran = relstep("restore", "1.0.0", "--yes", "--lock-wait", "1", cwd=app, input="")

        assert ran.code == 10, ran.err
        message = ran.last_err
        assert message.startswith("relstep: restore failed: "), message
        assert "waited 1 s (--lock-wait)" in message
        role = url.split("//")[1].split(":")[0]
        assert f"session {holder_pid} (user '{role}', application 'app-holder', idle in transaction, since " \
            in message
        assert "nothing was changed" in message and "--terminate-sessions" in message
        assert f"{db} is unchanged" in message
        assert _pg_rows(db) == before
        _assert_nothing_left(db)
    finally:
        holder.commit()
        holder.close()
    # Nothing of relstep's was queued behind the holder: once it commits, everything is still there.
    assert _pg_rows(db) == before
    _assert_nothing_left(db)


@pytest.mark.parametrize("pg_app", ["owner", "no-createdb"], indirect=True)
def test_pg_terminate_sessions_ends_the_session_in_the_way_and_says_so(pg_app: tuple[Path, str, str]) -> None:
    import psycopg

    app, url, db = pg_app
    before = _pg_rows(db)
    holder = _idle_in_transaction(url)
    holder_pid = holder.info.backend_pid

    ran = relstep("restore", "1.0.0", "--yes", "--lock-wait", "20", "--terminate-sessions", cwd=app, input="")

    assert ran.code == 0, ran.err
    role = url.split("//")[1].split(":")[0]
    assert f"ended session {holder_pid} (user '{role}', application 'app-holder', idle in transaction" in ran.out
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")
    holder.close()
    after = _pg_rows(db)
    assert [r[0] for r in after["User"]] == [r[0] for r in before["User"] if r[0] != 77]
    assert after["Post"] == before["Post"]
    _assert_nothing_left(db)


def _restore_waiting(db: str) -> Any:
    """The restore's own session, seen on the server waiting: for a lock (one transaction), or for
    the target's sessions to leave (the swap's rename, retried)."""
    def check() -> Any:
        with _pg() as conn:
            return conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s AND "
                "((wait_event_type = 'Lock' AND query LIKE 'DROP SCHEMA%%') OR query LIKE 'ALTER DATABASE%%')",
                (f"{db} (relstep-restore-%",)).fetchall()
    return check


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("pg_app", ["owner", "no-createdb"], indirect=True)
def test_pg_a_signal_while_the_restore_waits_ends_its_statements_and_changes_nothing(
    pg_app: tuple[Path, str, str], signum: int
) -> None:
    app, url, db = pg_app
    before = _pg_rows(db)
    holder = _idle_in_transaction(url)
    try:
        proc = start_relstep("restore", "1.0.0", "--yes", "--lock-wait", "120", cwd=app, stdin=subprocess.DEVNULL)
        wait_for(_restore_waiting(db), 60, "the restore to wait on the server", proc=proc)
        # Checked the moment relstep is gone: nothing of it may still be on the server.
        assert _interrupted(proc, signum, db, lambda: _relstep_sessions(db)) == []
        assert _pg_rows(db) == before
    finally:
        holder.commit()
        holder.close()
    assert _pg_rows(db) == before
    _assert_nothing_left(db)


# --------------------------------------------------------------------------- MariaDB helpers


def _my(database: str | None = None) -> Any:
    import pymysql

    return pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", database=database,
                           autocommit=True)


def _my_rows(db: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = _my(db)
    try:
        with conn.cursor() as cur:
            rows = {}
            for table in ("User", "Post"):
                cur.execute(f"SELECT * FROM `{table}` ORDER BY 1")
                rows[table] = list(cur.fetchall())
            return rows
    finally:
        conn.close()


def _my_query(sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = _my()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def _my_restore_statements(db: str) -> list[tuple[Any, ...]]:
    """Statements of a restore still on the server: its LOCK TABLES / DROP on the database, or a staged copy."""
    running = _my_query("SELECT ID, STATE, INFO FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
                        "AND DB = %s AND (INFO LIKE 'LOCK TABLES%%' OR INFO LIKE 'DROP %%')", db)
    staged = _my_query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
                       f"{db}_relstep_staged%")
    return running + staged


@pytest.fixture
def my_app(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """(app, URL, database) on MariaDB with snapshot 1.0.0, then one more User row than the snapshot."""
    _need("MariaDB", MY_HOST, MY_PORT)
    gen = _mysql_database(f"relstep_lk_{uuid.uuid4().hex[:10]}")
    url = next(gen)
    db = url.rsplit("/", 1)[1]
    try:
        app = _app_with_snapshot(tmp_path, url)
        _my_query(f"INSERT INTO `{db}`.`User` VALUES (77, 'late@example.com', 'pw', NULL)")
        yield app, url, db
    finally:
        for _ in gen:
            pass


def _metadata_lock_holder(db: str) -> Any:
    """A real app session whose open transaction read `User`: its metadata lock blocks DROP and LOCK TABLES."""
    conn = _my(db)
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION")
        cur.execute("SELECT * FROM `User` LIMIT 1")
        cur.fetchall()
    return conn


def _release(holder: Any) -> None:
    with holder.cursor() as cur:
        cur.execute("COMMIT")
    holder.close()


# --------------------------------------------------------------------------- MariaDB


def test_mysql_a_metadata_lock_holder_is_named_after_lock_wait_and_nothing_changes(
    my_app: tuple[Path, str, str]
) -> None:
    app, _url, db = my_app
    before = _my_rows(db)
    holder = _metadata_lock_holder(db)
    try:
        holder_id = holder.thread_id()

        ran = relstep("restore", "1.0.0", "--yes", "--lock-wait", "1", cwd=app, input="")

        assert ran.code == 10, ran.err
        message = ran.last_err
        assert "locking the tables to replace on " + db + " waited 1 s (--lock-wait)" in message, message
        assert f"session {holder_id} (user 'root', application 'from 127.0.0.1:" in message
        assert "sleep, in a transaction, since " in message
        assert "nothing was changed" in message and f"{db} is unchanged" in message
        assert _my_rows(db) == before
        assert _my_restore_statements(db) == []
    finally:
        _release(holder)
    assert _my_rows(db) == before
    assert _my_restore_statements(db) == []


def test_mysql_terminate_sessions_kills_the_holder_and_says_so(my_app: tuple[Path, str, str]) -> None:
    import pymysql

    app, _url, db = my_app
    before = _my_rows(db)
    holder = _metadata_lock_holder(db)
    holder_id = holder.thread_id()

    ran = relstep("restore", "1.0.0", "--yes", "--lock-wait", "20", "--terminate-sessions", cwd=app, input="")

    assert ran.code == 0, ran.err
    assert f"ended session {holder_id} (user 'root', application 'from 127.0.0.1:" in ran.out
    with pytest.raises(pymysql.err.OperationalError):
        with holder.cursor() as cur:
            cur.execute("SELECT 1")
    after = _my_rows(db)
    assert [r[0] for r in after["User"]] == [r[0] for r in before["User"] if r[0] != 77]
    assert after["Post"] == before["Post"]
    assert _my_restore_statements(db) == []


def test_mysql_terminate_sessions_leaves_another_apps_open_transaction_alone(
        my_app: tuple[Path, str, str], mysql_url2: str) -> None:
    """A shared server: another app, in its own database, is mid-transaction.  MariaDB cannot say
    which database that transaction's locks are in (without metadata_lock_info), so relstep names it
    but does not end it: the other app's work commits, and the restore still ends the holder in its
    own database and succeeds."""
    app, _url, db = my_app
    other_db = mysql_url2.rsplit("/", 1)[1]
    other = _my(other_db)
    holder = _metadata_lock_holder(db)
    try:
        with other.cursor() as cur:
            cur.execute("CREATE TABLE Ledger (id int PRIMARY KEY) ENGINE=InnoDB")
            cur.execute("START TRANSACTION")
            cur.execute("INSERT INTO Ledger VALUES (1)")
        other_id, holder_id = other.thread_id(), holder.thread_id()

        ran = relstep("restore", "1.0.0", "--yes", "--lock-wait", "20", "--terminate-sessions", cwd=app, input="")

        assert ran.code == 0, ran.err
        assert f"ended session {holder_id} " in ran.out
        assert f"ended session {other_id} " not in ran.out
        [note] = [line for line in ran.out.splitlines() if line.startswith("note: not ended")]
        assert note.startswith(f"note: not ended (not using {db}; each may still hold a lock in it): "
                               f"session {other_id} (user 'root', application 'from 127.0.0.1:"), note
        assert f"in a transaction in database '{other_db}', since " in note, note
        with other.cursor() as cur:
            cur.execute("COMMIT")
            cur.execute("SELECT id FROM Ledger")
            assert cur.fetchall() == ((1,),)
    finally:
        other.close()
        holder.close()
    assert _my_restore_statements(db) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_mysql_a_signal_while_the_restore_waits_kills_its_queued_statement(
    my_app: tuple[Path, str, str], signum: int
) -> None:
    """The issue's case: a restore killed while it waits on a metadata lock must not leave its
    statement queued, to drop the table once the app's transaction ends."""
    app, _url, db = my_app
    before = _my_rows(db)
    holder = _metadata_lock_holder(db)
    try:
        proc = start_relstep("restore", "1.0.0", "--yes", "--lock-wait", "120", cwd=app, stdin=subprocess.DEVNULL)
        wait_for(lambda: _my_query("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOCK TABLES%%' "
                                   "AND STATE = 'Waiting for table metadata lock'"),
                 60, "the restore to wait for the metadata lock", proc=proc)
        assert _interrupted(proc, signum, db, lambda: _my_restore_statements(db)) == []
    finally:
        _release(holder)
    assert _my_rows(db) == before
    assert _my_restore_statements(db) == []
