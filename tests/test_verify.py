"""`relstep verify` through the real CLI: damage of every kind is caught and named (exit 8),
and ``--restore-test`` restores into a real scratch database on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from relstep import verify
from tests.apps import make_app
from tests.helpers import Ran, relstep


def run(*args: str, cwd: Path) -> Ran:
    return relstep(*args, cwd=cwd, input="")


def backup(app: Path, version: str = "1.0.0") -> Path:
    ran = run("backup", "--version", version, cwd=app)
    assert ran.code == 0, ran.err
    return Path(ran.out.strip())


def manifest(snap: Path) -> dict[str, Any]:
    return json.loads((snap / "MANIFEST.json").read_text())


def rewrite_manifest(snap: Path, data: dict[str, Any]) -> None:
    (snap / "MANIFEST.json").write_text(json.dumps(data, indent=2))


def dump_files(snap: Path) -> list[str]:
    """The database's files, largest first (the one holding the rows)."""
    entry = manifest(snap)["databases"]["main"]
    files = [f"{entry['path']}/{name}" for name in entry["files"]]
    if not files or any((snap / f).is_dir() for f in files):  # engines that list a folder
        files = [rel for rel in manifest(snap)["files"] if rel.startswith(entry["path"] + "/")]
    return sorted(files, key=lambda rel: (snap / rel).stat().st_size, reverse=True)


def fingerprint(snap: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(snap)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(snap.rglob("*")) if p.is_file()}


