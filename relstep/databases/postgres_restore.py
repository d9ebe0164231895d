"""PostgreSQL restore: entirely the snapshot or unchanged.

Two ways, chosen by what the role may do:

* **Staged and swapped** (the role may create databases and owns the target, or is a superuser):
  the dump is loaded into a new database on the same server (``<name>_relstep_staged_<id>``,
  created like the target: owner, encoding, locale, tablespace, connection limit, settings and
  privileges), in parallel (``pg_restore -j``), proven equal to the snapshot, and only then
  swapped in by two ``ALTER DATABASE ... RENAME`` in one transaction.  The target is untouched
  until that instant; the database it held is kept under a printed name (unless it was empty).
  A rename needs the target free of sessions: relstep waits for them at most ``lock_wait``
  seconds, then names them and stops; ``terminate_sessions`` ends them first.
* **One transaction** (otherwise): one ``psql`` session runs, between ``BEGIN`` and ``COMMIT``,
  the drop of every user schema and large object, then ``pg_restore``'s script of each section
  and the redacted tables' rows.  Any error rolls all of it back.  The drops wait at most
  ``lock_wait`` seconds (``lock_timeout``); then the sessions holding locks in the target are named.

Every session relstep opens for a restore carries one ``application_name``
(``relstep-restore-<id>``).  Whatever ends the restore early (an error, SIGINT, SIGTERM), a
separate connection ends those sessions on the server before relstep exits, so no statement of
relstep's (a ``DROP SCHEMA`` queued behind an app's lock) runs after it is gone, and the staged
database is dropped.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import shlex
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from relstep import faults
from relstep.databases import pg_digest, pg_restore_watch, tools
from relstep.databases import postgres as pg
from relstep.databases.base import DatabaseError
from relstep.databases.pg_restore_watch import LoadWatch
from relstep.databases.postgres_encrypted import Archive
from relstep.databases.restoring import (
    CONNECTION_CHECK_MS,
    RestoreOptions,
    RestoreReport,
    Session,
    dies_with_relstep,
    sessions_in_the_way,
    signals_held,
)
from relstep.errors import InputError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from relstep.fingerprint import TableContent

MAINTENANCE_DATABASES = ("postgres", "template1")
NAME_LIMIT = 63                 # NAMEDATALEN - 1: longer database names are cut by the server
SWAP_RETRY = 0.1                # seconds between attempts to rename a target that still has sessions
OBJECT_IN_USE = "55006"         # "database ... is being accessed by other users"
LOCK_NOT_AVAILABLE = "55P03"    # lock_timeout expired

# Settings whose value is a list of quoted items (pg_dumpall quotes each item of these).
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
                  "shared_preload_libraries"}


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None, options: RestoreOptions) -> RestoreReport:
    pg_restore = pg.PG_RESTORE.require()
    entries = pg._read_index(db_dir, DatabaseError)
    parsed = pg._Target.parse(url)
    tag = _session_tag(parsed.env.get("PGAPPNAME"))
    live = _tagged(parsed, tag)
    admin = _Admin(live, tag)
    try:
        with admin.connect() as conn:
            if int(pg._sql(conn, "SELECT current_setting('server_version_num')::int").scalar_one()) >= 140000:
                live = admin.live = _watched(live)
            _check_roles(conn, Archive.of(db_dir), pg_restore, live, options)
            swappable = _may_swap(conn, live.dbname)
        if swappable:
            return _staged_swap(admin, live, db_dir, entries, pg_restore, options)
        return _one_transaction(admin, live, db_dir, entries, pg_restore, options)
    except BaseException:
        with signals_held():
            admin.end_own_sessions()
        raise


# --------------------------------------------------------------------------- sessions and names


def _session_tag(application: str | None) -> str:
    """The application_name of every session of this restore: unique, and keeping the URL's own name."""
    own = f"relstep-restore-{secrets.token_hex(4)}"
    if not application:
        return own
    return f"{application[:NAME_LIMIT - len(own) - 3]} ({own})"


