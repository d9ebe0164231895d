"""The contract every database engine module fulfils, and the helpers they share.

An engine module (``postgres.py``, ``mysql.py``, ``sqlite.py``) exposes the same
module-level functions::

    NAME: str                       # "postgresql", "mysql", "sqlite"
    def dump(url: str, dest_dir: Path, plan: DumpPlan,
             inspect: Inspect | None = None) -> DumpInfo
    def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None = None) -> None
    def row_counts(url: str) -> dict[str, int]
    def fingerprint(url: str) -> Fingerprint   # relstep.fingerprint; VerifyError if unreadable
    def is_empty(url: str) -> bool
    def tool_versions() -> dict[str, str]
    def check_files(db_dir: Path) -> None       # raises VerifyError if a dump is unreadable
    def scratch_database(url: str) -> ContextManager[str]   # a fresh empty database, dropped on exit

``dump`` writes everything into ``dest_dir`` (which exists and is empty), streams
(never holds a table in memory), and takes every table, every row count and the
``inspect`` callback's view from one point in time.  ``inspect`` receives a
SQLAlchemy ``Connection`` that sees exactly what the dump sees; its result is
returned in ``DumpInfo.inspected`` (the backup uses it to read the migration table).

``restore`` leaves the target database holding exactly the snapshot's tables and
rows (existing tables of the target are dropped first).  ``extra`` is the dump's
``DumpInfo.extra`` as the manifest recorded it (what the dump left out, for one).  Redacted columns come
back as NULL (or '' where NOT NULL).  Passwords reach tools only through their
environment or a 0600 file, never through argv.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Inspect = Callable[["Connection"], Any]

# Used when the config names no redact patterns: every column with one of these
# names, in any table, matched case-insensitively.
DEFAULT_REDACT = ["*.password", "*.passwordHash", "*.password_hash", "*.hashed_password"]


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
    fingerprint: Any = None          # relstep.fingerprint.Fingerprint, read at the dump's instant
    extra: dict[str, Any] = field(default_factory=dict)


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
