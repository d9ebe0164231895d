"""TypeORM: ``migrations(id, timestamp, name)`` and one class per migration file.

A migration is named by its class name (``CreateUsers1700000000000``), as TypeORM
records it; TypeORM orders migrations by the 13-digit timestamp ending that name.
The table has no applied time (``timestamp`` is the migration's own) and no
checksum; see ``base``.
"""

from __future__ import annotations

import re
from pathlib import Path

from relstep.migrations import base
from relstep.migrations.base import Migration

NAME = "typeorm"
TABLE = "migrations"
DEFAULT_PATH = "src/migration"
MARKERS = ("ormconfig.json", "ormconfig.js", "ormconfig.ts", "src/data-source.ts", "data-source.ts")
APPLY_COMMAND = "npx typeorm migration:run"  # what applies pending migrations (restore's advice)

_CLASS = re.compile(r"\bclass\s+([A-Za-z_$][\w$]*)\s+implements\s+MigrationInterface\b")


def _class_name(path: Path) -> str | None:
    if path.name.endswith(".d.ts"):
        return None
    match = _CLASS.search(path.read_text(encoding="utf-8", errors="replace"))
    return match[1] if match else None


def _timestamp_key(m: Migration) -> tuple[int, str]:
    stamp = m.name[-13:]
    return (int(stamp) if stamp.isdigit() else 0, m.name)


detect = base.default_detect(TABLE, ["id", "timestamp", "name"])
schema_revision = base.last_name
comparable = base.all_comparable
on_disk = base.files_on_disk([".ts", ".js", ".cjs", ".mjs"], comment="//", name_of=_class_name, sort_key=_timestamp_key)
applied = base.table_applied(TABLE, name="name", order_by=["id"], on_disk=on_disk)
