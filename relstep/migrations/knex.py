"""Knex: ``knex_migrations(id, name, batch, migration_time)`` and one JS/TS file per migration.

A migration is named by its file name, as Knex records it.  Knex keeps no
checksum; see ``base``.
"""

from __future__ import annotations

from relstep.migrations import base

NAME = "knex"
TABLE = "knex_migrations"
DEFAULT_PATH = "migrations"
MARKERS = ("knexfile.js", "knexfile.ts", "knexfile.cjs", "knexfile.mjs")
APPLY_COMMAND = "npx knex migrate:latest"  # what applies pending migrations (restore's advice)
SUFFIXES = (".js", ".cjs", ".mjs", ".ts")

detect = base.default_detect(TABLE, ["name", "batch"])
schema_revision = base.last_name
comparable = base.all_comparable
on_disk = base.files_on_disk(SUFFIXES, comment="//", name_of=lambda p: None if p.name.endswith(".d.ts") else p.name)
applied = base.table_applied(TABLE, name="name", order_by=["id"], applied_at="migration_time", on_disk=on_disk)
