"""The ReleaseRecord table: one row per deployed release, pointing at its snapshot.

Column names are exactly Prisma's (camelCase), so an app that owns the table in
its own migrations (see ``relstep init --prisma``) reads the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep.databases import create_engine, redact_url
from relstep.errors import RecordError

COLUMNS = ("id", "version", "deploymentType", "backupPath", "schemaRevision", "recordedAt")
_STRING_TYPES = ("CHAR", "TEXT", "STRING", "CLOB")
_TIME_TYPES = ("TIMESTAMP", "DATETIME", "DATE")
_INT_TYPES = ("INT", "SERIAL")


@dataclass(frozen=True)
class RecordOutcome:
    id: int
    created_table: bool
    already_recorded: bool


@dataclass(frozen=True)
class RecordRow:
    id: int
    version: str
    deployment_type: str
    backup_path: str
    schema_revision: str | None
    recorded_at: datetime | None


def split_table_name(name: str) -> tuple[str | None, str]:
    """``record.table`` -> (schema, table): ``app.ReleaseRecord`` is table ReleaseRecord in schema
    ``app`` (a PostgreSQL schema, a MariaDB database), never a table named "app.ReleaseRecord"."""
    parts = name.split(".")
    if len(parts) == 1 and name:
        return None, name
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise RecordError(f"{name!r} must be TABLE or SCHEMA.TABLE (one dot at most, neither part empty)")


def _table(name: str, metadata: Any, schema: str | None = None) -> Any:
    from sqlalchemy import Column, DateTime, Integer, String, Table, Text, func

    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("version", String(191), nullable=False),
        Column("deploymentType", String(191), nullable=False),
        Column("backupPath", Text, nullable=False),
        Column("schemaRevision", String(191), nullable=True),
        Column("recordedAt", DateTime, nullable=False, server_default=func.now()),
        schema=schema,
    )


def _unreachable(url: str, exc: Exception) -> RecordError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    from relstep.masking import mask_text

    return RecordError(f"cannot reach the record database {redact_url(url)}: {mask_text(reason)}")


def _refused(url: str, exc: Exception) -> RecordError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    from relstep.masking import mask_text

    return RecordError(
        f"the record database {redact_url(url)} refused the row: {mask_text(reason)}; fix the table's "
        "constraints or point record.table at another table (the snapshot is kept; re-run `relstep record`)"
    )


def _check_columns(inspector: Any, name: str, schema: str | None) -> None:
    """An existing table must have the six columns with compatible types, and no other column
    relstep cannot fill (NOT NULL without a default)."""
    columns = inspector.get_columns(name, schema=schema)
    found = {c["name"]: str(c["type"]).upper() for c in columns}
    missing = [c for c in COLUMNS if c not in found]
    if missing:
        raise RecordError(
            f"table {name} lacks column(s) {', '.join(missing)}; add them in the app's migrations "
            "(see `relstep init --prisma`) or point record.table at another table"
        )
    expected = {"id": _INT_TYPES, "version": _STRING_TYPES, "deploymentType": _STRING_TYPES,
                "backupPath": _STRING_TYPES, "schemaRevision": _STRING_TYPES, "recordedAt": _TIME_TYPES}
    wrong = [f"{c} ({found[c]})" for c, kinds in expected.items() if not any(k in found[c] for k in kinds)]
    if wrong:
        raise RecordError(f"table {name} has column(s) of the wrong type: {', '.join(wrong)}")
    unfillable = [
        c["name"] for c in columns
        if c["name"] not in COLUMNS and not c.get("nullable", True) and c.get("default") is None
        and c.get("autoincrement") is not True and not c.get("computed") and not c.get("identity")
    ]
    if unfillable:
        raise RecordError(
            f"table {name} has NOT NULL column(s) without a default that relstep does not fill: "
            f"{', '.join(unfillable)}; give them a default or make them nullable in the app's migrations, "
            "or point record.table at another table"
        )


def _open(url: str) -> Any:
    from relstep.databases.base import DriverMissing

    try:
        return create_engine(url)
    except DriverMissing as exc:  # its own line, naming the extra to install
        raise RecordError(exc.message) from exc
    except Exception as exc:  # a bad URL is "cannot reach"
        raise _unreachable(url, exc) from exc


def _in_utc(conn: Any) -> None:
    """Make the session's time zone UTC for this transaction.

    A ``timestamptz`` column reads a zone-less value in the session's TimeZone, MariaDB's
    TIMESTAMP converts from the session's time_zone, and both turn an instant back into local
    time on the way out; in UTC, ``recordedAt`` is the same instant in every column type.
    """
    from sqlalchemy import text

    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SET LOCAL TIME ZONE 'UTC'"))
    elif dialect in ("mysql", "mariadb"):
        conn.execute(text("SET time_zone = '+00:00'"))


def _check_schema(conn: Any, inspector: Any, url: str, schema: str | None, table: str) -> None:
    if schema is None:
        return
    if conn.dialect.name == "sqlite":
        if schema == "main":
            return
        raise RecordError(f"record.table {schema}.{table}: SQLite has no schemas; write record.table: {table}")
    if schema not in inspector.get_schema_names():
        raise RecordError(
            f"schema {schema} does not exist in the record database {redact_url(url)}; create it in the "
            f"app's migrations, or write record.table: {table} (the snapshot is kept; re-run `relstep record`)"
        )


def as_utc(value: datetime | None) -> datetime | None:
    """A stored ``recordedAt`` as an aware UTC instant (zone-less columns hold UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def record(
    url: str, table: str, *, version: str, deployment_type: str, backup_path: Path, schema_revision: str | None,
    now: datetime | None = None,
) -> RecordOutcome:
    """Insert one row unless this snapshot is already recorded; create the table if absent.

    ``recordedAt`` is ``now`` (default: the current time, to the second) written as a UTC instant.
    """
    from sqlalchemy import MetaData, inspect, select
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    schema, name = split_table_name(table)
    instant = (now or datetime.now(timezone.utc).replace(microsecond=0)).astimezone(timezone.utc)
    engine = _open(url)
    try:
        with engine.begin() as conn:
            _in_utc(conn)
            inspector = inspect(conn)
            _check_schema(conn, inspector, url, schema, name)
            created = not inspector.has_table(name, schema=schema)
            metadata = MetaData()
            rows = _table(name, metadata, schema)
            if created:
                metadata.create_all(conn)
            else:
                _check_columns(inspector, name, schema)
            existing = conn.execute(
                select(rows.c.id).where(rows.c.backupPath == str(backup_path)).order_by(rows.c.id).limit(1)
            ).scalar()
            if existing is not None:
                return RecordOutcome(int(existing), created, True)
            # The session is in UTC, so the zone-less UTC value means the same instant in any column.
            result = conn.execute(
                rows.insert().values(
                    version=version, deploymentType=deployment_type, backupPath=str(backup_path),
                    schemaRevision=schema_revision, recordedAt=instant.replace(tzinfo=None),
                )
            )
            return RecordOutcome(int(result.inserted_primary_key[0]), created, False)
    except RecordError:
        raise
    except IntegrityError as exc:
        raise _refused(url, exc) from exc
    except SQLAlchemyError as exc:
        raise _unreachable(url, exc) from exc
    finally:
        engine.dispose()


def read_all(url: str, table: str) -> list[RecordRow]:
    """Every row, oldest first; an absent table is an empty list."""
    from sqlalchemy import MetaData, inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    schema, name = split_table_name(table)
    engine = _open(url)
    try:
        with engine.begin() as conn:
            _in_utc(conn)
            inspector = inspect(conn)
            if conn.dialect.name == "sqlite" and schema not in (None, "main"):
                return []
            if schema is not None and schema not in inspector.get_schema_names():
                return []
            if not inspector.has_table(name, schema=schema):
                return []
            rows = _table(name, MetaData(), schema)
            return [
                RecordRow(r.id, r.version, r.deploymentType, r.backupPath, r.schemaRevision, as_utc(r.recordedAt))
                for r in conn.execute(select(rows).order_by(rows.c.id))
            ]
    except SQLAlchemyError as exc:
        raise _unreachable(url, exc) from exc
    finally:
        engine.dispose()
