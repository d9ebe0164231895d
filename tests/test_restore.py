"""`relstep restore` through the real CLI, against real SQLite, PostgreSQL and MariaDB databases.

The verdict tests reuse the real-tool projects of ``tests/migrations/realtools.py``
(Prisma 6 ``migrate deploy``, ``alembic upgrade``, Django ``migrate``) and their
``variant()`` copies of the code: identical, compatible, unknown migration, changed checksum.
Those projects' databases live for the whole session, so these tests only read them:
anything that restores goes into a fresh database.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from migrations.realtools import RealProject, real_project  # noqa: F401  (a fixture)

from relstep.databases import create_engine
from tests.apps import make_app
from tests.helpers import Ran, clean_env, relstep, write_config

# --------------------------------------------------------------------------- helpers


def run(*args: str, cwd: Path) -> Ran:
    # stdin is an empty pipe, never the terminal pytest may run in: no prompt can hang a test.
    return relstep(*args, cwd=cwd, input="")


def tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted, through SQLAlchemy (the same code on all three engines)."""
    from sqlalchemy import MetaData, select

    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted(conn.execute(select(table)).all(), key=repr)
                    for name, table in metadata.tables.items()}
    finally:
        engine.dispose()


def change_everything(url: str) -> None:
    """Update, delete and insert rows, drop a table and add one: a database after a bad deploy."""
    from sqlalchemy import Column, Integer, MetaData, Table, update

    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        user, post = metadata.tables["User"], metadata.tables["Post"]
        with engine.begin() as conn:
            conn.execute(update(user).values(email="changed@example.com").where(user.c.id == 1))
            conn.execute(user.insert().values(id=999, email="new@example.com", password="new-pw"))
            post.drop(conn)
            Table("Extra", MetaData(), Column("id", Integer, primary_key=True)).create(conn)
    finally:
        engine.dispose()


