"""Prisma Migrate: ``_prisma_migrations`` and ``prisma/migrations/<name>/migration.sql``.

Prisma keeps one row per attempt.  Only finished, not rolled-back rows are applied
migrations: a failed attempt has no ``finished_at``, and ``migrate resolve
--rolled-back`` sets ``rolled_back_at`` on it (a later successful attempt of the
same name gets a row of its own).  The checksum is Prisma's own: the SHA-256 of
``migration.sql``'s bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from relstep.migrations import base
from relstep.migrations.base import Migration

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "prisma"
TABLE = "_prisma_migrations"
DEFAULT_PATH = "prisma/migrations"
MARKERS = ("prisma/schema.prisma", "prisma/migrations/migration_lock.toml", "schema.prisma")
APPLY_COMMAND = "npx prisma migrate deploy"  # what applies pending migrations (restore's advice)

detect = base.default_detect(TABLE, ["migration_name", "finished_at", "rolled_back_at"])
schema_revision = base.last_name   # applied() already holds only finished, not rolled-back rows
comparable = base.all_comparable


def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]:
    rows = base.select_rows(
        conn,
        TABLE,
        ["migration_name", "checksum", "finished_at"],
        order_by=["finished_at", "started_at"],
        where=lambda t: t.c.finished_at.is_not(None) & t.c.rolled_back_at.is_(None),
    )
    return [Migration(r["migration_name"], r["checksum"], base.iso(r["finished_at"])) for r in rows]


def on_disk(path: Path) -> list[Migration]:
    if not path.is_dir():
        return []
    return [
        Migration(folder.name, base.sha256_file(folder / "migration.sql"))
        for folder in sorted(path.iterdir(), key=lambda p: p.name)
        if (folder / "migration.sql").is_file()
    ]
