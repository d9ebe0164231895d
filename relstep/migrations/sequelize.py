"""Sequelize (umzug via sequelize-cli): ``SequelizeMeta(name)`` and one JS file per migration.

A migration is named by its file name.  The table records neither order nor time,
so the (timestamp-prefixed) names give the order.  No checksum; see ``base``.
"""

from __future__ import annotations

from relstep.migrations import base, knex

NAME = "sequelize"
TABLE = "SequelizeMeta"
DEFAULT_PATH = "migrations"
MARKERS = (".sequelizerc",)
APPLY_COMMAND = "npx sequelize-cli db:migrate"  # what applies pending migrations (restore's advice)

detect = base.default_detect(TABLE, ["name"])
schema_revision = base.last_name
comparable = base.all_comparable
on_disk = knex.on_disk   # the same rule: every JS/TS file, named by its file name
applied = base.table_applied(TABLE, name="name", order_by=["name"], on_disk=on_disk)
