"""Database servers that go away: mid-dump, and between the backup and the record.

These tests stop a PostgreSQL server for real (`pg_ctl stop`), so they use a private cluster
(tests/reliability/conftest.py: initdb in a temp folder, its own port) instead of the shared one
on 5432 that every other test uses.  pg_terminate_backend on the shared server was the other
option; it kills one session, while a stopping server takes pg_dump's leader, its workers and
relstep's own snapshot-holding session all at once, which is the failure people meet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.apps import create_schema
from tests.helpers import clean_env, init_repo, relstep, write_config
from tests.reliability.support import (
    PrivatePostgres,
    descendants,
    fill_postgres,
    is_alive,
    partials,
    program,
    record_rows,
    start_relstep,
    verify_root,
    visible,
    wait_for,
)


def _app(tmp_path: Path, cluster: PrivatePostgres, database: str) -> tuple[Path, str]:
    cluster.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    cluster.execute(f'CREATE DATABASE "{database}"')
    url = cluster.url(database)
    create_schema(url)
    app = tmp_path / "app"
    (app / "backend").mkdir(parents=True)
    (app / "backend" / "server.js").write_text("// backend\n")
    init_repo(app)
    write_config(app, {"database": {"url": url}, "code": {"backend": "backend"}, "environment": {},
                       "migrations": {"tool": "none"}})
    return app, url


@pytest.mark.slow
def test_the_server_stopping_mid_dump_fails_the_backup_and_leaves_nothing(
    tmp_path: Path, running_pg: PrivatePostgres
) -> None:
    app, url = _app(tmp_path, running_pg, "stops_mid_dump")
    fill_postgres(url, 300_000)
    root = app / "backups" / "releases"
    assert relstep("run", "--version", "1.0.0", cwd=app).code == 0
    before = verify_root(root)
    rows = record_rows(url)

    proc = start_relstep("run", "--version", "1.0.1", cwd=app)
    # Stop the server while a pg_dump worker is half-way through the big table.
    wait_for(lambda: any(p.stat().st_size > 1 << 20 for p in root.glob(".*.partial/databases/main/pg_dump/*.dat.gz")),
             60, "pg_dump to be writing the big table", proc=proc)
    tools = [pid for pid in descendants(proc.pid) if program(pid) == "pg_dump"]
    running_pg.stop("immediate")
    out, err = proc.communicate(timeout=60)
    survivors = [pid for pid in tools if is_alive(pid)]

    assert proc.returncode == 3, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("relstep: backup failed: "), err
    assert f"127.0.0.1:{running_pg.port}" in lines[0] and "stops_mid_dump" in lines[0], err
    assert "lost the connection" in lines[0] or "server closed the connection" in lines[0], err
    assert "backup   FAILED" in out
    assert survivors == []
    assert partials(root) == []
    assert verify_root(root) == before
    running_pg.start()
    assert record_rows(url) == rows


def test_record_database_down_after_the_backup_then_recorded_once(
    tmp_path: Path, running_pg: PrivatePostgres
) -> None:
    """The deploy step stops the app's database server (which holds ReleaseRecord) before the record."""
    app, url = _app(tmp_path, running_pg, "record_down")
    root = app / "backups" / "releases"
    assert relstep("run", "--version", "1.0.0", cwd=app).code == 0
    rows = record_rows(url)
    stop = [*running_pg.pg_ctl_argv("-m", "fast", "-w", "stop")]
    ran = relstep("run", "--version", "1.1.0", "--json", "--", *stop, cwd=app, env=clean_env())
    assert ran.code == 5, ran.err
    result = json.loads(ran.out)
    assert [(p["name"], p["ok"], p["exit_code"]) for p in result["phases"]] == [
        ("backup", True, 0), ("deploy", True, 0), ("record", False, 5)]
    assert (result["failed_phase"], result["exit_code"], result["record_id"]) == ("record", 5, None)
    assert ran.last_err.startswith(
        f"relstep: record failed: cannot reach the record database postgresql://postgres@127.0.0.1:{running_pg.port}"
        "/record_down: ")
    snapshot = Path(result["snapshot"])
    snapshots = verify_root(root)
    assert snapshot.name in snapshots and snapshots[snapshot.name]["version"] == "1.1.0"
    assert partials(root) == []

    running_pg.start()
    assert record_rows(url) == rows  # nothing was recorded while the server was down
    ran = relstep("record", cwd=app)
    assert ran.code == 0, ran.err
    new_id = rows[-1].id + 1
    assert ran.out == f"{snapshot.name} (1.1.0) recorded as ReleaseRecord id {new_id}\n"
    ran = relstep("record", "--snapshot", snapshot.name, cwd=app)
    assert ran.code == 0 and ran.out == f"{snapshot.name} (1.1.0) already recorded as ReleaseRecord id {new_id}\n"
    ran = relstep("record", cwd=app)
    assert ran.code == 2 and ran.last_err == (
        f"relstep: input failed: every snapshot in {root} is already recorded; pass --snapshot to choose one")
    after = record_rows(url)
    assert after[:len(rows)] == rows and len(after) == len(rows) + 1
    assert (after[-1].id, after[-1].version, after[-1].deployment_type, after[-1].backup_path) == (
        new_id, "1.1.0", "release", str(snapshot))
    listing = json.loads(relstep("list", "--json", cwd=app).out)
    assert [(r["version"], r["recorded"]) for r in listing] == [("1.1.0", True), ("1.0.0", True)]
    assert [p.name for p in visible(root)] == sorted(snapshots)
