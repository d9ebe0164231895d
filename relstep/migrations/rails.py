"""Rails (Active Record): ``schema_migrations(version)`` and ``db/migrate/<version>_<name>.rb``.

A migration is named by its version, which is all the table records.  Rails keeps
no checksum; see ``base``.  golang-migrate uses the same table name with a
``dirty`` column, which is how the two are told apart.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from relstep.migrations import base

NAME = "rails"
TABLE = "schema_migrations"
DEFAULT_PATH = "db/migrate"
MARKERS = ("config/application.rb", "db/migrate", "bin/rails")
APPLY_COMMAND = "bin/rails db:migrate"  # what applies pending migrations (restore's advice)

schema_revision = base.last_name
comparable = base.all_comparable

on_disk = base.files_on_disk(
    [".rb"], comment="#", name_of=partial(base.version_prefix, suffix=".rb"), sort_key=base.numeric_key
)
applied = base.table_applied(TABLE, name="version", order_by=["version"], on_disk=on_disk, sort_key=base.numeric_key)


def detect(tables: set[str], columns: dict[str, set[str]], project_dir: Path) -> bool:
    return TABLE in tables and "version" in columns.get(TABLE, set()) and "dirty" not in columns.get(TABLE, set())
