"""Flyway, Rails, golang-migrate, Knex, Sequelize, TypeORM: one contract test drives them all.

These tools do not run on this machine, so their tables are made by hand: each has the
table and column names (and compatible types) the tool itself creates, declared once
with SQLAlchemy so the same definition serves SQLite, PostgreSQL and MariaDB, and rows
written the way the tool writes them, awkward ones included (Flyway's schema-creation
row, a failed run and a re-run repeatable; golang-migrate's dirty version; Rails'
unordered versions).  Flyway's checksum is checked against Java's own CRC32 and
BufferedReader, the classes Flyway uses.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table, func

from relstep import compat
from relstep.databases import create_engine
from relstep.migrations import detect, flyway, read_state, tool_for

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@dataclass
class Case:
    tool: str
    path: str                                   # migrations folder, relative to the project
    tables: Callable[[MetaData], Table]         # creates the tool's table(s); returns the one to fill
    rows: Callable[[Path], list[dict[str, Any]]]   # given the migrations folder (Flyway needs its checksums)
    files: dict[str, str]
    applied: list[str]
    pending: list[str]
    revision: str | None
    disk: list[str]                             # on_disk's order
    blind: list[str]                            # applied() without the files
    markers: dict[str, str] = field(default_factory=dict)


def _flyway_table(md: MetaData) -> Table:
    # flyway_schema_history as Flyway creates it (createMetaDataTable.sql).
    return Table(
        "flyway_schema_history", md,
        Column("installed_rank", Integer, primary_key=True, autoincrement=False),
        Column("version", String(50)), Column("description", String(200), nullable=False),
        Column("type", String(20), nullable=False), Column("script", String(1000), nullable=False),
        Column("checksum", Integer), Column("installed_by", String(100), nullable=False),
        Column("installed_on", DateTime, nullable=False, server_default=func.now()),
        Column("execution_time", Integer, nullable=False), Column("success", Boolean, nullable=False),
    )


def _flyway_rows(folder: Path) -> list[dict[str, Any]]:
    def row(rank: int, version: str | None, type_: str, script: str, checksum: int | None, ok: bool = True) -> dict:
        return {"installed_rank": rank, "version": version, "description": script, "type": type_, "script": script,
                "checksum": checksum, "installed_by": "ci", "execution_time": 5, "success": ok}

    cs = {name: flyway.checksum(folder / name) for name in ("V1__init.sql", "V1_1__add_b.sql", "V2__add_c.sql",
                                                             "R__views.sql")}
    return [
        row(1, None, "SCHEMA", "<< Flyway Schema Creation >>", None),
        row(2, "1", "SQL", "V1__init.sql", cs["V1__init.sql"]),
        row(3, "1.1", "SQL", "V1_1__add_b.sql", cs["V1_1__add_b.sql"]),
        row(4, None, "SQL", "R__views.sql", 12345),                          # an earlier version of the view
        row(5, "2", "SQL", "V2__add_c.sql", cs["V2__add_c.sql"], ok=False),  # failed (MySQL has no DDL rollback)
        row(6, "2", "SQL", "V2__add_c.sql", cs["V2__add_c.sql"]),            # repaired and re-run
        row(7, None, "SQL", "R__views.sql", cs["R__views.sql"]),             # the view changed: re-run
    ]


def _schema_migrations(md: MetaData) -> Table:
    # Rails: schema_migrations(version varchar primary key), plus ar_internal_metadata.
    Table("ar_internal_metadata", md, Column("key", String(255), primary_key=True), Column("value", String(255)),
          Column("created_at", DateTime, nullable=False), Column("updated_at", DateTime, nullable=False))
    return Table("schema_migrations", md, Column("version", String(255), primary_key=True))


def _golang_table(md: MetaData) -> Table:
    # golang-migrate: schema_migrations(version bigint not null primary key, dirty boolean not null).
    return Table("schema_migrations", md, Column("version", BigInteger, primary_key=True, autoincrement=False),
                 Column("dirty", Boolean, nullable=False))


def _knex_table(md: MetaData) -> Table:
    Table("knex_migrations_lock", md, Column("index", Integer, primary_key=True), Column("is_locked", Integer))
    return Table("knex_migrations", md, Column("id", Integer, primary_key=True), Column("name", String(255)),
                 Column("batch", Integer), Column("migration_time", DateTime(timezone=True)))


def _sequelize_table(md: MetaData) -> Table:
    return Table("SequelizeMeta", md, Column("name", String(255), primary_key=True))


def _typeorm_table(md: MetaData) -> Table:
    return Table("migrations", md, Column("id", Integer, primary_key=True),
                 Column("timestamp", BigInteger, nullable=False), Column("name", String(255), nullable=False))


def _typeorm_file(name: str) -> str:
    return (f"import {{ MigrationInterface, QueryRunner }} from 'typeorm';\n\n"
            f"export class {name} implements MigrationInterface {{\n"
            "  public async up(q: QueryRunner): Promise<void> {}\n"
            "  public async down(q: QueryRunner): Promise<void> {}\n}\n")


GOLANG_FILES = {"1_init.up.sql": "CREATE TABLE a (id int);\n", "1_init.down.sql": "DROP TABLE a;\n",
                "2_add_b.up.sql": "CREATE TABLE b (id int);\n", "2_add_b.down.sql": "DROP TABLE b;\n",
                "10_add_c.up.sql": "CREATE TABLE c (id int);\n", "10_add_c.down.sql": "DROP TABLE c;\n"}

CASES = [
    Case("flyway", "db/migration", _flyway_table, _flyway_rows,
         {"V1__init.sql": "CREATE TABLE a (id int);\n", "V1_1__add_b.sql": "CREATE TABLE b (id int);\r\n",
          "V2__add_c.sql": "\ufeffCREATE TABLE c (id int);", "R__views.sql": "CREATE VIEW v AS SELECT 1;\n",
          "V10__later.sql": "CREATE TABLE d (id int);\n"},
         ["V1__init.sql", "V1_1__add_b.sql", "V2__add_c.sql", "R__views.sql"], ["V10__later.sql"], "V2__add_c.sql",
         ["V1__init.sql", "V1_1__add_b.sql", "V2__add_c.sql", "V10__later.sql", "R__views.sql"],
         ["V1__init.sql", "V1_1__add_b.sql", "V2__add_c.sql", "R__views.sql"]),
    Case("rails", "db/migrate", _schema_migrations,
         lambda _: [{"version": v} for v in ("20240102000000", "9", "20240101000000")],
         {"9_legacy.rb": "class Legacy < ActiveRecord::Migration[7.1]; end\n",
          "20240101000000_create_users.rb": "class CreateUsers < ActiveRecord::Migration[7.1]; end\n",
          "20240102000000_add_email.rb": "class AddEmail < ActiveRecord::Migration[7.1]; end\n",
          "20240103000000_add_age.rb": "class AddAge < ActiveRecord::Migration[7.1]; end\n"},
         ["9", "20240101000000", "20240102000000"], ["20240103000000"], "20240102000000",
         ["9", "20240101000000", "20240102000000", "20240103000000"], ["9", "20240101000000", "20240102000000"],
         markers={"config/application.rb": "# rails\n"}),
    Case("golang-migrate", "migrations", _golang_table, lambda _: [{"version": 2, "dirty": False}],
         GOLANG_FILES, ["1", "2"], ["10"], "2", ["1", "2", "10"], ["2"]),
    # Version 10 failed half-way: golang-migrate leaves it as the version, marked dirty.
    Case("golang-migrate", "migrations", _golang_table, lambda _: [{"version": 10, "dirty": True}],
         GOLANG_FILES, ["1", "2"], ["10"], "2", ["1", "2", "10"], []),
    Case("knex", "migrations", _knex_table,
         lambda _: [{"name": "20240101_users.js", "batch": 1, "migration_time": NOW},
                    {"name": "20240102_posts.ts", "batch": 2, "migration_time": NOW}],
         {"20240101_users.js": "exports.up = k => k.schema.createTable('users', t => t.increments());\n",
          "20240102_posts.ts": "export const up = k => k.schema.createTable('posts', t => t.increments());\n",
          "20240103_tags.js": "exports.up = k => k.schema.createTable('tags', t => t.increments());\n",
          "types.d.ts": "export {};\n"},
         ["20240101_users.js", "20240102_posts.ts"], ["20240103_tags.js"], "20240102_posts.ts",
         ["20240101_users.js", "20240102_posts.ts", "20240103_tags.js"], ["20240101_users.js", "20240102_posts.ts"]),
    Case("sequelize", "migrations", _sequelize_table,
         lambda _: [{"name": "20240102000000-create-post.js"}, {"name": "20240101000000-create-user.js"}],
         {"20240101000000-create-user.js": "module.exports = { up: async () => {} };\n",
          "20240102000000-create-post.js": "module.exports = { up: async () => {} };\n",
          "20240103000000-create-tag.js": "module.exports = { up: async () => {} };\n"},
         ["20240101000000-create-user.js", "20240102000000-create-post.js"], ["20240103000000-create-tag.js"],
         "20240102000000-create-post.js",
         ["20240101000000-create-user.js", "20240102000000-create-post.js", "20240103000000-create-tag.js"],
         ["20240101000000-create-user.js", "20240102000000-create-post.js"]),
    Case("typeorm", "src/migration", _typeorm_table,
         lambda _: [{"timestamp": 1700000000000, "name": "CreateUsers1700000000000"},
                    {"timestamp": 1700000000001, "name": "AddPosts1700000000001"}],
         {"1700000000000-CreateUsers.ts": _typeorm_file("CreateUsers1700000000000"),
          "1700000000001-AddPosts.ts": _typeorm_file("AddPosts1700000000001"),
          "1700000000002-AddTags.ts": _typeorm_file("AddTags1700000000002")},
         ["CreateUsers1700000000000", "AddPosts1700000000001"], ["AddTags1700000000002"], "AddPosts1700000000001",
         ["CreateUsers1700000000000", "AddPosts1700000000001", "AddTags1700000000002"],
         ["CreateUsers1700000000000", "AddPosts1700000000001"]),
]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue({"postgresql": "pg_url", "mysql": "mysql_url"}[request.param])


def _setup(case: Case, url: str, project: Path) -> Path:
    folder = project / case.path
    for name, content in {**case.files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content.encode("utf-8"))
    for name, content in case.markers.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(content)
    md = MetaData()
    table = case.tables(md)
    engine = create_engine(url)
    with engine.begin() as conn:
        md.create_all(conn)
        conn.execute(table.insert(), case.rows(folder))
    engine.dispose()
    return folder


@pytest.mark.parametrize("case", CASES, ids=[f"{c.tool}-{i}" for i, c in enumerate(CASES)])
def test_tool_contract(case: Case, db_url: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    folder = _setup(case, db_url, project)
    module = tool_for(case.tool)
    assert module is not None
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert detect(conn, project) is module
        state = read_state(conn, "auto", case.path, project)
        blind = module.applied(conn, None)   # no files at hand
    engine.dispose()

    assert state.tool == case.tool
    assert [m.name for m in state.applied] == case.applied
    assert state.schema_revision == case.revision
    disk = module.on_disk(folder)
    assert [m.name for m in disk] == case.disk
    # Every applied migration carries the same checksum as its file (the tool's own, or the file's).
    by_name = {m.name: m.checksum for m in disk}
    assert all(m.checksum is not None and m.checksum == by_name[m.name] for m in state.applied)
    if case.tool == "knex":   # SQLite and MariaDB keep no zone; PostgreSQL's timestamptz comes back in UTC
        assert all((m.applied_at or "").startswith("2026-01-02T03:04:05") for m in state.applied)

    verdict = compat.check_project(state, case.path, project)
    assert (verdict.verdict, verdict.pending, verdict.unknown) == ("compatible", case.pending, [])

    # Without files, table-listing tools still know every name; only Flyway still knows checksums.
    assert [m.name for m in blind] == case.blind
    assert all((m.checksum is not None) == (case.tool == "flyway") for m in blind)


def test_rails_and_golang_migrate_share_a_table_name_but_not_its_columns(tmp_path: Path) -> None:
    for case, module in ((CASES[1], "rails"), (CASES[2], "golang-migrate")):
        url = f"sqlite:///{tmp_path / (module + '.db')}"
        _setup(case, url, tmp_path / module)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert detect(conn, None) is tool_for(module)
        engine.dispose()


def test_detection_needs_the_tools_columns_and_falls_back_to_project_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    md = MetaData()
    # Laravel's table is also called "migrations", with other columns: not TypeORM's.
    Table("migrations", md, Column("id", Integer, primary_key=True), Column("migration", String(255)),
          Column("batch", Integer))
    engine = create_engine(url)
    with engine.begin() as conn:
        md.create_all(conn)
    project = tmp_path / "project"
    project.mkdir()
    with engine.connect() as conn:
        assert detect(conn, project) is None
        assert read_state(conn, "auto", None, project).to_json() == {"tool": "none", "applied": [],
                                                                      "schema_revision": None}
        (project / "knexfile.js").write_text("module.exports = {};\n")   # an empty database, a Knex project
        assert detect(conn, project) is tool_for("knex")
        assert read_state(conn, "auto", None, project).to_json() == {"tool": "knex", "applied": [],
                                                                      "schema_revision": None}
    engine.dispose()


JAVA_FLYWAY_CHECKSUM = """\
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.zip.CRC32;

