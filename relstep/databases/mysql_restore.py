"""MariaDB / MySQL restore: proven on a staged database first, bounded waits, nothing left running.

MariaDB's DDL is not transactional, so the live database cannot be swapped whole.  Instead:

1. the dump is loaded into a staged database on the same server (``<name>_relstep_staged_<id>``,
   same character set and collation) and proven equal to the snapshot, then dropped: a dump that
   does not load never touches the live database;
2. on the live database one session takes ``LOCK TABLES ... WRITE`` on every table and view at
   once, waiting at most ``lock_wait`` seconds (``lock_wait_timeout``).  Not granted in time:
   nothing was changed, and the sessions in the way (open transactions, sessions using the
   database) are named.  ``terminate_sessions`` ends them first (``KILL``);
3. holding those locks it drops the tables, views, routines and events, then the client loads
   the dump.  From step 3 on ``RestoreReport.live_changed`` is set: if the load fails, the caller
   puts the safety snapshot back.

Every session of the restore is known by its connection id (the client prints its own first).
Whatever ends the restore early (an error, SIGINT, SIGTERM), a new connection ``KILL``s those
sessions, so no ``DROP TABLE`` queued behind an app's metadata lock runs after relstep is gone.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relstep import codec, faults
from relstep.databases import mysql as my
from relstep.databases import tools
from relstep.databases.base import DatabaseError
from relstep.databases.restoring import (
    RestoreOptions,
    RestoreReport,
    Session,
    describe_sessions,
    dies_with_relstep,
    sessions_in_the_way,
    signals_held,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME_LIMIT = 64
LOCK_WAIT_TIMEOUT = 1205
QUERY_INTERRUPTED = 1317

# Sessions that may hold a metadata lock on the database's tables: an open InnoDB transaction
# (MDLs last until it ends), or a session using the database.  Exact MDL owners need the
# metadata_lock_info plugin, which a server rarely has.  All of them are named when a lock wait
# times out; --terminate-sessions ends only those using the database (or, with the plugin, holding
# a lock in it): an open transaction of another app on a shared server is that app's work.
_SESSIONS_SQL = """
SELECT p.ID, p.USER, p.HOST, p.COMMAND, p.STATE, p.TIME, t.trx_started, p.DB
FROM information_schema.PROCESSLIST p
LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID
WHERE p.ID <> CONNECTION_ID() AND p.COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Killed')
  AND (t.trx_id IS NOT NULL OR p.DB = :db)
ORDER BY p.ID
"""


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None, options: RestoreOptions) -> RestoreReport:
    extra = extra or {}
    live = my._Target.from_url(url, DatabaseError)
    client = my.CLIENT_TOOL.require()
    path = Path(db_dir) / my.DUMP_FILE
    try:
        my.check_files(Path(db_dir))  # a damaged dump must not cost the target its tables
    except DatabaseError as exc:
        raise DatabaseError(f"refusing to restore: {exc}") from exc
    own: set[int] = set()          # connection ids of this restore's sessions, KILLed if it ends early
    try:
        _prove_on_staged(live, client, path, options, own)
        faults.point("mysql-before-live")
        _replace_live(live, client, path, extra, options, own)
    except BaseException:
        with signals_held():
            _kill(live, own)
        raise
    options.report.method = "proven on a staged database, then loaded into the live one"
    return options.report


def _drop_command(live: my._Target, name: str) -> str:
    """The command that removes a staged database (the name as an argument, never quoted into SQL;
    the password is asked for, never shown)."""
    import shlex

    where = ["-S", live.socket] if live.socket else ["-h", live.host, "-P", str(live.port)]
    user = ["-u", live.user] if live.user else []
    password = ["-p"] if live.password else []
    return shlex.join(["mariadb-admin", *where, *user, *password, "--force", "drop", name])


def _derived_name(base: str, suffix: str) -> str:
    room = NAME_LIMIT - len(suffix) - 1
    return f"{base[:room]}_{suffix}"


def _kill(live: my._Target, ids: set[int]) -> None:
    """End this restore's sessions still on the server (a new connection: the old ones may be mid-statement)."""
    if not ids:
        return
    server = dataclasses.replace(live, url=my._with_database(live.url, ""), database="")
    with suppress(DatabaseError), my._connect(server, DatabaseError) as conn:
        for session_id in sorted(ids):
            with suppress(Exception):
                conn.exec_driver_sql(f"KILL {int(session_id)}")


