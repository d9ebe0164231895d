"""What code capture copies, and what it must not: databases, snapshots, followed links, filled holes.

Every test runs the real CLI (or the real capture on a real tree) and checks exact
files, bytes and manifest entries.  Each case failed before code capture learnt it:
the Prisma layout copied ``dev.db`` raw with its password hashes, a name that is not
UTF-8 or a symlink loop failed every backup, ``code: {app: .}`` copied the
pre-restore snapshots, and a sparse file was written out in full.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from relstep.capture import code as code_capture
from relstep.capture import sqlite_files
from tests.helpers import all_bytes, relstep, sqlite_app, write_config

HASHES = [f"$2b$12$plantedhash{i:04d}Xq9vLr2mWc8yZs" for i in range(1, 6)]
LATE_HASH = "$2b$12$writtenafterthecheckpointZZ"   # only in the -wal until a checkpoint


def backup(app: Path, version: str = "1.0.0") -> Path:
    ran = relstep("backup", "--version", version, cwd=app)
    assert ran.code == 0, ran.err
    return Path(ran.out.strip().splitlines()[-1])


def manifest(snap: Path) -> dict:
    return json.loads((snap / "MANIFEST.json").read_text(encoding="utf-8"))


def stored_tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def users_db(path: Path, journal_mode: str = "delete") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute('CREATE TABLE "User" (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password TEXT)')
    conn.executemany('INSERT INTO "User" (email, password) VALUES (?, ?)',
                     [(f"u{i}@example.com", h) for i, h in enumerate(HASHES)])
    return conn


def prisma_app(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    """Prisma's default SQLite layout: the live database inside the backend code folder.

    ``backend/prisma/dev.db`` in WAL mode with a connection open (so ``-wal`` and ``-shm``
    exist and the ``-wal`` holds a hash), an SQLite cache under a name that says nothing,
    and an old database whose persisted rollback journal still holds its pages.
    """
    app = tmp_path / "app"
    backend = app / "backend"
    (backend / "src").mkdir(parents=True)
    (backend / "src" / "index.js").write_text("console.log('hi')\n")
    (backend / "prisma").mkdir()
    (backend / "prisma" / "schema.prisma").write_text('datasource db {\n  provider = "sqlite"\n'
                                                      '  url = "file:./dev.db"\n}\n')
    live = users_db(backend / "prisma" / "dev.db", "wal")
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute('INSERT INTO "User" (email, password) VALUES (?, ?)', ("late@example.com", LATE_HASH))
    cache = users_db(backend / "data" / "cache.bin")
    cache.close()
    old = users_db(backend / "old" / "legacy.db", "persist")
    old.execute('UPDATE "User" SET password = NULL')   # the old hashes stay in legacy.db-journal
    old.close()
    write_config(app, {
        "backup_root": "backups/releases",
        "database": {"url": "sqlite:///backend/prisma/dev.db", "redact": ["User.password"]},
        "code": {"backend": "backend"},
        "migrations": {"tool": "none"},
        "environment": {},
    })
    return app, live


def test_databases_inside_a_code_folder_are_left_out_and_named(tmp_path: Path) -> None:
    app, live = prisma_app(tmp_path)
    try:
        source = all_bytes(app / "backend")
        assert all(h.encode() in source for h in [*HASHES, LATE_HASH])   # planted where capture looks
        assert (app / "backend" / "prisma" / "dev.db-wal").stat().st_size > 0
        snap = backup(app)
    finally:
        live.close()

    entry = manifest(snap)["code"]["backend"]
    configured = "the configured database main (in its redacted dump)"
    assert entry["left_out"] == [
        {"path": "data/cache.bin", "reason": sqlite_files.DATABASE},
        {"path": "old/legacy.db", "reason": sqlite_files.DATABASE},
        {"path": "old/legacy.db-journal", "reason": "belongs to the left-out old/legacy.db"},
        {"path": "prisma/dev.db", "reason": configured},
        {"path": "prisma/dev.db-shm", "reason": "belongs to the left-out prisma/dev.db"},
        {"path": "prisma/dev.db-wal", "reason": "belongs to the left-out prisma/dev.db"},
    ]
    assert stored_tree(snap / "code" / "backend") == {
        "data", "old", "prisma", "prisma/schema.prisma", "src", "src/index.js"}
    assert entry["files"] == 2
    everything = all_bytes(snap)
    assert [h for h in [*HASHES, LATE_HASH] if h.encode() in everything] == []
    # The database itself is in the snapshot, through its redacted dump.
    assert manifest(snap)["databases"]["main"]["redacted"] == {"User": ["password"]}

    shown = relstep("show", snap.name, cwd=app)
    assert shown.code == 0, shown.err
    assert [line for line in shown.out.splitlines() if line.startswith("left out (code backend)")] == [
        f"left out (code backend): data/cache.bin: {sqlite_files.DATABASE}",
        f"left out (code backend): old/legacy.db: {sqlite_files.DATABASE}",
        "left out (code backend): old/legacy.db-journal: belongs to the left-out old/legacy.db",
        f"left out (code backend): prisma/dev.db: {configured}",
        "left out (code backend): prisma/dev.db-shm: belongs to the left-out prisma/dev.db",
        "left out (code backend): prisma/dev.db-wal: belongs to the left-out prisma/dev.db",
    ]
    out = tmp_path / "restored"
    ran = relstep("restore", "1.0.0", "--database-url", f"sqlite:///{tmp_path / 'new.db'}", "--code-to", str(out),
                  cwd=app)
    assert ran.code == 0, ran.err
    assert stored_tree(out / "backend") == stored_tree(snap / "code" / "backend")
    assert f"not in the code (left out at backup): backend/prisma/dev.db: {configured}" in ran.out.splitlines()


def test_an_sqlite_file_is_recognised_by_its_header_not_its_name(tmp_path: Path) -> None:
    """A WAL whose database is gone, and a database named like source code, are found by their bytes."""
    source = tmp_path / "src"
    conn = users_db(source / "models.js", "wal")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute('INSERT INTO "User" (email, password) VALUES (?, ?)', ("late@example.com", LATE_HASH))
    (source / "orphan-wal.bin").write_bytes((source / "models.js-wal").read_bytes())
    (source / "readme.txt").write_bytes(b"SQLite format 3 is a file format\n")   # not the 16-byte header
    snap = tmp_path / "snap"
    snap.mkdir()
    hashes: dict[str, dict] = {}
    summary = code_capture.capture_tree("app", source, snap, (), {}, {}, hashes)
    conn.close()

    assert summary.left_out == [
        {"path": "models.js", "reason": sqlite_files.DATABASE},
        {"path": "models.js-shm", "reason": "belongs to the left-out models.js"},
        {"path": "models.js-wal", "reason": "belongs to the left-out models.js"},
        {"path": "orphan-wal.bin", "reason": sqlite_files.WAL},
    ]
    assert set(hashes) == {"code/app/readme.txt"}


def test_a_code_entry_holding_backup_root_never_captures_snapshots(tmp_path: Path) -> None:
    """``code: {app: .}``: backup_root and the pre-restore folder (made by a real restore) stay out."""
    app = sqlite_app(tmp_path, with_git=False)
    write_config(app, {"backup_root": "backups/releases", "database": {"url": "sqlite:///app.db"},
                       "code": {"app": "."}, "migrations": {"tool": "none"}, "environment": {}})
    backup(app, "1.0.0")
    undo = relstep("restore", "1.0.0", "--yes", cwd=app)   # a non-empty target: a safety snapshot first
    assert undo.code == 0, undo.err
    [safety] = [p for p in (app / "backups" / "pre-restore").iterdir() if not p.name.startswith(".")]
    assert (safety / "MANIFEST.json").is_file()

    snap = backup(app, "1.0.1")

    entry = manifest(snap)["code"]["app"]
    assert entry["left_out"] == [
        {"path": "app.db", "reason": "the configured database main (in its redacted dump)"},
        {"path": "backups/pre-restore", "reason": "the pre-restore safety snapshots"},
        {"path": "backups/releases", "reason": "backup_root: snapshots are never copied into snapshots"},
    ]
    assert stored_tree(snap / "code" / "app" / "backups") == set()
    assert not [rel for rel in manifest(snap)["files"] if "MANIFEST" in rel or rel.startswith("code/app/backups/")]


def test_names_that_are_not_utf8_are_captured_and_restored_byte_for_byte(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path, with_git=False)
    src = os.fsencode(app / "backend")
    files = {b"caf\xe9.txt": b"latin-1 name\n", b"d\xff/x\xfe": b"in a folder with a bad name\n",
             b"caf\\xe9.txt": b"a real file named like the stand-in\n"}
    for rel, data in files.items():
        os.makedirs(os.path.dirname(src + b"/" + rel), exist_ok=True)
        with open(src + b"/" + rel, "wb") as f:
            f.write(data)
    os.chmod(src + b"/d\xff/x\xfe", 0o755)  # noqa: S103 - an executable to restore
    os.symlink(b"t\xfc/../caf\xe9.txt", src + b"/l\xfd")
    snap = backup(app)

    raw = (snap / "MANIFEST.json").read_bytes()
    raw.decode("utf-8")                                   # the manifest stays valid UTF-8
    entry = json.loads(raw)["code"]["backend"]
    assert entry["raw_names"] == {"caf\\xe9.txt~2": "Y2Fm6S50eHQ=", "d\\xff": "ZP8=", "d\\xff/x\\xfe": "eP4=",
                                  "l\\xfd": "bP0="}
    assert entry["symlinks"]["l\\xfd"] == "t\\xfc/../caf\\xe9.txt"
    assert entry["raw_link_targets"] == {"l\\xfd": "dPwvLi4vY2Fm6S50eHQ="}
    assert "d\\xff/x\\xfe" in entry["executables"]
    assert relstep("verify", snap.name, cwd=app).code == 0

    out = tmp_path / "restored"
    ran = relstep("restore", "1.0.0", "--database-url", f"sqlite:///{tmp_path / 'new.db'}", "--code-to", str(out),
                  cwd=app)
    assert ran.code == 0, ran.err
    assert byte_tree(os.fsencode(out / "backend")) == byte_tree(src)


def byte_tree(root: bytes) -> dict[bytes, tuple]:
    """Every entry under root by its bytes name: file bytes and executable bit, link targets, folders."""
    tree: dict[bytes, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            rel = path[len(root) + 1:]
            if os.path.islink(path):
                tree[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                tree[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    tree[rel] = ("file", f.read(), os.stat(path).st_mode & 0o100)
    return tree


def test_symlinks_are_recorded_never_followed_even_loops_and_excluded_ones(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path, with_git=False)
    backend = app / "backend"
    (backend / "self").symlink_to("self")
    (backend / "ping").symlink_to("pong")
    (backend / "pong").symlink_to("ping")
    (backend / "etc").symlink_to("/etc")
    (backend / "node_modules").mkdir()
    (backend / "node_modules" / "loop").symlink_to("../node_modules/loop")   # excluded, and a loop
    (backend / "cache").symlink_to("cache")                                  # excluded by name below
    write_config(app, {"backup_root": "backups/releases", "database": {"url": "sqlite:///app.db"},
                       "code": {"backend": "backend"}, "code_exclude": ["node_modules", "cache"],
                       "migrations": {"tool": "none"}, "environment": {}})

    snap = backup(app)

    entry = manifest(snap)["code"]["backend"]
    assert entry["symlinks"] == {"etc": "/etc", "ping": "pong", "pong": "ping", "self": "self"}
    assert stored_tree(snap / "code" / "backend") == stored_tree(backend) - {
        "self", "ping", "pong", "etc", "node_modules", "node_modules/loop", "cache"}


def test_excluded_names_are_never_opened(tmp_path: Path) -> None:
    """The walk is pruned: nothing below an excluded name is listed or opened (audit events say what was)."""
    source = tmp_path / "src"
    for rel in ("keep/a.js", "node_modules/dep/index.js", "keep/debug.log", "keep/node_modules/x.js"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
    snap = tmp_path / "snap"
    snap.mkdir()
    touched: list[str] = []
    recording = [True]   # an audit hook cannot be removed: it goes quiet after this test

    def audit(event: str, args: tuple) -> None:
        if recording[0] and event in ("open", "os.scandir", "os.listdir") and args \
                and isinstance(args[0], (str, bytes, Path)):
            touched.append(os.fsdecode(args[0]))

    sys.addaudithook(audit)
    try:
        code_capture.capture_tree("app", source, snap, ("node_modules", "*.log"), {}, {}, {})
    finally:
        recording[0] = False
    done = [p for p in touched if p.startswith(str(source))]
    assert f"{source}/keep/a.js" in done
    assert [p for p in done if "node_modules" in p or p.endswith(".log")] == []


def test_sparse_files_stay_sparse_in_the_snapshot_and_on_restore(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path, with_git=False)
    image = app / "backend" / "disk.img"
    with open(image, "wb") as f:
        os.truncate(f.fileno(), 64 << 20)
        for offset in (0, 32 << 20, (64 << 20) - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    blocks = image.stat().st_blocks
    assert blocks * 512 < 64 << 10                      # a sparse file: 12 KiB of data in 64 MiB
    expected = hashlib.sha256(image.read_bytes()).hexdigest()

    first = backup(app, "1.0.0")
    copy = first / "code" / "backend" / "disk.img"
    assert copy.stat().st_blocks == blocks and copy.stat().st_size == 64 << 20
    assert manifest(first)["files"]["code/backend/disk.img"] == {"size": 64 << 20, "sha256": expected}
    second = backup(app, "1.0.1")
    assert (second / "code" / "backend" / "disk.img").stat().st_ino == copy.stat().st_ino   # shared, unchanged

    out = tmp_path / "restored"
    ran = relstep("restore", "1.0.1", "--database-url", f"sqlite:///{tmp_path / 'new.db'}", "--code-to", str(out),
                  cwd=app)
    assert ran.code == 0, ran.err
    back = out / "backend" / "disk.img"
    assert back.stat().st_blocks == blocks
    assert hashlib.sha256(back.read_bytes()).hexdigest() == expected


_names = st.binary(min_size=1, max_size=6).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))
# Common stand-in spellings too, so that a real name and a stand-in collide often.
_names = _names | st.sampled_from([b"\xff", b"\\xff", b"\\xff~2", b"a\xe9", b"a\\xe9"])
_targets = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b)
_magics = (sqlite_files.DATABASE_HEADER, sqlite_files.JOURNAL_MAGIC, *sqlite_files.WAL_MAGICS)
_contents = st.binary(max_size=64).filter(lambda b: not b.startswith(_magics))   # SQLite files are left out
_trees = st.recursive(
    _contents | st.tuples(st.just("link"), _targets),
    lambda children: st.dictionaries(_names, children, max_size=5),
    max_leaves=12,
).filter(lambda t: isinstance(t, dict))


def _write_tree(root: bytes, tree: dict) -> None:
    os.mkdir(root)
    for name, entry in tree.items():
        path = root + b"/" + name
        if isinstance(entry, dict):
            _write_tree(path, entry)
        elif isinstance(entry, tuple):
            os.symlink(entry[1], path)
        else:
            with open(path, "wb") as f:
                f.write(entry)


@settings(max_examples=60, deadline=None)
@given(tree=_trees)
def test_any_names_and_link_targets_round_trip_byte_for_byte(tree: dict) -> None:
    """Whatever bytes the names and link targets hold, a capture restores to the same tree."""
    from relstep.capture import code_restore

    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(os.fsencode(tmp), b"src")
        _write_tree(source, tree)
        snap = Path(tmp) / "snap"
        snap.mkdir()
        hashes: dict[str, dict] = {}
        summary = code_capture.capture_tree("app", Path(os.fsdecode(source)), snap, (), {}, {}, hashes)
        data = json.dumps(summary.to_json(), ensure_ascii=False).encode("utf-8")  # the manifest can hold it
        for rel in hashes:
            rel.encode("utf-8")                                                    # so can S3 keys
        restored = Path(tmp) / "restored"
        code_restore.build_tree(snap, "app", json.loads(data), restored)
        assert byte_tree(os.fsencode(restored)) == byte_tree(source)
