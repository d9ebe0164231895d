"""`relstep init` on the bundled example and on a Prisma/PostgreSQL-like tree; --prisma's migration on real servers."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from relstep import records
from relstep.config import load_config
from relstep.init import RELEASE_RECORD_SQL, init
from tests.helpers import EXAMPLE, clean_env, relstep, sqlite_app

ENV_PASSWORD = "Sekr3t-in-dotenv"


def example_without_config(tmp_path: Path) -> Path:
    app = sqlite_app(tmp_path)
    (app / "relstep.yml").unlink()
    return app


def test_init_on_the_bundled_example_then_run(tmp_path: Path) -> None:
    app = example_without_config(tmp_path)
    ran = relstep("init", cwd=app)
    assert ran.code == 0, ran.err
    assert "found: Prisma schema prisma/schema.prisma (provider sqlite, 2 migrations)" in ran.out
    assert f"wrote {app / 'relstep.yml'}" in ran.out
    text = (app / "relstep.yml").read_text()
    assert text.startswith("# relstep configuration, written by `relstep init`")
    data = yaml.safe_load(text)
    assert data["database"]["url"] == "sqlite:///app.db"
    assert data["code"] == {"backend": "backend", "frontend": "frontend"}
    assert data["migrations"] == {"tool": "prisma", "path": "prisma/migrations"}
    assert data["backup_root"] == "backups/releases"
    assert "offsite" not in data and "notify" not in data and "# offsite:" in text   # offered, commented out
    config = load_config(None, environ={}, cwd=app)
    assert config.retention == 30 and config.database is not None
    ran = relstep("run", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    assert ran.out.splitlines()[-1] == "schema revision: 20260201000000_add_posts"


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    app = example_without_config(tmp_path)
    (app / "relstep.yml").write_text("retention: 7\n")
    ran = relstep("init", cwd=app)
    assert ran.code == 2
    assert ran.last_err == (f"relstep: init failed: {app / 'relstep.yml'} already exists; relstep init never "
                            "overwrites it (remove it first, or write elsewhere with --config PATH init)")
    assert (app / "relstep.yml").read_text() == "retention: 7\n"
    # Elsewhere is fine (paths point back at the repository), and that file is then protected the same way.
    ran = relstep("--config", "deploy/relstep.yml", "init", cwd=app)
    assert ran.code == 2 and ran.last_err.startswith("relstep: init failed: cannot write ")
    (app / "deploy").mkdir()
    assert relstep("--config", "deploy/relstep.yml", "init", cwd=app).code == 0
    config = load_config("deploy/relstep.yml", environ={}, cwd=app)
    assert config.code == {"backend": app / "backend", "frontend": app / "frontend"}
    assert config.backup_root == app / "backups" / "releases"
    assert config.database is not None and config.database.url == f"sqlite:///{app / 'app.db'}"
    assert relstep("--config", "deploy/relstep.yml", "init", cwd=app).code == 2


PRISMA_SCHEMA = """\
generator client {
  provider = "prisma-client-js"
}

datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}

