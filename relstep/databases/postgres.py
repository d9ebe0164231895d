"""PostgreSQL engine: a ``pg_dump`` directory dump plus redacted COPY streams, all from one snapshot.

Layout written into ``dest_dir`` (every file is listed in ``DumpInfo.files``)::

    pg_dump/toc.dat              pg_dump -Fd -j2 -Z1: the table of contents (schema, sequences, ...)
    pg_dump/<dumpId>.dat.gz      one per table whose rows pg_dump wrote
    redacted/NNN-<table>.copy.zst
                                 rows of each table with redacted columns: COPY text format, zstd
                                 with a content checksum; redacted columns hold NULL ('' if NOT NULL)
    redacted.json                which file restores which table, with its column list and uncompressed
                                 size (a cut-off zstd frame reads back quietly short; the size catches it)

Files are 0600 and folders 0700 (pg_dump runs under umask 077): they hold the data.

An encrypted snapshot cannot hold pg_dump's own plaintext files: there ``pg_dump/`` is replaced by
one ``pg_dump.custom.zst`` stream written through the codec (``postgres_encrypted``); everything
else here (the snapshot, the redacted COPYs, the fingerprint) is the same code; its content digests
are read from that stream on its way to the codec (``pg_custom``) instead of from the files' gzip trailers.

Why this shape:

* ``pg_dump`` cannot leave out a column, so a table with redacted columns is dumped schema-only
  (``--exclude-table-data``) and its rows are written here with
  ``COPY (SELECT id, NULL::text AS password, ...) TO STDOUT``.  That COPY, the row counts, the
  caller's ``inspect`` and ``pg_dump --snapshot`` all read the snapshot of one ``REPEATABLE READ``
  transaction (``pg_export_snapshot()``), so every file describes the same instant.
* The directory format lets ``pg_dump`` and ``pg_restore`` work on two tables at once; it was
  measured fastest on the project's machines (see TOOLING.md).
* ``restore`` loads pre-data and data in one ``pg_restore`` run, then the redacted COPY files, then
  post-data, so indexes and foreign keys are built (and checked) once every row is in place.  Every
  table's rows are written into storage new in their transaction, which keeps them in the dump's
  order for the proof's read-back (``postgres_restore._load_parallel``).

The password reaches ``pg_dump``/``pg_restore`` only through ``PGPASSWORD``; the other connection
parameters travel in ``PG*`` variables as well.  Every public function raises DatabaseError;
the calling phase gives it its own error class (``registry.engine_errors``).

Known limits: a redacted NOT NULL column must be text-like or bytea (others have no empty value
and the dump refuses them); a CHECK or UNIQUE constraint on a redacted column may reject the
NULL/'' values at restore; patterns match the partitions of a partitioned table by their own names.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relstep import codec
from relstep.databases import (
    create_engine,
    pg_custom,
    pg_digest,
    pg_fingerprint,
    postgres_encrypted,
    redact_url,
    registry,
    sqlalchemy_url,
    tools,
    with_database,
)
from relstep.databases.base import (
    Column,
    DatabaseError,
    DumpInfo,
    DumpPlan,
    Inspect,
    columns_to_redact,
    matches_table,
    redacted_value_sql,
    require_matches,
)
from relstep.databases.pg_digest import GZIP_READ_ERRORS as _GZIP_READ_ERRORS
from relstep.databases.pg_digest import gzip_module as _gzip
from relstep.databases.restoring import RestoreOptions, RestoreReport
from relstep.errors import ConfigError, RelstepError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from relstep.fingerprint import Fingerprint, TableContent

NAME = "postgresql"
PG_DUMP, = registry.ENGINES["postgres"].dump_tools
PG_RESTORE, PSQL = registry.ENGINES["postgres"].restore_tools
FORMAT = "pg_dump-directory"
DUMP_DIR = postgres_encrypted.DIRECTORY   # pg_restore finds it through postgres_encrypted.Archive
REDACTED_DIR = "redacted"
REDACTED_INDEX = "redacted.json"
JOBS = 2                  # pg_dump/pg_restore --jobs: 2 measured fastest on the 2-core machines
COMPRESSION = 1           # pg_dump --compress: level 1 is several times faster than 6 for little size
ZSTD_LEVEL = 3
CHUNK = 1 << 18
READ_ONLY_SNAPSHOT = "REPEATABLE READ"

ErrorType = type[RelstepError]

# URL query parameters that libpq also reads from the environment; the tools get them there.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcompression": "PGSSLCOMPRESSION",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "passfile": "PGPASSFILE",
    "service": "PGSERVICE",
    "krbsrvname": "PGKRBSRVNAME",
}

# "pg_" is reserved for system schemas, so this keeps exactly the user's schemas.
_USER_SCHEMA_SQL = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"

# Ordinary tables and their columns.  Left out, like pg_dump leaves their rows out: tables owned
# by an extension and other sessions' temporary tables.  Generated columns are never dumped (the
# target computes them), so they are neither copied nor redacted.
_TABLES_SQL = f"""
SELECT n.nspname, c.relname, a.attname, NOT a.attnotnull,
       t.typcategory = 'S' OR t.oid = 'bytea'::regtype, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