def _tagged(target: pg._Target, tag: str) -> pg._Target:
    """The target, with every session relstep opens on it named ``tag`` (found again on interruption)."""
    return dataclasses.replace(target, env={**target.env, "PGAPPNAME": tag},
                               connect_args={**target.connect_args, "application_name": tag})


def _watched(target: pg._Target) -> pg._Target:
    """The target, with every session of the restore checking (PostgreSQL 14+) that its client is
    still there while it runs a statement: after a kill -9 of relstep the server ends a statement
    queued behind an app's lock within a second, instead of running it once the lock is free."""
    setting = f"-c client_connection_check_interval={CONNECTION_CHECK_MS}"
    options = " ".join(filter(None, [target.env.get("PGOPTIONS"), setting]))
    return dataclasses.replace(target, env={**target.env, "PGOPTIONS": options},
                               connect_args={**target.connect_args, "options": options})


def _run(archive: Archive, args: list[str], target: pg._Target) -> None:
    """pg_restore on ``archive``, dying with relstep; its errors name the tool, not the launcher."""
    done = archive.run(dies_with_relstep(args), target.tool_env())
    done.args = args
    pg._check_tool(done, target, DatabaseError)


def _drop_command(live: pg._Target, name: str) -> str:
    sql = f"DROP DATABASE IF EXISTS {pg._quote_ident(name)} WITH (FORCE)"
    return shlex.join(["psql", "-h", live.host, "-p", live.port, "-U", live.user, "-d", "postgres", "-c", sql])


def _derived_name(base: str, suffix: str) -> str:
    """``<base>_<suffix>``, the base cut so that the whole fits PostgreSQL's 63-byte names."""
    room = NAME_LIMIT - len(suffix.encode()) - 1
    cut = base.encode()[:room].decode(errors="ignore")
    return f"{cut}_{suffix}"


_SESSIONS_SQL = """
SELECT pid, coalesce(usename, ''), coalesce(application_name, ''),
       coalesce(state, 'state hidden: grant this role pg_read_all_stats to see it'),
       coalesce(xact_start, state_change, backend_start)
FROM pg_stat_activity
-- Another role's sessions show no backend_type (nor state) unless this role may read all stats.
WHERE datname = %(db)s AND pid <> pg_backend_pid() AND coalesce(backend_type, 'client backend') = 'client backend'
  AND coalesce(application_name, '') <> %(tag)s {extra}
ORDER BY pid
"""

# Sessions holding a lock on a relation of the database (what a DROP SCHEMA waits for).
_LOCK_HOLDERS = """AND pid IN (SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                               WHERE d.datname = %(db)s AND l.granted AND l.locktype = 'relation')"""


def _sessions(conn: Connection, db: str, tag: str, lock_holders: bool = False) -> list[Session]:
    sql = _SESSIONS_SQL.format(extra=_LOCK_HOLDERS if lock_holders else "")
    with pg._driver(conn).cursor() as cursor:
        cursor.execute(sql, {"db": db, "tag": tag})
        return [Session(int(pid), user, app, state, since) for pid, user, app, state, since in cursor.fetchall()]


def _terminate(conn: Connection, sessions: list[Session]) -> list[Session]:
    """End each session (pg_terminate_backend); the ones that were still there."""
    ended = []
    with pg._driver(conn).cursor() as cursor:
        for session in sessions:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", (session.id,))
            row = cursor.fetchone()
            if row and row[0]:
                ended.append(session)
    return ended


