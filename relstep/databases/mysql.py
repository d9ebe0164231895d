"""MySQL / MariaDB engine: ``mariadb-dump`` streamed through a redacting filter into zstd.

Snapshot layout (inside the engine's ``dest_dir``)::

    dump.sql.zst    the whole database as SQL (mariadb-dump --single-transaction), zstd-compressed

One point in time: connection A takes ``FLUSH TABLES WITH READ LOCK`` and opens a
REPEATABLE READ snapshot, then the dump tool starts its own ``--single-transaction``
snapshot while no write can commit; A unlocks as soon as the tool reports (on its
``--verbose`` stderr) that its transaction has begun.  Both snapshots were opened
under the same lock, so the row counts and the ``inspect`` callback, read through A
afterwards, see exactly the rows the dump holds, while the lock lasts only
milliseconds.  A user without the RELOAD privilege still gets a dump that is
consistent in itself; only its counts may then differ (``DumpInfo.consistent``).

Redaction: MariaDB's dump tool cannot leave out a column, so its output is parsed
on the fly and the VALUES of redacted columns are replaced before anything is
compressed; other lines pass through untouched.  The filter fails closed: a
statement of a redacted table that it cannot read, or an INSERT naming a column
to redact that was not planned (schema changed meanwhile), aborts the dump.

Routines and events the account may not read would make the dump tool abort, so
they are left out and ``DumpInfo.extra`` says so (``routines_skipped``,
``events_skipped``); the rows always come first.

Passwords reach the client tools only through an option file that is a pipe the tool
inherits (``--defaults-extra-file=/dev/fd/N``): never argv, the environment or a disk.
The URL's TLS parameters (``ssl_ca``, ``ssl_capath``, ``ssl_cert``, ``ssl_key``,
``ssl_cipher``, ``ssl_check_hostname``: the names PyMySQL reads through SQLAlchemy) go into
the same option file, so the dump tool and the client connect as connection A does.

Errors: every public function raises DatabaseError; the calling phase gives it its own
error class (``registry.engine_errors``).  The filter lives in ``mysql_filter.py``.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from relstep import codec
from relstep.databases import (
    create_engine,
    mysql_digest,
    mysql_fingerprint,
    redact_url,
    registry,
    sqlalchemy_url,
    tools,
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
from relstep.databases.mysql_filter import DumpFilter
from relstep.databases.restoring import RestoreOptions, RestoreReport
from relstep.errors import ConfigError, RelstepError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from relstep.fingerprint import Fingerprint

NAME = "mysql"
FORMAT = "mariadb-dump-sql-zstd"
DUMP_FILE = "dump.sql.zst"
# Fingerprint kinds kept outside the dump: compared only against a database of the snapshot's own name.
FINGERPRINT_OUTSIDE_DUMP = mysql_fingerprint.OUTSIDE_DUMP
FINGERPRINT_KEPT_BY_NAME = mysql_fingerprint.KEPT_BY_NAME

# FLUSH TABLES WITH READ LOCK first waits for running statements; while it waits,
# new writes queue behind it.  Better a dump marked inconsistent than a stalled site.
LOCK_WAIT_SECONDS = 10
# Longest we keep writers blocked waiting for the dump tool to open its snapshot.
SNAPSHOT_WAIT_SECONDS = 10
# The dump tool writes this last line only when it finished (we never pass --skip-comments).
TRAILER = b"-- Dump completed"
ZSTD_LEVEL = 3
CHUNK = 1 << 20
# Engines whose rows follow the dump's MVCC snapshot; others (MyISAM, Aria, MEMORY)
# are read as they are at the moment the dump reaches them.
TRANSACTIONAL_ENGINES = {"innodb", "rocksdb"}
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json"}


# --------------------------------------------------------------------------- connection target


# URL query parameters (as SQLAlchemy hands them to PyMySQL) -> the client tools' option names.
_TLS_OPTIONS = {"ssl_ca": "ssl-ca", "ssl_capath": "ssl-capath", "ssl_cert": "ssl-cert", "ssl_key": "ssl-key",
                "ssl_cipher": "ssl-cipher"}


@dataclass(frozen=True)
class _Target:
    """Where a URL points, in the shape the client tools' option file needs."""

    url: str
    host: str
    port: int
    user: str | None
    password: str | None
    database: str
    socket: str | None = None
    tls: tuple[tuple[str, str], ...] = ()   # (option name, value) for the tools' option file
    verify_server: bool = False            # check the server's certificate and host name

    @classmethod
    def from_url(cls, url: str, error: type[RelstepError], *, need_database: bool = True) -> _Target:
        parsed = sqlalchemy_url(url)
        if need_database and not parsed.database:
            raise error(f"the database URL {redact_url(url)} names no database; add /DBNAME to it")
        query = {key: value for key, value in parsed.query.items() if isinstance(value, str)}
        tls = tuple((option, query[key]) for key, option in _TLS_OPTIONS.items() if query.get(key))
        # PyMySQL checks the certificate chain and host name when given a CA, the host name unless
        # ssl_check_hostname is false; MariaDB's tools have one switch for both, so it is set only
        # when PyMySQL checks both (else connection A has checked the chain of the same server).
        # The false spellings of SQLAlchemy's asbool, which reads this parameter for PyMySQL.
        checks_hostname = query.get("ssl_check_hostname", "true").strip().lower() not in ("false", "no", "off", "n",
                                                                                          "f", "0")
        return cls(
            url=url,
            host=parsed.host or "localhost",
            port=parsed.port or 3306,
            user=parsed.username,
            password=parsed.password,
            database=parsed.database or "",
            socket=query.get("unix_socket"),
            tls=tls,
            verify_server=checks_hostname and bool(query.get("ssl_ca") or query.get("ssl_capath")),
        )

    @property
    def where(self) -> str:
        return redact_url(self.url)

    def mask(self, text: str) -> str:
        """Hide the password in text that came from a server or a tool (as a whole token)."""
        from relstep.masking import mask_known

        return mask_known(text, self.password)


