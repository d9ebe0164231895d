"""golang-migrate: ``schema_migrations(version, dirty)`` and ``<version>_<title>.up.sql``.

The table holds only the current version; the applied list is rebuilt from the
``*.up.sql`` files up to it (golang-migrate applies them in version order).  A
``dirty`` version failed half-way, so it is not counted as applied.  A migration
is named by its version number (what the tool records); without the files only the
current version is known.  golang-migrate keeps no checksum; see ``base``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from relstep.migrations import base
from relstep.migrations.base import Migration

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "golang-migrate"
TABLE = "schema_migrations"
DEFAULT_PATH = "migrations"
MARKERS = ("migrations/*.up.sql", "db/migrations/*.up.sql")
APPLY_COMMAND = "migrate -path <migrations> -database <url> up"  # what applies pending migrations (restore's advice)

detect = base.default_detect(TABLE, ["version", "dirty"])
schema_revision = base.last_name
comparable = base.all_comparable

on_disk = base.files_on_disk(
    [".up.sql"], comment="--", name_of=partial(base.version_prefix, suffix=".up.sql"), sort_key=base.numeric_key
)


def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]:
    rows = base.select_rows(conn, TABLE, ["version", "dirty"])
    if not rows:
        return []
    current = int(rows[0]["version"])
    dirty = str(rows[0]["dirty"]).lower() in ("1", "true", "t")
    files = on_disk(migrations_path) if migrations_path else []
    done = [m for m in files if int(m.name) < current or (int(m.name) == current and not dirty)]
    if not dirty and all(int(m.name) != current for m in files):
        done.append(Migration(str(current)))   # newer than the code: compat calls it unknown
    return done