LEFT JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND {_USER_SCHEMA_SQL}
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname, a.attnum
"""

# Every table a table's rows also belong to: the partitioned tables above a partition, the parents
# of an inheritance child (pg_inherits holds both), to any depth.  Patterns naming them cover it.
_ANCESTORS_SQL = f"""
WITH RECURSIVE up(child, parent) AS (
    SELECT inhrelid, inhparent FROM pg_inherits
    UNION SELECT up.child, i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.parent
)
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM up
JOIN pg_class c ON c.oid = up.child JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = up.parent JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.relkind = 'r' AND {_USER_SCHEMA_SQL.replace("n.", "cn.")}
"""

# Every ordinary table by OID: pg_dump's table of contents names a table's data file by its OID.
_TABLE_OIDS_SQL = """
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r'
"""

# Generated columns, left out of _TABLES_SQL: a pattern naming one is satisfied (its values are
# never in the dump), not "matching nothing".
_GENERATED_SQL = f"""
SELECT n.nspname, c.relname, a.attname FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> '' AND {_USER_SCHEMA_SQL}
"""

# Tables whose rows row-level security would filter for this role (not a superuser or BYPASSRLS,
# and not the owner of a table without FORCE ROW LEVEL SECURITY): a dump of them would be short.
_FILTERED_SQL = f"""
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relrowsecurity AND {_USER_SCHEMA_SQL} AND row_security_active(c.oid)
ORDER BY n.nspname, c.relname
"""

_TABLE_DATA_TOC = re.compile(r"^(\d+); \d+ \d+ TABLE DATA ", re.MULTILINE)

# libpq's connection failures, each turned into the sentence a person needs.  First match wins.
_CONNECTION_PROBLEMS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"translate host name|resolve host|Name or service not known|name resolution", re.I),
     "unknown database host {host} in {url}; check the host name"),
    (re.compile(r"Connection refused", re.I),
     "PostgreSQL at {host}:{port} refused the connection to database {db} ({url}); is the server running?"),
    (re.compile(r"timeout expired|timed out", re.I),
     "timed out connecting to PostgreSQL at {host}:{port} for database {db} ({url}); is the host reachable?"),
    (re.compile(r'database "[^"]*" does not exist', re.I),
     "database {db} does not exist on PostgreSQL at {host}:{port} ({url}); create it or fix the URL"),
    (re.compile(r'role "[^"]*" does not exist', re.I),
     "user {user} does not exist on PostgreSQL at {host}:{port} ({url}); fix the user in the URL"),
    (re.compile(r"authentication failed|no password supplied", re.I),
     "authentication failed for user {user} on PostgreSQL at {host}:{port}, database {db} ({url}); "
     "check the password"),
    (re.compile(r"no pg_hba.conf entry", re.I),
     "PostgreSQL at {host}:{port} does not let user {user} connect to database {db} ({url}); check pg_hba.conf"),
]


# --------------------------------------------------------------------------- where a URL points


@dataclass(frozen=True)
class _Target:
    """A database URL in the forms we need: libpq variables for the tools, and a masked name."""

    url: str
    host: str
    port: str
    user: str
    dbname: str
    password: str | None = field(repr=False)
    env: dict[str, str] = field(repr=False)
    connect_args: dict[str, Any] = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> _Target:
        parsed = sqlalchemy_url(url)  # also drops Prisma-only parameters such as ?schema=
        query = {k: str(v[-1] if isinstance(v, tuple) else v) for k, v in parsed.query.items()}
        user = parsed.username or query.get("user") or os.environ.get("PGUSER") or getpass.getuser()
        dbname = parsed.database or query.get("dbname") or os.environ.get("PGDATABASE") or user
        env = {name: query[key] for key, name in _LIBPQ_ENV.items() if query.get(key)}
        if parsed.host:
            env["PGHOST"] = parsed.host
        if parsed.port:
            env["PGPORT"] = str(parsed.port)
        env.setdefault("PGCONNECT_TIMEOUT", str(tools.CONNECT_TIMEOUT))
        env.update(PGUSER=user, PGDATABASE=dbname)
        password = None if parsed.password is None else str(parsed.password)
        if password is not None:
            env["PGPASSWORD"] = password
        env.update(_sslpassword_env(query))
        return cls(
            url=url,
            host=env.get("PGHOST") or os.environ.get("PGHOST") or "localhost",
            port=env.get("PGPORT") or os.environ.get("PGPORT") or "5432",
            user=user,
            dbname=dbname,
            password=password,
            env=env,
            connect_args={} if "connect_timeout" in query else {"connect_timeout": tools.CONNECT_TIMEOUT},
        )

    def tool_env(self) -> dict[str, str]:
        """The caller's environment with this target's libpq variables on top."""
        return {**os.environ, **self.env}

    def mask(self, text: str) -> str:
        """Text with the password, plain or percent-encoded, replaced by *** (as a whole token)."""
        from relstep.masking import mask_known

        return mask_known(text, self.password)

    def connect_failure(self, message: str) -> str:
        """One sentence for a failed connection, naming host and database but never the password."""
        for pattern, template in _CONNECTION_PROBLEMS:
            if pattern.search(message):
                sentence = template
                break
        else:
            sentence = "cannot connect to PostgreSQL at {host}:{port}, database {db} ({url}): " + _first_line(message)
        return self.mask(
            sentence.format(host=self.host, port=self.port, db=self.dbname, user=self.user, url=redact_url(self.url))
        )


def _sslpassword_env(query: Mapping[str, str]) -> dict[str, str]:
    """The client key's passphrase (``?sslpassword=``) for the tools: libpq reads it from no
    environment variable, and argv is out, so it goes in a service file held in memory only
    (``tools.memory_file``).  A URL naming its own ``service`` keeps that service (whose
    pg_service.conf entry may hold sslpassword itself)."""
    value = query.get("sslpassword")
    if not value or query.get("service"):
        return {}
    if "\n" in value or "\r" in value:  # a service file holds one setting a line
        raise DatabaseError("the URL's sslpassword holds a line break, which libpq's tools cannot be given; "
                            "change the client key's passphrase")
    service = "relstep"
    path = tools.memory_file(f"[{service}]\nsslpassword={value}\n".encode())
    return {"PGSERVICEFILE": path, "PGSERVICE": service}


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _database_url(url: str, dbname: str) -> str:
    """The same URL (credentials, query) naming another database on the same server."""
    return with_database(url, dbname)


# --------------------------------------------------------------------------- SQL connections


def _db_errors() -> tuple[type[Exception], ...]:
    import psycopg
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, psycopg.Error)


def _error_text(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc)


@contextmanager
def _connect(target: _Target, error: ErrorType, isolation_level: str = "READ COMMITTED") -> Iterator[Connection]:
    """A SQLAlchemy connection; a database error, on connecting or later, becomes ``error``.

    A ``REPEATABLE READ`` connection is also read-only: it is only used to read one snapshot.
    """
    engine = create_engine(target.url, connect_args=target.connect_args)  # first: a missing driver is one line
    db_errors = _db_errors()
    try:
        try:
            conn = engine.connect()
        except db_errors as exc:
            raise error(target.connect_failure(_error_text(exc))) from exc
        with conn:
            conn.execution_options(
                isolation_level=isolation_level, postgresql_readonly=isolation_level == READ_ONLY_SNAPSHOT
            )
            yield conn
    except db_errors as exc:
        reason = _first_line(_error_text(exc))
        raise error(target.mask(f"PostgreSQL error on {redact_url(target.url)}: {reason}")) from exc
    finally:
        engine.dispose()


def _sql(conn: Connection, statement: str) -> Any:
    """Run SQL built from quoted identifiers; ``no_parameters`` keeps a '%' in a name literal."""
    return conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


def _driver(conn: Connection) -> Any:
    """The psycopg connection under ``conn``, in the same transaction, for COPY streaming."""
    return conn.connection.driver_connection


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class _PgColumn(Column):
    type_sql: str = "text"


@dataclass(frozen=True)
class _Table:
    schema: str
    name: str
    columns: tuple[_PgColumn, ...]

    @property
    def key(self) -> str:
        """relstep's name for the table: bare in ``public``, ``schema.table`` elsewhere."""
        return _key(self.schema, self.name)

    @property
    def sql(self) -> str:
        """Quoted ``"schema"."table"``; also an exact pg_dump pattern (quotes make it literal)."""
        return f"{_quote_ident(self.schema)}.{_quote_ident(self.name)}"