class _Admin:
    """Connections to a maintenance database of the target's server: create, rename, drop, end sessions."""

    def __init__(self, live: pg._Target, tag: str) -> None:
        self.live = live
        self.tag = tag
        self.database: str | None = None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        last: DatabaseError | None = None
        for name in ([self.database] if self.database else MAINTENANCE_DATABASES):
            target = dataclasses.replace(pg._Target.parse(pg._database_url(self.live.url, name)),
                                         connect_args=self.live.connect_args)
            try:
                with pg._connect(target, DatabaseError, "AUTOCOMMIT") as conn:
                    self.database = name
                    yield conn
                    return
            except DatabaseError as exc:
                if self.database == name:
                    raise
                last = exc
        assert last is not None
        raise DatabaseError(f"cannot reach a maintenance database (postgres or template1) on the server of "
                           f"{pg.redact_url(self.live.url)} to stage the restore: {last.message}")

    def end_own_sessions(self) -> None:
        """End every session of this restore still on the server (after an error or a signal)."""
        with suppress(DatabaseError), self.connect() as conn:
            with pg._driver(conn).cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                               "WHERE application_name = %s AND pid <> pg_backend_pid()", (self.tag,))

    def drop(self, name: str) -> None:
        with suppress(DatabaseError), self.connect() as conn:
            pg._sql(conn, f"DROP DATABASE IF EXISTS {pg._quote_ident(name)} WITH (FORCE)")


# The statements of pg_restore's script that name a role, and where the role names are.
_ROLE_STATEMENTS = [
    ("owner", re.compile(r"^ALTER .* OWNER TO (?P<roles>.+);$")),
    ("privilege", re.compile(r"^GRANT .* TO (?P<roles>.+?)(?: WITH GRANT OPTION)?(?: GRANTED BY .+)?;$")),
    ("privilege", re.compile(r"^REVOKE .* FROM (?P<roles>.+?)(?: CASCADE)?;$")),
    ("privilege", re.compile(r"^ALTER DEFAULT PRIVILEGES FOR ROLE (?P<roles>[^ ]+) ")),
    ("privilege", re.compile(r"^ALTER DEFAULT PRIVILEGES .* (?:TO|FROM) (?P<roles>.+?)(?: WITH GRANT OPTION)?;$")),
]


def _role_names(listed: str) -> list[str]:
    names = [m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
             for m in re.finditer(r'\s*(?:"((?:[^"]|"")*)"|([^,\s]+))\s*(?:,|$)', listed)]
    return [n for n in names if n and n.upper() != "PUBLIC"]


def _role_references(pg_restore: str, archive: Archive, env: dict[str, str]) -> dict[str, dict[str, int]]:
    """{"owner": {role: objects}, "privilege": {role: statements}} from the dump's schema script."""
    done = archive.run(archive.argv([pg_restore, "--schema-only", "--file=-"]), env)
    if done.returncode != 0:
        raise DatabaseError(f"pg_restore could not read {archive.path}: {pg._last_error_line(done.stderr)}")
    found: dict[str, dict[str, int]] = {"owner": {}, "privilege": {}}
    for line in done.stdout.splitlines():
        for kind, pattern in _ROLE_STATEMENTS:
            # Each pattern counts its own roles: a default-privilege line names its grantor and grantee.
            if match := pattern.match(line):
                for role in _role_names(match.group("roles")):
                    found[kind][role] = found[kind].get(role, 0) + 1
    return found


def _check_roles(conn: Connection, archive: Archive, pg_restore: str, live: pg._Target,
                 options: RestoreOptions) -> None:
    """Name the roles the snapshot needs and the server lacks, before anything changes (exit 2);
    note what --no-owner / --no-privileges leave out."""
    references = _role_references(pg_restore, archive, live.tool_env())
    needed = {*([] if options.no_owner else references["owner"]),
              *([] if options.no_privileges else references["privilege"])}
    with pg._driver(conn).cursor() as cursor:
        cursor.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (sorted(needed),))
        existing = {row[0] for row in cursor.fetchall()}
    missing = sorted(needed - existing)
    owners = sorted(set() if options.no_owner else {*references["owner"]} & existing)
    with pg._driver(conn).cursor() as cursor:
        cursor.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND NOT pg_has_role(rolname, 'MEMBER')",
                       (owners,))
        foreign = [row[0] for row in cursor.fetchall()]
    if foreign and not missing:
        raise InputError(
            f"the snapshot's objects belong to role(s) {', '.join(foreign)}, which {live.user} may not act for; "
            f"nothing was changed: restore as a role that may (a superuser, or GRANT {foreign[0]} TO {live.user}), "
            "or pass --no-owner to make them belong to the restoring role", phase="restore")
    if missing:
        raise InputError(
            f"the snapshot needs role(s) {', '.join(missing)}, which the server {live.host}:{live.port} lacks; "
            "nothing was changed: create them (CREATE ROLE ...), or pass --no-owner --no-privileges to restore "
            "into another environment without the snapshot's owners and privileges", phase="restore")
    for flag, left_out, kind, what in (("--no-owner", options.no_owner, "owner", "ownership of"),
                                       ("--no-privileges", options.no_privileges, "privilege",
                                        "privilege statements for")):
        # The connecting role's own objects and grants are no loss: it ends up holding them anyway.
        left = {role: n for role, n in references[kind].items() if role != live.user}
        if left_out and left:
            roles = ", ".join(f"{role} ({n})" for role, n in sorted(left.items()))
            options.report.notes.append(f"{flag} left out {what} these roles: {roles}"
                                        + (f"; their objects belong to {live.user}" if kind == "owner" else ""))