# --------------------------------------------------------------------------- 1. the proof on a staged database


def _prove_on_staged(live: my._Target, client: str, path: Path, options: RestoreOptions, own: set[int]) -> None:
    from sqlalchemy import text

    name = _derived_name(live.database, f"relstep_staged_{secrets.token_hex(3)}")
    server = dataclasses.replace(live, url=my._with_database(live.url, ""), database="")
    report = options.report
    report.staged, report.drop_staged = name, _drop_command(live, name)
    report.changed()
    with my._connect(server, DatabaseError) as conn:
        charset, collation = conn.execute(text(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME = :db"), {"db": live.database}).one()
        conn.exec_driver_sql(f"CREATE DATABASE {my._quote(name)} CHARACTER SET {charset} COLLATE {collation}")
    try:
        staged_url = my._with_database(live.url, name)
        staged = my._Target.from_url(staged_url, DatabaseError)
        try:
            _load(client, staged, path, options, own, "mysql-staged-load")
        except DatabaseError as exc:
            raise DatabaseError(f"the snapshot does not load, tried on a staged copy of {live.database}, so the "
                               f"live database was not touched: {exc.message}") from exc
        options.prove(staged_url)
    finally:
        with signals_held(), suppress(DatabaseError), my._connect(server, DatabaseError) as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {my._quote(name)}")
            report.staged = report.drop_staged = None
            report.changed()


# --------------------------------------------------------------------------- 2 and 3. the live database


def _sessions(conn: Connection, database: str, own: set[int]) -> list[Session]:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        rows = conn.execute(text(_SESSIONS_SQL), {"db": database}).all()
    except DBAPIError:  # no PROCESS privilege: INNODB_TRX is closed to this account
        return []
    now = datetime.now()
    found = []
    for session_id, user, host, command, state, seconds, trx_started, in_database in rows:
        if int(session_id) in own:
            continue
        doing = (command or "").lower() + (f" ({state})" if state else "")
        if trx_started is not None:
            doing += ", in a transaction"
        if in_database != database:
            doing += f" in database {in_database!r}" if in_database else " with no database selected"
        since = trx_started or (now - timedelta(seconds=int(seconds or 0)))
        found.append(Session(int(session_id), user or "", f"from {host}" if host else "", doing, since,
                             in_target=in_database == database))
    return found


def _sessions_to_end(conn: Connection, database: str, own: set[int]) -> tuple[list[Session], list[Session]]:
    """(the sessions --terminate-sessions ends, the ones it leaves): it ends the sessions using the
    database and, where the server can say (metadata_lock_info), those holding a lock in it."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    holders: set[int] = set()
    try:
        holders = {int(i) for i in conn.execute(text(
            "SELECT THREAD_ID FROM information_schema.METADATA_LOCK_INFO WHERE TABLE_SCHEMA = :db"),
            {"db": database}).scalars()}
    except DBAPIError:
        pass   # no metadata_lock_info plugin: the sessions using the database are all that is known
    end: list[Session] = []
    leave: list[Session] = []
    for session in _sessions(conn, database, own):
        (end if session.in_target or session.id in holders else leave).append(session)
    return end, leave


def _replace_live(live: my._Target, client: str, path: Path, extra: Mapping[str, Any], options: RestoreOptions,
                  own: set[int]) -> None:
    from sqlalchemy.exc import DBAPIError

    with my._connect(live, DatabaseError) as conn:
        own.add(int(my._scalar(conn, "SELECT CONNECTION_ID()")))
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {max(1, round(options.lock_wait))}")
        if options.terminate_sessions:
            end, leave = _sessions_to_end(conn, live.database, own)
            for session in end:
                with suppress(DBAPIError):
                    conn.exec_driver_sql(f"KILL {session.id}")
                    options.report.ended.append(session)
            if leave:
                options.report.notes.append(
                    f"not ended (not using {live.database}; each may still hold a lock in it): "
                    f"{describe_sessions(leave)}")
        tables = my._tables(conn, live.database)
        routines = my._routines(conn, live.database) if "routines_skipped" not in extra else []
        events = _events(conn, live.database) if "events_skipped" not in extra else []
        try:
            if tables:
                # All at once: granted whole or not at all, so a timeout leaves every table in place.
                conn.exec_driver_sql("LOCK TABLES " + ", ".join(f"{my._quote(t)} WRITE" for t in tables))
        except DBAPIError as exc:
            code, _ = my._driver_error(exc)
            if code == LOCK_WAIT_TIMEOUT:
                raise sessions_in_the_way(live.database, "locking the tables to replace", options.lock_wait,
                                          _sessions(conn, live.database, own)) from None
            raise
        options.report.live_changed = True
        options.report.changed()
        _drop(conn, live.database, tables, routines, events)
    _load(client, live, path, options, own, "mysql-live-load")


def _events(conn: Connection, database: str) -> list[str]:
    from sqlalchemy import text

    return list(conn.execute(text("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = :db"),
                             {"db": database}).scalars().all())


def _drop(conn: Connection, database: str, tables: Mapping[str, tuple[str, str]], routines: list[tuple[str, str]],
          events: list[str]) -> None:
    """Under LOCK TABLES: drop every view and table (foreign keys would otherwise fix an order), the
    routines and events the dump brings its own of (else the target keeps what it has)."""
    q = my._quote
    views = [name for name, (kind, _) in tables.items() if kind == "VIEW"]
    others = [name for name in tables if name not in views]
    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
    if others:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {', '.join(q(n) for n in others)}")
    # MariaDB refuses DROP VIEW while the session holds table locks (error 1192): the tables (the
    # data) went under the lock; the views, which hold none, go right after it is released.
    conn.exec_driver_sql("UNLOCK TABLES")
    if views:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {', '.join(q(n) for n in views)}")
    for kind, name in routines:
        conn.exec_driver_sql(f"DROP {kind} IF EXISTS {q(database)}.{q(name)}")
    for name in events:
        conn.exec_driver_sql(f"DROP EVENT IF EXISTS {q(database)}.{q(name)}")
    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    conn.commit()


# --------------------------------------------------------------------------- the client


def _load(client: str, target: my._Target, path: Path, options: RestoreOptions, own: set[int],
          fault: str) -> None:
    """Stream the dump into the client, whose connection id joins ``own`` before any statement of the dump.

    The client dies with relstep (even of kill -9): its input would end half-way anyway."""
    wait = max(1, round(options.lock_wait))
    with my._option_file(target, client) as option_file, tempfile.TemporaryFile() as errors:
        # --binary-mode: the dump is data, so the client must not act on backslash commands in it.
        argv = my._client_argv(client, option_file, "--binary-mode", "--batch", "--skip-column-names",
                               f"--init-command=SET SESSION lock_wait_timeout = {wait}",
                               f"--database={target.database}")
        proc = tools.popen(dies_with_relstep(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                           env=my._client_env(), pass_fds=(option_file.fd,))
        with _client_session(proc, own):
            faults.point(fault)  # outside the try: a seeded failure ends the client like any other
            try:
                my._stream_into(proc, path, first=b"SELECT CONNECTION_ID();\n",
                                midway=lambda: faults.point(f"{fault}-midway"))
            except (OSError, codec.UnreadableFile) as exc:
                tools.kill_group(proc)
                raise DatabaseError(f"cannot read {path} while restoring into {target.where}: {exc}") from exc
            finally:
                code = proc.wait()
        if code != 0:
            errors.seek(0)
            lines = [ln.strip() for ln in errors.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit status {code}"
            raise DatabaseError(f"{Path(client).name} failed restoring into {target.where}: {target.mask(last)}")


@contextmanager
def _client_session(proc: subprocess.Popen[bytes], own: set[int]) -> Iterator[None]:
    """Read the client's stdout: its first line is its connection id; the rest is discarded."""
    def read() -> None:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if first.isdigit():
            own.add(int(first))
        for _ in proc.stdout:
            pass

    reader = threading.Thread(target=read, name="relstep-mysql-restore-stdout", daemon=True)
    reader.start()
    try:
        yield
    except BaseException:
        tools.kill_group(proc)  # interrupted: the client must not go on loading half a dump
        raise
    finally:
        reader.join(timeout=5)
