"""SQLite redaction: full-text indexes, generated columns, patterns and defaults, through the real
library and the real CLI.  Every copy is byte-scanned (the zstd stream opened) and restored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from relstep.databases import sqlite
from relstep.databases.base import DatabaseError, DumpPlan, UnmatchedRedactPattern, plan_patterns
from tests.helpers import relstep, sqlite_app, write_config
from tests.secret_scan import Scan

USERS = """
CREATE TABLE User (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password TEXT,
                   shout TEXT GENERATED ALWAYS AS (upper(password)) STORED);
INSERT INTO User (id, email, password) VALUES (1, 'ann@example.com', 'zebrasecret alpha'),
                                              (2, 'bob@example.com', 'quokkasecret beta');
"""


def _db(tmp_path: Path, sql: str) -> str:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(sql)
    return f"sqlite:///{path}"


def _dump_and_restore(tmp_path: Path, url: str, plan: DumpPlan) -> tuple[sqlite.DumpInfo, Path]:
    dest = tmp_path / "dump"
    dest.mkdir()
    info = sqlite.dump(url, dest, plan)
    restored = tmp_path / "restored.db"
    sqlite.restore(dest, f"sqlite:///{restored}")
    return info, restored


def _scan(dest: Path, secrets: list[str]) -> list[tuple[str, str, str]]:
    scan = Scan(secrets)
    scan.add_tree("dump", dest)
    assert scan.contains("bob@example.com"), "the scan must see the copy's rows"
    return scan.leaks()


@pytest.mark.parametrize("module", ["fts5", "fts4"])
def test_an_external_content_full_text_index_over_a_redacted_column_is_rebuilt(
    tmp_path: Path, module: str
) -> None:
    url = _db(tmp_path, USERS + f"""
        CREATE VIRTUAL TABLE user_search USING {module}(email, password, content='User');
        INSERT INTO user_search(user_search) VALUES ('rebuild');
        CREATE TRIGGER user_ai AFTER INSERT ON User BEGIN
            INSERT INTO user_search(rowid, email, password) VALUES (new.id, new.email, new.password);
        END;
    """)
    info, restored = _dump_and_restore(tmp_path, url, DumpPlan())
    assert info.redacted == {"User": ["password"], "user_search": ["password"]}
    # the tokens of the index's shadow tables were the leak: no word of a password is left
    assert _scan(tmp_path / "dump", ["zebrasecret", "quokkasecret", "ZEBRASECRET"]) == []
    with sqlite3.connect(restored) as conn:
        assert conn.execute("SELECT rowid FROM user_search WHERE user_search MATCH 'bob'").fetchall() == [(2,)]
        assert conn.execute("SELECT rowid FROM user_search WHERE user_search MATCH 'zebrasecret'").fetchall() == []
        assert conn.execute("SELECT id, email, password, shout FROM User ORDER BY id").fetchall() == [
            (1, "ann@example.com", None, None), (2, "bob@example.com", None, None)]
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == [("user_ai",)]


def test_a_full_text_table_holding_its_own_copy_of_a_redacted_column_is_rebuilt(tmp_path: Path) -> None:
    url = _db(tmp_path, USERS + """
        CREATE VIRTUAL TABLE notes USING fts5(title, password);
        INSERT INTO notes VALUES ('bob@example.com', 'wombatsecret gamma');
    """)
    info, restored = _dump_and_restore(tmp_path, url, DumpPlan())
    assert info.redacted == {"User": ["password"], "notes": ["password"]}
    assert _scan(tmp_path / "dump", ["wombatsecret", "zebrasecret"]) == []
    with sqlite3.connect(restored) as conn:
        assert conn.execute("SELECT title, password FROM notes").fetchall() == [("bob@example.com", None)]
        assert conn.execute("SELECT count(*) FROM notes WHERE notes MATCH 'wombatsecret'").fetchone() == (0,)


def test_a_contentless_full_text_table_with_a_column_to_redact_is_refused(tmp_path: Path) -> None:
    url = _db(tmp_path, USERS + """
        CREATE VIRTUAL TABLE blind USING fts5(password, content='');
        INSERT INTO blind(rowid, password) VALUES (1, 'zebrasecret');
    """)
    (tmp_path / "dump").mkdir()
    with pytest.raises(DatabaseError) as failed:
        sqlite.dump(url, tmp_path / "dump", DumpPlan())
    assert failed.value.message == (
        "cannot redact the contentless full-text table blind: its index keeps every token and cannot be "
        "rebuilt; add it to database.exclude_tables, or give it a content table")
    assert list((tmp_path / "dump").iterdir()) == []


def test_a_pattern_that_matches_nothing_fails_unless_marked_optional(tmp_path: Path) -> None:
    url = _db(tmp_path, USERS)
    (tmp_path / "dump").mkdir()
    with pytest.raises(UnmatchedRedactPattern) as failed:
        sqlite.dump(url, tmp_path / "dump", DumpPlan(redact=plan_patterns(["Users.password", "*.pasword"])))
    assert failed.value.message == (
        "database.redact pattern 'Users.password' matches no column (the closest columns are User.password); "
        "fix the pattern, or end it with '?' if it may match nothing")
    with pytest.raises(UnmatchedRedactPattern, match=r"'\*\.pasword' matches no column \(the closest columns "
                                                     r"are User\.password\)"):
        sqlite.dump(url, tmp_path / "dump", DumpPlan(redact=plan_patterns(["*.pasword"])))
    info = sqlite.dump(url, tmp_path / "dump", DumpPlan(redact=plan_patterns(["Users.password?", "User.email"])))
    assert info.redacted == {"User": ["email", "password"]}


# --------------------------------------------------------------------------- through the CLI


def _app(tmp_path: Path, database: dict) -> Path:
    app = sqlite_app(tmp_path)
    write_config(app, {"backup_root": "backups/releases", "database": {"url": "sqlite:///app.db", **database},
                       "code": {}, "migrations": {"tool": "prisma", "path": "prisma/migrations"}})
    return app


def test_cli_unmatched_pattern_is_exit_2_and_writes_no_snapshot(tmp_path: Path) -> None:
    app = _app(tmp_path, {"redact": ["Users.password"]})
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 2, ran.err
    assert ran.last_err == (
        "relstep: backup failed: database.redact pattern 'Users.password' matches no column (the closest columns "
        "are User.password, User.passwordHash); fix the pattern, or end it with '?' if it may match nothing")
    assert [p.name for p in (app / "backups" / "releases").iterdir()] == [".relstep.lock"]


def test_cli_show_and_manifest_list_every_redacted_column_and_redact_defaults_false_drops_the_defaults(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path, {"redact": ["Post.body"], "redact_defaults": False})
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = next(p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith("."))
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    assert manifest["databases"]["main"]["redacted"] == {"Post": ["body"]}
    shown = relstep("show", snap.name, cwd=app)
    assert "redacted (main): Post.body\n" in shown.out + "\n"
    scan = Scan(["Body of post 7"])
    scan.add_tree("snapshot", snap)
    assert scan.leaks() == [] and scan.contains("plain-password-7")   # the defaults were off: kept in clear

    write_config(app, {"backup_root": "backups/releases", "database": {"url": "sqlite:///app.db"}, "code": {},
                       "migrations": {"tool": "prisma", "path": "prisma/migrations"}})
    assert relstep("backup", "--version", "1.0.1", cwd=app).code == 0
    newest = max((p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith(".")),
                 key=lambda p: p.name)
    assert json.loads((newest / "MANIFEST.json").read_text())["databases"]["main"]["redacted"] == {
        "User": ["password", "passwordHash"]}
    assert "redacted (main): User.password, User.passwordHash" in relstep("show", newest.name, cwd=app).out
    scan = Scan([f"plain-password-{i}" for i in range(1, 26)] + [f"$2b$12$examplehash{i:04d}" for i in range(1, 26)])
    scan.add_tree("snapshot", newest)
    assert scan.leaks() == [] and scan.contains("user7@example.com")


def test_redact_defaults_is_a_boolean_key_of_every_database_entry(tmp_path: Path) -> None:
    from relstep.config import load_config
    from relstep.errors import ConfigError

    (tmp_path / "relstep.yml").write_text(
        "code: {}\ndatabases:\n  - {name: app, url: 'sqlite:///a.db', redact_defaults: false}\n"
        "  - {name: other, url: 'sqlite:///b.db'}\n")
    config = load_config(None, environ={}, cwd=tmp_path)
    assert [db.redact_defaults for db in config.all_databases] == [False, True]
    (tmp_path / "relstep.yml").write_text("code: {}\ndatabase:\n  url: sqlite:///a.db\n  redact_defaults: 'no'\n")
    with pytest.raises(ConfigError, match=r"database\.redact_defaults: input should be a valid boolean"):
        load_config(None, environ={}, cwd=tmp_path)


def test_a_restore_target_lacking_a_configured_column_still_gets_its_safety_snapshot(tmp_path: Path) -> None:
    app = _app(tmp_path, {"redact": ["Post.body"]})
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    # The live database moved on: Post.body is gone, so the pattern matches nothing there.
    with sqlite3.connect(app / "app.db") as conn:
        conn.execute('ALTER TABLE "Post" DROP COLUMN body')
    assert relstep("backup", "--version", "1.0.1", cwd=app).code == 2   # a backup refuses, as it should
    ran = relstep("restore", "1.0.0", "--yes", "--force", cwd=app)
    assert ran.code == 0, ran.err
    safety, = (p for p in (app / "backups" / "pre-restore").iterdir() if not p.name.startswith("."))
    assert json.loads((safety / "MANIFEST.json").read_text())["databases"]["main"]["redacted"] == {
        "User": ["password", "passwordHash"]}
    with sqlite3.connect(app / "app.db") as conn:
        # the column is back, redacted as the 1.0.0 snapshot holds it
        assert conn.execute('SELECT count(*), count(NULLIF(body, \'\')) FROM "Post"').fetchone() == (100, 0)