model Account {
  id             Int     @id @default(autoincrement())
  email          String  @unique
  passwordDigest String  @map("password_digest")
  apiToken       String?
  displayName    String

  @@map("accounts")
}
"""


def prisma_tree(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    migrations = root / "prisma" / "migrations"
    (migrations / "20991231000000_init").mkdir(parents=True)    # a migration dated in the future
    (migrations / "20991231000000_init" / "migration.sql").write_text("-- init\n")
    (migrations / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (root / "prisma" / "schema.prisma").write_text(PRISMA_SCHEMA)
    for folder in ("api", "web"):
        (root / folder).mkdir()
    (root / "api" / "package.json").write_text(json.dumps({"dependencies": {"@prisma/client": "6", "pm2": "5"}}))
    (root / ".env").write_text(f"NODE_ENV=production\nDATABASE_URL=\"postgresql://shop:{ENV_PASSWORD}@db:5432/shop\"\n")
    (root / ".gitignore").write_text("node_modules/\n")
    return root


def test_init_prisma_on_a_postgres_tree(tmp_path: Path) -> None:
    root = prisma_tree(tmp_path)
    ran = relstep("init", "--prisma", cwd=root)
    assert ran.code == 0, ran.err
    text = (root / "relstep.yml").read_text()
    assert ENV_PASSWORD not in text and ENV_PASSWORD not in ran.out + ran.err   # only the variable's name
    data = yaml.safe_load(text)
    assert data["database"]["url"] == "${DATABASE_URL}"
    assert "(.env names it: a postgresql database" in text
    # password_digest and apiToken are among relstep's defaults, which apply without being listed.
    assert data["database"]["redact"] == []
    assert data["code"] == {"api": "api", "web": "web"}
    assert data["environment"] == {"node": "node --version", "npm": "npm --version", "pm2": "pm2 jlist"}
    assert data["migrations"] == {"tool": "prisma", "path": "prisma/migrations"}
    assert "note: add backups/ to .gitignore" in ran.out
    # The model, appended once, with exactly the columns relstep writes.
    schema = (root / "prisma" / "schema.prisma").read_text()
    assert schema.startswith(PRISMA_SCHEMA.rstrip("\n"))
    assert "model ReleaseRecord {\n  id             Int      @id @default(autoincrement())\n" in schema
    assert "  schemaRevision String?\n  recordedAt     DateTime @default(now())\n}\n" in schema
    folders = sorted(p.name for p in (root / "prisma" / "migrations").iterdir() if p.is_dir())
    assert folders == ["20991231000000_init", "20991231000001_add_release_record"]   # sorts after the last one
    sql = (root / "prisma" / "migrations" / folders[1] / "migration.sql").read_text()
    assert sql == RELEASE_RECORD_SQL["postgresql"]
    # The config loads once DATABASE_URL is in the environment.
    config = load_config(None, environ={"DATABASE_URL": "postgresql://u@h/db"}, cwd=root)
    assert config.database is not None and config.database.url == "postgresql://u@h/db"
    # Again: relstep.yml is kept and the model is not added twice.
    ran = relstep("init", "--prisma", cwd=root)
    assert ran.code == 0, ran.err
    assert "already has a ReleaseRecord model; nothing added" in ran.out
    assert (root / "prisma" / "schema.prisma").read_text() == schema
    assert len([p for p in (root / "prisma" / "migrations").iterdir() if p.is_dir()]) == 2


def test_init_prisma_timestamps_the_migration_now(tmp_path: Path) -> None:
    app = example_without_config(tmp_path)
    now = datetime(2026, 11, 24, 1, 2, 3, tzinfo=timezone.utc)
    outcome = init(app, prisma=True, now=now)
    assert app / "prisma" / "migrations" / "20261124010203_add_release_record" / "migration.sql" in outcome.written
    assert (app / "prisma" / "migrations" / "20261124010203_add_release_record" / "migration.sql").read_text() == \
        RELEASE_RECORD_SQL["sqlite"]


def test_init_prisma_without_a_schema_fails(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    ran = relstep("init", "--prisma", cwd=tmp_path)
    assert ran.code == 2 and "no Prisma schema found" in ran.last_err


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "mysql"])
def test_the_migration_creates_a_table_relstep_records_into(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    """Applied to a real server, the generated SQL is a ReleaseRecord table relstep accepts as it is."""
    from sqlalchemy import text

    from relstep.databases import create_engine

    if engine == "sqlite":
        url, provider = f"sqlite:///{tmp_path / 'r.db'}", "sqlite"
    else:
        url = request.getfixturevalue({"postgres": "pg_url", "mysql": "mysql_url"}[engine])
        provider = {"postgres": "postgresql", "mysql": "mysql"}[engine]
    db = create_engine(url)
    try:
        with db.begin() as conn:
            conn.execute(text(RELEASE_RECORD_SQL[provider]))
    finally:
        db.dispose()
    outcome = records.record(url, "ReleaseRecord", version="1.2.3", deployment_type="patch",
                             backup_path=tmp_path / "snap", schema_revision="20260101000000_init")
    assert not outcome.created_table and outcome.id == 1
    (row,) = records.read_all(url, "ReleaseRecord")
    assert (row.version, row.deployment_type, row.schema_revision) == ("1.2.3", "patch", "20260101000000_init")
    assert row.recorded_at is not None


def test_postgres_sql_is_what_prisma_migrate_diff_writes(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The real Prisma CLI (WebAssembly engine, offline) diffs the schema before and after the model."""
    from migrations import realtools

    cli = realtools.prisma_cli(request)
    project = tmp_path / "p"
    (project / "prisma").mkdir(parents=True)
    before = project / "prisma" / "before.prisma"
    header = PRISMA_SCHEMA.replace('provider = "prisma-client-js"', 'provider   = "prisma-client-js"\n'
                                   '  engineType = "client"')
    before.write_text(header)
    shutil.copy(before, project / "prisma" / "schema.prisma")
    (project / "prisma.config.ts").write_text(realtools.PRISMA_CONFIG)
    (project / "node_modules").symlink_to(cli / "node_modules", target_is_directory=True)
    init(project, prisma=True)
    main = str(cli / "node_modules" / "prisma" / "build" / "index.js")
    out = project / "diff.sql"
    realtools.run(["node", main, "migrate", "diff", "--from-schema-datamodel", str(before),
                   "--to-schema-datamodel", "prisma/schema.prisma", "--script", "-o", str(out)], project,
                  clean_env(DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres"))
    assert out.read_text() == RELEASE_RECORD_SQL["postgresql"]


def test_init_without_anything_to_find_still_writes_a_valid_config(tmp_path: Path) -> None:
    ran = relstep("init", cwd=tmp_path)
    assert ran.code == 0, ran.err
    data = yaml.safe_load((tmp_path / "relstep.yml").read_text())
    assert data["code"] == {} and data["database"]["url"] == "${DATABASE_URL}"
    assert load_config(None, environ={"DATABASE_URL": "sqlite:///x.db"}, cwd=tmp_path).code == {}
    assert EXAMPLE.is_dir()
