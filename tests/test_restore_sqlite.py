"""SQLite restore writes into the live file: its identity, journal mode and header values survive,
and an app connection open across the restore reads the restored rows afterwards."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.helpers import relstep, sqlite_app, sqlite_rows

APP_UID, APP_GID = 65534, 65534   # nobody/nogroup: the app's user, not the one running relstep


def test_a_sqlite_restore_keeps_the_files_identity_and_the_apps_connection_sees_it(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    db = app / "app.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
        conn.execute("PRAGMA user_version = 7")
        conn.execute("PRAGMA application_id = 4660")
    os.chown(db, APP_UID, APP_GID)
    os.chmod(db, 0o600)
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    snapshot_rows = sqlite_rows(db, "User")
    app_conn = sqlite3.connect(db)   # the app's, open across the restore
    try:
        app_conn.execute("""DELETE FROM "User" WHERE id > 1""")
        app_conn.execute("PRAGMA user_version = 8")
        app_conn.commit()
        assert len(sqlite_rows(db, "User")) == 1
        before = os.stat(db)

        ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

        assert ran.code == 0, ran.err
        after = os.stat(db)
        assert (after.st_ino, after.st_uid, after.st_gid, oct(after.st_mode)) == \
            (before.st_ino, APP_UID, APP_GID, oct(before.st_mode))
        assert oct(after.st_mode & 0o777) == "0o600"
        # The app's connection, opened before the restore, reads the restored rows.
        restored = [row[0] for row in app_conn.execute('SELECT id FROM "User" ORDER BY id')]
        assert restored == [row[0] for row in snapshot_rows]
        assert app_conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert app_conn.execute("PRAGMA user_version").fetchone() == (7,)
        assert app_conn.execute("PRAGMA application_id").fetchone() == (4660,)
    finally:
        app_conn.close()
    assert not (app / "app.db-wal").exists() or (app / "app.db-wal").stat().st_size == 0
    assert [p.name for p in app.iterdir() if "relstep-restore" in p.name] == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_sqlite_file_locked_by_the_app_is_waited_for_at_most_lock_wait(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    db = app / "app.db"
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("""DELETE FROM "User" WHERE id > 2""")
    # Read before the app's lock is taken: closing any descriptor of the file in this process
    # would drop the process's POSIX locks on it, the app's included.
    before = db.read_bytes()
    writer = sqlite3.connect(db, isolation_level=None)   # the app, in the middle of a write transaction
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("""DELETE FROM "User" WHERE id > 1""")

        ran = relstep("restore", "1.0.0", "--yes", "--lock-wait", "1", cwd=app, input="")

        assert ran.code == 10, ran.out + ran.err
        assert f"{db} stayed locked by another connection for 1 s (--lock-wait); nothing was changed" in ran.last_err
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert db.read_bytes() == before
    assert [row[0] for row in sqlite_rows(db, "User")] == [1, 2]
