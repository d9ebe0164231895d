"""kill -9 of relstep at seeded points of a restore, on each engine.

relstep is stopped at an exact point by the test-only fault hook (relstep.faults: it writes the
point's name into a FIFO the test reads, an event, then waits), and the test SIGKILLs it there.
What a person finds afterwards:

* the target is unchanged, or (past the point of no return) entirely the snapshot, by the
  engine's own fingerprint (schema and content digests);
* nothing of relstep's keeps running on the server: no session of the restore, no lock that
  blocks the app (the app takes an exclusive lock on its table, bounded, and gets it);
* the way back is discoverable after the fact: `relstep status` names the unfinished restore
  (its journal beside the snapshots) with the exact commands, and those commands work.

The wait for the server to drop a dead client's sessions is the one bounded wait on a condition
(wait_for): the server notices the closed socket on its own schedule, no event reaches the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relstep.databases import engine_for
from tests.helpers import clean_env, relstep, write_config
from tests.reliability.restore_support import (
    app_with_snapshot,
    databases_like,
    pg,
    pg_role_database,
    relstep_sessions,
)
from tests.reliability.support import start_relstep, wait_for

JOURNAL = ".restore-in-progress.json"


def fingerprint(url: str, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """The live database's fingerprint; ``like``: a recorded one it is compared with, whose content
    digests say how to read each table (a redacted table's SHA-256, pg_dump's CRC-32), as the proof does."""
    from relstep.fingerprint import Fingerprint

    recorded = Fingerprint.from_json(like) if like is not None else None
    return engine_for(url).fingerprint(url, like=recorded).to_json()


def snapshot_fingerprint(app: Path, path: Path | None = None) -> dict[str, Any]:
    """The fingerprint snapshot 1.0.0 (or the snapshot at ``path``) recorded: redacted columns as the
    restore brings them back."""
    from relstep.fingerprint import Fingerprint
    from relstep.manifest import Manifest

    if path is None:
        [path] = (app / "backups" / "releases").glob("2*")
    [entry] = (Manifest.load(path).databases or {}).values()
    assert entry.fingerprint is not None
    return Fingerprint.from_json(entry.fingerprint).to_json()


def kill_at(app: Path, point: str, tmp_path: Path, then: Callable[[], None] | None = None) -> str:
    """Start `relstep restore 1.0.0 --yes`, wait until it reaches ``point`` (and ``then`` returns),
    SIGKILL it; its stderr."""
    fifo = tmp_path / f"restorekill-{point}.fifo"
    os.mkfifo(fifo)
    env = clean_env(RELSTEP_TEST_FAULT=f"{point}:pause", RELSTEP_TEST_FAULT_FIFO=str(fifo))
    proc = start_relstep("restore", "1.0.0", "--yes", cwd=app, env=env, stdin=subprocess.DEVNULL)
    reached: list[str] = []

    def read() -> None:
        with open(fifo) as pipe:  # returns once relstep opened it at the point (or the test below did)
            reached.append(pipe.readline().strip())

    def unblock_if_relstep_exits() -> None:
        proc.wait()
        try:  # relstep ended without reaching the point: let the reader's open return
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # the reader already read the point and closed: nobody waits

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    threading.Thread(target=unblock_if_relstep_exits, daemon=True).start()
    reader.join(timeout=240)
    if reached != [point]:
        proc.kill()
        _out, err = proc.communicate()
        raise AssertionError(f"relstep did not reach {point} (exit {proc.returncode}): {err}")
    if then is not None:
        try:
            then()
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
    proc.send_signal(signal.SIGKILL)
    _out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return err


def unfinished(app: Path) -> str:
    """`relstep status`'s line about the unfinished restore, one of the health check's problems (exit 11)."""
    ran = relstep("status", "--max-age", "30d", cwd=app)
    assert ran.code == 11, ran.out + ran.err
    [line] = [ln for ln in ran.out.splitlines() if "did not finish" in ln]
    return line


def command(line: str, after: str) -> list[str]:
    found = re.search(re.escape(after) + r" `([^`]+)`", line)
    assert found, f"no command after {after!r} in: {line}"
    return shlex.split(found.group(1))


def run(argv: list[str], cwd: Path | None = None) -> None:
    if argv[0] == "relstep":
        ran = relstep(*argv[1:], cwd=cwd or Path.cwd())
        assert ran.code == 0, ran.err
        return
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    assert done.returncode == 0, done.stderr


# --------------------------------------------------------------------------- PostgreSQL


def _pg_app_blocks_no_more(db: str) -> None:
    """The app takes an exclusive lock on its table within 5 s: nothing of relstep's holds one."""
    with pg(db) as conn, conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '5s'")
        conn.execute('LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE')


