"""kill -9 of an encrypted `relstep backup` at seeded points: nothing readable is left on the disk.

A real backup of a ~15 MB SQLite database and 1200 code files, encrypted to a fresh age key, is
killed with SIGKILL while it dumps and while it copies code (a seeded delay after the first file of
each appears). What it leaves under backup_root, the `.partial` folder included, is then scanned
byte by byte (compressed streams opened) for a planted row value, code line and environment value,
and every data file left must be age ciphertext (or empty: created, nothing written yet).
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pyrage
import pytest

from tests.helpers import init_repo, write_config
from tests.reliability.support import fill_sqlite, partials, start_relstep, wait_for, write_code_tree
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
    left = partials(root)
    assert left, "killed after the snapshot was published: no partial to inspect"
    scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE])
    scan.add_tree("backups", app / "backups")
    assert scan.leaks() == []
    for partial in left:
        assert not list(partial.rglob(".sqlite-work-*")), "no plaintext working copy of the database"
        for path in (p for p in partial.rglob("*") if p.is_file()):
            if path.relative_to(partial).as_posix() in PLAIN_BY_DESIGN:
                continue
            data = path.read_bytes()
            assert data == b"" or data.startswith(b"age-encryption.org/v1\n"), path
