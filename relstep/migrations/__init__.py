"""Registry of migration tools, auto-detection, and the migration state a snapshot records.

Adding a tool = one module fulfilling ``base``'s contract + one line in ``TOOLS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from relstep.errors import BackupError, ConfigError
from relstep.migrations.base import Migration

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

# Name in relstep.yml -> module in this package.  The order is auto-detection's
# preference when several tools' tables are present and the project files do not
# settle it: tools with distinctive tables first, generic names last.
TOOLS: dict[str, str] = {
    "prisma": "prisma",
    "alembic": "alembic",
    "django": "django",
    "flyway": "flyway",
    "knex": "knex",
    "sequelize": "sequelize",
    "golang-migrate": "golang_migrate",
    "rails": "rails",
    "typeorm": "typeorm",
}
AUTO = "auto"
NONE = "none"
# Every value ``migrations.tool`` accepts (config validation uses this).
CHOICES: tuple[str, ...] = (AUTO, *TOOLS, NONE)


def tool_for(name: str) -> ModuleType | None:
    """The module for a tool name; None for ``none``.  ``auto`` needs a database: use ``detect``."""
    if name == NONE:
        return None
    if name not in TOOLS:
        raise ConfigError(f"unknown migrations.tool {name!r}; use one of {', '.join(CHOICES)}")
    return importlib.import_module(f"relstep.migrations.{TOOLS[name]}")


def all_tools() -> list[ModuleType]:
    return [m for m in (tool_for(name) for name in TOOLS) if m is not None]


def _has_markers(module: ModuleType, project_dir: Path | None) -> bool:
    if project_dir is None:
        return False
    return any(next(project_dir.glob(pattern), None) is not None for pattern in getattr(module, "MARKERS", ()))


def detect(conn: Connection, project_dir: Path | None) -> ModuleType | None:
    """The tool whose table is in the database, or (empty database) whose files are in the project.

    When several tools' tables are present, the one whose project files are there
    wins; failing that, the first in ``TOOLS`` order.
    """
    from sqlalchemy import inspect

    inspector = inspect(conn)
    names = inspector.get_table_names()
    tables = {t.lower() for t in names}
    # Columns only of the tables some tool might own: inspecting every table of a
    # large schema would be slow for nothing.
    wanted = {m.TABLE.lower() for m in all_tools()}
    columns = {t.lower(): {c["name"].lower() for c in inspector.get_columns(t)} for t in names if t.lower() in wanted}
    by_table = [m for m in all_tools() if m.detect(tables, columns, project_dir or Path("."))]
    if by_table:
        return next((m for m in by_table if _has_markers(m, project_dir)), by_table[0])
    return next((m for m in all_tools() if _has_markers(m, project_dir)), None)


@dataclass
class MigrationState:
    """What a snapshot's ``migrations.json`` holds."""

    tool: str
    applied: list[Migration] = field(default_factory=list)
    schema_revision: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "applied": [m.to_json() for m in self.applied],
            "schema_revision": self.schema_revision,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MigrationState:
        return cls(
            tool=data["tool"],
            applied=[Migration.from_json(m) for m in data.get("applied") or []],
            schema_revision=data.get("schema_revision"),
        )


def resolve_path(module: ModuleType, migrations_path: Path | str | None, project_dir: Path | None) -> Path:
    """The migrations folder: as configured (relative to the project), else the tool's default."""
    base_dir = project_dir or Path(".")
    return base_dir / (migrations_path if migrations_path is not None else module.DEFAULT_PATH)


def resolve_tool(conn: Connection | None, tool_name: str, project_dir: Path | None) -> ModuleType | None:
    """The module for ``tool_name``; ``auto`` detects (from files alone when there is no connection)."""
    if tool_name != AUTO:
        return tool_for(tool_name)
    if conn is not None:
        return detect(conn, project_dir)
    return next((m for m in all_tools() if _has_markers(m, project_dir)), None)


def read_state(
    conn: Connection,
    tool_name: str,
    migrations_path: Path | str | None,
    project_dir: Path | None,
) -> MigrationState:
    """The applied migrations as the tool's table records them, on this connection.

    Raises BackupError when the table exists but cannot be read.
    """
    module = resolve_tool(conn, tool_name, project_dir)
    if module is None:
        return MigrationState(tool=NONE)
    path = resolve_path(module, migrations_path, project_dir)
    try:
        applied = module.applied(conn, path)
    except Exception as exc:   # a driver error, or a table that is not the tool's shape
        raise BackupError(f"could not read the {module.NAME} migration table {module.TABLE}: {exc}") from exc
    return MigrationState(tool=module.NAME, applied=applied, schema_revision=module.schema_revision(applied))


def app_migrations(module: ModuleType, migrations_path: Path | str | None, project_dir: Path | None) -> list[Migration]:
    """The app's migrations on disk, in the order the tool applies them."""
    return module.on_disk(resolve_path(module, migrations_path, project_dir))