def _pg_nothing_left_running(db: str) -> None:
    wait_for(lambda: relstep_sessions(db) == [], 30, "the server to end the killed restore's sessions")


@pytest.fixture
def pg_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Path, str, str, dict, dict]]:
    """(app, url, db, the snapshot's fingerprint, the target's fingerprint before the restore)."""
    with pg_role_database(getattr(request, "param", "owner")) as (url, db):
        app = app_with_snapshot(tmp_path, url)
        at_snapshot = snapshot_fingerprint(app)
        with pg(db) as conn:
            conn.execute("""INSERT INTO "User" VALUES (77, 'late@example.com', 'pw', NULL)""")
        yield app, url, db, at_snapshot, fingerprint(url)


# Before the point of no return: the staged load, the proof, after it, between the two renames.
@pytest.mark.parametrize("point", ["pg-staged-load", "proof", "pg-before-swap", "pg-mid-swap"])
def test_pg_kill9_before_the_swap_leaves_the_target_unchanged(point: str, tmp_path: Path, pg_app: Any) -> None:
    app, url, db, _at_snapshot, before = pg_app

    kill_at(app, point, tmp_path)

    _pg_nothing_left_running(db)
    assert fingerprint(url) == before
    _pg_app_blocks_no_more(db)
    line = unfinished(app)
    assert f"{db}_relstep_staged_" in line and "is unchanged" in line, line
    assert databases_like(f"{db}_relstep_staged_"), "the staged database is the leftover named"
    run(command(line, "remove it with"))
    assert databases_like(f"{db}_relstep_staged_") == []
    assert databases_like(f"{db}_before_restore_") == []
    safety = command(line, "as it was:")
    assert safety[:2] == ["relstep", "restore"]


def test_pg_kill9_after_the_swap_leaves_the_snapshot_and_the_way_back(tmp_path: Path, pg_app: Any) -> None:
    app, url, db, at_snapshot, before = pg_app

    kill_at(app, "pg-swapped", tmp_path)

    _pg_nothing_left_running(db)
    assert fingerprint(url, like=at_snapshot) == at_snapshot
    _pg_app_blocks_no_more(db)
    line = unfinished(app)
    [replaced] = databases_like(f"{db}_before_restore_")
    assert f"if database {replaced} exists, the snapshot was swapped in whole" in line, line
    undo = command(line, "to put the previous database back:")
    assert undo[0] == "psql"

    run(undo)

    assert fingerprint(url) == before


@pytest.mark.parametrize("pg_app", ["no-createdb"], indirect=True)
@pytest.mark.parametrize("point", ["pg-one-transaction-pre-data", "pg-one-transaction-data"])
def test_pg_kill9_inside_the_one_transaction_rolls_it_all_back(point: str, tmp_path: Path, pg_app: Any) -> None:
    app, url, db, _at_snapshot, before = pg_app

    kill_at(app, point, tmp_path)

    # psql died with relstep (the kernel's parent-death signal): the server rolls the transaction back.
    _pg_nothing_left_running(db)
    assert fingerprint(url) == before
    _pg_app_blocks_no_more(db)
    line = unfinished(app)
    assert "is unchanged" in line, line


@pytest.mark.parametrize("pg_app", ["no-createdb"], indirect=True)
def test_pg_kill9_after_the_one_transaction_committed_leaves_the_snapshot_and_the_safety_snapshot(
    tmp_path: Path, pg_app: Any
) -> None:
    app, url, db, at_snapshot, before = pg_app

    kill_at(app, "proof", tmp_path)   # the proof of an in-place restore runs after its COMMIT

    _pg_nothing_left_running(db)
    assert fingerprint(url, like=at_snapshot) == at_snapshot
    line = unfinished(app)
    assert "completed, " in line and "is entirely the snapshot" in line, line
    way_back = command(line, "as it was:")

    run(way_back, cwd=app)

    # The target as it was, but for the password column: the safety snapshot, like every snapshot,
    # never holds it (DISASTER_RECOVERY.md, step 6).
    safety = snapshot_fingerprint(app, Path(way_back[2]))
    assert fingerprint(url, like=safety) == safety
    assert fingerprint(url)["objects"] == before["objects"]
    with pg(db) as conn:
        assert 77 in [row[0] for row in conn.execute('SELECT id FROM "User"').fetchall()]