def _list_tables(conn: Connection) -> list[_Table]:
    columns: dict[tuple[str, str], list[_PgColumn]] = {}
    for schema, table, column, nullable, is_text, type_sql in _sql(conn, _TABLES_SQL):
        found = columns.setdefault((schema, table), [])
        if column is not None:  # a table may have no columns at all
            found.append(_PgColumn(column, nullable, is_text, type_sql))
    return [_Table(schema, name, tuple(cols)) for (schema, name), cols in columns.items()]


def _key(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def _ancestors(conn: Connection) -> dict[str, list[str]]:
    """{table key: keys of the partitioned tables and parents its rows belong to}."""
    found: dict[str, list[str]] = {}
    for schema, name, parent_schema, parent in _sql(conn, _ANCESTORS_SQL):
        found.setdefault(_key(schema, name), []).append(_key(parent_schema, parent))
    return found


def _matchable_columns(conn: Connection, tables: Iterable[_Table]) -> dict[str, list[Column]]:
    """Every column a redact pattern may name: the dumped ones and the generated ones."""
    columns: dict[str, list[Column]] = {t.key: list(t.columns) for t in tables}
    for schema, name, column in _sql(conn, _GENERATED_SQL):
        columns.setdefault(_key(schema, name), []).append(Column(column, True))
    return columns


def _refuse_filtered(conn: Connection, tables: Iterable[_Table], target: _Target) -> None:
    """Fail (exit 3) rather than dump tables that row-level security would show in part.

    pg_dump refuses them too (it sets row_security = off); our own COPY and counts would quietly
    see only the rows the policies allow, and the manifest would call the short dump complete.
    """
    dumped = {t.key for t in tables}
    filtered = [key for key in (_key(*row) for row in _sql(conn, _FILTERED_SQL)) if key in dumped]
    if filtered:
        raise DatabaseError(
            f"row-level security hides rows of {', '.join(filtered)} from user {target.user}, so the dump "
            "would be incomplete; back up as a role with BYPASSRLS (or a superuser), as the table owner "
            "without FORCE ROW LEVEL SECURITY, or list the tables in database.exclude_tables"
        )


def _count_rows(conn: Connection, table: _Table) -> int:
    # ONLY: the rows stored in this table, which is what its dump holds (not its inheritors').
    return int(_sql(conn, f"SELECT count(*) FROM ONLY {table.sql}").scalar_one())


# --------------------------------------------------------------------------- external tools


def _major(version: str) -> int | None:
    """15 from "pg_dump (PostgreSQL) 15.20 (Debian ...)"."""
    found = re.search(r"\)\s*(\d+)", version)
    return int(found.group(1)) if found else None


# pg_restore -j ends with "a worker process died unexpectedly" after the worker's own error.
_ERROR_LINE = re.compile(r"\berror:|\bFATAL:")
_FOLLOW_ON = re.compile(r"worker process died unexpectedly")
_TOOL_PREFIX = re.compile(r"^pg_\w+: (error: )?")


def _last_error_line(stderr: str) -> str:
    """The tool's own reason: its last error line, not a trailing hint or "Command was: ..."."""
    return tools.error_line(stderr, errors=_ERROR_LINE, noise=_FOLLOW_ON, prefix=_TOOL_PREFIX)


def _run_tool(args: list[str], target: _Target, error: ErrorType) -> None:
    _check_tool(tools.run(args, target.tool_env()), target, error)


def _check_tool(done: subprocess.CompletedProcess[str], target: _Target, error: ErrorType) -> None:
    if done.returncode == 0:
        return
    reason = _last_error_line(done.stderr)
    if re.search(r"connection to server|translate host name", reason):
        raise error(target.connect_failure(reason))
    raise error(target.mask(f"{Path(done.args[0]).name} failed: {reason}"))


# --------------------------------------------------------------------------- compressed files


def _zstd_chunks(path: Path, size: int, error: ErrorType) -> Iterator[bytes]:
    """Decompressed chunks of a zstd file written by ``_write_redacted``, checked by the codec
    (against the uncompressed size recorded at dump time, too: a cut-off frame reads back short)."""
    try:
        yield from codec.read_chunks(path, compressed=True, expected_size=size)
    except codec.UnreadableFile as exc:
        raise error(str(exc)) from exc


def _list_dump(dump_dir: Path, pg_restore: str) -> str:
    """``pg_restore --list`` of a pg_dump directory: its table of contents, one entry a line."""
    listed = tools.run([pg_restore, "--list", str(dump_dir)])
    if listed.returncode != 0:
        raise DatabaseError(f"{dump_dir / 'toc.dat'} is unreadable: {_last_error_line(listed.stderr)}")
    return listed.stdout


def _check_gzip(path: Path) -> None:
    try:
        with _gzip.open(path, "rb") as stream:
            while stream.read(CHUNK):
                pass
    except _GZIP_READ_ERRORS as exc:
        raise DatabaseError(f"{path} is corrupt or truncated: {exc}") from exc


# --------------------------------------------------------------------------- redaction


@dataclass(frozen=True)
class _Redaction:
    """A table whose rows we copy ourselves, with some columns blanked."""

    table: _Table
    redacted: tuple[str, ...]

    def select_sql(self) -> str:
        items = [
            f"{redacted_value_sql(c)}::{c.type_sql} AS {_quote_ident(c.name)}"
            if c.name in self.redacted
            else _quote_ident(c.name)
            for c in self.table.columns
        ]
        return f"SELECT {', '.join(items)} FROM ONLY {self.table.sql}"


def _plan_redactions(
    tables: Iterable[_Table], patterns: Iterable[str], parents: Mapping[str, list[str]]
) -> list[_Redaction]:
    by_key = {t.key: t for t in tables}
    hits = columns_to_redact({key: list(t.columns) for key, t in by_key.items()}, patterns, parents)
    plans = [_Redaction(by_key[key], tuple(c.name for c in columns)) for key, columns in hits.items()]
    for plan in plans:
        for column in plan.table.columns:
            if column.name in plan.redacted and not column.nullable and not column.is_text:
                raise ConfigError(
                    f"cannot redact {plan.table.key}.{column.name}: it is NOT NULL and of type {column.type_sql}, "
                    "which has no empty value; make it nullable or leave it out of database.redact"
                )
    return plans


# Constraints that redacted values or an excluded table's missing rows would break at restore:
# (kind, constraint, table, its columns, referenced table, referenced columns, nulls distinct).
_CONSTRAINTS_SQL = f"""
SELECT co.contype, co.conname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = co.conrelid AND a.attnum = ANY(co.conkey)),
       rn.nspname, r.relname,
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = co.confrelid AND a.attnum = ANY(co.confkey))
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class r ON r.oid = co.confrelid LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE co.contype IN ('c', 'f') AND {_USER_SCHEMA_SQL}
UNION ALL
SELECT 'u', ic.relname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey)),
       NULL, NULL, CASE WHEN x.indnullsnotdistinct THEN ARRAY['nulls not distinct'] END
FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE x.indisunique AND {_USER_SCHEMA_SQL}
"""


def _refuse_unrestorable(
    conn: Connection, tables: list[_Table], excluded: list[_Table], redactions: list[_Redaction]
) -> None:
    """ConfigError (exit 2, before pg_dump runs) when the dump could never be restored.

    A redacted value breaks a CHECK, a UNIQUE index (for '' in a NOT NULL column, or NULL under
    NULLS NOT DISTINCT) and a foreign key (its '' references nothing; a referenced value is gone);
    an excluded table's missing rows break every kept table's foreign key to it.
    """
    by_name = {(t.schema, t.name): t for t in tables}
    excluded_names = {(t.schema, t.name) for t in excluded}
    blanked = {(r.table.schema, r.table.name): {c.name: c for c in r.table.columns if c.name in r.redacted}
               for r in redactions}
    if not excluded_names and not blanked:
        return
    for kind, name, schema, table, columns, ref_schema, ref_table, ref_columns in _sql(conn, _CONSTRAINTS_SQL):
        key = by_name[(schema, table)].key if (schema, table) in by_name else f"{schema}.{table}"
        own = [blanked.get((schema, table), {})[c] for c in columns if c in blanked.get((schema, table), {})]
        if kind == "f" and (ref_schema, ref_table) in excluded_names and (schema, table) not in excluded_names:
            ref_key = by_name[(ref_schema, ref_table)].key
            raise ConfigError(
                f"cannot back up: table {key} keeps rows that reference the excluded table {ref_key} "
                f"(foreign key {name}), so the snapshot could never be restored; exclude {key} too, "
                f"or keep {ref_key} out of database.exclude_tables"
            )
        referenced = blanked.get((ref_schema, ref_table), {})
        if kind == "f" and any(c in referenced for c in ref_columns or ()):
            column = next(c for c in ref_columns if c in referenced)
            raise ConfigError(
                f"cannot redact {by_name[(ref_schema, ref_table)].key}.{column}: foreign key {name} of table "
                f"{key} references it, so a restore of the redacted values would fail; "
                "leave it out of database.redact"
            )
        broken = [c for c in own if kind == "c" or (kind == "f" and not c.nullable)
                  or (kind == "u" and (not c.nullable or ref_columns))]
        if broken:
            what = {"c": "CHECK constraint", "u": "unique index", "f": "foreign key"}[kind]
            raise ConfigError(
                f"cannot redact {key}.{broken[0].name}: {what} {name} would reject its redacted "
                f"{redacted_value_sql(broken[0])} values at restore; leave it out of database.redact "
                "or drop the constraint"
            )


def _content_sources(
    tables: list[_Table], excluded: list[_Table], redactions: list[_Redaction]
) -> dict[str, str | None]:
    """Each table's rows as the dump holds them: redacted columns blanked, excluded tables none."""
    planned = {r.table.key: r for r in redactions}
    return {t.key: None if t in excluded else planned.get(t.key, _Redaction(t, ())).select_sql() for t in tables}


def _write_redacted(conn: Connection, dest_dir: Path, plans: list[_Redaction],
                    digest: pg_digest.CopyDigest) -> dict[str, dict[str, Any]]:
    """Write each planned table's rows (``digest`` hashes them on the way), then the index that tells
    ``restore`` where they go; return the codec's manifest entries of the files written."""
    entries = []
    written: dict[str, dict[str, Any]] = {}
    if plans:
        (dest_dir / REDACTED_DIR).mkdir(mode=0o700)
    for number, plan in enumerate(plans):
        relative = f"{REDACTED_DIR}/{number:03d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', plan.table.key)[:60]}.copy.zst"
        copied = _copy_out(conn, plan, dest_dir / relative, digest)
        written[relative] = copied.entry()
        size = copied.content_size
        entries.append({
            "schema": plan.table.schema,
            "table": plan.table.name,
            "columns": [c.name for c in plan.table.columns],
            "redacted": list(plan.redacted),
            "file": relative,
            "bytes": size,
            "encoding": pg_digest.ENCODING,
        })
    index = json.dumps({"version": 1, "tables": entries}, indent=2).encode()
    written[REDACTED_INDEX] = codec.write_bytes(dest_dir / REDACTED_INDEX, index).entry()
    return written


def _copy_out(conn: Connection, plan: _Redaction, path: Path, digest: pg_digest.CopyDigest) -> codec.Written:
    """Stream one table's rows, as the snapshot sees them, through the codec (zstd) and ``digest``."""
    with (
        codec.create(path, compress=True, level=ZSTD_LEVEL) as out,
        _driver(conn).cursor() as cursor,
        cursor.copy(f"COPY ({plan.select_sql()}) TO STDOUT") as copy,
    ):
        for block in copy:
            out.write(block)
            digest.feed(plan.table.key, block)
    assert out.result is not None
    return out.result


def _read_index(db_dir: Path, error: ErrorType) -> list[dict[str, Any]]:
    """The redacted-table entries of a dump directory, after checking it is one of ours."""
    for required in (postgres_encrypted.Archive.of(db_dir).required, db_dir / REDACTED_INDEX):
        if not required.is_file():
            raise error(f"{db_dir} is not a relstep PostgreSQL dump: {required} is missing")
    try:
        # Through the codec: in an encrypted snapshot the index is encrypted too.
        entries = json.loads(b"".join(codec.read_chunks(db_dir / REDACTED_INDEX)))["tables"]
        for entry in entries:
            parts = Path(entry["file"]).parts
            if Path(entry["file"]).is_absolute() or ".." in parts or not entry["columns"] or entry["bytes"] < 0:
                raise ValueError(f"bad entry for table {entry['table']}")
    except codec.UnreadableFile as exc:
        raise error(str(exc)) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise error(f"{db_dir / REDACTED_INDEX} is unreadable: {exc}") from exc
    return entries


# --------------------------------------------------------------------------- dump


def dump(url: str, dest_dir: Path, plan: DumpPlan, inspect: Inspect | None = None) -> DumpInfo:
    """Dump the database at one point in time into ``dest_dir`` (see the module docstring)."""
    pg_dump = PG_DUMP.require()
    tool = tools.tool_version(pg_dump)
    target = _Target.parse(url)
    streamed = postgres_encrypted.streams(dest_dir)
    with _connect(target, DatabaseError, READ_ONLY_SNAPSHOT) as conn:
        snapshot = _sql(conn, "SELECT pg_export_snapshot()").scalar_one()
        # Like pg_dump's own sessions: a role's timeouts must not cut a long count, or end this
        # transaction while it idles during pg_dump, before the redacted COPYs have run; and
        # row_security = off, so that a policy we did not foresee raises instead of filtering rows.
        _sql(conn, "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0; "
                   "SET LOCAL row_security = off")
        server_version, server_major = _sql(
            conn, "SELECT current_setting('server_version'), current_setting('server_version_num')::int / 10000"
        ).one()
        _require_client(tool, server_major, target)
        tables = _list_tables(conn)
        parents = _ancestors(conn)
        require_matches(_matchable_columns(conn, tables), plan.redact, parents)
        # Excluding a partitioned table (or a parent) excludes its partitions (children), as redacting does.
        excluded = [t for t in tables if any(matches_table(name, plan.exclude_tables)
                                             for name in (t.key, *parents.get(t.key, ())))]
        kept = [t for t in tables if t not in excluded]
        _refuse_filtered(conn, kept, target)
        redactions = _plan_redactions(kept, plan.redact, parents)
        _refuse_unrestorable(conn, tables, excluded, redactions)
        inspected = _inspect(conn, inspect)
        no_data = [*excluded, *(r.table for r in redactions)]
        sources = _content_sources(tables, excluded, redactions)
        # The schema read while pg_dump runs; the content digests from its bytes: plain, its files'
        # gzip trailers afterwards; encrypted, the tap on its stream (pg_custom).  The tables whose
        # rows pg_dump writes: counted in the dump's snapshot while it runs.
        counted = [t for t in kept if t not in no_data]
        fingerprint, dumped, archive, rows, tap = _pg_dump_beside(conn, pg_dump, snapshot, dest_dir, no_data,
                                                                  target, streamed, counted)
        _check_tool(dumped, target, DatabaseError)
        digest = pg_digest.CopyDigest()
        data_files = {} if streamed else pg_digest.data_files(_list_dump(dest_dir / DUMP_DIR, PG_RESTORE.require()))
        reading = None if streamed else pg_digest.read_dump_dir(dest_dir / DUMP_DIR, data_files)
        # The redacted tables' COPY (hashed as it is written) runs meanwhile, with pg_dump's settings.
        with pg_digest.copy_settings(conn):
            written = {**_write_redacted(conn, dest_dir, redactions, digest), **archive}
        by_oid: dict[int, pg_digest.DataFile | pg_custom.TableData] | None = None
        if reading is not None:
            read = reading.result()
            written.update({f"{DUMP_DIR}/{name}": data.entry() for name, data in read.items()})
            by_oid = {oid: read[name] for name, oid in data_files.items()}
        elif tap is not None:
            by_oid = _tapped(conn, tap, fingerprint, sources)
        if by_oid is not None:
            oids = {_key(schema, name): oid for oid, schema, name in _sql(conn, _TABLE_OIDS_SQL)}
            planned = {r.table.key for r in redactions}
            fingerprint.content = {t.key: _dumped_content(t, rows, by_oid.get(oids.get(t.key, -1)),
                                                          digest if t.key in planned else None) for t in tables}
        counts = {t.key: fingerprint.content[t.key].rows for t in tables}
    files = sorted(p.relative_to(dest_dir).as_posix() for p in dest_dir.rglob("*") if p.is_file())
    # pg_dump wrote its directory itself, so the codec could not hash it on the way: its data files
    # were hashed while digested, the rest (toc.dat, large objects) is read once now.
    hashes = {**codec.hash_files(dest_dir, (f for f in files if f not in written)), **written}
    extra: dict[str, Any] = {"jobs": JOBS, "dump_dir": DUMP_DIR, "redacted_index": REDACTED_INDEX}
    if streamed:
        extra = {"archive": postgres_encrypted.ARCHIVE, "redacted_index": REDACTED_INDEX}
    return DumpInfo(
        engine=NAME,
        format=postgres_encrypted.FORMAT if streamed else FORMAT,
        files=files,
        hashes=hashes,
        row_counts=counts,
        redacted={r.table.key: list(r.redacted) for r in redactions},
        excluded_tables=[t.key for t in excluded],
        tool=tool,
        server_version=server_version,
        inspected=inspected,
        fingerprint=fingerprint,
        extra=extra,
    )


def _pg_dump_beside(
    conn: Connection, pg_dump: str, snapshot: str, dest_dir: Path,
    no_data: list[_Table], target: _Target, streamed: bool, counted: list[_Table],
) -> tuple[Fingerprint, subprocess.CompletedProcess[str], dict[str, dict[str, Any]], dict[str, int],
           pg_custom.ArchiveTap | None]:
    """Run pg_dump while the fingerprint's schema is read and ``counted``'s rows are counted in the
    same snapshot (the scans overlap the dump's): (fingerprint, pg_dump's exit, the codec's entry of
    the encrypted archive or {}, the counts, the tap on the encrypted stream or None).

    Plain: the directory format, pg_dump's own files.  Encrypted: one custom-format stream through
    the codec (postgres_encrypted), tapped on the way (pg_custom).  Either way ``dump`` then takes
    the content digests from pg_dump's bytes."""
    # pg_digest's settings: the content digests of the dump must match a restored table's read back.
    env = pg_digest.dump_environment(target.tool_env())
    if streamed:
        args = postgres_encrypted.dump_args(pg_dump, snapshot, [t.sql for t in no_data])
        running = postgres_encrypted.dumping(args, env, dest_dir / postgres_encrypted.ARCHIVE)
    else:
        running = _directory_dumping(_pg_dump_args(pg_dump, snapshot, dest_dir / DUMP_DIR, no_data), env)
    with running as run:
        fingerprint = pg_fingerprint.read(conn, {})
        rows = {t.key: _count_rows(conn, t) for t in counted}
    assert run.done is not None
    archive = {postgres_encrypted.ARCHIVE: run.written.entry()} if run.written is not None else {}
    return fingerprint, run.done, archive, rows, run.tap


def _tapped(conn: Connection, tap: pg_custom.ArchiveTap, fingerprint: Fingerprint,
            sources: dict[str, str | None]) -> dict[int, pg_digest.DataFile | pg_custom.TableData] | None:
    """The encrypted stream's tables by OID; None when the tap could not parse it: then every
    content digest is the server's sum of row hashes (pg_fingerprint), read now in the dump's
    snapshot (this transaction still holds it), and a note says why.  The backup never fails here."""
    try:
        return dict(tap.finish())
    except pg_custom.Unparsable as exc:
        fingerprint.content = pg_fingerprint.read(conn, sources).content
        fingerprint.notes.append(f"content: pg_dump's stream could not be parsed ({exc}); "
                                 "the server's sums of row hashes were recorded instead")
        return None


def _dumped_content(table: _Table, rows: Mapping[str, int], data: pg_digest.DataFile | pg_custom.TableData | None,
                    redacted: pg_digest.CopyDigest | None) -> TableContent:
    """One table's content: pg_dump's CRC-32 and length of its rows (plain: its data file's gzip trailer;
    encrypted: the tap on the stream) with its
    counted rows, the digest of relstep's own COPY for a redacted table, empty when left out."""
    if table.key in rows:
        if data is None:  # pg_dump was told to dump its rows: a listing without them is no dump of it
            raise DatabaseError(f"pg_dump wrote no data file for table {table.key}")
        return pg_digest.gzcrc(rows[table.key], data.crc, data.length)
    return pg_digest.EMPTY_GZCRC if redacted is None else redacted.result(table.key)


@contextmanager
def _directory_dumping(args: list[str], env: Mapping[str, str]) -> Iterator[postgres_encrypted.RunningDump]:
    """``pg_dump`` writing its directory itself while the caller works; ``done`` once it has ended."""
    result = postgres_encrypted.RunningDump()
    with tools.owned(tools.popen(args, env=env, text=True)) as proc:
        yield result
        result.done = tools.finish(proc)


def _require_client(tool: str, server_major: int, target: _Target) -> None:
    """pg_dump refuses a newer server; say which client to install instead of its generic abort."""
    client_major = _major(tool)
    if client_major is not None and client_major < server_major:
        raise DatabaseError(
            f"pg_dump {client_major} is older than the PostgreSQL {server_major} server at "
            f"{target.host}:{target.port}; install a PostgreSQL client of version {server_major} or newer"
        )


def _inspect(conn: Connection, inspect: Inspect | None) -> Any:
    """Run the caller's reader inside a savepoint that is always rolled back.

    Rolling back clears an error the reader may have caught and swallowed (a missing migration
    table, say), which would otherwise abort the transaction the redacted COPYs still need.
    """
    if inspect is None:
        return None
    savepoint = conn.begin_nested()
    try:
        return inspect(conn)
    finally:
        savepoint.rollback()


def _pg_dump_args(pg_dump: str, snapshot: str, out: Path, no_data: list[_Table]) -> list[str]:
    return [
        pg_dump,
        "--format=directory",
        f"--jobs={JOBS}",
        f"--compress={COMPRESSION}",
        f"--snapshot={snapshot}",
        # Owners and privileges (GRANTs, default privileges, the public schema's ACL) are kept: a
        # restore brings them back unless told --no-owner/--no-privileges.
        "--no-password",  # fail rather than prompt when no password is given
        f"--file={out}",
        *(f"--exclude-table-data={t.sql}" for t in no_data),
    ]


# --------------------------------------------------------------------------- restore


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None = None,
            options: RestoreOptions | None = None) -> RestoreReport:
    """Make the target database entirely the snapshot, or leave it unchanged (see postgres_restore)."""
    from relstep.databases import postgres_restore

    return postgres_restore.restore(db_dir, url, extra, options or RestoreOptions())