def _may_swap(conn: Connection, db: str) -> bool:
    """Whether this role may create a database and rename the target (owner with CREATEDB, or superuser)."""
    with pg._driver(conn).cursor() as cursor:
        cursor.execute(
            "SELECT r.rolsuper OR (r.rolcreatedb AND pg_has_role(r.oid, d.datdba, 'MEMBER')) "
            "FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = %s", (db,))
        row = cursor.fetchone()
    return bool(row and row[0])


# --------------------------------------------------------------------------- staged and swapped


def _staged_swap(admin: _Admin, live: pg._Target, db_dir: Path, entries: list[dict[str, Any]], pg_restore: str,
                 options: RestoreOptions) -> RestoreReport:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    staged_name = _derived_name(live.dbname, f"relstep_staged_{secrets.token_hex(3)}")
    replaced_name = _derived_name(live.dbname, f"before_restore_{stamp}")
    with pg._connect(live, DatabaseError) as conn:
        live_empty = not pg.contents(conn)
    report = options.report
    report.staged, report.drop_staged = staged_name, _drop_command(live, staged_name)
    report.swap_to, report.swap_undo = replaced_name, _undo_command(live, replaced_name)
    report.changed()
    with admin.connect() as conn:
        _create_like(conn, live.dbname, staged_name)
    swapped = False
    try:
        # The live target's session settings (tag, connection check), on the staged database.
        staged = dataclasses.replace(pg._Target.parse(pg._database_url(live.url, staged_name)),
                                     env={**live.env, "PGDATABASE": staged_name}, connect_args=live.connect_args)
        content = _load_parallel(staged, db_dir, entries, pg_restore, options)
        options.prove(pg._database_url(live.url, staged_name), content)
        faults.point("pg-before-swap")
        report.committing = True
        report.changed()
        with admin.connect() as conn:
            _swap(conn, live.dbname, staged_name, replaced_name, admin.tag, options)
        swapped = True
        report.staged = report.drop_staged = None  # it is the target now
        report.changed()
        faults.point("pg-swapped")
    finally:
        if not swapped:
            with signals_held():
                admin.end_own_sessions()
                admin.drop(staged_name)
    report.method = "loaded into a staged database, proven, then swapped in by rename"
    if live_empty and not options.keep_empty_replaced:
        admin.drop(replaced_name)  # it held nothing: the target was empty
        return report
    report.replaced = replaced_name
    report.undo = _undo_command(live, replaced_name)
    if live_empty:
        # Kept although it holds nothing: DROP DATABASE forces an immediate checkpoint, which right
        # after the load writes the whole restored database out first (5 s of a 9 s restore of
        # 150 MB, bench/RESULTS.md); dropped later, once the checkpointer has caught up, it is quick.
        report.notes.append(f"the previous database {replaced_name} was empty; drop it once the app works")
    return report


