"""The contract every migration-tool module fulfils.

A module (``prisma.py``, ``alembic.py``, ...) exposes::

    NAME: str                              # as written in relstep.yml ("prisma")
    TABLE: str                             # its bookkeeping table ("_prisma_migrations")
    DEFAULT_PATH: str                      # where its migrations live in a project
    def detect(tables: set[str], columns: dict[str, set[str]], project_dir: Path) -> bool
    def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]
    def on_disk(path: Path) -> list[Migration]
    def schema_revision(applied: list[Migration]) -> str | None

``applied`` reads the tool's own table through the given SQLAlchemy connection
(the same point in time as the dump) and returns migrations in applied order.
``on_disk`` lists the project's migration files in the order the tool applies
them, with the same ``name`` and ``checksum`` rules as ``applied`` so the two can be
compared by ``relstep.compat``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Migration:
    name: str
    checksum: str | None = None
    applied_at: str | None = None   # ISO 8601, UTC where the tool records it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Migration:
        return cls(name=data["name"], checksum=data.get("checksum"), applied_at=data.get("applied_at"))


def default_detect(table: str) -> Any:
    def detect(tables: set[str], columns: dict[str, set[str]], project_dir: Path) -> bool:
        return table in tables

    return detect


def last_name(applied: list[Migration]) -> str | None:
    return applied[-1].name if applied else None
