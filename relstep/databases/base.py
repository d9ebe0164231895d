"""The contract every database engine module fulfils, and the helpers they share.

An engine is one module of this package whose module-level functions satisfy :class:`Engine`
(mypy checks it: ``relstep.databases.registry`` assigns each engine module to an ``Engine``);
every other fact about it (URL schemes, driver and extra, dump tools) is its
:class:`~relstep.databases.registry.EngineSpec` in the registry.

``dump`` writes everything into ``dest_dir`` (which exists and is empty), streams
(never holds a table in memory), and takes every table, every row count and the
``inspect`` callback's view from one point in time.  ``inspect`` receives a
SQLAlchemy ``Connection`` that sees exactly what the dump sees; its result is
returned in ``DumpInfo.inspected`` (the backup uses it to read the migration table).
Files the engine writes itself go through :mod:`relstep.codec`, whose hashes it returns in
``DumpInfo.hashes``.

``restore`` leaves the target database holding exactly the snapshot's tables and
rows (existing tables of the target are dropped first).  ``extra`` is the dump's
``DumpInfo.extra`` as the manifest recorded it (what the dump left out, for one).  Redacted columns come
back as NULL (or '' where NOT NULL).  Passwords reach tools only through their
environment or an inherited pipe, never through argv.

Every expected failure of an engine is a :class:`DatabaseError`; the phase that called it
(backup, restore, verify, doctor) turns it into its own error class and exit code
(:func:`relstep.databases.registry.engine_errors`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from relstep.errors import InputError, RelstepError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.engine import Connection

    from relstep.databases.restoring import RestoreOptions, RestoreReport
    from relstep.fingerprint import Fingerprint

Inspect = Callable[["Connection"], Any]

# Used when the config names no redact patterns: every column with one of these
# names, in any table, matched case-insensitively.
DEFAULT_REDACT = ["*.password", "*.passwordHash", "*.password_hash", "*.hashed_password"]


class DatabaseError(RelstepError):
    """An engine could not do what it was asked (server, tool or dump file); the caller's phase
    re-raises it as its own error class, so the exit code says which phase failed."""

    phase = "database"


class DriverMissing(InputError):
    """The Python driver of an engine is not installed (exit 2: nothing was done)."""


@dataclass(frozen=True)
class DumpPlan:
    """What to leave out of a dump."""

    redact: tuple[str, ...] = tuple(DEFAULT_REDACT)
    exclude_tables: tuple[str, ...] = ()


@dataclass
class DumpInfo:
    engine: str
    format: str                      # e.g. "pg_dump-directory", "mariadb-dump-sql-zstd", "sqlite-zstd"
    files: list[str]                 # paths relative to dest_dir
    row_counts: dict[str, int]       # rows *in the dump* per table (excluded tables: 0)
    redacted: dict[str, list[str]]   # table -> columns written as NULL/''
    excluded_tables: list[str]
    tool: str                        # e.g. "pg_dump (PostgreSQL) 15.19"
    server_version: str
    consistent: bool = True          # False when row counts could not be taken at the dump's instant
    inspected: Any = None
    fingerprint: Fingerprint | None = None   # read at the dump's instant (relstep.fingerprint)
    extra: dict[str, Any] = field(default_factory=dict)
    # {path relative to dest_dir: {"size", "sha256"}} for files hashed as they were written (the
    # codec), so the manifest does not read them a second time.
    hashes: dict[str, dict[str, Any]] = field(default_factory=dict)


class Engine(Protocol):
    """What every engine module provides (module-level functions; see the module docstring)."""

    NAME: str   # the engine's name in manifests: "postgresql", "mysql", "sqlite"

    def dump(self, url: str, dest_dir: Path, plan: DumpPlan, inspect: Inspect | None = None) -> DumpInfo: ...

    def restore(self, db_dir: Path, url: str, extra: Mapping[str, Any] | None = None,
                options: RestoreOptions | None = None) -> RestoreReport:
        """Make the target entirely the snapshot or leave it unchanged (``relstep.databases.restoring``)."""

    def row_counts(self, url: str) -> dict[str, int]: ...

    def is_empty(self, url: str) -> bool: ...

    def check_files(self, db_dir: Path) -> None:
        """Raise DatabaseError naming the first file of the dump that cannot be read back."""

    def scratch_database(self, url: str) -> AbstractContextManager[str]:
        """A fresh empty database on the server of ``url``; yields its URL, drops it on exit."""

    def server_version(self, url: str) -> str:
        """Connect and ask the server its version (doctor)."""

    def tool_versions(self) -> dict[str, str]:
        """``{tool name: --version line or "missing"}`` for the environment record and doctor."""

    def fingerprint(self, url: str, content: bool = True) -> Fingerprint:
        """Schema and per-table content digests of the live database as it is now (after a restore:
        the proof compares it with ``DumpInfo.fingerprint``, recorded in the manifest).
        ``content=False``: the schema only, without reading a row (the drift check)."""


@dataclass(frozen=True)
class Column:
    name: str
    nullable: bool
    is_text: bool = True


def _split_pattern(pattern: str) -> tuple[str, str]:
    table, _, column = pattern.rpartition(".")
    return (table or "*"), column


def matches_table(table: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive glob match of a table name (``schema.table`` or ``table``)."""
    lowered = table.lower()
    bare = lowered.rpartition(".")[2]
    for pattern in patterns:
        p = pattern.lower()
        if fnmatch.fnmatchcase(lowered, p) or ("." not in p and fnmatch.fnmatchcase(bare, p)):
            return True
    return False


def columns_to_redact(
    columns_by_table: dict[str, list[Column]], patterns: Iterable[str]
) -> dict[str, list[Column]]:
    """Resolve ``TABLE.COLUMN`` globs against the real schema.

    Table names may be schema-qualified (``audit.User``); a pattern without a
    schema part matches the bare table name in any schema.
    """
    parsed = [_split_pattern(p) for p in patterns]
    result: dict[str, list[Column]] = {}
    for table, columns in columns_by_table.items():
        hits = [
            c
            for c in columns
            if any(matches_table(table, [tp]) and fnmatch.fnmatchcase(c.name.lower(), cp.lower()) for tp, cp in parsed)
        ]
        if hits:
            result[table] = hits
    return result


def redacted_value_sql(column: Column) -> str:
    """SQL literal written in place of a redacted value."""
    return "NULL" if column.nullable else "''"