def _create_like(conn: Connection, live: str, staged: str) -> None:
    """A new empty database with everything of ``live`` that lives outside its dump."""
    driver = pg._driver(conn)
    with driver.cursor() as cursor:
        cursor.execute("SELECT to_jsonb(d), pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), "
                       "t.spcname, shobj_description(d.oid, 'pg_database') "
                       "FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s",
                       (live,))
        row = cursor.fetchone()
        if row is None:
            raise DatabaseError(f"database {live} does not exist on the server; create it or fix the URL")
        info, owner, encoding, tablespace, comment = row
        cursor.execute("SELECT coalesce(r.rolname, ''), s.setconfig FROM pg_db_role_setting s "
                       "LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = %s", (info["oid"],))
        settings = cursor.fetchall()
        cursor.execute("SELECT a.privilege_type, a.is_grantable, coalesce(r.rolname, '') FROM pg_database d, "
                       "aclexplode(d.datacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE d.datname = %s",
                       (live,))
        grants = cursor.fetchall()
    q, lit = pg._quote_ident, _literal
    locale = ""
    if info.get("datlocprovider") == "i":
        locale = f" LOCALE_PROVIDER icu ICU_LOCALE {lit(info.get('daticulocale') or info.get('datlocale') or '')}"
    pg._sql(conn, f"CREATE DATABASE {q(staged)} TEMPLATE template0 OWNER {q(owner)} ENCODING {lit(encoding)} "
                  f"LC_COLLATE {lit(info['datcollate'])} LC_CTYPE {lit(info['datctype'])}{locale} "
                  + ("" if tablespace == "pg_default" else f"TABLESPACE {q(tablespace)} ")
                  + f"CONNECTION LIMIT {int(info['datconnlimit'])}")
    try:
        for role, config in settings:
            scope = f" IN ROLE {q(role)}" if role else ""
            for item in config or []:
                name, _, value = item.partition("=")
                pg._sql(conn, f"ALTER DATABASE {q(staged)}{scope} SET {q(name)} TO {_setting_value(name, value)}")
        if info.get("datacl") is not None:
            # A non-default ACL: start from none, then grant exactly what the target grants.
            pg._sql(conn, f"REVOKE ALL ON DATABASE {q(staged)} FROM PUBLIC")
            for privilege, grantable, grantee in grants:
                to = q(grantee) if grantee else "PUBLIC"
                option = " WITH GRANT OPTION" if grantable else ""
                pg._sql(conn, f"GRANT {privilege} ON DATABASE {q(staged)} TO {to}{option}")
        if comment is not None:
            pg._sql(conn, f"COMMENT ON DATABASE {q(staged)} IS {lit(comment)}")
    except BaseException:
        with signals_held(), suppress(Exception):
            pg._sql(conn, f"DROP DATABASE IF EXISTS {q(staged)} WITH (FORCE)")
        raise


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _setting_value(name: str, value: str) -> str:
    """A stored ``name=value`` setting as SQL; list settings item by item, as pg_dumpall does."""
    if name.lower() not in _LIST_SETTINGS:
        return _literal(value)
    items = [m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2).strip()
             for m in re.finditer(r'\s*(?:"((?:[^"]|"")*)"|([^,]+))\s*(?:,|$)', value)]
    return ", ".join(_literal(item) for item in items if item)


def _leave_out(options: RestoreOptions) -> list[str]:
    return [*(["--no-owner"] if options.no_owner else []), *(["--no-privileges"] if options.no_privileges else [])]


def _pg_restore_args(pg_restore: str, target: pg._Target, archive: Archive, sections: tuple[str, ...],
                     options: RestoreOptions, verbose: bool = False) -> list[str]:
    # pg_restore writes a script to stdout unless given --dbname; the name is quoted as a
    # conninfo value so that no database name is mistaken for a connection string.
    # An encrypted snapshot's stream is read in order: no --jobs (Archive.argv leaves it out); its
    # tables and rows load in one transaction instead (see _load_parallel).
    rows_in_order = "data" in sections and archive.streamed
    return archive.argv([
        pg_restore,
        *(f"--section={section}" for section in sections),
        *(["--single-transaction"] if rows_in_order else []),
        *_leave_out(options),
        *(["--verbose"] if verbose else []),
        "--no-password",
        "--exit-on-error",
        f"--dbname={_conninfo(target.dbname)}",
    ], jobs=pg.JOBS)