@pytest.fixture
def sqlite_app(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    return make_app(tmp_path, request, "sqlite")[0]


# --------------------------------------------------------------------------- good snapshots


def test_a_good_snapshot_passes_and_is_not_touched(engine_app: tuple[Path, str]) -> None:
    app, _url = engine_app
    snap = backup(app)
    before = fingerprint(snap)
    mtime = snap.stat().st_mtime_ns

    ran = run("verify", "--restore-test", cwd=app)

    assert ran.code == 0, ran.out + ran.err
    assert f"{snap.name}  1.0.0 (release)  ok" in ran.out
    assert "dump readable" in ran.out and "proof:    restored database equals the snapshot: " in ran.out
    assert " tables (content)" in ran.out
    assert fingerprint(snap) == before and snap.stat().st_mtime_ns == mtime


def scratch_databases(url: str) -> set[str]:
    from sqlalchemy import text

    from relstep.databases import create_engine

    engine = create_engine(url)
    query = ("SELECT datname FROM pg_database" if url.startswith("postgres")
             else "SELECT schema_name FROM information_schema.schemata")
    try:
        with engine.connect() as conn:
            return {name for (name,) in conn.execute(text(query)) if name.startswith("relstep_scratch_")}
    finally:
        engine.dispose()


@pytest.mark.parametrize("engine", ["postgres", "mysql"])  # SQLite's scratch database is a temporary file
def test_the_restore_test_leaves_no_scratch_database_behind(tmp_path: Path, request: pytest.FixtureRequest,
                                                            engine: str) -> None:
    app, url = make_app(tmp_path, request, engine)
    backup(app)
    before = scratch_databases(url)
    assert run("verify", "--restore-test", cwd=app).code == 0
    assert scratch_databases(url) == before


def test_the_restore_test_can_run_on_another_server(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # The configured database is SQLite; the snapshot tested is a PostgreSQL one kept elsewhere.
    app, _url = make_app(tmp_path / "pg", request, "postgres")
    snap = backup(app)
    other, _ = make_app(tmp_path / "sqlite", request, "sqlite", backup_root=str(snap.parent))
    admin = request.getfixturevalue("pg_admin_url")

    missing = run("verify", snap.name, "--restore-test", cwd=other)
    assert missing.code == 2 and "--scratch-url" in missing.last_err, missing.err
    ran = run("verify", snap.name, "--restore-test", "--scratch-url", admin, cwd=other)
    assert ran.code == 0, ran.err
    assert "restored into a scratch database on postgresql://" in ran.out


# --------------------------------------------------------------------------- damage


def test_a_tampered_byte_is_caught_and_named(sqlite_app: Path) -> None:
    snap = backup(sqlite_app)
    code_file = snap / "code" / "backend" / "src" / "server.js"
    data = bytearray(code_file.read_bytes())
    data[0] ^= 0x01
    code_file.chmod(0o600)
    code_file.write_bytes(bytes(data))

    ran = run("verify", cwd=sqlite_app)

    assert ran.code == 8, ran.err
    assert "changed code/backend/src/server.js: its SHA-256 differs" in ran.last_err
    assert ran.last_err.startswith("relstep: verify failed: " + snap.name)


def test_a_deleted_file_is_caught_and_named(sqlite_app: Path) -> None:
    snap = backup(sqlite_app)
    (snap / "environment.json").unlink()
    ran = run("verify", snap.name, cwd=sqlite_app)
    assert ran.code == 8 and "missing environment.json" in ran.last_err, ran.err


@pytest.mark.parametrize("kind", ["file", "symlink", "folder-with-file"])
def test_an_extra_file_is_caught_and_named(sqlite_app: Path, kind: str) -> None:
    snap = backup(sqlite_app)
    if kind == "file":
        (snap / "code" / "backend" / "planted.js").write_text("evil()\n")
        name = "code/backend/planted.js"
    elif kind == "symlink":
        (snap / "databases" / "link").symlink_to("/etc/passwd")
        name = "databases/link"
    else:
        (snap / "extra").mkdir()
        (snap / "extra" / "x.bin").write_bytes(b"\0")
        name = "extra/x.bin"
    ran = run("verify", cwd=sqlite_app)
    assert ran.code == 8 and f"extra {name}" in ran.last_err, ran.err


def test_a_truncated_dump_is_caught_and_named(engine_app: tuple[Path, str]) -> None:
    app, _url = engine_app
    snap = backup(app)
    largest = dump_files(snap)[0]
    path = snap / largest
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)

    ran = run("verify", "--restore-test", cwd=app)

    assert ran.code == 8, ran.err
    assert f"changed {largest}: {size // 2} bytes, the manifest says {size} (truncated)" in ran.last_err
    assert "restore test skipped" in ran.out


def test_a_truncated_dump_with_a_matching_manifest_fails_the_readability_check(engine_app: tuple[Path, str]) -> None:
    # Damage that happened before the manifest was written (a disk error while dumping):
    # the checksums match, so only the engine's own reading of the dump can catch it.
    app, _url = engine_app
    snap = backup(app)
    largest = dump_files(snap)[0]
    path = snap / largest
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    data = manifest(snap)
    data["files"][largest] = {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    rewrite_manifest(snap, data)

    ran = run("verify", cwd=app)

    assert ran.code == 8, ran.err
    assert "unreadable database main" in ran.last_err


def test_the_restore_test_fails_when_row_counts_differ(engine_app: tuple[Path, str]) -> None:
    # The files pass their checksums (the manifest is not one of them), so only a real
    # restore can notice that the dump does not hold the rows the manifest promises.
    # A snapshot without a fingerprint (an older relstep's) is checked by its row counts.
    app, _url = engine_app
    snap = backup(app)
    data = manifest(snap)
    del data["databases"]["main"]["fingerprint"]
    counts = data["databases"]["main"]["row_counts"]
    post = next(table for table in counts if table.rpartition(".")[2] == "Post")
    counts[post] += 1
    rewrite_manifest(snap, data)
    assert run("verify", cwd=app).code == 0, "without a restore the difference cannot be seen"

    ran = run("verify", "--restore-test", cwd=app)

    assert ran.code == 8, ran.err
    assert f"rows {post}: {counts[post] - 1} rows, the manifest says {counts[post]}" in ran.last_err
    assert "note:     database main: the snapshot has no fingerprint (made by an older relstep): " \
        "only row counts were compared" in ran.out


def test_the_restore_test_fails_on_a_dump_that_lost_rows(sqlite_app: Path, tmp_path: Path) -> None:
    # A readable, consistent dump with a row missing (and a manifest that matches its
    # bytes): checksums and the integrity check pass, the row count comparison does not.
    snap = backup(sqlite_app)
    dump = snap / "databases" / "main" / "database.sqlite3.zst"
    plain = tmp_path / "plain.db"
    plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(dump.open("rb")).read())
    with sqlite3.connect(plain) as conn:
        conn.execute('DELETE FROM "Post" WHERE id = (SELECT max(id) FROM "Post")')
    dump.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    data = manifest(snap)
    rel = "databases/main/database.sqlite3.zst"
    data["files"][rel] = {"size": dump.stat().st_size, "sha256": hashlib.sha256(dump.read_bytes()).hexdigest()}
    rewrite_manifest(snap, data)
    expected = data["databases"]["main"]["row_counts"]["Post"]

    assert run("verify", cwd=sqlite_app).code == 0
    ran = run("verify", "--restore-test", cwd=sqlite_app)

    assert ran.code == 8, ran.err
    assert f"table Post: content differs ({expected - 1} rows, the snapshot has {expected})" in ran.last_err


@pytest.mark.parametrize("damage", ["not json", "unsafe path", "no files"])
def test_a_damaged_manifest_fails_verification(sqlite_app: Path, damage: str) -> None:
    snap = backup(sqlite_app)
    data = manifest(snap)
    if damage == "not json":
        (snap / "MANIFEST.json").write_text("{ not json")
    elif damage == "unsafe path":
        data["files"]["../../../etc/passwd"] = {"size": 1, "sha256": "0" * 64}
        rewrite_manifest(snap, data)
    else:
        del data["files"]
        rewrite_manifest(snap, data)
    ran = run("verify", snap.name, cwd=sqlite_app)
    assert ran.code == 8 and "manifest MANIFEST.json" in ran.last_err, ran.err


# --------------------------------------------------------------------------- selection and output


def test_all_checks_every_snapshot_and_names_the_bad_one(sqlite_app: Path) -> None:
    good = backup(sqlite_app, "1.0.0")
    time.sleep(1.1)
    bad = backup(sqlite_app, "1.0.1")
    (bad / "VERSION.txt").chmod(0o600)
    (bad / "VERSION.txt").write_text("6.6.6\n")

    newest = run("verify", cwd=sqlite_app)
    assert newest.code == 8 and bad.name in newest.last_err and good.name not in newest.out

    ran = run("verify", "--all", "--json", cwd=sqlite_app)
    assert ran.code == 8, ran.err
    report = json.loads(ran.out)
    assert [(s["name"], s["ok"]) for s in report["snapshots"]] == [(bad.name, False), (good.name, True)]
    assert report["snapshots"][0]["problems"] == [
        {"kind": "changed", "subject": "VERSION.txt", "detail": "its SHA-256 differs from the manifest's"}]
    assert run("verify", good.name, cwd=sqlite_app).code == 0
    assert run("verify", "1.0.0", cwd=sqlite_app).code == 0


def test_bad_arguments_are_input_errors(sqlite_app: Path) -> None:
    nothing = run("verify", cwd=sqlite_app)
    assert nothing.code == 8 and "no snapshot to verify" in nothing.last_err
    backup(sqlite_app)
    for args in (["--scratch-url", "sqlite:///x.db"], ["--all", "1.0.0"], ["--restore-test", "--scratch-url", "ftp://x"]):
        ran = run("verify", *args, cwd=sqlite_app)
        assert ran.code == 2, (args, ran.err)


def test_a_snapshot_pruned_while_being_verified_is_not_a_failure(sqlite_app: Path) -> None:
    snap = backup(sqlite_app)
    doomed = snap.parent / f".{snap.name}.deleting.partial"
    os.replace(snap, doomed)   # what prune does first
    report = verify.verify_snapshot(_config(sqlite_app), snap)
    assert report.ok and report.vanished
    shutil.rmtree(doomed)


def _config(app: Path) -> Any:
    from relstep.config import load_config

    return load_config(str(app / "relstep.yml"), cwd=app, environ={})
