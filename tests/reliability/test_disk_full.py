"""A full disk: a 12 MiB tmpfs as backup_root, real ENOSPC from the real tools.

Each engine's dump fills it in its own way (SQLite's backup API says "database or disk is full",
pg_dump's leader only "a worker process died unexpectedly", the MariaDB stream gets ENOSPC from
write(2), the code copy too); every one must end the same: exit 3, one line that says the disk is
full and how much was needed and is free, the partial snapshot removed, the earlier snapshot and
the ReleaseRecord rows untouched.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.apps import make_app
from tests.helpers import relstep
from tests.reliability.support import fill_postgres, fingerprint, free_bytes, partials, record_rows, tmpfs, verify_root


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _fill_mysql(url: str, rows: int) -> None:
    from relstep.databases import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE events (id bigint AUTO_INCREMENT PRIMARY KEY, payload varchar(100))")
            conn.exec_driver_sql("SET SESSION max_recursive_iterations = 10000000")
            conn.exec_driver_sql(
                "INSERT INTO events (payload) WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq "
                f"WHERE n < {rows}) SELECT concat(md5(rand()), md5(rand()), md5(rand())) FROM seq")
    finally:
        engine.dispose()


def _grow(where: str, app: Path, url: str) -> None:
    """Make the next snapshot need more than the 12 MiB disk holds."""
    if where == "sqlite":
        with sqlite3.connect(app / "app.db") as conn:
            conn.execute("CREATE TABLE blobs (data BLOB)")
            conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(1 << 20),) for _ in range(24)])
    elif where == "code":
        for i in range(16):
            (app / "backend" / f"asset{i}.bin").write_bytes(os.urandom(1 << 20))
    elif where == "postgres":
        fill_postgres(url, 250_000)
    else:
        _fill_mysql(url, 300_000)


@pytest.mark.parametrize("where", ["sqlite", "code", "postgres", "mysql"])
def test_a_full_disk_fails_the_backup_cleanly_and_says_how_much_was_needed(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = "sqlite" if where in ("sqlite", "code") else where
    with tmpfs(tmp_path / "disk", "12m") as disk:
        root = disk / "releases"
        app, url = make_app(tmp_path, request, engine, backup_root=str(root), environment={})
        assert relstep("run", "--version", "1.0.0", cwd=app).code == 0
        manifests = verify_root(root)
        before = fingerprint(root)
        rows = record_rows(url)
        _grow(where, app, url)

        free_at_start = free_bytes(root)
        ran = relstep("run", "--version", "1.0.1", cwd=app)
        free_after = free_bytes(root)

        assert ran.code == 3, ran.err
        assert ran.err == (
            f"relstep: backup failed: the disk holding {root} is full: the snapshot needed more than the "
            f"{_mib(free_at_start)} that were free when it started, and {_mib(free_after)} are free after "
            "removing the partial snapshot; free space or move backup_root, then re-run\n")
        assert free_after == free_at_start  # every byte the failed run wrote is gone again
        assert partials(root) == []
        assert fingerprint(root) == before
        assert verify_root(root) == manifests
        assert record_rows(url) == rows