def _load_parallel(staged: pg._Target, db_dir: Path, entries: list[dict[str, Any]], pg_restore: str,
                   options: RestoreOptions) -> dict[str, TableContent] | None:
    """Load the staged database so that every table's rows lie in the dump's order; return the
    tables' content digests, read back as the load went (None: the proof reads them afterwards).

    The proof reads each table back in its physical order and compares it with the dump's bytes.
    PostgreSQL keeps a COPY's rows in order only when the table's storage is new in the COPY's own
    transaction (it then skips the free space map, which otherwise sends a row that does not fit at
    the end to an earlier page's gap).  So the tables and their rows come from one ``pg_restore``
    run, whose parallel mode creates each table first and then loads it in a transaction that
    truncates it first (a streamed dump: one transaction for both sections), and the redacted tables
    are truncated in the transaction that copies their rows.  Loaded by separate runs, a large table
    came back reordered (bench: 2.7 M rows of ``events``) and the proof refused a faithful restore.

    The reading back for the proof overlaps the load (bench/RESULTS.md): ``pg_restore --verbose``
    says when the tables exist (relstep then copies the redacted tables' rows beside it) and when
    each table's rows are committed (that table is read back then, on the core the load leaves idle);
    the rest are read while the post-data section (indexes, constraints) runs.  Rows are final once
    loaded: post-data adds no row.  Tables of a partition or inheritance tree, and names found in two
    schemas (pg_restore names a table without its schema), wait for the end of the data section.
    """
    archive = Archive.of(db_dir)
    recorded = options.recorded
    reading = recorded is not None and bool(recorded.content) and pg_digest.made_by_dump(recorded)
    with ExitStack() as stack:
        reads = (stack.enter_context(pg_digest.ReadBack(pg.PSQL.require(), staged.tool_env(), recorded.content))
                 if reading and recorded is not None else None)
        # A stream loads in one transaction: nothing is committed before its end.
        watch = LoadWatch() if reads is not None and not archive.streamed else None
        data_args = _pg_restore_args(pg_restore, staged, archive, ("pre-data", "data"), options,
                                     verbose=watch is not None)
        env = {**staged.tool_env(), **pg_restore_watch.ENV} if watch is not None else staged.tool_env()
        copied = False
        with archive.started(dies_with_relstep(data_args), env, on_line=watch.line if watch else None) as data:
            faults.point("pg-staged-load")
            if watch is not None and reads is not None:
                watch.tables_created.wait()
                if watch.loading:  # the tables exist (not merely the end of a run that failed early)
                    early = _readable_while_loading(staged)
                    _copy_redacted(staged, db_dir, entries)
                    copied = True
                    for entry in entries:
                        _submit(reads, early.get(entry["table"]), pg._key(entry["schema"], entry["table"]))
                    watch.on_table_loaded(lambda name: _submit(reads, early.get(name)))
            loaded = data.finish()
        loaded.args = data_args
        pg._check_tool(loaded, staged, DatabaseError)
        if not copied:
            _copy_redacted(staged, db_dir, entries)
        if reads is not None:  # every table's rows are final now
            with pg._connect(staged, DatabaseError) as conn:
                for table in pg._list_tables(conn):
                    _submit(reads, table)
        _run(archive, _pg_restore_args(pg_restore, staged, archive, ("post-data",), options), staged)
        return reads.results() if reads is not None else None


def _copy_redacted(staged: pg._Target, db_dir: Path, entries: list[dict[str, Any]]) -> None:
    """pg_dump left the redacted tables' rows out: relstep writes them, each into storage new in its
    transaction (the tables are empty: nothing else loads them)."""
    with pg._connect(staged, DatabaseError) as conn:
        for entry in entries:
            with conn.begin():
                pg._copy_in(conn, db_dir, entry)