def _waiting_relstep_lock(db: str) -> bool:
    with pg() as conn:
        return bool(conn.execute(
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.application_name LIKE %s", (f"{db} (relstep-restore-%",)).fetchall())


@pytest.mark.parametrize("pg_app", ["no-createdb"], indirect=True)
def test_pg_kill9_while_queued_behind_an_app_lock_leaves_nothing_queued(tmp_path: Path, pg_app: Any) -> None:
    """The one transaction's DROP SCHEMA waits behind an app's open transaction (--lock-wait 600);
    relstep is killed: the server ends the queued statement while the app still holds its lock,
    so nothing of relstep's runs when the app's transaction ends."""
    app, url, db, _at_snapshot, before = pg_app
    with pg(db) as holder:
        holder.execute("BEGIN")
        holder.execute('SELECT 1 FROM "User" LIMIT 1')   # idle in transaction, holding ACCESS SHARE
        proc = start_relstep("restore", "1.0.0", "--yes", "--lock-wait", "600", cwd=app,
                             stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: _waiting_relstep_lock(db), 120, "the restore's DROP to wait behind the app's lock",
                     proc=proc)
        finally:
            proc.kill()
            proc.communicate()

        _pg_nothing_left_running(db)   # psql died with relstep; the server noticed its client was gone
        holder.execute("COMMIT")
    assert fingerprint(url) == before
    assert "is unchanged" in unfinished(app)


# --------------------------------------------------------------------------- MariaDB


def _my(url: str, *statements: str) -> list[Any]:
    from sqlalchemy import text

    from relstep.databases import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            rows: list[Any] = []
            for statement in statements:
                result = conn.execute(text(statement))
                rows = list(result.all()) if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


def _my_sessions(db: str, but: int = 0) -> list[Any]:
    """Sessions using the database or a staged copy of it (``but``: the test's own holder)."""
    server = MY_SERVER.format(db="")
    return _my(server, "SELECT ID, DB, COMMAND, INFO FROM information_schema.PROCESSLIST "
                       f"WHERE ID <> CONNECTION_ID() AND ID <> {int(but)} AND DB LIKE '{db}%'")


MY_SERVER = "mysql+pymysql://root@127.0.0.1:3306/{db}"


@pytest.fixture
def my_app(tmp_path: Path, mysql_url: str) -> tuple[Path, str, str, dict, dict]:
    _my(mysql_url, "CREATE TABLE Account (id int PRIMARY KEY, email varchar(50) NOT NULL)",
        "INSERT INTO Account VALUES (1, 'a@x'), (2, 'b@x')",
        "CREATE VIEW emails AS SELECT email FROM Account")
    app = app_with_snapshot(tmp_path, mysql_url, schema=False)
    at_snapshot = snapshot_fingerprint(app)
    _my(mysql_url, "INSERT INTO Account VALUES (3, 'c@x')")
    return app, mysql_url, mysql_url.rsplit("/", 1)[1], at_snapshot, fingerprint(mysql_url)


def _my_nothing_left(url: str, db: str) -> None:
    wait_for(lambda: _my_sessions(db) == [], 30, "the server to end the killed restore's sessions")
    # The app's metadata lock is granted within 5 s: nothing of relstep's holds or queues one.
    _my(url, "SET SESSION lock_wait_timeout = 5", "LOCK TABLES Account WRITE", "UNLOCK TABLES")


@pytest.mark.parametrize("point", ["mysql-staged-load", "proof", "mysql-before-live"])
def test_mysql_kill9_before_the_live_load_leaves_the_target_unchanged(point: str, tmp_path: Path,
                                                                     my_app: Any) -> None:
    app, url, db, _at_snapshot, before = my_app

    kill_at(app, point, tmp_path)

    _my_nothing_left(url, db)
    assert fingerprint(url) == before
    line = unfinished(app)
    assert "is unchanged" in line, line
    if point == "mysql-before-live":  # the staged copy was dropped after its proof
        assert "staged copy" not in line, line
    else:
        run(command(line, "remove it with"))
    staged = _my(MY_SERVER.format(db=""), "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                                          f"WHERE SCHEMA_NAME LIKE '{db}_relstep%'")
    assert staged == []


def test_mysql_kill9_while_queued_behind_an_app_metadata_lock_leaves_nothing_queued(tmp_path: Path,
                                                                                   my_app: Any) -> None:
    """relstep's LOCK TABLES waits behind an app's open transaction (--lock-wait 600) and relstep is
    killed: the server ends the waiting statement while the app still holds its metadata lock, so
    no DROP of relstep's runs when the app's transaction ends."""
    import pymysql

    app, url, db, _at_snapshot, before = my_app
    holder = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db)
    try:
        with holder.cursor() as cursor:
            cursor.execute("START TRANSACTION")
            cursor.execute("SELECT * FROM Account LIMIT 1")   # a metadata lock until COMMIT
        proc = start_relstep("restore", "1.0.0", "--yes", "--lock-wait", "600", cwd=app,
                             stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: any("metadata lock" in str(row[2]) for row in _my_states(db)), 120,
                     "the restore's LOCK TABLES to wait behind the app's metadata lock", proc=proc)
        finally:
            proc.kill()
            proc.communicate()

        wait_for(lambda: _my_sessions(db, but=holder.thread_id()) == [], 30,
                 "the server to end the killed restore's statement")
        holder.commit()
    finally:
        holder.close()
    assert fingerprint(url) == before
    assert "is unchanged" in unfinished(app)


def _my_states(db: str) -> list[Any]:
    return _my(MY_SERVER.format(db=""), "SELECT ID, INFO, STATE FROM information_schema.PROCESSLIST "
                                        f"WHERE ID <> CONNECTION_ID() AND DB = '{db}'")


def test_mysql_kill9_during_the_live_load_names_the_safety_snapshot_that_puts_it_back(tmp_path: Path,
                                                                                      my_app: Any) -> None:
    app, url, db, _at_snapshot, before = my_app

    kill_at(app, "mysql-live-load", tmp_path)

    wait_for(lambda: _my_sessions(db) == [], 30, "the server to end the killed restore's sessions")
    line = unfinished(app)
    assert "may be half restored" in line, line
    way_back = command(line, "put the safety snapshot back with")
    assert way_back[:2] == ["relstep", "restore"] and way_back[-1] == "--yes"

    run(way_back, cwd=app)

    assert fingerprint(url) == before
    assert not (app / "backups" / "releases" / JOURNAL).exists()


def test_mysql_kill9_midway_through_the_live_load_leaves_it_half_and_the_way_back_works(
        tmp_path: Path, mysql_url: str) -> None:
    """Killed with the first 2 MiB of a 6 MB dump executed on the live database (one table loaded,
    the big one created and partly filled, the client waiting for the rest): the target is neither
    as before nor the snapshot, status says so, and the printed safety-snapshot restore puts it back."""
    _my(mysql_url, "CREATE TABLE Account (id int PRIMARY KEY, email varchar(50) NOT NULL)",
        "INSERT INTO Account VALUES (1, 'a@x'), (2, 'b@x')",
        "CREATE TABLE Zebra (id int PRIMARY KEY, payload varchar(200) NOT NULL)",
        "INSERT INTO Zebra SELECT seq, concat(sha2(seq, 256), sha2(seq + 1, 256)) FROM seq_1_to_50000")
    app = app_with_snapshot(tmp_path, mysql_url, schema=False)
    at_snapshot = snapshot_fingerprint(app)
    _my(mysql_url, "INSERT INTO Account VALUES (3, 'c@x')", "DELETE FROM Zebra WHERE id > 49000")
    db = mysql_url.rsplit("/", 1)[1]
    before = fingerprint(mysql_url)

    def client_created_zebra() -> bool:
        # relstep dropped every live table before the load; the dump creates Account, fills it, then
        # creates Zebra: from here on the live database is neither as before nor the snapshot.
        return bool(_my(MY_SERVER.format(db=""), "SELECT 1 FROM information_schema.TABLES "
                                                 f"WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'Zebra'"))

    def client_waits_for_the_rest() -> None:
        wait_for(client_created_zebra, 60, "the client to run the dump's first statements")

    kill_at(app, "mysql-live-load-midway", tmp_path, then=client_waits_for_the_rest)

    wait_for(lambda: _my_sessions(db) == [], 30, "the server to end the killed restore's sessions")
    assert fingerprint(mysql_url) != before
    assert fingerprint(mysql_url, like=at_snapshot) != at_snapshot
    zebra = _my(mysql_url, "SELECT count(*) FROM Zebra")[0][0]
    assert 0 <= zebra < 50000, zebra   # created again by the dump, and not (yet) all of it
    line = unfinished(app)
    assert "may be half restored" in line, line

    run(command(line, "put the safety snapshot back with"), cwd=app)

    assert fingerprint(mysql_url) == before
    assert not (app / "backups" / "releases" / JOURNAL).exists()


def test_mysql_live_load_failure_puts_the_safety_snapshot_back(tmp_path: Path, my_app: Any) -> None:
    """The staged proof passes, then the live load fails (a seeded failure at its first statement,
    after the live tables were dropped): relstep puts the safety snapshot back by itself."""
    app, url, db, _at_snapshot, before = my_app
    env = clean_env(RELSTEP_TEST_FAULT="mysql-live-load:fail")

    ran = relstep("restore", "1.0.0", "--yes", cwd=app, env=env)

    assert ran.code == 9, ran.err
    assert "seeded failure at mysql-live-load" in ran.last_err, ran.last_err
    assert re.search(r"had been changed, so relstep put the safety snapshot \S+ back: it is as before",
                     ran.last_err), ran.last_err
    assert fingerprint(url) == before
    assert _my_sessions(db) == []
    assert not (app / "backups" / "releases" / JOURNAL).exists()


# --------------------------------------------------------------------------- SQLite


def test_sqlite_kill9_mid_copy_leaves_the_file_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "restorekill-app.db"
    with sqlite3.connect(db) as conn:  # ~3000 pages: the copy takes three steps of 1024
        conn.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        conn.executemany("INSERT INTO blobs VALUES (?, ?)", [(i, os.urandom(4000)) for i in range(3000)])
    conn.close()
    url = f"sqlite:///{db}"
    app = app_with_snapshot(tmp_path, url, schema=False)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM blobs WHERE id >= 100")
        conn.execute("INSERT INTO blobs VALUES (9999, x'00')")
    conn.close()
    before = fingerprint(url)

    kill_at(app, "sqlite-mid-copy", tmp_path)

    # Half the pages were written inside the copy's open transaction: a hot journal is left, and the
    # app's next connection (any read-write open) rolls them back.
    assert (tmp_path / f"{db.name}-journal").stat().st_size > 0
    sqlite3.connect(db).execute("SELECT count(*) FROM blobs").fetchone()
    assert fingerprint(url) == before
    line = unfinished(app)
    assert "is unchanged" in line, line
    [staged] = [p for p in tmp_path.iterdir() if p.name.startswith(f".{db.name}.relstep-restore-")]
    run(command(line, "remove it with"))
    assert not staged.exists()


def test_mysql_put_back_of_an_encrypted_safety_snapshot_needs_the_identity_before_anything_changes(
        tmp_path: Path, my_app: Any) -> None:
    """With encryption configured the safety snapshot is encrypted: the put-back after a failed live
    load decrypts it, and without the identity the restore is refused before the live tables go."""
    app, url, db, _at_snapshot, before = my_app
    ran = relstep("keygen", "--output", str(tmp_path / "team.key"), cwd=app)
    assert ran.code == 0, ran.err
    public = ran.out.split("public key: ", 1)[1].strip()
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"},
                       "encryption": {"recipients": [public]}})

    refused = relstep("restore", "1.0.0", "--yes", cwd=app, env=clean_env(RELSTEP_TEST_FAULT="mysql-live-load:fail"))
    assert refused.code == 2, refused.err
    assert refused.last_err.endswith("pass --identity FILE or set RELSTEP_AGE_IDENTITY_FILE so relstep can put it "
                                     "back; nothing was changed"), refused.last_err
    assert fingerprint(url) == before
    assert not list((app / "backups").glob("pre-restore/*/MANIFEST.json"))   # no safety snapshot was even taken

    env = clean_env(RELSTEP_TEST_FAULT="mysql-live-load:fail", RELSTEP_AGE_IDENTITY_FILE=str(tmp_path / "team.key"))
    ran = relstep("restore", "1.0.0", "--yes", cwd=app, env=env)
    assert ran.code == 9, ran.err
    assert re.search(r"had been changed, so relstep put the safety snapshot \S+ back: it is as before",
                     ran.last_err), ran.last_err
    assert fingerprint(url) == before
    [safety] = list((app / "backups").glob("pre-restore/*/MANIFEST.json"))
    assert json.loads(safety.read_text())["encryption"]["recipients"] == [public]
    assert _my_sessions(db) == []
