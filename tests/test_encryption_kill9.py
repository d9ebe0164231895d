"""kill -9 of an encrypted `relstep backup` at seeded points: nothing readable is left on the disk.

A real backup of a ~15 MB SQLite database and 1200 code files, encrypted to a fresh age key, is
killed with SIGKILL while it dumps and while it copies code (a seeded delay after the first file of
each appears). What it leaves under backup_root, the `.partial` folder included, is then scanned
byte by byte (compressed streams opened) for a planted row value, code line and environment value,
and every data file left must be age ciphertext (or empty: created, nothing written yet).

PostgreSQL likewise: killed mid-stream, at a seeded byte of pg_dump's custom-format stream (a pg_dump
wrapper on PATH passes that many bytes on, then says so through a FIFO and waits: an event, not a
delay), and while relstep COPYs a redacted table's rows; no plaintext pg_dump directory, file or
temporary file is ever there.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
from pathlib import Path

import pyrage
import pytest

from tests.helpers import init_repo, write_config
from tests.reliability.support import fill_postgres, fill_sqlite, partials, start_relstep, wait_for, write_code_tree
from tests.secret_scan import Scan

SEED = int(os.environ.get("RELSTEP_KILL_SEED", "20261201"))
ROW_VALUE = "planted-row-value-kill-9-4711"
CODE_LINE = "planted-code-line-kill-9-5813"
ENV_VALUE = "planted-environment-value-kill-9-6907"
PLAIN_BY_DESIGN = {"VERSION.txt", "DEPLOYMENT_TYPE.txt"}


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    write_code_tree(app / "backend", 1200)
    (app / "backend" / "planted.js").write_text(f"const x = '{CODE_LINE}';\n")
    fill_sqlite(app / "app.db", 150_000)
    with sqlite3.connect(app / "app.db") as conn:
        conn.execute("INSERT INTO events (payload) VALUES (?)", (ROW_VALUE,))
    (app / ".gitignore").write_text("backups/\napp.db\n")
    init_repo(app)
    public = str(pyrage.x25519.Identity.generate().to_public())
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "none"},
                       "code": {"backend": "backend"}, "environment": {"planted": f"echo {ENV_VALUE}"},
                       "encryption": {"recipients": [public]}})
    return app


def _first(root: Path, pattern: str) -> Path | None:
    for partial in partials(root):
        found = next(iter(partial.glob(pattern)), None)
        if found is not None:
            return found
    return None


@pytest.mark.parametrize("stage", ["databases/main/*", "code/backend/pkg*/*", "databases/main/*"])
def test_kill_9_during_an_encrypted_backup_leaves_no_plaintext(tmp_path: Path, stage: str) -> None:
    app = _app(tmp_path)
    root = app / "backups" / "releases"
    rng = random.Random(f"{SEED}-{stage}-{len(list(tmp_path.parent.iterdir()))}")
    proc = start_relstep("backup", "--version", "1.0.0", cwd=app)
    try:
        wait_for(lambda: _first(root, stage), 120, f"the first file of {stage}", proc=proc)
        # A seeded delay after the stage began (not a wait for anything: where the kill lands).
        os.sched_yield()
        for _ in range(rng.randrange(0, 200_000)):
            pass
    finally:
        proc.kill()
        proc.communicate()
    _assert_no_plaintext(app, [ROW_VALUE, CODE_LINE, ENV_VALUE], ".sqlite-work-*")


PG_ROW_VALUE = "planted-pg-row-value-kill-9-3391"
PG_COPIED_VALUE = "planted-pg-copied-value-kill-9-4417"   # in the redacted table's COPY file


def _pg_app(tmp_path: Path, url: str) -> Path:
    """~45 MB of rows pg_dump streams, and a 150k-row table with a redacted column that relstep COPYs."""
    import psycopg

    from relstep.databases import sqlalchemy_url

    parsed = sqlalchemy_url(url)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database,
                         autocommit=True) as conn:
        # The planted row first, so it is in the first bytes of pg_dump's stream (where every kill lands).
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conn.execute("INSERT INTO events (payload) VALUES (%s)", (PG_ROW_VALUE,))
    fill_postgres(url, 300_000)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database,
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL, password text)")
        conn.execute("INSERT INTO accounts SELECT g, md5(g::text) || '@example.com', 'pw' "
                     "FROM generate_series(1, 150000) g")
        conn.execute("INSERT INTO accounts VALUES (0, %s, 'pw')", (PG_COPIED_VALUE,))
    app = tmp_path / "app"
    write_code_tree(app / "backend", 50)
    (app / ".gitignore").write_text("backups/\n")
    init_repo(app)
    public = str(pyrage.x25519.Identity.generate().to_public())
    write_config(app, {"database": {"url": url, "redact": ["accounts.password"]}, "migrations": {"tool": "none"},
                       "code": {"backend": "backend"}, "environment": {"planted": f"echo {ENV_VALUE}"},
                       "encryption": {"recipients": [public]}})
    return app


def _started(root: Path, pattern: str) -> Path | None:
    """The first file of ``pattern`` in a partial snapshot once a byte of it is on the disk."""
    found = _first(root, pattern)
    try:
        return found if found is not None and found.stat().st_size > 0 else None
    except FileNotFoundError:
        return None


# A pg_dump in front of the real one on PATH: it passes the first SEEDED bytes of the real stream on,
# then says so through a FIFO (its pid; the test's event) and waits there, mid-stream, for the kill.
_PG_DUMP_WRAPPER = """#!/bin/bash
case " $* " in *" --version "*) exec "$REAL_PG_DUMP" "$@";; esac
"$REAL_PG_DUMP" "$@" | { head -c "$PASS_BYTES"; echo $$ > "$EVENT_FIFO"; sleep infinity; }
"""


def _paused_pg_dump(tmp_path: Path, pass_bytes: int) -> tuple[dict[str, str], Path]:
    import shutil
    import stat

    from tests.helpers import clean_env

    real = shutil.which("pg_dump")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pg_dump"
    wrapper.write_text(_PG_DUMP_WRAPPER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    fifo = tmp_path / "pg_dump-paused"
    os.mkfifo(fifo)
    (tmp_path / "tmp").mkdir()
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", REAL_PG_DUMP=real,
                    PASS_BYTES=str(pass_bytes), EVENT_FIFO=str(fifo), TMPDIR=str(tmp_path / "tmp"))
    return env, fifo


def _wait_for_pause(fifo: Path, proc: subprocess.Popen) -> int:
    """The wrapper's pid, once it has paused mid-stream; fails at once if relstep exits first.

    select() wakes on either event: the wrapper's write into the FIFO, or relstep's stderr at its end
    (a FIFO no writer has opened yet never reads as ready on Linux).  The bound only ends a hung run."""
    import select

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([fd, proc.stderr], [], [], 300)
        if fd not in ready:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"relstep ended (or hung) before pg_dump's stream paused: {err}")
        return int(os.read(fd, 64).decode().strip())
    finally:
        os.close(fd)


def _assert_no_plaintext(app: Path, planted: list[str], plaintext_copy: str) -> None:
    """The killed backup's partial holds none of ``planted``, no plaintext working copy
    (``plaintext_copy``, a glob), and every file but the plain-by-design ones is age-encrypted."""
    root = app / "backups" / "releases"
    left = partials(root)
    assert left, "killed after the snapshot was published: no partial to inspect"
    scan = Scan(planted)
    scan.add_tree("backups", app / "backups")
    assert scan.leaks() == []
    for partial in left:
        assert not list(partial.rglob(plaintext_copy)), f"no plaintext working copy ({plaintext_copy})"
        for path in (p for p in partial.rglob("*") if p.is_file()):
            if path.relative_to(partial).as_posix() in PLAIN_BY_DESIGN:
                continue
            data = path.read_bytes()
            assert data == b"" or data.startswith(b"age-encryption.org/v1\n"), path


@pytest.mark.parametrize("point", [0, 1])
def test_kill_9_mid_stream_of_an_encrypted_postgres_backup_leaves_no_plaintext(
    tmp_path: Path, pg_url: str, point: int
) -> None:
    """Killed while relstep holds a seeded amount of pg_dump's stream (between 64 KiB and 16 MiB):
    the wrapper's FIFO says when, so the kill lands mid-stream every time."""
    import signal

    app = _pg_app(tmp_path, pg_url)
    rng = random.Random(f"{SEED}-pg-stream-{point}")
    env, fifo = _paused_pg_dump(tmp_path, rng.randrange(1 << 16, 1 << 24))
    proc = start_relstep("backup", "--version", "1.0.0", cwd=app, env=env)
    wrapper_pid = None
    try:
        wrapper_pid = _wait_for_pause(fifo, proc)
        proc.kill()
        proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if wrapper_pid is not None:  # the wrapper leads pg_dump's process group (relstep started it so)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(wrapper_pid, signal.SIGKILL)
    assert proc.returncode == -9
    _assert_no_plaintext(app, [PG_ROW_VALUE, PG_COPIED_VALUE, ENV_VALUE], "pg_dump")
    assert list((tmp_path / "tmp").iterdir()) == [], "no temporary file outside the snapshot either"
    [partial] = partials(app / "backups" / "releases")
    assert (partial / "databases/main/pg_dump.custom.zst").exists(), "the kill landed while the archive was written"


def test_kill_9_during_a_redacted_copy_of_an_encrypted_postgres_backup_leaves_no_plaintext(
    tmp_path: Path, pg_url: str
) -> None:
    app = _pg_app(tmp_path, pg_url)
    root = app / "backups" / "releases"
    rng = random.Random(f"{SEED}-pg-redacted")
    proc = start_relstep("backup", "--version", "1.0.0", cwd=app)
    try:
        # As the SQLite cases above: the first byte of the COPY file, then a seeded delay.
        wait_for(lambda: _started(root, "databases/main/redacted/*"), 120, "the redacted COPY", proc=proc)
        os.sched_yield()
        for _ in range(rng.randrange(0, 200_000)):
            pass
    finally:
        proc.kill()
        proc.communicate()
    _assert_no_plaintext(app, [PG_ROW_VALUE, PG_COPIED_VALUE, ENV_VALUE], "pg_dump")