def _copy_in(conn: Connection, db_dir: Path, entry: dict[str, Any]) -> None:
    """COPY a redacted table's rows into its (empty) table, truncated first in the caller's transaction:
    into storage new in that transaction, PostgreSQL lays the rows out in the file's order (it skips
    the free space map), the order the proof reads them back in."""
    table = f"{_quote_ident(entry['schema'])}.{_quote_ident(entry['table'])}"
    columns = ", ".join(_quote_ident(c) for c in entry["columns"])
    with _driver(conn).cursor() as cursor:
        cursor.execute(f"TRUNCATE ONLY {table}")   # no parameters: a '%' in a name is no placeholder
        if entry.get("encoding"):  # the file's own; older snapshots wrote the database's, the connection's default
            cursor.execute("SELECT set_config('client_encoding', %s, false)", [entry["encoding"]])
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for chunk in _zstd_chunks(db_dir / entry["file"], entry["bytes"], DatabaseError):
                copy.write(chunk)


# --------------------------------------------------------------------------- the rest of the contract


def row_counts(url: str) -> dict[str, int]:
    """Exact rows per user table, all counted in one snapshot."""
    with _connect(_Target.parse(url), DatabaseError, READ_ONLY_SNAPSHOT) as conn:
        return {t.key: _count_rows(conn, t) for t in _list_tables(conn)}