def redacted(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """What a restore gives back: User.password '' (NOT NULL) and User.passwordHash NULL."""
    return {**rows, "User": sorted(((i, email, "", None) for i, email, *_ in rows["User"]), key=repr)}


def snapshots(app: Path, folder: str = "releases") -> list[Path]:
    root = app / "backups" / folder
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


# --------------------------------------------------------------------------- round trips


def test_restore_brings_back_every_table_except_the_redacted_columns(engine_app: tuple[Path, str]) -> None:
    app, url = engine_app
    before = tables(url)
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    [release] = snapshots(app)
    change_everything(url)
    changed = tables(url)

    ran = run("restore", "1.0.0", "--yes", cwd=app)

    assert ran.code == 0, ran.err
    assert tables(url) == redacted(before)
    assert "verdict:" in ran.out and "reset the passwords" in ran.out and "User.password" in ran.out
    # The database as it was is kept in the sibling pre-restore folder, in the same layout.
    [safety] = snapshots(app, "pre-restore")
    assert str(safety) in ran.out
    assert (safety / "DEPLOYMENT_TYPE.txt").read_text() == "pre-restore\n"
    manifest = json.loads((safety / "MANIFEST.json").read_text())
    assert manifest["deployment_type"] == "pre-restore"
    assert set(manifest["row_counts"]) == set(changed) and "Post" not in manifest["row_counts"]
    assert manifest["row_counts"]["User"] == len(changed["User"])
    assert not manifest["code"], "the safety snapshot holds only the database"
    assert snapshots(app) == [release], "the release snapshots are untouched"
    # The safety snapshot restores too: the wrong restore can be undone.
    undo = run("restore", str(safety), "--yes", cwd=app)
    assert undo.code == 0, undo.err
    assert tables(url) == redacted(changed)


def test_a_mysql_restore_removes_the_newer_releases_scheduled_event(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Through the CLI, with the manifest's record of what the dump holds: code objects are restored too."""
    from sqlalchemy import text

    app, url = make_app(tmp_path, request, "mysql")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    events_sql = text("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:  # what release 1.1.0 added: a nightly job against its new schema
            conn.execute(text("CREATE EVENT purge_v11 ON SCHEDULE EVERY 1 DAY DO DELETE FROM `User`"))
            assert conn.execute(events_sql).scalars().all() == ["purge_v11"]

        ran = run("restore", "1.0.0", "--yes", cwd=app)

        assert ran.code == 0, ran.err
        with engine.connect() as conn:
            assert conn.execute(events_sql).scalars().all() == []
    finally:
        engine.dispose()


def test_show_says_what_a_restore_of_the_snapshot_will_not_bring_back() -> None:
    from relstep import inventory

    summary = {"version": "1.0.0", "deployment_type": "release", "file_count": 3, "size": 10,
               "databases": {"main": {"engine": "mysql", "row_counts": {"User": 2},
                                      "extra": {"routines_skipped": "the account may not read the body of add_user",
                                                "global_read_lock_seconds": 0.01}}}}

    shown = inventory.describe(Path("/srv/app/backups/releases/20261201T000000Z"), summary).splitlines()

    assert "left out (main): routines: the account may not read the body of add_user" in shown
    assert not [line for line in shown if "global_read_lock" in line]


def test_restore_into_a_non_empty_database_without_yes_changes_nothing(engine_app: tuple[Path, str]) -> None:
    app, url = engine_app
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    change_everything(url)
    changed = tables(url)

    ran = run("restore", "1.0.0", cwd=app)

    assert ran.code == 2, ran.err
    assert "not empty; pass --yes" in ran.last_err and "nothing was changed" in ran.last_err
    assert tables(url) == changed
    assert not (app / "backups" / "pre-restore").exists()


def test_restore_into_another_empty_database_needs_no_yes_and_takes_no_safety_snapshot(
    request: pytest.FixtureRequest, engine_app: tuple[Path, str], tmp_path: Path
) -> None:
    app, url = engine_app
    engine = url.split(":", 1)[0]
    target = {"sqlite": f"sqlite:///{tmp_path / 'other.db'}", "postgresql": None, "mysql": None}[engine] or \
        request.getfixturevalue({"postgresql": "pg_url2", "mysql": "mysql_url2"}[engine])
    assert run("backup", "--version", "1.2.0", cwd=app).code == 0

    ran = run("restore", "1.2.0", "--database-url", target, cwd=app)

    assert ran.code == 0, ran.err
    assert tables(target) == redacted(tables(url))
    assert not (app / "backups" / "pre-restore").exists()
    assert "safety snapshot" not in ran.out


def test_a_terminal_confirmation_is_asked_and_respected(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")  # the prompt is the CLI's, the same for every engine
    before = tables(url)
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    change_everything(url)
    changed = tables(url)

    no = on_terminal(["restore", "1.0.0"], app, "n\n")
    assert no[0] == 2 and "replace its contents" in no[1], no
    assert tables(url) == changed
    yes = on_terminal(["restore", "1.0.0"], app, "y\n")
    assert yes[0] == 0, yes
    assert tables(url) == redacted(before)


def on_terminal(args: list[str], cwd: Path, answer: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin/stderr, type ``answer`` at the prompt."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "relstep", *args], cwd=cwd, env=clean_env(),
                            stdin=slave, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline and proc.poll() is None:
        if select.select([master], [], [], 0.5)[0]:
            seen += os.read(master, 4096)
    os.write(master, answer.encode())
    proc.wait(timeout=120)
    try:
        while select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 4096)
    except OSError:
        pass  # the other side closed: everything was read
    os.close(master)
    return proc.returncode, seen.decode(errors="replace")


def test_a_snapshot_of_several_databases_restores_the_one_named(tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    from tests.apps import create_schema

    app, url = make_app(tmp_path, request, "sqlite")
    other = f"sqlite:///{app / 'other.db'}"
    create_schema(other, users=3, posts=4)
    write_config(app, {"databases": [{"name": "main", "url": url}, {"name": "other", "url": other}],
                       "migrations": {"tool": "auto"}})
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    before_main, before_other = tables(url), tables(other)
    change_everything(url)
    change_everything(other)
    changed_main = tables(url)

    unnamed = run("restore", "1.0.0", "--yes", cwd=app)
    assert unnamed.code == 2 and "--database NAME" in unnamed.last_err and "main, other" in unnamed.last_err
    ran = run("restore", "1.0.0", "--yes", "--database", "other", cwd=app)
    assert ran.code == 0, ran.err
    assert tables(other) == redacted(before_other)
    assert tables(url) == changed_main, "only the named database is restored"
    [safety] = snapshots(app, "pre-restore")
    assert set(json.loads((safety / "MANIFEST.json").read_text())["databases"]) == {"other"}
    assert run("restore", "1.0.0", "--yes", "--database", "main", cwd=app).code == 0
    assert tables(url) == redacted(before_main)
    assert run("restore", "1.0.0", "--database", "nope", cwd=app).code == 2


# --------------------------------------------------------------------------- the safety snapshots


def test_safety_snapshots_have_their_own_retention(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _url = make_app(tmp_path, request, "sqlite", retention=2)
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    for _ in range(3):
        ran = run("restore", "1.0.0", "--yes", cwd=app)
        assert ran.code == 0, ran.err
        time.sleep(1.1)  # distinct creation times: retention orders by them
    assert len(snapshots(app, "pre-restore")) == 2
    assert "pruned old safety snapshot" in ran.out
    assert len(snapshots(app)) == 1
    # Undoing with the oldest safety snapshot: the new safety snapshot would push it out
    # of retention, but never before (nor because) it is restored.
    oldest = snapshots(app, "pre-restore")[0]
    undo = run("restore", str(oldest), "--yes", cwd=app)
    assert undo.code == 0, undo.err
    assert oldest.is_dir() and len(snapshots(app, "pre-restore")) == 3


# --------------------------------------------------------------------------- code


def test_code_to_extracts_the_code_and_refuses_a_non_empty_folder(tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    (app / "backend" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (app / "backend" / "run.sh").chmod(0o755)
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    # An empty target database needs no --yes, so only the code folder can refuse here.
    target = tmp_path / "target.db"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")

    refused = run("restore", "1.0.0", "--database-url", f"sqlite:///{target}", "--code-to", str(busy), cwd=app)

    assert refused.code == 2 and "is not empty" in refused.last_err, refused.err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert not target.exists(), "the code folder is checked before the database is touched"

    fresh = tmp_path / "code"
    ran = run("restore", "1.0.0", "--database-url", f"sqlite:///{target}", "--code-to", str(fresh), cwd=app)
    assert ran.code == 0, ran.err
    for name in ("backend", "frontend"):
        source = {p.relative_to(app / name): p.read_bytes() for p in (app / name).rglob("*") if p.is_file()}
        restored = {p.relative_to(fresh / name): p.read_bytes() for p in (fresh / name).rglob("*") if p.is_file()}
        assert restored == source
    assert os.access(fresh / "backend" / "run.sh", os.X_OK)
    assert "deploy the backend code from" in ran.out
    assert tables(f"sqlite:///{target}") == redacted(tables(url))
    # With --yes the non-empty folder is replaced whole, and kept beside (tests/test_code_restore.py).
    again = run("restore", "1.0.0", "--yes", "--database-url", f"sqlite:///{target}", "--code-to", str(busy), cwd=app)
    assert again.code == 0, again.err
    [kept] = tmp_path.glob("busy.before-restore-*")
    assert (kept / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in busy.iterdir()) == ["backend", "frontend"]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("ref", ["../../etc", "/etc", "..", "no-such-snapshot", "9.9.9"])
def test_a_snapshot_outside_backup_root_is_refused(tmp_path: Path, request: pytest.FixtureRequest, ref: str) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    before = tables(url)
    for command in (["restore", ref, "--yes"], ["restore", ref, "--check-only"], ["verify", ref]):
        ran = run(*command, cwd=app)
        assert ran.code == 2, (command, ran.err)
        assert ran.last_err.startswith("relstep: ") and ref in ran.last_err
    assert tables(url) == before


def test_a_symlink_in_backup_root_pointing_elsewhere_is_refused(tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    app, _url = make_app(tmp_path, request, "sqlite")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    [release] = snapshots(app)
    outside = tmp_path / "outside"
    outside.mkdir()
    for item in release.iterdir():
        os.symlink(item, outside / item.name)
    (app / "backups" / "releases" / "20990101T000000Z").symlink_to(outside)
    assert run("restore", "20990101T000000Z", "--check-only", cwd=app).code == 2


def test_a_damaged_snapshot_is_never_restored(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    [release] = snapshots(app)
    change_everything(url)
    changed = tables(url)
    dump = release / "databases" / "main" / "database.sqlite3.zst"
    dump.write_bytes(dump.read_bytes()[:-10])
    ran = run("restore", "1.0.0", "--yes", cwd=app)
    assert ran.code == 8 and "databases/main/database.sqlite3.zst" in ran.last_err, ran.err
    assert "nothing was restored" in ran.last_err
    assert tables(url) == changed


def test_restore_checks_only_what_it_uses(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A damaged code file does not block a database restore, but does block --code-to."""
    app, url = make_app(tmp_path, request, "sqlite")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    [release] = snapshots(app)
    before = tables(url)
    change_everything(url)
    code_file = release / "code" / "backend" / "src" / "server.js"
    code_file.write_bytes(code_file.read_bytes() + b"// tampered\n")
    ran = run("restore", "1.0.0", "--yes", "--code-to", str(tmp_path / "code"), cwd=app)
    assert ran.code == 8 and "code/backend/src/server.js" in ran.last_err, ran.err
    assert not (tmp_path / "code").exists()
    ran = run("restore", "1.0.0", "--yes", cwd=app)
    assert ran.code == 0, ran.err
    after = tables(url)
    assert after.keys() == before.keys() and after["Post"] == before["Post"]
    assert [row[:2] for row in after["User"]] == [row[:2] for row in before["User"]]


# --------------------------------------------------------------------------- verdicts on real tools' data


@pytest.fixture
def project_snapshot(
    real_project: RealProject, tmp_path_factory: pytest.TempPathFactory  # noqa: F811  (the imported fixture)
) -> tuple[RealProject, Path]:
    """A relstep snapshot of the real project's database (read only), in a backup root of its own."""
    root = tmp_path_factory.mktemp("verdict")
    config = tmp_path_factory.mktemp("verdict-config")
    # One app (project) whose code is then checked out in other folders, one per verdict.
    write_config(config, {
        "project": "verdict-app",
        "backup_root": str(root / "releases"), "database": {"url": real_project.url}, "code": {}, "environment": {},
        "migrations": {"tool": "auto", "path": str(real_project.project_dir / real_project.migrations_path)},
    })
    ran = run("backup", "--version", "2.0.0", cwd=config)
    assert ran.code == 0, ran.err
    migrations = json.loads((Path(ran.out.strip()) / "migrations.json").read_text())
    # Django's table also lists installed apps' migrations (contenttypes): the project's own are there, in order.
    names = [m["name"] for m in migrations["applied"]]
    assert [n for n in names if n in real_project.applied] == real_project.applied
    return real_project, Path(ran.out.strip())


def fresh_target(project: RealProject, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'target.db'}" if project.url.startswith("sqlite") \
        else request.getfixturevalue("pg_url2")


EXPECTED = {
    # kind -> (exit code, verdict word, status shown in the table, which migrations it names)
    "identical": (0, "identical", None, lambda p: []),
    "compatible": (0, "compatible", "pending", lambda p: p.pending),
    "unknown": (7, "incompatible", "unknown to app", lambda p: [p.applied[-1]]),
    "checksum": (7, "incompatible", "checksum differs", lambda p: [p.applied[-1]]),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_every_verdict_on_real_migration_data(project_snapshot: tuple[RealProject, Path], kind: str,
                                              tmp_path: Path, request: pytest.FixtureRequest) -> None:
    project, snap = project_snapshot
    app = project.variant(tmp_path / "app", kind)
    write_config(app, {
        "project": "verdict-app",
        "backup_root": str(snap.parent), "database": {"url": project.url}, "code": {}, "environment": {},
        "migrations": {"tool": project.tool, "path": project.migrations_path},
    })
    code, word, status, names = EXPECTED[kind]

    ran = run("restore", snap.name, "--check-only", cwd=app)

    assert ran.code == code, ran.out + ran.err
    assert f"verdict:    {word}" in ran.out
    rows = [line.split() for line in ran.out.splitlines() if line.startswith("  ") and "STATUS" not in line]
    named = [row[-1] for row in rows if " ".join(row[:-1]) == status]
    assert named == names(project), ran.out
    if code == 7:
        assert "nothing was restored" in ran.last_err and "--force" in ran.last_err
        # Without --check-only an incompatible snapshot is refused before anything is touched.
        target = fresh_target(project, request, tmp_path)
        refused = run("restore", snap.name, "--yes", "--database-url", target, cwd=app)
        assert refused.code == 7, refused.err
        assert tables(target) == {}
        if kind == "checksum":
            forced = run("restore", snap.name, "--yes", "--force", "--database-url", target, cwd=app)
            assert forced.code == 0, forced.err
            assert "--force" in forced.out and tables(target)
    if kind == "compatible":
        assert "pending migration(s)" in ran.out
