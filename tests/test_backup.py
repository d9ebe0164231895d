"""The backup phase end to end through the real CLI, on the bundled SQLite example app."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relstep.databases import sqlite as sqlite_engine
from relstep.fsutil import sha256_file
from tests.helpers import all_bytes, clean_env, git, relstep, sqlite_app, sqlite_rows, write_config

PLANTED_ENV_SECRET = "planted-env-secret-4242"
PM2_SECRET = "pm2-inner-secret-8181"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return sqlite_app(tmp_path)


def only_snapshot(app: Path) -> Path:
    root = app / "backups" / "releases"
    entries = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def test_backup_writes_a_complete_snapshot(app: Path) -> None:
    ran = relstep("backup", "--version", "v2.3.0", cwd=app)
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)
    assert ran.out == f"{snap}\n"
    assert (snap / "VERSION.txt").read_bytes() == b"2.3.0\n"
    assert (snap / "DEPLOYMENT_TYPE.txt").read_bytes() == b"release\n"
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    assert manifest["version"] == "2.3.0" and manifest["deployment_type"] == "release"
    assert manifest["engine"] == "sqlite"
    assert manifest["row_counts"] == {"Post": 100, "User": 25, "_prisma_migrations": 2}
    assert manifest["schema_revision"] == "20260201000000_add_posts"
    assert manifest["migration_tool"] == "prisma"
    assert manifest["git_commit"] == git("rev-parse", "HEAD", cwd=app).strip()
    assert manifest["relstep_version"] == "0.1.0"
    # Every file but the manifest is listed with its real size and hash, and nothing else is.
    on_disk = {p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert set(manifest["files"]) == on_disk
    for rel, meta in manifest["files"].items():
        assert (meta["size"], meta["sha256"]) == sha256_file(snap / rel), rel
    assert {"code/backend/src/server.js", "code/frontend/src/index.html", "databases/main/database.sqlite3.zst",
            "environment.json", "migrations.json", "VERSION.txt", "DEPLOYMENT_TYPE.txt"} <= on_disk
    migrations = json.loads((snap / "migrations.json").read_text())
    assert [m["name"] for m in migrations["applied"]] == ["20260101000000_init", "20260201000000_add_posts"]
    assert migrations["applied"][0]["checksum"] == sha256_file(
        app / "prisma/migrations/20260101000000_init/migration.sql")[1]
    # Private: 0700 folders, 0600 files, whatever the umask.
    for path in [snap, *snap.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_dump_restores_with_equal_rows_except_redacted_columns(app: Path, tmp_path: Path) -> None:
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = only_snapshot(app)
    restored = tmp_path / "restored.db"
    sqlite_engine.restore(snap / "databases" / "main", f"sqlite:///{restored}")
    assert sqlite_rows(restored, "Post") == sqlite_rows(app / "app.db", "Post")
    assert sqlite_rows(restored, "_prisma_migrations") == sqlite_rows(app / "app.db", "_prisma_migrations")
    original = sqlite_rows(app / "app.db", "User")
    # password is NOT NULL -> '', passwordHash is nullable -> NULL; id and email untouched.
    assert sqlite_rows(restored, "User") == [(i, email, "", None) for i, email, _pw, _hash in original]


def test_no_secret_reaches_any_byte_of_the_snapshot(app: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pm2 = bin_dir / "pm2"
    pm2.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps([{
        "name": "api", "pid": 42,
        "pm2_env": {"status": "online", "DB_PASSWORD": PM2_SECRET,
                    "env": {"JWT_SECRET": PM2_SECRET + "-jwt", "PORT": "3000"}},
    }]) + "\nEOF\n")
    pm2.chmod(0o755)
    write_config(app, {
        "database": {"url": "sqlite:///app.db"},
        "environment": {"pm2": "pm2 jlist", "leak": "printenv APP_STRIPE_SECRET", "url": "echo postgres://u:hunter22@db/x",
                        "gone": "definitely-not-installed-tool --version"},
    })
    # Rows whose password values we can search for verbatim.
    with sqlite3.connect(app / "app.db") as conn:
        users = conn.execute('SELECT password, passwordHash FROM "User"').fetchall()
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", APP_STRIPE_SECRET=PLANTED_ENV_SECRET)
    ran = relstep("backup", "--version", "1.0.0", cwd=app, env=env)
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)
    blob = all_bytes(snap)
    sqlite_copy = tmp_path / "copy.db"
    sqlite_engine.restore(snap / "databases" / "main", f"sqlite:///{sqlite_copy}")
    blob += sqlite_copy.read_bytes()  # the decompressed database file, free pages included
    for password, password_hash in users:
        assert password.encode() not in blob
        assert password_hash.encode() not in blob
    for secret in (PLANTED_ENV_SECRET, PM2_SECRET, "hunter22"):
        assert secret.encode() not in blob, secret
        assert secret not in ran.out + ran.err
    environment = json.loads((snap / "environment.json").read_text())
    commands = environment["commands"]
    assert commands["pm2"]["json"][0]["pm2_env"]["DB_PASSWORD"] == "***"
    assert commands["pm2"]["json"][0]["pm2_env"]["env"] == {"JWT_SECRET": "***", "PORT": "3000"}
    assert commands["pm2"]["json"][0]["pm2_env"]["status"] == "online"
    assert commands["leak"]["output"] == "***"
    assert commands["url"]["output"] == "postgres://u:***@db/x"
    assert commands["gone"] == {"command": "definitely-not-installed-tool --version", "status": "missing"}
    assert environment["python"]["version"].count(".") == 2


def test_code_exclude_and_symlinks(app: Path) -> None:
    backend = app / "backend"
    (backend / "node_modules" / "left-pad").mkdir(parents=True)
    (backend / "node_modules" / "left-pad" / "index.js").write_text("x")
    (backend / "debug.log").write_text("log")
    (backend / ".env").write_text("SECRET=1")
    (backend / ".env.production").write_text("SECRET=2")
    (backend / "run.sh").write_text("#!/bin/sh\n")
    (backend / "run.sh").chmod(0o755)
    (backend / "link.js").symlink_to("src/server.js")
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = only_snapshot(app)
    files = sorted(p.relative_to(snap / "code" / "backend").as_posix()
                   for p in (snap / "code" / "backend").rglob("*") if p.is_file())
    assert files == ["package.json", "run.sh", "src/server.js"]
    code = json.loads((snap / "MANIFEST.json").read_text())["code"]["backend"]
    assert code["symlinks"] == {"link.js": "src/server.js"}
    assert code["executables"] == ["run.sh"]


def test_second_snapshot_shares_unchanged_code_files(app: Path) -> None:
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    (app / "backend" / "src" / "server.js").write_text("// changed\n")
    assert relstep("backup", "--version", "1.0.1", cwd=app).code == 0
    root = app / "backups" / "releases"
    first, second = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    shared = second / "code" / "frontend" / "src" / "index.html"
    assert shared.stat().st_ino == (first / "code" / "frontend" / "src" / "index.html").stat().st_ino
    changed = second / "code" / "backend" / "src" / "server.js"
    assert changed.read_text() == "// changed\n"
    assert changed.stat().st_ino != (first / "code" / "backend" / "src" / "server.js").stat().st_ino
    manifest = json.loads((second / "MANIFEST.json").read_text())
    assert manifest["code"]["frontend"]["linked"] == 2 and manifest["code"]["backend"]["linked"] == 1


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ({"database": {"url": "sqlite:///app.db"}, "code": {"api": "nope"}}, ["--version", "1.0.0"],
         r"^relstep: config failed: code folder 'api' \(.*/nope\) does not exist or is not a directory; fix code.api$"),
        ({"database": {"url": "sqlite:///missing.db"}}, ["--version", "1.0.0"],
         r"^relstep: backup failed: SQLite database .*/missing.db does not exist; check database.url$"),
        ({"code": {}}, ["--version", "1.0.0"],
         r"^relstep: config failed: no database to back up; set database.url in .*relstep.yml or the DATABASE_URL"),
        ({"database": {"url": "sqlite:///app.db"}}, ["--version", "latest"],
         r"^relstep: version failed: --version 'latest' is not a version"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(app: Path, config: dict, args: list[str], message: str) -> None:
    write_config(app, config)
    ran = relstep("backup", *args, cwd=app)
    assert ran.code in (2, 3)
    assert ran.code == (3 if "backup failed" in message else 2)
    assert ran.err.count("\n") == 1 and "Traceback" not in ran.err
    import re

    assert re.search(message, ran.last_err), ran.err
    root = app / "backups" / "releases"
    assert not root.exists() or [p.name for p in root.iterdir() if not p.name.startswith(".")] == []


def test_verbose_shows_the_traceback(app: Path) -> None:
    write_config(app, {"database": {"url": "sqlite:///missing.db"}})
    ran = relstep("-v", "backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 3 and "Traceback" in ran.err


def _big_sqlite(path: Path, megabytes: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE blob_data (id INTEGER PRIMARY KEY, payload BLOB)")
        chunk = os.urandom(1024 * 1024)
        conn.executemany("INSERT INTO blob_data (payload) VALUES (?)", [(chunk,)] * megabytes)


def test_kill_9_during_the_dump_leaves_no_snapshot_and_next_run_cleans_up(app: Path) -> None:
    _big_sqlite(app / "big.db", 300)
    write_config(app, {"database": {"url": "sqlite:///big.db"}})
    root = app / "backups" / "releases"
    proc = subprocess.Popen([sys.executable, "-m", "relstep", "backup", "--version", "1.0.0"], cwd=app,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    partial = None
    while time.monotonic() < deadline and partial is None:
        found = list(root.glob(".*.partial/databases/main/.sqlite-work-*")) if root.exists() else []
        partial = found[0] if found else None
        time.sleep(0.01)
    assert partial is not None, "the dump never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    assert list(root.glob(".*.partial")), "the killed run's partial snapshot should still be there to clean"
    ran = relstep("backup", "--version", "1.0.1", cwd=app)
    assert ran.code == 0, ran.err
    assert not list(root.glob(".*.partial"))
    assert len([p for p in root.iterdir() if not p.name.startswith(".")]) == 1