def _readable_while_loading(staged: pg._Target) -> dict[str, pg._Table]:
    """{bare name: table} of the tables that may be read back as soon as pg_restore says their rows are
    in: not in a partition or inheritance tree (rows loaded through a parent may land in another
    table), and a name no other schema has (pg_restore's progress line names no schema)."""
    with pg._connect(staged, DatabaseError) as conn:
        tables = pg._list_tables(conn)
        related = {key for child, parents in pg._ancestors(conn).items() for key in (child, *parents)}
    names = Counter(t.name for t in tables)
    return {t.name: t for t in tables if t.key not in related and names[t.name] == 1}


def _submit(reads: pg_digest.ReadBack, table: pg._Table | None, key: str | None = None) -> None:
    """Hand ``table`` to the read back (``key``: only if it is that table)."""
    if table is not None and (key is None or table.key == key):
        reads.submit(table.key, table.sql, [c.name for c in table.columns])


def _swap(conn: Connection, live: str, staged: str, replaced: str, tag: str, options: RestoreOptions) -> None:
    """Rename ``live`` to ``replaced`` and ``staged`` to ``live`` in one transaction, once no session uses live.

    Waits at most ``options.lock_wait`` seconds for the target's sessions to end; with
    ``terminate_sessions`` ends them (each attempt, as an app may reconnect).
    """
    from psycopg import errors as pg_errors

    q = pg._quote_ident
    deadline = time.monotonic() + options.lock_wait
    driver = pg._driver(conn)
    while True:
        others = _sessions(conn, live, tag)
        if options.terminate_sessions and others:
            options.report.ended += _terminate(conn, others)
        try:
            with driver.transaction():
                remaining = max(deadline - time.monotonic(), 0.001)
                driver.execute(f"SET LOCAL lock_timeout = '{int(remaining * 1000) + 1}ms'")
                driver.execute(f"ALTER DATABASE {q(live)} RENAME TO {q(replaced)}")
                faults.point("pg-mid-swap")
                driver.execute(f"ALTER DATABASE {q(staged)} RENAME TO {q(live)}")
            return
        except (pg_errors.ObjectInUse, pg_errors.LockNotAvailable):
            if time.monotonic() >= deadline:
                raise sessions_in_the_way(live, "the swap of the restored database", options.lock_wait,
                                          _sessions(conn, live, tag)) from None
            time.sleep(SWAP_RETRY)


def _undo_command(live: pg._Target, replaced: str) -> str:
    """The command that puts the replaced database back (keeping the restored one beside it)."""
    q = pg._quote_ident
    aside = _derived_name(live.dbname, "restored")
    sql = (f"ALTER DATABASE {q(live.dbname)} RENAME TO {q(aside)}; "
           f"ALTER DATABASE {q(replaced)} RENAME TO {q(live.dbname)}")
    return shlex.join(["psql", "-h", live.host, "-p", live.port, "-U", live.user, "-d", "postgres", "-c", sql])


# --------------------------------------------------------------------------- one transaction


def _one_transaction(admin: _Admin, live: pg._Target, db_dir: Path, entries: list[dict[str, Any]], pg_restore: str,
                     options: RestoreOptions) -> RestoreReport:
    psql = pg.PSQL.require()
    report = options.report
    if options.terminate_sessions:
        with admin.connect() as conn:
            report.ended += _terminate(conn, _sessions(conn, live.dbname, admin.tag))
    with pg._connect(live, DatabaseError) as conn:
        preamble = _clear_script(conn, options.lock_wait)
    argv = [psql, "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", f"--dbname={_conninfo(live.dbname)}"]
    with tools.owned(tools.popen(dies_with_relstep(argv), env=live.tool_env(), stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL)) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            _feed(proc.stdin, preamble, db_dir, entries, pg_restore, live, options)
        except BrokenPipeError:
            pass  # psql stopped at an error: its stderr says which
        finally:
            with suppress(BrokenPipeError):
                proc.stdin.close()
        stderr = proc.stderr.read().decode("utf-8", "replace")
        code = proc.wait()
    if code != 0:
        if "lock timeout" in stderr:
            with admin.connect() as conn:
                holders = _sessions(conn, live.dbname, admin.tag, lock_holders=True)
            raise sessions_in_the_way(live.dbname, "dropping the old schemas", options.lock_wait, holders)
        raise DatabaseError(live.mask(f"the restore into {pg.redact_url(live.url)} failed and was rolled back: "
                                     f"{_psql_error(stderr)}"))
    report.method = "restored in one transaction (the role may not create databases)"
    return report


