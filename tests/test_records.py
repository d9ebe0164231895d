"""The ReleaseRecord table on the real servers: schema-qualified names, columns relstep cannot
fill, and ``recordedAt`` stored as the exact UTC instant whatever the column type and time zone."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from relstep import records
from relstep.databases import create_engine
from relstep.errors import RecordError

INSTANT = datetime(2026, 3, 1, 19, 2, 7, tzinfo=timezone.utc)
SNAPSHOT = Path("/srv/app/backups/releases/2026-03-01T19-02-07Z_v1.2.3")

PRISMA_POSTGRES = '''CREATE TABLE "ReleaseRecord" (
    "id" SERIAL NOT NULL, "version" TEXT NOT NULL, "deploymentType" TEXT NOT NULL, "backupPath" TEXT NOT NULL,
    "schemaRevision" TEXT, "recordedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "ReleaseRecord_pkey" PRIMARY KEY ("id"))'''
TIMESTAMPTZ_POSTGRES = PRISMA_POSTGRES.replace("TIMESTAMP(3)", "TIMESTAMPTZ")
PRISMA_MARIADB = '''CREATE TABLE `ReleaseRecord` (
    `id` INTEGER NOT NULL AUTO_INCREMENT, `version` VARCHAR(191) NOT NULL, `deploymentType` VARCHAR(191) NOT NULL,
    `backupPath` TEXT NOT NULL, `schemaRevision` VARCHAR(191) NULL,
    `recordedAt` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), PRIMARY KEY (`id`))'''
PRISMA_SQLITE = '''CREATE TABLE "ReleaseRecord" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, "version" TEXT NOT NULL, "deploymentType" TEXT NOT NULL,
    "backupPath" TEXT NOT NULL, "schemaRevision" TEXT, "recordedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)'''


def execute(url: str, *statements: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = None
            for statement in statements:
                result = conn.execute(text(statement))
            return [tuple(row) for row in result] if result is not None and result.returns_rows else []
    finally:
        engine.dispose()


def write(url: str, table: str = "ReleaseRecord") -> records.RecordOutcome:
    return records.record(url, table, version="1.2.3", deployment_type="release", backup_path=SNAPSHOT,
                          schema_revision="20260301_init", now=INSTANT)


def tokyo(pg_url: str) -> str:
    name = pg_url.rsplit("/", 1)[1]
    execute(pg_url, f"ALTER DATABASE \"{name}\" SET TimeZone = 'Asia/Tokyo'")
    assert execute(pg_url, "SHOW TimeZone") == [("Asia/Tokyo",)]  # a new session sees it
    return pg_url


@pytest.mark.parametrize("ddl", [TIMESTAMPTZ_POSTGRES, PRISMA_POSTGRES, None], ids=["timestamptz", "prisma", "ours"])
def test_postgres_recorded_at_is_the_utc_instant_in_a_tokyo_database(pg_url: str, ddl: str | None) -> None:
    url = tokyo(pg_url)
    if ddl:
        execute(url, ddl)
    outcome = write(url)
    assert outcome.created_table is (ddl is None)
    # The stored instant, read as seconds since the epoch (zone-independent for timestamptz) or,
    # for a zone-less column, as the UTC wall time Prisma writes there.
    kind, epoch, wall = execute(
        url, """SELECT pg_typeof("recordedAt")::text, extract(epoch FROM "recordedAt"),
                       to_char("recordedAt", 'YYYY-MM-DD HH24:MI:SS') FROM "ReleaseRecord\"""")[0]
    if kind == "timestamp with time zone":
        assert float(epoch) == INSTANT.timestamp()
    else:
        assert wall == "2026-03-01 19:02:07"
    (row,) = records.read_all(url, "ReleaseRecord")
    assert row.recorded_at == INSTANT and row.recorded_at.tzinfo == timezone.utc


@pytest.mark.parametrize("column", ["DATETIME(3)", "TIMESTAMP(3)"])
def test_mariadb_recorded_at_is_the_utc_instant_in_a_plus_nine_session(mysql_url: str, column: str) -> None:
    # Every session of this URL starts in +09:00, as with a server whose time_zone is not UTC.
    url = mysql_url + "?init_command=SET+time_zone%3D%27%2B09%3A00%27"
    assert execute(url, "SELECT @@session.time_zone") == [("+09:00",)]
    execute(url, PRISMA_MARIADB.replace("DATETIME(3)", column))
    write(url)
    (stored,) = execute(mysql_url, "SET time_zone = '+00:00'",
                        "SELECT DATE_FORMAT(`recordedAt`, '%Y-%m-%d %H:%i:%s.%f') FROM `ReleaseRecord`")
    assert stored == ("2026-03-01 19:02:07.000000",)
    (row,) = records.read_all(url, "ReleaseRecord")
    assert row.recorded_at == INSTANT


