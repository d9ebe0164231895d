"""A backup of an SQLite database that another connection keeps locked waits a bounded time,
then fails in one line and leaves no snapshot (issue 15: it used to wait for ever, silently)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from tests.helpers import clean_env, relstep, sqlite_app


def test_a_locked_sqlite_database_fails_the_backup_after_the_bounded_wait(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    database = app / "app.db"
    root = app / "backups" / "releases"
    # The app's connection holds an EXCLUSIVE lock for the whole backup (taken before it starts).
    with closing(sqlite3.connect(database)) as holder:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute('UPDATE "User" SET email = email')

        ran = relstep("backup", "--version", "1.0.0", cwd=app, env=clean_env(RELSTEP_SQLITE_LOCK_WAIT="1"),
                      timeout=120)

        holder.rollback()
    assert ran.code == 3, ran.err
    assert ran.err.splitlines()[-1] == (
        f"relstep: backup failed: SQLite database {database} stayed locked by another connection for 1 s "
        "(RELSTEP_SQLITE_LOCK_WAIT); no snapshot was written: end the transaction that holds it "
        "(`fuser -v` names the processes that have the file open) and run the backup again")
    assert not root.exists() or [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    assert not root.exists() or [p.name for p in root.iterdir() if p.name.endswith(".partial")] == []