def _psql_error(stderr: str) -> str:
    """psql's last ERROR line without its ``psql:<stdin>:N:`` prefix, with the DETAIL that follows it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    found = [i for i, line in enumerate(lines) if "ERROR:" in line]
    if not found:
        return pg._last_error_line(stderr)
    i = found[-1]
    message = lines[i].split("ERROR:", 1)[1].strip()
    if i + 1 < len(lines) and lines[i + 1].startswith("DETAIL:"):
        message += f" ({lines[i + 1].removeprefix('DETAIL:').strip()})"
    return message


def _conninfo(dbname: str) -> str:
    return "dbname='" + dbname.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _clear_script(conn: Connection, lock_wait: float) -> bytes:
    """SQL that, inside the restore's transaction, empties the target like a fresh database."""
    schemas = pg._sql(conn, f"SELECT n.nspname FROM pg_namespace n WHERE {pg._USER_SCHEMA_SQL}").scalars().all()
    version = int(pg._sql(conn, "SELECT current_setting('server_version_num')::int").scalar_one())
    lines = ["SET client_min_messages = warning;", "BEGIN;", f"SET LOCAL lock_timeout = '{int(lock_wait * 1000)}ms';"]
    lines += [f"DROP SCHEMA {pg._quote_ident(s)} CASCADE;" for s in schemas]
    # Large objects live outside every schema: without this the dump's lo_create() collides with them.
    lines.append("SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;")
    if version >= 150000:
        lines += ["CREATE SCHEMA public AUTHORIZATION pg_database_owner;", "GRANT USAGE ON SCHEMA public TO PUBLIC;"]
    else:
        lines += ["CREATE SCHEMA public;", "GRANT ALL ON SCHEMA public TO PUBLIC;"]
    return ("\n".join(lines) + "\n").encode()


def _feed(stdin: IO[bytes], preamble: bytes, db_dir: Path, entries: list[dict[str, Any]], pg_restore: str,
          live: pg._Target, options: RestoreOptions) -> None:
    """Write the whole restore into psql: clear, pre-data, data, the redacted rows, post-data, COMMIT."""
    archive = Archive.of(db_dir)
    stdin.write(preamble)
    for section in ("pre-data", "data"):
        _script(stdin, pg_restore, archive, section, live, options)
        faults.point(f"pg-one-transaction-{section}")
    for entry in entries:
        table = f"{pg._quote_ident(entry['schema'])}.{pg._quote_ident(entry['table'])}"
        columns = ", ".join(pg._quote_ident(c) for c in entry["columns"])
        stdin.write(f"COPY {table} ({columns}) FROM stdin;\n".encode())
        for chunk in pg._zstd_chunks(db_dir / entry["file"], entry["bytes"], DatabaseError):
            stdin.write(chunk)
        stdin.write(b"\\.\n")
    _script(stdin, pg_restore, archive, "post-data", live, options)
    options.report.committing = True  # from here a kill may find the target committed: the journal says so
    options.report.changed()
    stdin.write(b"COMMIT;\n")


def _script(stdin: IO[bytes], pg_restore: str, archive: Archive, section: str, live: pg._Target,
            options: RestoreOptions) -> None:
    """pg_restore's SQL for one section, streamed into psql (a damaged stream raises before COMMIT)."""
    argv = archive.argv([pg_restore, f"--section={section}", *_leave_out(options), "--file=-"])
    with archive.started(dies_with_relstep(argv), live.tool_env()) as running:
        assert running.proc.stdout is not None
        while chunk := running.proc.stdout.read(pg.CHUNK):
            stdin.write(chunk)
        done = running.finish()
        if done.returncode != 0:
            raise DatabaseError(f"pg_restore could not read {archive.path}: {pg._last_error_line(done.stderr)}; "
                               "nothing was restored")

