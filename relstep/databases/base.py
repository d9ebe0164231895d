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
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from relstep.errors import InputError, RelstepError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from relstep.databases.restoring import RestoreOptions, RestoreReport
    from relstep.fingerprint import Fingerprint

Inspect = Callable[["Connection"], Any]

# relstep's default redaction: every column with one of these names, in any table, matched
# case-insensitively (camelCase spellings are listed where apps use them).  They are optional by
# nature (a database without such a column is fine) and added to the configured patterns unless
# ``database.redact_defaults: false``.  Left out on purpose: NOT NULL UNIQUE tokens such as
# NextAuth's ``Session.sessionToken``, whose '' in every row would fail the restore's unique index.
DEFAULT_REDACT = [
    # Prisma/Node apps, Django (``password``), Rails' has_secure_password (``password_digest``)
    "*.password", "*.passwordHash", "*.password_hash", "*.hashed_password", "*.hashedPassword",
    "*.password_digest", "*.passwordDigest",
    # Rails/Devise (devise-two-factor's ``encrypted_otp_secret`` below)
    "*.encrypted_password", "*.reset_password_token", "*.unlock_token", "*.confirmation_token",
    # Laravel (Fortify's two-factor columns)
    "*.remember_token", "*.two_factor_secret", "*.two_factor_recovery_codes",
    # API tokens, OAuth tokens (NextAuth's Account), reset and remember tokens, OTP/TOTP secrets
    "*.api_token", "*.apiToken", "*.access_token", "*.accessToken", "*.refresh_token", "*.refreshToken",
    "*.id_token", "*.reset_token", "*.resetToken", "*.resetPasswordToken", "*.password_reset_token",
    "*.passwordResetToken", "*.rememberToken", "*.otp_secret", "*.otpSecret", "*.encrypted_otp_secret",
    "*.totp_secret", "*.totpSecret", "*.mfa_secret", "*.mfaSecret", "*.twoFactorSecret",
    "*.otp_backup_codes", "*.recovery_codes", "*.twoFactorRecoveryCodes",
]

# A pattern ending in this may match nothing; any other pattern that matches no column fails the backup.
OPTIONAL = "?"


class DatabaseError(RelstepError):
    """An engine could not do what it was asked (server, tool or dump file); the caller's phase
    re-raises it as its own error class, so the exit code says which phase failed."""

    phase = "database"


class DriverMissing(InputError):
    """The Python driver of an engine is not installed (exit 2: nothing was done)."""


class UnmatchedRedactPattern(InputError):
    """A configured redact pattern names no column (exit 2: a typo must not redact nothing)."""

    phase = "backup"


def optional(pattern: str) -> str:
    """``pattern`` marked as allowed to match nothing."""
    return pattern if pattern.endswith(OPTIONAL) else pattern + OPTIONAL


def plan_patterns(configured: Iterable[str] = (), defaults: bool = True) -> tuple[str, ...]:
    """The redact patterns of a dump: the configured ones, then (unless turned off) the defaults.

    Defaults are optional, also where a config lists them itself (``relstep init`` used to).
    """
    default_names = {p.lower() for p in DEFAULT_REDACT}
    patterns = [optional(p) if p.lower() in default_names else p for p in configured]
    if defaults:
        patterns += [optional(p) for p in DEFAULT_REDACT]
    return tuple(dict.fromkeys(patterns))


@dataclass(frozen=True)
class DumpPlan:
    """What to leave out of a dump."""

    redact: tuple[str, ...] = field(default_factory=plan_patterns)  # see plan_patterns
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

    def fingerprint(self, url: str, content: bool = True, like: Fingerprint | None = None) -> Fingerprint:
        """Schema and per-table content digests of the live database as it is now (after a restore:
        the proof compares it with ``DumpInfo.fingerprint``, recorded in the manifest).
        ``content=False``: the schema only, without reading a row (the drift check).
        ``like``: the recorded fingerprint this one will be compared with; content is digested the
        way it was (a snapshot of an older relstep may have used another method)."""


@dataclass(frozen=True)
class Column:
    name: str
    nullable: bool
    is_text: bool = True


def _split_pattern(pattern: str) -> tuple[str, str]:
    table, _, column = pattern.removesuffix(OPTIONAL).rpartition(".")
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


def _hits(
    table: str, columns: Iterable[Column], pattern: tuple[str, str], parents: Mapping[str, Iterable[str]]
) -> list[Column]:
    table_glob, column_glob = pattern
    names = [table, *parents.get(table, ())]
    if not any(matches_table(name, [table_glob]) for name in names):
        return []
    return [c for c in columns if fnmatch.fnmatchcase(c.name.lower(), column_glob.lower())]


def columns_to_redact(
    columns_by_table: Mapping[str, Iterable[Column]],
    patterns: Iterable[str],
    parents: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, list[Column]]:
    """Resolve ``TABLE.COLUMN`` globs against the real schema.

    Table names may be schema-qualified (``audit.User``); a pattern without a
    schema part matches the bare table name in any schema.  ``parents`` names the tables a
    table's rows also belong to (a partition's partitioned table, an inheritance child's
    parents): a pattern naming a parent covers the table too.
    """
    parsed = [_split_pattern(p) for p in patterns]
    result: dict[str, list[Column]] = {}
    for table, columns in columns_by_table.items():
        columns = list(columns)
        matched = {c.name for pattern in parsed for c in _hits(table, columns, pattern, parents or {})}
        hits = [c for c in columns if c.name in matched]
        if hits:
            result[table] = hits
    return result


def require_matches(
    columns_by_table: Mapping[str, Iterable[Column]],
    patterns: Iterable[str],
    parents: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Raise UnmatchedRedactPattern for the first non-optional pattern that names no column of
    ``columns_by_table`` (every table of the database, excluded ones too), with the closest names."""
    import difflib

    tables = {table: list(columns) for table, columns in columns_by_table.items()}
    for pattern in patterns:
        if pattern.endswith(OPTIONAL) or any(
            _hits(table, columns, _split_pattern(pattern), parents or {}) for table, columns in tables.items()
        ):
            continue
        names = sorted({f"{table}.{c.name}" for table, columns in tables.items() for c in columns}
                       | {f"{parent}.{c.name}" for table, ps in (parents or {}).items()
                          for parent in ps for c in tables.get(table, [])})
        by_lower = {name.lower(): name for name in names}  # case-insensitive, as matching is
        wanted = pattern.removeprefix("*.").lower()
        close = [by_lower[n] for n in difflib.get_close_matches(wanted, list(by_lower), n=3, cutoff=0.6)]
        if not close and "." not in wanted:  # "*.pasword": compare with column names alone
            columns = {n.rpartition(".")[2]: n for n in by_lower}
            close = [by_lower[columns[c]] for c in difflib.get_close_matches(wanted, list(columns), n=3, cutoff=0.6)]
        hint = f"the closest columns are {', '.join(close)}" if close else "no column has a similar name"
        raise UnmatchedRedactPattern(
            f"database.redact pattern {pattern!r} matches no column ({hint}); fix the pattern, "
            f"or end it with '{OPTIONAL}' if it may match nothing"
        )


def redacted_value_sql(column: Column) -> str:
    """SQL literal written in place of a redacted value."""
    return "NULL" if column.nullable else "''"