// The loop of Flyway's ChecksumCalculator.calculateChecksumForResource, with the JDK classes it uses.
public class FlywayChecksum {
    public static void main(String[] args) throws IOException {
        for (String arg : args) {
            CRC32 crc32 = new CRC32();
            try (BufferedReader reader = new BufferedReader(
                    new InputStreamReader(Files.newInputStream(Path.of(arg)), StandardCharsets.UTF_8), 4096)) {
                String line = reader.readLine();
                if (line != null) {
                    if (line.startsWith("\\ufeff")) line = line.substring(1);   // BomFilter
                    do {
                        crc32.update(line.getBytes(StandardCharsets.UTF_8));
                    } while ((line = reader.readLine()) != null);
                }
            }
            System.out.println((int) crc32.getValue());
        }
    }
}
"""

FLYWAY_SAMPLES = {
    "lf.sql": b"CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n",
    "crlf.sql": b"CREATE TABLE a (id int);\r\nINSERT INTO a VALUES (1);\r\n",
    "cr.sql": b"CREATE TABLE a (id int);\rINSERT INTO a VALUES (1);",
    "bom.sql": b"\xef\xbb\xbfCREATE TABLE a (id int);\n\n\n",
    "unicode.sql": "-- caf\u00e9 \u2028 \u00fcber \U0001f600\nSELECT '\u00e9';\x0b\x0c\n".encode(),
    "invalid.sql": b"SELECT '\xff\xfe';\nSELECT 2;",
    "empty.sql": b"",
    "negative.sql": b"CREATE TABLE negative_checksum (id int);\n" * 3,
}


def test_flyway_checksum_matches_javas(tmp_path: Path) -> None:
    if shutil.which("java") is None:
        pytest.skip("java not on PATH: cannot compare with the JDK's CRC32/BufferedReader")
    for name, data in FLYWAY_SAMPLES.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "FlywayChecksum.java").write_text(JAVA_FLYWAY_CHECKSUM)
    files = [tmp_path / n for n in FLYWAY_SAMPLES]
    done = subprocess.run(["java", str(tmp_path / "FlywayChecksum.java"), *map(str, files)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert [flyway.checksum(f) for f in files] == [int(x) for x in done.stdout.split()]
    assert flyway.checksum(tmp_path / "lf.sql") == flyway.checksum(tmp_path / "crlf.sql")