# Every kind of user object, counted: a database is empty only when each count is 0.
_CONTENTS_SQL = f"""
SELECT 'table', count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'f') AND c.relpersistence <> 't' AND {_USER_SCHEMA_SQL}
UNION ALL SELECT 'view', count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'v' AND {_USER_SCHEMA_SQL}
UNION ALL SELECT 'materialized view', count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'm' AND {_USER_SCHEMA_SQL}
UNION ALL SELECT 'sequence', count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'S' AND {_USER_SCHEMA_SQL}
UNION ALL SELECT 'function', count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE {_USER_SCHEMA_SQL}
UNION ALL SELECT 'type', count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE {_USER_SCHEMA_SQL} AND t.typcategory <> 'A' AND (t.typrelid = 0
        OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
UNION ALL SELECT 'large object', count(*) FROM pg_largeobject_metadata
UNION ALL SELECT 'schema', count(*) FROM pg_namespace n WHERE {_USER_SCHEMA_SQL} AND n.nspname <> 'public'
UNION ALL SELECT 'extension', count(*) FROM pg_extension WHERE extname <> 'plpgsql'
UNION ALL SELECT 'operator', count(*) FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
  WHERE {_USER_SCHEMA_SQL}
UNION ALL SELECT 'collation', count(*) FROM pg_collation o JOIN pg_namespace n ON n.oid = o.collnamespace
  WHERE {_USER_SCHEMA_SQL}
UNION ALL SELECT 'text search configuration', count(*) FROM pg_ts_config o
  JOIN pg_namespace n ON n.oid = o.cfgnamespace WHERE {_USER_SCHEMA_SQL}
UNION ALL SELECT 'event trigger', count(*) FROM pg_event_trigger
UNION ALL SELECT 'publication', count(*) FROM pg_publication
"""