def _option_value(value: str) -> str:
    """Quote a value for a MySQL option file (its parser unescapes these inside quotes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t").replace("\b", "\\b") + '"'


@dataclass(frozen=True)
class _Options:
    """Client options (password included) readable once through an inherited pipe."""

    fd: int

    @property
    def path(self) -> str:
        return f"/dev/fd/{self.fd}"


def option_lines(target: _Target, tool: str) -> list[str]:
    """The ``[client]`` option file for ``tool`` (a path) connecting to ``target``."""
    lines = ["[client]", f"host={_option_value(target.host)}", f"port={target.port}"]
    # Without protocol=TCP the client would take "localhost" to mean the Unix socket,
    # i.e. another account than the one PyMySQL (always TCP) used for connection A.
    lines += [f"socket={_option_value(target.socket)}", "protocol=SOCKET"] if target.socket else ["protocol=TCP"]
    if target.user:
        lines.append(f"user={_option_value(target.user)}")
    if target.password is not None:
        lines.append(f"password={_option_value(target.password)}")
    lines += [f"{option}={_option_value(value)}" for option, value in target.tls]
    if target.verify_server:
        lines.append(_verify_server_option(tool))
    return lines


@functools.lru_cache(maxsize=8)
def _verify_server_option(tool: str) -> str:
    """MariaDB's clients verify the server with ssl-verify-server-cert; MySQL 8's dropped that option
    for ssl-mode (the Oracle branch is not exercised here: only MariaDB's tools are installed)."""
    return "ssl-verify-server-cert" if "mariadb" in tools.tool_version(tool).lower() else "ssl-mode=VERIFY_IDENTITY"


@contextmanager
def _option_file(target: _Target, tool: str) -> Iterator[_Options]:
    """A ``[client]`` option file that never touches a disk.

    The options are written into a pipe whose read end the tool inherits
    (``pass_fds``) and opens as ``/dev/fd/N``: the password is in neither argv nor
    the environment, and a kill -9 leaves no file holding it behind.
    """
    data = ("\n".join(option_lines(target, tool)) + "\n").encode("utf-8")
    read_end, write_end = os.pipe()
    try:
        # A few hundred bytes: far below the pipe buffer, so this never blocks.
        os.write(write_end, data)
        os.close(write_end)
        write_end = -1
        yield _Options(read_end)
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)


def _client_argv(tool: str, options: _Options, *args: str) -> list[str]:
    # --defaults-extra-file is only honoured as the very first argument.
    return [tool, f"--defaults-extra-file={options.path}", "--default-character-set=utf8mb4", *args]


