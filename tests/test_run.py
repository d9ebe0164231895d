"""record, prune and `relstep run` through the real CLI, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relstep import records
from relstep.snapshot import list_snapshots
from tests.apps import ENGINES, make_app
from tests.helpers import clean_env, git, relstep, write_config


def snapshots(app: Path) -> list[Path]:
    return [s.path for s in list_snapshots(app / "backups" / "releases")]


def rows(url: str) -> list[records.RecordRow]:
    return records.read_all(url, "ReleaseRecord")


@pytest.mark.parametrize("engine", ENGINES)
def test_five_runs_keep_three_snapshots_and_record_five_rows(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    app, url = make_app(tmp_path, request, engine)
    env = clean_env(RELEASE_BACKUP_RETENTION_COUNT="3")
    versions = ["1.0.0", "1.0.1", "1.1.0", "1.1.1", "2.0.0"]
    made = []
    for version in versions:
        git("commit", "-q", "--allow-empty", "-m", version, cwd=app)
        git("tag", f"v{version}", cwd=app)
        ran = relstep("run", cwd=app, env=env)
        assert ran.code == 0, ran.err
        made.append(Path(ran.out.split("snapshot:", 1)[1].split("\n", 1)[0].strip()))
    assert snapshots(app) == list(reversed(made[-3:]))
    recorded = rows(url)
    assert [(r.version, r.deployment_type, r.backup_path) for r in recorded] == [
        (v, "release" if v.endswith(".0") else "patch", str(p)) for v, p in zip(versions, made, strict=True)
    ]
    expected_revision = "20260201000000_add_posts" if engine == "sqlite" else None
    assert {r.schema_revision for r in recorded} == {expected_revision}
    assert all(r.recorded_at is not None for r in recorded)


def test_run_summary_and_json(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _ = make_app(tmp_path, request, "sqlite")
    ran = relstep("run", "--version", "3.1.4", cwd=app)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "relstep run: 3.1.4 (patch)"
    assert [line.split()[:2] for line in lines[1:4]] == [["backup", "ok"], ["record", "ok"], ["prune", "ok"]]
    assert lines[-1] == "schema revision: 20260201000000_add_posts"
    ran = relstep("run", "--version", "3.2.0", "--json", cwd=app)
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)  # stdout is exactly one JSON object
    assert (data["version"], data["deployment_type"], data["exit_code"], data["ok"]) == ("3.2.0", "release", 0, True)
    assert [p["name"] for p in data["phases"]] == ["backup", "record", "prune"]
    assert data["record_id"] == 2 and data["snapshot"] == str(snapshots(app)[0])
    assert data["schema_revision"] == "20260201000000_add_posts"


def test_deploy_command_runs_between_backup_and_record(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _url = make_app(tmp_path, request, "sqlite")
    marker = tmp_path / "deployed.txt"
    script = (f"import os; open({str(marker)!r}, 'w')"
              ".write(os.environ['RELSTEP_VERSION'] + ' ' + os.environ['RELSTEP_SNAPSHOT'])")
    ran = relstep("run", "--version", "1.0.0", "--json", "--", sys.executable, "-c", script + "; print('deploy out')",
                  cwd=app)
    assert ran.code == 0, ran.err
    assert "deploy out" in ran.err and "deploy out" not in ran.out
    assert marker.read_text() == f"1.0.0 {snapshots(app)[0]}"
    assert [p["name"] for p in json.loads(ran.out)["phases"]] == ["backup", "deploy", "record", "prune"]


def test_failing_deploy_keeps_snapshot_and_records_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    ran = relstep("run", "--version", "1.0.0", "--", sys.executable, "-c", "raise SystemExit(9)", cwd=app)
    assert ran.code == 4
    assert ran.last_err == ("relstep: deploy failed: deploy command exited with 9; "
                            "the snapshot is kept and nothing was recorded")
    assert len(snapshots(app)) == 1
    assert rows(url) == []
    ran = relstep("run", "--version", "1.0.0", "--", "no-such-deploy-tool-xyz", cwd=app)
    assert ran.code == 4 and ran.last_err.startswith("relstep: deploy failed: deploy command 'no-such-deploy-tool-xyz'")
    assert len(snapshots(app)) == 2 and rows(url) == []


def test_unreachable_record_database_then_record_later_exactly_once(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    write_config(app, {"database": {"url": url}, "record": {"url": "postgresql://u:Sekr3t-pw@127.0.0.1:1/nodb"}})
    ran = relstep("run", "--version", "1.0.0", cwd=app)
    assert ran.code == 5
    assert ran.last_err.startswith(
        "relstep: record failed: cannot reach the record database postgresql://u:***@127.0.0.1:1/nodb")
    assert "Sekr3t-pw" not in ran.out + ran.err
    assert len(snapshots(app)) == 1
    write_config(app, {"database": {"url": url}})
    for _ in range(2):
        ran = relstep("record", cwd=app) if not rows(url) else relstep("record", "--snapshot", snapshots(app)[0].name,
                                                                        cwd=app)
        assert ran.code == 0, ran.err
    assert len(rows(url)) == 1 and rows(url)[0].backup_path == str(snapshots(app)[0])
    assert "already recorded as ReleaseRecord id 1" in ran.out
    ran = relstep("record", cwd=app)
    assert ran.code == 2 and "every snapshot in" in ran.last_err and "already recorded" in ran.last_err


def test_failing_backup_loses_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    assert relstep("run", "--version", "1.0.0", cwd=app).code == 0
    before = snapshots(app)
    write_config(app, {"database": {"url": "sqlite:///gone.db"}, "record": {"url": url}})
    ran = relstep("run", "--version", "1.0.1", cwd=app)
    assert ran.code == 3 and ran.last_err.startswith("relstep: backup failed: SQLite database")
    assert snapshots(app) == before
    assert [r.version for r in rows(url)] == ["1.0.0"]


def test_existing_table_with_wrong_columns_is_a_clear_error(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _url = make_app(tmp_path, request, "sqlite")
    import sqlite3

    with sqlite3.connect(app / "app.db") as conn:
        conn.execute('CREATE TABLE "ReleaseRecord" (id INTEGER PRIMARY KEY, version TEXT, "backupPath" TEXT)')
    ran = relstep("run", "--version", "1.0.0", cwd=app)
    assert ran.code == 5
    assert ran.last_err == ("relstep: record failed: table ReleaseRecord lacks column(s) deploymentType, "
                            "schemaRevision, recordedAt; add them in the app's migrations "
                            "(see `relstep init --prisma`) or point record.table at another table")
    assert len(snapshots(app)) == 1


def test_created_table_hint_and_list(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _ = make_app(tmp_path, request, "sqlite")
    ran = relstep("run", "--version", "1.0.0", cwd=app)
    assert "relstep: note: relstep created the ReleaseRecord table; the app should own it" in ran.err
    assert relstep("backup", "--version", "1.0.1", cwd=app).code == 0
    listing = relstep("list", "--json", cwd=app)
    data = json.loads(listing.out)
    assert [(d["version"], d["recorded"]) for d in data] == [("1.0.1", False), ("1.0.0", True)]
    text = relstep("list", cwd=app).out.splitlines()
    assert text[0].split() == ["SNAPSHOT", "VERSION", "TYPE", "CREATED", "SIZE", "SCHEMA", "REVISION", "RECORDED"]
    assert text[1].split()[1:3] == ["1.0.1", "patch"] and text[1].split()[-1] == "no"
    assert text[2].split()[-1] == "yes"
    shown = relstep("show", "1.0.0", cwd=app)
    assert shown.code == 0 and "version:         1.0.0 (release)" in shown.out
    assert "redacted (main): User.password, User.passwordHash" in shown.out


def _fill(app: Path, n: int) -> list[Path]:
    for i in range(n):
        assert relstep("backup", "--version", f"1.0.{i}", cwd=app).code == 0
    return snapshots(app)


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.5", "1e3", "", "100000000000000000000"])
def test_invalid_retention_deletes_nothing(tmp_path: Path, request: pytest.FixtureRequest, bad: str) -> None:
    app, _ = make_app(tmp_path, request, "sqlite")
    before = _fill(app, 2)
    ran = relstep("prune", cwd=app, env=clean_env(RELEASE_BACKUP_RETENTION_COUNT=bad))
    assert ran.code == 2 and ran.last_err.startswith(
        "relstep: config failed: RELEASE_BACKUP_RETENTION_COUNT must be a whole number from 1 to 100000")
    ran = relstep("prune", "--keep", bad, cwd=app)
    assert ran.code == 2 and ran.last_err.startswith("relstep: config failed: --keep must be a whole number")
    ran = relstep("run", "--version", "9.0.0", cwd=app, env=clean_env(RELEASE_BACKUP_RETENTION_COUNT=bad))
    assert ran.code == 2
    assert snapshots(app) == before


def test_prune_never_touches_foreign_entries(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _ = make_app(tmp_path, request, "sqlite")
    made = _fill(app, 3)
    root = app / "backups" / "releases"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    foreign = {
        "notes.txt": lambda p: p.write_text("my notes"),
        "manual-backup": lambda p: (p.mkdir(), (p / "dump.sql").write_text("x")),
        "link-outside": lambda p: p.symlink_to(outside),
        "link-to-oldest": lambda p: p.symlink_to(made[-1]),
        "20200101T000000Z": lambda p: p.mkdir(),  # looks like a snapshot name, has no manifest
    }
    for name, make in foreign.items():
        make(root / name)
    dry = relstep("prune", "--keep", "1", "--dry-run", cwd=app)
    assert dry.code == 0
    assert dry.out.splitlines()[:2] == [f"would remove {made[1]}", f"would remove {made[2]}"]
    assert snapshots(app) == made
    ran = relstep("prune", "--keep", "1", cwd=app)
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [f"removed {made[1]}", f"removed {made[2]}", "kept 1 snapshot(s) (retention 1)"]
    assert snapshots(app) == made[:1]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted([made[0].name, *foreign])
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (root / "manual-backup" / "dump.sql").exists()


def test_prune_never_removes_the_last_recorded_snapshot(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _url = make_app(tmp_path, request, "sqlite")
    assert relstep("run", "--version", "1.0.0", cwd=app).code == 0
    recorded = snapshots(app)[0]
    for i in range(1, 4):
        assert relstep("backup", "--version", f"1.0.{i}", cwd=app).code == 0
    ran = relstep("prune", "--keep", "1", cwd=app)
    assert ran.code == 0
    assert snapshots(app)[-1] == recorded and len(snapshots(app)) == 2


def test_concurrent_runs_both_succeed_and_retention_holds(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    env = clean_env(RELEASE_BACKUP_RETENTION_COUNT="1")
    procs = [subprocess.Popen([sys.executable, "-m", "relstep", "run", "--version", v, "--json"], cwd=app, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in ("1.0.0", "1.0.1")]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert len(snapshots(app)) == 1
    assert sorted(r.version for r in rows(url)) == ["1.0.0", "1.0.1"]


def test_second_run_waits_for_the_lock_then_times_out_clearly(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _ = make_app(tmp_path, request, "sqlite")
    root = app / "backups" / "releases"
    root.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(30)", str(root / ".relstep.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        ran = relstep("run", "--version", "1.0.0", "--lock-timeout", "1", cwd=app)
        assert time.monotonic() - started >= 1
        assert ran.code == 3
        assert ran.last_err == (f"relstep: lock failed: another relstep run has held the lock on {root} for 1 s; "
                                "wait for it to finish or raise --lock-timeout")
        assert snapshots(app) == []
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead holder's lock: no stale lock to clean by hand.
    assert relstep("run", "--version", "1.0.0", "--lock-timeout", "5", cwd=app).code == 0
    assert os.path.exists(root / ".relstep.lock")


def test_prune_with_the_record_database_down_deletes_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    made = _fill(app, 3)
    write_config(app, {"database": {"url": url}, "record": {"url": "postgresql://u:Sekr3t-pw@127.0.0.1:1/nodb"}})
    assert relstep("prune", "--keep", "3", cwd=app).code == 0  # nothing to delete: no need to ask
    ran = relstep("prune", "--keep", "1", cwd=app)
    assert ran.code == 6
    assert ran.last_err.startswith("relstep: prune failed: cannot reach the record database postgresql://u:***@")
    assert ran.last_err.endswith("so nothing was deleted (retry when the record database is back)")
    assert "Sekr3t-pw" not in ran.err
    assert snapshots(app) == made