def contents(conn: Connection) -> dict[str, int]:
    """How many user objects of each kind the database holds (kinds with none left out)."""
    return {kind: int(n) for kind, n in _sql(conn, _CONTENTS_SQL).all() if n}


def is_empty(url: str) -> bool:
    """True only when the database holds no user object of any kind (a restore would overwrite nothing)."""
    with _connect(_Target.parse(url), DatabaseError) as conn:
        return not contents(conn)


def server_version(url: str) -> str:
    with _connect(_Target.parse(url), DatabaseError) as conn:
        return str(_sql(conn, "SHOW server_version").scalar_one())


def fingerprint(url: str, content: bool = True, like: Fingerprint | None = None) -> Fingerprint:
    """The fingerprint of the database at ``url`` as it is now (after a restore, say), in one snapshot.

    Content digests are read the way ``like`` (a recorded fingerprint) was made: each table's COPY
    data, CRC-32'd or SHA-256'd as its recorded digest was (pg_digest), or, for snapshots of an
    older relstep, the server-side sums of row hashes."""
    with _connect(_Target.parse(url), DatabaseError, READ_ONLY_SNAPSHOT) as conn:
        tables = _list_tables(conn) if content else []
        if like is not None and like.content and not pg_digest.made_by_dump(like):
            return pg_fingerprint.read(conn, _content_sources(tables, [], []))
        found = pg_fingerprint.read(conn, {})
    if tables:
        found.content = pg_digest.read_back(PSQL.require(), _Target.parse(url).tool_env(),
                                            {t.key: (t.sql, [c.name for c in t.columns]) for t in tables},
                                            like.content if like is not None else None)
    return found


