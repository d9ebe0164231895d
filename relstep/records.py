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


def _table(name: str, metadata: Any) -> Any:
    from sqlalchemy import Column, DateTime, Integer, String, Table, Text, func

    return Table(
        name, metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("version", String(191), nullable=False),
        Column("deploymentType", String(191), nullable=False),
        Column("backupPath", Text, nullable=False),
        Column("schemaRevision", String(191), nullable=True),
        Column("recordedAt", DateTime, nullable=False, server_default=func.now()),
    )


def _unreachable(url: str, exc: Exception) -> RecordError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    from relstep.masking import mask_text

    return RecordError(f"cannot reach the record database {redact_url(url)}: {mask_text(reason)}")


def _check_columns(inspector: Any, name: str) -> None:
    """An existing table must have the five columns with compatible types."""
    found = {c["name"]: str(c["type"]).upper() for c in inspector.get_columns(name)}
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


def _open(url: str) -> Any:
    from relstep.databases.base import DriverMissing

    try:
        return create_engine(url)
    except DriverMissing as exc:  # its own line, naming the extra to install
        raise RecordError(exc.message) from exc
    except Exception as exc:  # a bad URL is "cannot reach"
        raise _unreachable(url, exc) from exc


def record(
    url: str, table: str, *, version: str, deployment_type: str, backup_path: Path, schema_revision: str | None
) -> RecordOutcome:
    """Insert one row unless this snapshot is already recorded; create the table if absent."""
    from sqlalchemy import MetaData, inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    engine = _open(url)
    try:
        with engine.begin() as conn:
            inspector = inspect(conn)
            created = not inspector.has_table(table)
            metadata = MetaData()
            rows = _table(table, metadata)
            if created:
                metadata.create_all(conn)
            else:
                _check_columns(inspector, table)
            existing = conn.execute(
                select(rows.c.id).where(rows.c.backupPath == str(backup_path)).order_by(rows.c.id).limit(1)
            ).scalar()
            if existing is not None:
                return RecordOutcome(int(existing), created, True)
            result = conn.execute(
                rows.insert().values(
                    version=version, deploymentType=deployment_type, backupPath=str(backup_path),
                    schemaRevision=schema_revision,
                    recordedAt=datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0),
                )
            )
            return RecordOutcome(int(result.inserted_primary_key[0]), created, False)
    except RecordError:
        raise
    except SQLAlchemyError as exc:
        raise _unreachable(url, exc) from exc
    finally:
        engine.dispose()


def read_all(url: str, table: str) -> list[RecordRow]:
    """Every row, oldest first; an absent table is an empty list."""
    from sqlalchemy import MetaData, inspect, select
    from sqlalchemy.exc import SQLAlchemyError

    engine = _open(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(table):
                return []
            rows = _table(table, MetaData())
            return [
                RecordRow(r.id, r.version, r.deploymentType, r.backupPath, r.schemaRevision, r.recordedAt)
                for r in conn.execute(select(rows).order_by(rows.c.id))
            ]
    except SQLAlchemyError as exc:
        raise _unreachable(url, exc) from exc
    finally:
        engine.dispose()