def _client_env() -> dict[str, str]:
    # A stray MYSQL_PWD would make the tool log in differently from connection A.
    return {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"}


# --------------------------------------------------------------------------- tools

DUMP_TOOL, = registry.ENGINES["mysql"].dump_tools
CLIENT_TOOL, = registry.ENGINES["mysql"].restore_tools


@dataclass(frozen=True)
class _Tool:
    """A client program found on PATH, with its ``--version`` line."""

    path: str
    version: str


def tool_versions() -> dict[str, str]:
    """The dump tool and the client used for restores, keyed by the name found on PATH."""
    return tools.versions((DUMP_TOOL, CLIENT_TOOL))


# --------------------------------------------------------------------------- server connection


def _driver_error(exc: BaseException) -> tuple[int | None, str]:
    """(MySQL error code, message) of a SQLAlchemy/PyMySQL error."""
    orig = getattr(exc, "orig", exc)
    args: tuple[Any, ...] = getattr(orig, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    return None, str(orig)


def _connection_problem(exc: BaseException, target: _Target) -> str:
    code, text = _driver_error(exc)
    if code == 1045:
        return f"access denied for user {target.user!r}; check the user name and password"
    if code == 1044:
        return f"user {target.user!r} has no access to database {target.database!r}"
    if code == 1049:
        return f"database {target.database!r} does not exist"
    if code == 2003 and "Errno -" in text:  # negative errno: getaddrinfo failed
        return f"cannot resolve host {target.host!r}"
    if code == 2003 and "refused" in text.lower():
        return f"connection refused; is the server running on {target.host}:{target.port}?"
    return target.mask(text)


@contextmanager
def _connect(target: _Target, error: type[RelstepError]) -> Iterator[Connection]:
    """A connection whose driver errors become ``error`` with one masked sentence."""
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(target.url)
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            problem = _connection_problem(exc, target)
            raise error(f"cannot connect to MariaDB/MySQL at {target.where}: {problem}") from exc
        with conn:
            try:
                yield conn
            except DBAPIError as exc:
                code, text = _driver_error(exc)
                raise error(f"MariaDB/MySQL error {code} on {target.where}: {target.mask(text)}") from exc
    finally:
        engine.dispose()


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _scalar(conn: Connection, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    return conn.execute(text(sql), params).scalar()


def _tables(conn: Connection, database: str) -> dict[str, tuple[str, str]]:
    """Every table and view: name -> (TABLE_TYPE, ENGINE)."""
    from sqlalchemy import text

    rows = conn.execute(
        text(
            "SELECT TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, '') FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = :db"
        ),
        {"db": database},
    )
    return {name: (kind, engine) for name, kind, engine in rows}


def _data_tables(tables: Mapping[str, tuple[str, str]]) -> list[str]:
    """Tables that hold rows (views and sequences hold none worth counting)."""
    return sorted(name for name, (kind, _) in tables.items() if kind in ("BASE TABLE", "SYSTEM VERSIONED"))


def _count(conn: Connection, table: str) -> int:
    return int(_scalar(conn, f"SELECT COUNT(*) FROM {_quote(table)}"))


@dataclass(frozen=True)
class _MyColumn(Column):
    generation: str | None = None   # a generated column's expression (ROW START/END: system versioning)


def _columns(conn: Connection, database: str, tables: Iterable[str]) -> dict[str, list[_MyColumn]]:
    from sqlalchemy import text

    wanted = set(tables)
    rows = conn.execute(
        text(
            "SELECT TABLE_NAME, COLUMN_NAME, IS_NULLABLE, DATA_TYPE, GENERATION_EXPRESSION "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ),
        {"db": database},
    )
    result: dict[str, list[_MyColumn]] = {}
    for table, name, nullable, data_type, generation in rows:
        if table in wanted:
            column = _MyColumn(name, nullable == "YES", data_type.lower() in TEXT_TYPES, generation)
            result.setdefault(table, []).append(column)
    return result


_WORD = re.compile(r"`((?:[^`]|``)+)`|([A-Za-z_$][\w$]*)")


def _with_generated(columns: list[_MyColumn], redacted: list[Column]) -> list[Column]:
    """``redacted`` plus the generated columns computed from them (to any depth).

    The dump tool writes VIRTUAL and STORED generated columns' values into its INSERTs, so
    ``upper(password)`` would carry the password; such columns are blanked as well (the restore
    computes them again from the blanked values).  Any word of the expression naming a redacted
    column counts: a string literal that happens to spell one only blanks one column too many.
    """
    names = {c.name.lower() for c in redacted}
    result = list(redacted)
    grew = True
    while grew:
        grew = False
        for column in columns:
            if column.generation is None or column.name.lower() in names:
                continue
            words = {(quoted or bare).replace("``", "`").lower() for quoted, bare in _WORD.findall(column.generation)}
            if words & names:
                names.add(column.name.lower())
                result.append(column)
                grew = True
    return result


def _trx_versioned(conn: Connection, database: str) -> list[str]:
    """System-versioned tables whose history is kept by transaction id (``--dump-history`` refuses them)."""
    from sqlalchemy import text

    return sorted(conn.execute(
        text("SELECT DISTINCT TABLE_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db "
             "AND GENERATION_EXPRESSION = 'ROW START' AND DATA_TYPE = 'bigint'"),
        {"db": database},
    ).scalars())


@functools.lru_cache(maxsize=8)
def _has_dump_history(tool: str) -> bool:
    """Whether this dump tool can write system-versioned tables' history (MariaDB 10.11 and later)."""
    return "--dump-history" in tools.run([tool, "--no-defaults", "--help"]).stdout


# --------------------------------------------------------------------------- dump


class _DumpProcess:
    """The running dump tool: stdout for the caller; stderr watched by a thread.

    With ``--verbose`` the tool prints ``-- Starting transaction...`` before it
    opens its snapshot and another ``-- ...`` line after: that second line (or
    the end of stderr) means its snapshot exists.
    """

    def __init__(self, argv: list[str], target: _Target, options: _Options) -> None:
        self.name = Path(argv[0]).name
        self.target = target
        self.proc = tools.popen(argv, env=_client_env(), pass_fds=(options.fd,))
        self.snapshot_open = threading.Event()
        self.errors: deque[str] = deque(maxlen=20)
        self._reader = threading.Thread(target=self._read_stderr, name="relstep-mysql-stderr", daemon=True)
        self._reader.start()

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        starting = False
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("-- "):
                if starting:
                    self.snapshot_open.set()
                starting = starting or line.startswith("-- Starting transaction")
            elif line:
                self.errors.append(line)
        self.snapshot_open.set()

    def finish(self) -> None:
        """Wait for the tool; a failure becomes DatabaseError with its last stderr line."""
        code = self.proc.wait()
        self._reader.join()
        if code != 0:
            last = self.errors[-1] if self.errors else f"exit status {code}"
            raise DatabaseError(f"{self.name} failed on {self.target.where}: {self.target.mask(last)}")

    def __enter__(self) -> _DumpProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            tools.kill_group(self.proc)
        self.proc.wait()
        self._reader.join()
        self.stdout.close()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def _take_global_read_lock(conn: Connection) -> str | None:
    """FLUSH TABLES WITH READ LOCK; None when held, else why it could not be taken."""
    from sqlalchemy.exc import DBAPIError

    conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}")
    try:
        conn.exec_driver_sql("FLUSH TABLES WITH READ LOCK")
    except DBAPIError as exc:
        code, _ = _driver_error(exc)
        if code == 1227:
            return "the user lacks the RELOAD privilege, so no global read lock lined the counts up with the dump"
        if code == 1205:
            return f"the global read lock was not granted within {LOCK_WAIT_SECONDS} s (long-running statements)"
        raise
    finally:
        conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
    return None


def _readable(conn: Connection, statement: str, column: int | None = None) -> bool:
    """Whether this account may run a SHOW statement (and, if asked, see a non-NULL column)."""
    from sqlalchemy.exc import DBAPIError

    try:
        rows = conn.exec_driver_sql(statement).all()
    except DBAPIError:
        return False
    return column is None or all(row[column] is not None for row in rows)


def _routines(conn: Connection, database: str) -> list[tuple[str, str]]:
    """(PROCEDURE or FUNCTION, name) of the database's stored routines, by name."""
    from sqlalchemy import text

    return [(kind, name) for kind, name in conn.execute(
        text("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES "
             "WHERE ROUTINE_SCHEMA = :db AND ROUTINE_TYPE IN ('PROCEDURE', 'FUNCTION') ORDER BY ROUTINE_NAME"),
        {"db": database},
    ).all()]


def _code_flags(conn: Connection, database: str) -> tuple[list[str], dict[str, str]]:
    """--routines and --events where this account can read them all, and notes on what is left out.

    The dump tool aborts on a routine whose body it may not read (another definer's,
    without SELECT on mysql.proc) and on events without the EVENT privilege.  The rows
    matter more than the code, so such parts are left out and said so in DumpInfo.extra.
    """
    flags: list[str] = []
    notes: dict[str, str] = {}
    hidden = [
        name
        for kind, name in _routines(conn, database)
        if not _readable(conn, f"SHOW CREATE {kind} {_quote(database)}.{_quote(name)}", column=2)
    ]
    if hidden:
        notes["routines_skipped"] = f"the account may not read the body of {', '.join(hidden)}"
    else:
        flags.append("--routines")
    if _readable(conn, f"SHOW EVENTS FROM {_quote(database)}"):
        flags.append("--events")
    else:
        notes["events_skipped"] = "the account lacks the EVENT privilege"
    return flags, notes


# How the dump tool writes rows: the backup and the digest of a restored database use the same.
_ROW_FLAGS = (
    "--single-transaction",  # one MVCC snapshot, no table locks
    "--quick",  # stream rows instead of buffering each table
    "--complete-insert",  # column names in every INSERT: the filter finds redacted columns by name
    "--hex-blob",  # binary data as 0x.. literals, never raw bytes
)


def _dump_argv(tool: _Tool, options: _Options, target: _Target, excluded: Iterable[str], code: list[str]) -> list[str]:
    """``code``: flags for what else to dump (routines, events, history)."""
    flags = [
        *_ROW_FLAGS,
        "--triggers",
        *code,
        "--no-tablespaces",  # tablespace DDL needs PROCESS and is not part of one database
        "--skip-dump-date",
        "--verbose",  # progress on stderr tells us when the tool's snapshot exists
    ]
    if "mariadb" in tool.version.lower():
        # MariaDB's tool can skip the rows itself; the filter drops them in any case.
        flags += [f"--ignore-table-data={target.database}.{table}" for table in excluded]
    return _client_argv(tool.path, options, *flags, "--", target.database)


def _write_compressed(source: IO[bytes], dump_filter: DumpFilter, path: Path,
                      digest: mysql_digest.InsertDigest) -> codec.Written:
    """Stream ``source`` through the filter into a private zstd file (the codec hashes it meanwhile)
    and ``digest`` (the content digests of the rows as written), in blocks of whole lines."""
    with codec.create(path, compress=True, level=ZSTD_LEVEL, threads=-1) as out:
        blocks = _filtered(source, dump_filter) if dump_filter.active else mysql_digest.whole_lines(
            iter(lambda: source.read(CHUNK), b""))
        for block in blocks:
            out.write(block)
            digest.feed(block)
        dump_filter.close()
    assert out.result is not None
    return out.result


def _filtered(source: IO[bytes], dump_filter: DumpFilter) -> Iterator[bytes]:
    """The filter's output, line by line, joined into blocks of about CHUNK bytes."""
    batch: list[bytes] = []
    size = 0
    for line in source:
        line = dump_filter.feed(line)
        batch.append(line)
        size += len(line)
        if size >= CHUNK:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


@dataclass
class _Plan:
    """What the dump of this database leaves out, resolved against its real schema."""

    tables: list[str]
    excluded: list[str]
    redacted: dict[str, list[Column]]
    non_transactional: list[str] = field(default_factory=list)
    versioned: list[str] = field(default_factory=list)   # system-versioned tables (they have history)

    @classmethod
    def read(cls, conn: Connection, database: str, plan: DumpPlan) -> _Plan:
        all_tables = _tables(conn, database)
        tables = _data_tables(all_tables)
        columns = _columns(conn, database, tables)
        require_matches(columns, plan.redact)
        excluded = [t for t in tables if matches_table(t, plan.exclude_tables)]
        kept = {t: columns.get(t, []) for t in tables if t not in excluded}
        redacted = {t: _with_generated(kept[t], cols) for t, cols in columns_to_redact(kept, plan.redact).items()}
        loose = [t for t in tables if all_tables[t][1].lower() not in TRANSACTIONAL_ENGINES]
        versioned = [t for t in tables if all_tables[t][0] == "SYSTEM VERSIONED"]
        return cls(tables, excluded, redacted, loose, versioned)

    def history(self, conn: Connection, database: str, tool: _Tool, supported: bool) -> tuple[list[str], str | None]:
        """The dump tool's history flag, or why the history of the system-versioned tables is left out."""
        if not self.versioned:
            return [], None
        if not supported:
            return [], f"{Path(tool.path).name} cannot dump the history of {', '.join(self.versioned)} " \
                        "(--dump-history needs MariaDB 10.11 or later); only their current rows are kept"
        by_trx = _trx_versioned(conn, database)
        if by_trx:
            return [], f"--dump-history cannot dump transaction-precise history ({', '.join(by_trx)}), so the " \
                        f"history of {', '.join(self.versioned)} is left out; only their current rows are kept"
        return ["--dump-history"], None

    def content_sources(self) -> dict[str, dict[str, str] | None]:
        """Each table's redacted columns -> the literal the dump holds instead; None: no rows dumped."""
        return {t: None if t in self.excluded else {c.name: redacted_value_sql(c) for c in self.redacted.get(t, [])}
                for t in self.tables}

    def dump_filter(self, patterns: Iterable[str]) -> DumpFilter:
        literals = {t: {c.name: redacted_value_sql(c).encode() for c in cols} for t, cols in self.redacted.items()}
        return DumpFilter(literals, self.excluded, redact_patterns=patterns)


def _refuse_unrestorable(conn: Connection, database: str, resolved: _Plan) -> None:
    """ConfigError (exit 2, before the dump tool starts) when the dump could never be restored.

    A redacted column's NULL/'' breaks a CHECK on it, a UNIQUE index ('' in a NOT NULL column), a
    NOT NULL column of a type without an empty value (strict mode rejects ''), and foreign keys
    from or to it; an excluded table's missing rows break every kept table's foreign key to it.
    """
    from sqlalchemy import text

    def rows(sql: str) -> list[Any]:
        return list(conn.execute(text(sql), {"db": database}).all())

    blanked = {(t, c.name): c for t, cols in resolved.redacted.items() for c in cols}
    for (table, name), column in blanked.items():
        if not column.nullable and not column.is_text:
            raise ConfigError(f"cannot redact {table}.{name}: it is NOT NULL and not text, so it has no empty value "
                              "a restore would accept; make it nullable or leave it out of database.redact")
    for table, name, column, ref_table, ref_column in rows(
        "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME "
        "FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = :db AND REFERENCED_TABLE_NAME IS NOT NULL "
        "AND REFERENCED_TABLE_SCHEMA = :db"):
        if ref_table in resolved.excluded and table not in resolved.excluded:
            raise ConfigError(
                f"cannot back up: table {table} keeps rows that reference the excluded table {ref_table} "
                f"(foreign key {name}), so the snapshot could never be restored; exclude {table} too, "
                f"or keep {ref_table} out of database.exclude_tables")
        if (ref_table, ref_column) in blanked:
            raise ConfigError(f"cannot redact {ref_table}.{ref_column}: foreign key {name} of table {table} "
                              "references it, so a restore of the redacted values would fail; "
                              "leave it out of database.redact")
        if (table, column) in blanked and not blanked[(table, column)].nullable:
            raise ConfigError(f"cannot redact {table}.{column}: foreign key {name} would reject its redacted '' "
                              "values at restore; leave it out of database.redact or drop the constraint")
    for table, name, column in rows("SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
                                    "WHERE TABLE_SCHEMA = :db AND NON_UNIQUE = 0"):
        if (table, column) in blanked and not blanked[(table, column)].nullable:
            raise ConfigError(f"cannot redact {table}.{column}: unique index {name} would reject its redacted '' "
                              "values at restore; leave it out of database.redact or drop the constraint")
    for table, name, clause in rows("SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE "
                                    "FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = :db"):
        for redacted_table, redacted_column in blanked:
            quoted = re.escape(redacted_column.replace("`", "``"))
            if redacted_table == table and re.search(rf"`{quoted}`", clause):
                raise ConfigError(f"cannot redact {table}.{redacted_column}: CHECK constraint {name} may reject its "
                                  "redacted values at restore; leave it out of database.redact or drop the constraint")


def dump(url: str, dest_dir: Path, plan: DumpPlan, inspect: Inspect | None = None) -> DumpInfo:
    """Dump the database at ``url`` into ``dest_dir/dump.sql.zst`` (see the module docstring)."""
    target = _Target.from_url(url, DatabaseError)
    tool = DUMP_TOOL.require()
    path = Path(dest_dir) / DUMP_FILE
    try:
        with _connect(target, DatabaseError) as conn:
            info = _dump(conn, target, _Tool(tool, tools.tool_version(tool)), path, plan, inspect)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return info


def _dump(
    conn: Connection, target: _Target, tool: _Tool, path: Path, plan: DumpPlan, inspect: Inspect | None
) -> DumpInfo:
    server_version = str(_scalar(conn, "SELECT VERSION()"))
    code_flags, notes = _code_flags(conn, target.database)
    extra: dict[str, Any] = dict(notes)
    dumps_history = _has_dump_history(tool.path)  # asked before the lock: writers wait while it is held
    problem = _take_global_read_lock(conn)
    locked_at = time.monotonic()
    conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    # Read under the lock: no DDL can change the schema before the tool's snapshot.
    resolved = _Plan.read(conn, target.database, plan)
    _refuse_unrestorable(conn, target.database, resolved)
    history_flags, history_left_out = resolved.history(conn, target.database, tool, dumps_history)
    if history_left_out:
        extra["history_skipped"] = history_left_out
    code_flags += history_flags
    with _option_file(target, tool.path) as options:
        argv = _dump_argv(tool, options, target, resolved.excluded, code_flags)
        with _DumpProcess(argv, target, options) as proc:
            if problem is None:
                if not proc.snapshot_open.wait(SNAPSHOT_WAIT_SECONDS):
                    problem = f"{proc.name} did not report its snapshot within {SNAPSHOT_WAIT_SECONDS} s"
                conn.exec_driver_sql("UNLOCK TABLES")
                extra["global_read_lock_seconds"] = round(time.monotonic() - locked_at, 3)
            # Connection A's snapshot equals the tool's: count and inspect while it streams.  A stays
            # open until the end, so (as with pg_dump) its metadata locks make DDL on the counted
            # tables wait for the backup instead of changing a table under the dump.
            counts = {t: 0 if t in resolved.excluded else _count(conn, t) for t in resolved.tables}
            inspected = inspect(conn) if inspect is not None else None
            left_out = [kind for kind, note in (("routine", "routines_skipped"), ("event", "events_skipped"))
                        if note in notes]
            fingerprint = mysql_fingerprint.read(conn, target.database, resolved.content_sources(), left_out,
                                                 content=False)
            # Content digests of the rows as written, redacted values included (not a second read).
            digest = mysql_digest.InsertDigest()
            written = _write_compressed(proc.stdout, resolved.dump_filter(plan.redact), path, digest)
            proc.finish()
            fingerprint.content = digest.results(counts)
    conn.rollback()
    if resolved.non_transactional:
        extra["non_transactional_tables"] = resolved.non_transactional
        problem = problem or "tables on non-transactional engines are not covered by the dump's snapshot"
    if problem:
        extra["inconsistency"] = problem
    return DumpInfo(
        engine=NAME,
        format=FORMAT,
        files=[DUMP_FILE],
        hashes={DUMP_FILE: written.entry()},
        row_counts=counts,
        redacted={t: [c.name for c in cols] for t, cols in resolved.redacted.items()},
        excluded_tables=resolved.excluded,
        tool=tool.version,
        server_version=server_version,
        consistent=problem is None,
        inspected=inspected,
        fingerprint=fingerprint,
        extra=extra,
    )


# --------------------------------------------------------------------------- restore


MIDWAY_BYTES = 2 << 20   # where a stream's ``midway`` hook runs: past the first statements of any real dump


def _stream_into(proc: subprocess.Popen[bytes], path: Path, first: bytes = b"",
                 midway: Callable[[], None] | None = None) -> None:
    """Decompress the dump into the client's stdin, after ``first``, without holding it in memory.

    ``midway`` (a test's fault point) runs once, when the first :data:`MIDWAY_BYTES` of the dump
    have reached the client, and the rest not yet."""
    assert proc.stdin is not None
    written = 0
    try:
        proc.stdin.write(first)
        for chunk in codec.read_chunks(path, compressed=True):
            proc.stdin.write(chunk)
            written += len(chunk)
            if midway is not None and written >= MIDWAY_BYTES:
                proc.stdin.flush()
                midway()
                midway = None
    except BrokenPipeError:
        pass  # the client stopped reading; its exit status and stderr say why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None = None,
            options: RestoreOptions | None = None) -> RestoreReport:
    """Replace the tables, views, routines and events of the database at ``url`` with the snapshot's
    (see mysql_restore: proven on a staged database first, every lock wait bounded).

    Routines or events that the dump left out (``extra`` says so: the account could not read
    them) are left as the target has them, rather than dropped with nothing to replace them.
    """
    from relstep.databases import mysql_restore

    return mysql_restore.restore(db_dir, url, extra, options or RestoreOptions())


# --------------------------------------------------------------------------- inspection helpers


def server_version(url: str) -> str:
    target = _Target.from_url(url, DatabaseError, need_database=False)
    with _connect(target, DatabaseError) as conn:
        return str(_scalar(conn, "SELECT VERSION()"))


def fingerprint(url: str, content: bool = True, like: Fingerprint | None = None) -> Fingerprint:
    """The fingerprint of the database at ``url`` as it is now (after a restore, say), in one snapshot.

    Content: the dump tool's rows through the backup's digester (mysql_digest), or, to compare
    with a snapshot of an older relstep (``like``), the server-side sums it recorded."""
    target = _Target.from_url(url, DatabaseError)
    with _connect(target, DatabaseError) as conn:
        conn.exec_driver_sql("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.exec_driver_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        try:
            tables = _data_tables(_tables(conn, target.database))
            older = content and like is not None and bool(like.content) and not mysql_digest.made_by_dump(like)
            found = mysql_fingerprint.read(conn, target.database, {t: {} for t in tables}, content=older)
            if content and not older:
                found.content = _digest_rows(conn, target, {t: _count(conn, t) for t in tables})
            return found
        finally:
            conn.rollback()


def _digest_rows(conn: Connection, target: _Target, counts: dict[str, int]) -> dict[str, Any]:
    """Each table's content digest, from the rows the dump tool writes of it now (data only)."""
    path = DUMP_TOOL.require()
    tool = _Tool(path, tools.tool_version(path))
    history, _ = _Plan.read(conn, target.database, DumpPlan(redact=())).history(
        conn, target.database, tool, _has_dump_history(path))
    with _option_file(target, path) as options:
        argv = _client_argv(path, options, *_ROW_FLAGS, "--no-create-info", "--skip-triggers", "--no-tablespaces",
                            "--skip-dump-date", *history, "--", target.database)
        with _DumpProcess(argv, target, options) as proc:
            found = mysql_digest.digest_stream(iter(lambda: proc.stdout.read(CHUNK), b""), counts)
            proc.finish()
    return found


def row_counts(url: str) -> dict[str, int]:
    """Exact row count of every table (views excluded)."""
    target = _Target.from_url(url, DatabaseError)
    with _connect(target, DatabaseError) as conn:
        return {table: _count(conn, table) for table in _data_tables(_tables(conn, target.database))}


def contents(conn: Connection, database: str) -> dict[str, int]:
    """How many user objects of each kind the database holds (kinds with none left out)."""
    from sqlalchemy import text

    counts = {
        "table or view": len(_tables(conn, database)),
        "routine": len(_routines(conn, database)),
        "event": int(conn.execute(text("SELECT count(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = :db"),
                                  {"db": database}).scalar_one()),
    }
    return {kind: n for kind, n in counts.items() if n}


def is_empty(url: str) -> bool:
    """True only when the database holds no table, view, sequence, routine or event."""
    target = _Target.from_url(url, DatabaseError)
    with _connect(target, DatabaseError) as conn:
        return not contents(conn, target.database)


def check_files(db_dir: Path) -> None:
    """Decompress the dump fully; DatabaseError if it is missing, corrupt or truncated."""
    path = Path(db_dir) / DUMP_FILE
    if not path.is_file():
        raise DatabaseError(f"{path} is missing")
    tail = b""
    try:
        for chunk in codec.read_chunks(path, compressed=True):
            tail = (tail + chunk[-256:])[-256:]
    except codec.UnreadableFile as exc:
        raise DatabaseError(str(exc)) from exc
    last_line = tail.rstrip().rpartition(b"\n")[2]
    if not last_line.startswith(TRAILER):
        raise DatabaseError(f"{path} is incomplete: it lacks the dump tool's '{TRAILER.decode()}' trailer")


def _with_database(url: str, database: str) -> str:
    from relstep.databases import with_database  # the one place that rebuilds a URL with its credentials

    return with_database(url, database)


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """A new empty database on the server of ``url`` (same credentials), dropped on exit."""
    name = f"relstep_scratch_{secrets.token_hex(6)}"
    server = _Target.from_url(_with_database(url, ""), DatabaseError, need_database=False)
    with _connect(server, DatabaseError) as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {_quote(name)} CHARACTER SET utf8mb4")
    try:
        yield _with_database(url, name)
    finally:
        with _connect(server, DatabaseError) as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {_quote(name)}")
