"""SQLite: the fingerprint recorded at backup proves a faithful restore equal and names each difference.

The bundled example app (Prisma migrations, AUTOINCREMENT tables, a unique index, a foreign key).
Damage is real SQL on the restored file (see fingerprint_support for the one seam).  SQLite has no
grants and no large objects; its sequences are the AUTOINCREMENT counters.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relstep import fingerprint as fp
from relstep.databases import sqlite
from relstep.databases.base import DumpPlan
from tests.apps import make_app
from tests.databases.fingerprint_support import (
    backup,
    cli,
    damage_after_restore,
    execute,
    problems,
    proof_line,
    snapshots,
)
from tests.helpers import relstep, write_config


@pytest.fixture
def app(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    folder, url = make_app(tmp_path, request, "sqlite")
    execute(url, 'CREATE INDEX post_title ON "Post" (title)', "PRAGMA user_version = 7")
    return folder, url


FAITHFUL = ("restored database equals the snapshot: 3 tables (content), 2 sequences, 3 indexes, 4 settings")


def test_a_faithful_restore_proves_equal(app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _url = app
    backup(folder)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert ran.code == 0, ran.out + ran.err
    assert proof_line(ran.out) == FAITHFUL


@pytest.mark.parametrize(("damage", "named"), [
    ("UPDATE \"Post\" SET title = 'changed' WHERE id = 3", "table Post: content differs"),
    ('DELETE FROM "Post" WHERE id = 100', "table Post: content differs (99 rows, the snapshot has 100)"),
    ("DROP INDEX post_title", "index post_title missing"),
    ("UPDATE sqlite_sequence SET seq = 17 WHERE name = 'Post'", "sequence Post: value 17 != 100"),
    ("PRAGMA user_version = 8", "setting user_version: value 8 != 7"),
], ids=["changed row", "deleted row", "missing index", "sequence value", "user_version"])
def test_a_difference_in_the_restored_database_is_named_and_fails_verify(
    app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, damage: str, named: str
) -> None:
    folder, _url = app
    backup(folder)
    damaged = damage_after_restore(monkeypatch, sqlite, damage)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert len(damaged) == 1
    assert ran.code == 8, ran.out + ran.err
    assert problems(ran.out) == [f"differs database main: {named}"]


def test_the_journal_mode_recorded_is_the_sources(app: tuple[Path, str], tmp_path: Path) -> None:
    _folder, url = app
    with sqlite3.connect(sqlite.database_path(url)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    dest = tmp_path / "dump"
    dest.mkdir()
    # The copy in the snapshot is in rollback mode; the fingerprint records the source's mode.
    info = sqlite.dump(url, dest, DumpPlan(redact=()))
    assert info.fingerprint.values["file setting"] == {"journal_mode": "wal"}
    assert fp.compare(info.fingerprint, sqlite.fingerprint(url)) == []

    with sqlite3.connect(sqlite.database_path(url)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")

    assert fp.compare(info.fingerprint, sqlite.fingerprint(url)) == [
        "file setting journal_mode: value delete != wal"]


def test_a_restore_test_says_the_journal_mode_was_not_compared(
    app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = app
    with sqlite3.connect(sqlite.database_path(url)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    backup(folder)

    ran = cli(folder, monkeypatch, "verify", "--restore-test")

    assert ran.code == 0, ran.out + ran.err
    assert ("note:     database main: not compared: file settings (the journal mode belongs to the database file, "
            "which a restore keeps), since this restore went into another database") in ran.out


@pytest.mark.parametrize(("config", "message"), [
    ({"redact": ["User.email"]},
     "cannot redact User.email: a constraint rejects the redacted values (UNIQUE constraint failed: User.email), "
     "so the snapshot could never be restored; leave it out of database.redact or drop the constraint"),
    ({"exclude_tables": ["User"]},
     "cannot back up: table Post keeps rows that reference the excluded table User (a foreign key), so the snapshot "
     "could never be restored; exclude it too, or keep User out of database.exclude_tables"),
], ids=["redacted unique", "excluded referenced table"])
def test_an_unrestorable_backup_is_refused(app: tuple[Path, str], config: dict[str, object], message: str) -> None:
    folder, url = app
    write_config(folder, {"database": {"url": url, **config}, "migrations": {"tool": "auto"}})

    ran = relstep("backup", "--version", "1.0.0", cwd=folder, input="")

    assert ran.code == 2, ran.out + ran.err
    assert ran.err.strip().splitlines()[-1] == f"relstep: config failed: {message}"
    assert [p.name for p in snapshots(folder)] == []


def test_restore_test_after_backup_proves_the_new_snapshot(
    app: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = app
    write_config(folder, {"database": {"url": url, "restore_test_after_backup": True}, "migrations": {"tool": "auto"}})

    good = cli(folder, monkeypatch, "backup", "--version", "1.0.0")
    damage_after_restore(monkeypatch, sqlite, 'DELETE FROM "Post" WHERE id = 100')
    bad = cli(folder, monkeypatch, "backup", "--version", "1.0.1")

    assert good.code == 0, good.out + good.err
    assert bad.code == 3, bad.out + bad.err
    kept = [p.name for p in snapshots(folder)]
    assert len(kept) == 2, "the snapshot that failed its restore test is kept"
    assert bad.err.strip().splitlines()[-1] == (
        f"relstep: backup failed: snapshot {kept[1]} was written but does not restore equal to database main: "
        "differs database main: table Post: content differs (99 rows, the snapshot has 100); it is kept, "
        f"see `relstep verify --restore-test {kept[1]}`")


def test_a_hand_made_alter_is_reported_as_drift_before_anything_is_restored(app: tuple[Path, str]) -> None:
    folder, url = app
    snap = backup(folder)
    execute(url, 'CREATE INDEX hand_made ON "Post" (body)', 'ALTER TABLE "User" ADD COLUMN nickname TEXT')

    ran = relstep("restore", snap.name, "--check-only", cwd=folder, input="")

    assert ran.code == 0, ran.out + ran.err
    assert (f"verdict:    identical: the snapshot and the app have the same migrations; the target database has "
            f"drifted from its migrations (2 schema difference(s) from snapshot {snap.name}, lost by the restore)"
            in ran.out)
    drifted = [line.split(None, 1)[1] for line in ran.out.splitlines() if line.strip().startswith("drifted ")]
    assert drifted == ["index hand_made not in the snapshot", "table User: definition differs"]


def test_no_drift_is_reported_for_an_untouched_target(app: tuple[Path, str]) -> None:
    folder, _url = app
    snap = backup(folder)

    ran = relstep("restore", snap.name, "--check-only", cwd=folder, input="")

    assert ran.code == 0, ran.out + ran.err
    assert "verdict:    identical: the snapshot and the app have the same migrations\n" in ran.out
    assert "drifted" not in ran.out