def test_sqlite_recorded_at_is_utc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    write(url)
    assert execute(url, 'SELECT "recordedAt" FROM "ReleaseRecord"') == [("2026-03-01 19:02:07.000000",)]
    (row,) = records.read_all(url, "ReleaseRecord")
    assert row.recorded_at == INSTANT


def test_default_now_is_aware_utc_to_the_second(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    records.record(url, "ReleaseRecord", version="1.0.0", deployment_type="release", backup_path=SNAPSHOT,
                   schema_revision=None)
    (row,) = records.read_all(url, "ReleaseRecord")
    assert row.recorded_at is not None and row.recorded_at.tzinfo == timezone.utc
    assert before <= row.recorded_at <= datetime.now(timezone.utc)


# --- schema-qualified record.table ----------------------------------------------------------------


def test_postgres_schema_qualified_table(pg_url: str) -> None:
    execute(pg_url, "CREATE SCHEMA app")
    assert write(pg_url, "app.ReleaseRecord").created_table
    assert execute(pg_url, "SELECT table_schema, table_name FROM information_schema.tables "
                           "WHERE table_name LIKE '%ReleaseRecord%'") == [("app", "ReleaseRecord")]
    assert execute(pg_url, 'SELECT version FROM app."ReleaseRecord"') == [("1.2.3",)]
    assert [r.version for r in records.read_all(pg_url, "app.ReleaseRecord")] == ["1.2.3"]
    assert records.read_all(pg_url, "ReleaseRecord") == []  # public has none
    assert write(pg_url, "app.ReleaseRecord").already_recorded


def test_postgres_missing_schema_is_named(pg_url: str) -> None:
    with pytest.raises(RecordError) as info:
        write(pg_url, "ops.ReleaseRecord")
    message = str(info.value)
    assert message.startswith("schema ops does not exist in the record database postgresql://postgres:***@")
    assert message.endswith("; create it in the app's migrations, or write record.table: ReleaseRecord "
                            "(the snapshot is kept; re-run `relstep record`)")
    assert info.value.exit_code == 5
    assert execute(pg_url, "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '%Release%'") == [
        (0,)]
    assert records.read_all(pg_url, "ops.ReleaseRecord") == []


def test_mariadb_schema_is_a_database(mysql_url: str, mysql_url2: str) -> None:
    other = mysql_url2.rsplit("/", 1)[1]
    assert write(mysql_url, f"{other}.ReleaseRecord").created_table
    assert execute(mysql_url2, "SELECT version FROM `ReleaseRecord`") == [("1.2.3",)]
    assert execute(mysql_url, "SHOW TABLES") == []
    assert [r.version for r in records.read_all(mysql_url, f"{other}.ReleaseRecord")] == ["1.2.3"]


def test_sqlite_has_no_schemas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert write(url, "main.ReleaseRecord").created_table
    with pytest.raises(RecordError, match=r"^record.table app.ReleaseRecord: SQLite has no schemas; "
                                          r"write record.table: ReleaseRecord$"):
        write(url, "app.ReleaseRecord")


# --- an existing table relstep cannot fill --------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgres", "mariadb", "sqlite"])
def test_extra_not_null_column_is_named(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if engine == "postgres":
        url, ddl = request.getfixturevalue("pg_url"), PRISMA_POSTGRES
        extra = ', "deployedBy" TEXT NOT NULL, "note" TEXT, "host" TEXT NOT NULL DEFAULT \'x\')'
    elif engine == "mariadb":
        url, ddl = request.getfixturevalue("mysql_url"), PRISMA_MARIADB
        extra = ", `deployedBy` VARCHAR(50) NOT NULL, `note` TEXT NULL, `host` VARCHAR(9) NOT NULL DEFAULT 'x')"
    else:
        url, ddl = f"sqlite:///{tmp_path / 'app.db'}", PRISMA_SQLITE
        extra = ', "deployedBy" TEXT NOT NULL, "note" TEXT, "host" TEXT NOT NULL DEFAULT \'x\')'
    execute(url, ddl[: ddl.rindex(")")] + extra)
    with pytest.raises(RecordError) as info:
        write(url)
    assert str(info.value) == (
        "table ReleaseRecord has NOT NULL column(s) without a default that relstep does not fill: deployedBy; "
        "give them a default or make them nullable in the app's migrations, or point record.table at another table"
    )
    assert execute(url, 'SELECT count(*) FROM "ReleaseRecord"' if engine != "mariadb"
                   else "SELECT count(*) FROM `ReleaseRecord`") == [(0,)]
