"""`databases:`: SQLite and PostgreSQL in one snapshot, each in its own folder and manifest entry, each restorable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from relstep import records
from relstep.config import load_config
from relstep.databases import postgres, sqlite
from relstep.errors import ConfigError
from relstep.fsutil import sha256_file
from tests.apps import create_schema
from tests.conftest import PLANTED_DB_PASSWORD
from tests.helpers import all_bytes, relstep, sqlite_app, write_config


def test_two_databases_dumped_recorded_and_each_restorable(
    tmp_path: Path, pg_url: str, pg_url2: str
) -> None:
    app = sqlite_app(tmp_path)
    create_schema(pg_url, users=7, posts=11)
    write_config(app, {
        "databases": [
            {"name": "app", "url": "sqlite:///app.db", "redact": ["User.password", "User.passwordHash"]},
            {"name": "analytics", "url": pg_url, "exclude_tables": ["Post"]},
        ],
        "migrations": {"tool": "prisma"},
        "record": {"url": pg_url},                    # ReleaseRecord lives in the second database
    })
    ran = relstep("run", "--version", "5.1.0", cwd=app)
    assert ran.code == 0, ran.err
    snap = Path(ran.out.split("snapshot:", 1)[1].split("\n", 1)[0].strip())
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    dbs = manifest["databases"]
    assert list(dbs) == ["app", "analytics"]
    assert (dbs["app"]["engine"], dbs["app"]["path"]) == ("sqlite", "databases/app")
    assert (dbs["analytics"]["engine"], dbs["analytics"]["path"]) == ("postgresql", "databases/analytics")
    assert dbs["app"]["row_counts"] == {"Post": 100, "User": 25, "_prisma_migrations": 2}
    assert dbs["analytics"]["row_counts"]["User"] == 7 and dbs["analytics"]["row_counts"]["Post"] == 0
    assert dbs["analytics"]["excluded_tables"] == ["public.Post"] or dbs["analytics"]["excluded_tables"] == ["Post"]
    assert PLANTED_DB_PASSWORD not in json.dumps(manifest)
    # The first database is the app's: its migrations and counts are the snapshot's headline.
    assert manifest["engine"] == "sqlite" and manifest["schema_revision"] == "20260201000000_add_posts"
    assert manifest["row_counts"] == dbs["app"]["row_counts"]
    for rel, meta in manifest["files"].items():
        assert sha256_file(snap / rel) == (meta["size"], meta["sha256"]), rel
    assert {rel.split("/")[1] for rel in manifest["files"] if rel.startswith("databases/")} == {"app", "analytics"}
    # Redaction applies per database; no password from either reaches the snapshot.
    assert b"plain-password-1" not in all_bytes(snap) and b"pw-secret-1" not in all_bytes(snap)
    # record.url chose PostgreSQL.
    (row,) = records.read_all(pg_url, "ReleaseRecord")
    assert (row.version, row.backup_path) == ("5.1.0", str(snap))
    assert records.read_all(f"sqlite:///{app / 'app.db'}", "ReleaseRecord") == []

    # Each folder restores on its own into an empty database of its engine.
    target = tmp_path / "restored.db"
    sqlite.restore(snap / "databases" / "app", f"sqlite:///{target}")
    assert sqlite.row_counts(f"sqlite:///{target}") == dbs["app"]["row_counts"]
    postgres.restore(snap / "databases" / "analytics", pg_url2)
    counts = postgres.row_counts(pg_url2)
    wanted = {t: n for t, n in dbs["analytics"]["row_counts"].items() if t != "ReleaseRecord"}
    assert {t: n for t, n in counts.items() if t in wanted} == wanted
    # The snapshot still lists under one name and version.
    listed = relstep("list", "--json", cwd=app)
    assert [r["version"] for r in json.loads(listed.out)] == ["5.1.0"]
    shown = relstep("show", "5.1.0", cwd=app).out.splitlines()
    app_at, analytics_at = shown.index("row counts (app, sqlite):"), shown.index("row counts (analytics, postgresql):")
    assert shown[app_at + 1:app_at + 4] == ["  Post                100", "  User                25",
                                            "  _prisma_migrations  2"]
    assert "redacted (app): User.password, User.passwordHash" in shown
    assert shown[analytics_at + 1:analytics_at + 3] == ["  Post  0", "  User  7"]


def test_single_database_is_still_main(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    manifest = json.loads((Path(ran.out.strip()) / "MANIFEST.json").read_text())
    assert list(manifest["databases"]) == ["main"] and manifest["databases"]["main"]["path"] == "databases/main"


@pytest.mark.parametrize(("text", "message"), [
    ("database:\n  url: sqlite:///a.db\ndatabases:\n  - {name: b, url: 'sqlite:///b.db'}\n",
     "use either database or databases, not both"),
    ("databases: []\n", "databases: list at least one database"),
    ("databases:\n  - {url: 'sqlite:///a.db'}\n", "databases.0.name: field required"),
    ("databases:\n  - {name: a, url: 'sqlite:///a.db'}\n  - {name: a, url: 'sqlite:///b.db'}\n",
     "databases.1.name 'a' is used twice"),
    ("databases:\n  - {name: ../x, url: 'sqlite:///a.db'}\n", "databases.0.name '../x' must be letters"),
    ("databases:\n  - {name: a}\n", "databases.0 (a) has no url"),
    ("databases:\n  - {name: a, url: 'oracle://h/db'}\n", "unsupported database URL scheme oracle://"),
    ("databases:\n  - {name: a, url: 'sqlite:///a.db', colour: red}\n", "unknown key 'databases.0.colour'"),
])
def test_bad_databases_config(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "relstep.yml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(None, environ={}, cwd=tmp_path)
    assert info.value.exit_code == 2


def test_databases_config_resolves_each_url(tmp_path: Path) -> None:
    (tmp_path / "relstep.yml").write_text(
        "databases:\n  - name: app\n    url: file:./dev.db\n  - name: audit\n    url: ${AUDIT_URL}\n"
        "    exclude_tables: [Log]\n")
    config = load_config(None, environ={"AUDIT_URL": "postgresql://u:p@h/audit"}, cwd=tmp_path)
    assert [d.name for d in config.all_databases] == ["app", "audit"]
    assert config.database is not None and config.database.url == f"sqlite:///{tmp_path / 'dev.db'}"
    assert config.all_databases[1].exclude_tables == ("Log",)
    assert config.record.url == config.database.url              # default: the first database