def tool_versions() -> dict[str, str]:
    return tools.versions((PG_DUMP, PG_RESTORE, PSQL))


def check_files(db_dir: Path) -> None:
    """Raise DatabaseError naming the first file of the dump that pg_restore or a decompressor cannot read."""
    pg_restore = PG_RESTORE.require()
    entries = _read_index(db_dir, DatabaseError)
    archive = postgres_encrypted.Archive.of(db_dir)
    dump_dir = db_dir / DUMP_DIR
    gzipped: list[Path] = []
    if archive.streamed:
        # One stream: pg_restore reads every block of it (its SQL thrown away) as a restore would.
        read = postgres_encrypted.check_readable(archive, pg_restore)
        if read.returncode != 0:
            raise DatabaseError(f"{archive.path} is unreadable: {_last_error_line(read.stderr)}")
    else:
        for dump_id in _TABLE_DATA_TOC.findall(_list_dump(dump_dir, pg_restore)):
            if not (dump_dir / f"{dump_id}.dat.gz").is_file():
                raise DatabaseError(f"{dump_dir / f'{dump_id}.dat.gz'} is missing from the dump")
        gzipped = sorted(dump_dir.glob("*.gz"))
    # ISA-L (or zlib) and zstd release the GIL, so two threads read two files at once.
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        checks = [pool.submit(_check_gzip, path) for path in gzipped]
        checks += [pool.submit(codec.drain, _zstd_chunks(db_dir / e["file"], e["bytes"], DatabaseError))
                   for e in entries]
        for check in checks:
            check.result()


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new empty database on the server of ``url``; yields its URL and drops it on exit."""
    target = _Target.parse(url)
    name = f"relstep_scratch_{secrets.token_hex(6)}"
    _admin(target, f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0")
    try:
        yield _database_url(url, name)
    finally:
        _admin(target, f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


def _admin(target: _Target, statement: str) -> None:
    """CREATE/DROP DATABASE, which cannot run inside a transaction."""
    with _connect(target, DatabaseError, "AUTOCOMMIT") as conn:
        _sql(conn, statement)
