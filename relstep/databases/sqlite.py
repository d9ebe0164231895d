"""SQLite: a consistent copy through the online backup API, redacted, then compacted.

Layout in the snapshot's database folder::

    database.sqlite3.zst     the redacted, VACUUMed copy, zstd-compressed

The raw copy is made in a scratch folder, redacted there with
``secure_delete`` on (freed pages are zeroed), then written out with
``VACUUM INTO`` so the published file is rebuilt from live rows only: no
redacted value survives in a free page or the freelist.

Copies of a redacted value inside the file are handled too: STORED generated columns and
expression indexes are recomputed by SQLite on the UPDATE itself; full-text indexes (FTS3/4/5)
are not, when their content is another table (the triggers that keep them in sync are set aside
while redacting), and FTS5 keeps deleted tokens in its segments until a merge, so every FTS
table over a redacted or emptied table, or with a redacted column, is rebuilt afterwards.  A
contentless FTS table (``content=''``) cannot be rebuilt: one with a column to redact is refused.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from relstep import codec, faults
from relstep.databases import base, sqlalchemy_url, sqlite_fingerprint
from relstep.databases.base import Column, DatabaseError, DumpInfo, DumpPlan, Inspect, columns_to_redact, matches_table
from relstep.databases.restoring import RestoreOptions, RestoreReport
from relstep.errors import ConfigError, SessionsInTheWay
from relstep.fingerprint import Fingerprint

NAME = "sqlite"
FINGERPRINT_OUTSIDE_DUMP = sqlite_fingerprint.OUTSIDE_DUMP
DUMP_FILE = "database.sqlite3.zst"
ZSTD_LEVEL = 3


def database_path(url: str) -> Path:
    path = sqlalchemy_url(url).database
    if not path or path == ":memory:":
        raise DatabaseError(f"SQLite URL {url} names no database file; use sqlite:///path/to/app.db")
    return Path(path)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def _columns(conn: sqlite3.Connection, table: str) -> list[Column]:
    text_affinity = ("CHAR", "CLOB", "TEXT", "")
    return [
        Column(name=r[1], nullable=not r[3], is_text=any(t in (r[2] or "").upper() for t in text_affinity))
        for r in conn.execute(f"PRAGMA table_info({_quote(table)})")
    ]


def _count(conn: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0] for t in tables}


def _source_lock_wait() -> float:
    """Seconds a backup waits for another connection's lock on the database (RELSTEP_SQLITE_LOCK_WAIT)."""
    try:
        wait = float(os.environ.get("RELSTEP_SQLITE_LOCK_WAIT", DEFAULT_SOURCE_LOCK_WAIT))
    except ValueError:
        wait = DEFAULT_SOURCE_LOCK_WAIT
    return wait if 0 <= wait < float("inf") else DEFAULT_SOURCE_LOCK_WAIT


def _copy_from(source: sqlite3.Connection, copy: sqlite3.Connection, url: str) -> None:
    """The backup API's copy of ``source``, waiting at most the source lock wait for a lock on it.

    Python's backup retries a locked database for ever (an app holding an EXCLUSIVE lock would hang
    the backup with no word); raising from the progress callback aborts it."""
    wait = _source_lock_wait()
    if not _backup_within(source, copy, wait):
        raise DatabaseError(
            f"SQLite database {database_path(url)} stayed locked by another connection for {wait:g} s "
            "(RELSTEP_SQLITE_LOCK_WAIT); no snapshot was written: end the transaction that holds it "
            "(`fuser -v` names the processes that have the file open) and run the backup again")


def _open_source(url: str) -> sqlite3.Connection:
    path = database_path(url)
    if not path.is_file():
        raise DatabaseError(f"SQLite database {path} does not exist; check database.url")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from exc


_FTS = re.compile(r"^\s*CREATE\s+VIRTUAL\s+TABLE\b.*?\bUSING\s+(fts[345])\b", re.IGNORECASE | re.DOTALL)
_FTS_CONTENT = re.compile(r"""\bcontent\s*=\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)"|([\w$]+))""", re.IGNORECASE)


def _fts_tables(conn: sqlite3.Connection) -> dict[str, str | None]:
    """{FTS table: the table its content is read from}: itself (None) or another one ('' = contentless)."""
    found: dict[str, str | None] = {}
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"):
        if _FTS.match(sql):
            content = _FTS_CONTENT.search(sql)
            found[name] = None if content is None else next(g for g in content.groups() if g is not None)
    return found


def _fts_to_rebuild(
    fts: dict[str, str | None], redact: dict[str, list[Column]], excluded: list[str]
) -> list[str]:
    """The FTS tables whose index may hold a value being removed; refuse the contentless ones."""
    changed = {t.lower() for t in [*redact, *excluded]}
    rebuild = []
    for name, content in fts.items():
        if content == "" and name in redact:
            raise DatabaseError(
                f"cannot redact the contentless full-text table {name}: its index keeps every token and "
                "cannot be rebuilt; add it to database.exclude_tables, or give it a content table"
            )
        if content != "" and (name in redact or (content or "").lower() in changed):
            rebuild.append(name)
    return rebuild


def _redact(copy: sqlite3.Connection, redact: dict[str, list[Column]], excluded: list[str]) -> None:
    # Triggers could copy a password elsewhere (an audit table) while we blank it: set them aside.
    triggers = copy.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    fts = _fts_tables(copy)
    rebuild = _fts_to_rebuild(fts, redact, excluded)
    copy.execute("PRAGMA secure_delete = ON")
    with copy:
        for name, _sql in triggers:
            copy.execute(f"DROP TRIGGER {_quote(name)}")
        for table, columns in redact.items():
            if fts.get(table, None) is not None:
                continue  # an FTS table reading another table's content: rebuilt from it below
            assignments = ", ".join(f"{_quote(c.name)} = {'NULL' if c.nullable else chr(39) * 2}" for c in columns)
            try:
                copy.execute(f"UPDATE {_quote(table)} SET {assignments}")
            except sqlite3.IntegrityError as exc:  # SQLite checks the constraints as the copy is redacted
                # SQLite names the columns of the failing UNIQUE/NOT NULL constraint: blame those (a CHECK
                # names only itself, so then every column redacted in the table is a suspect).
                failed = set(str(exc).partition(": ")[2].split(", "))
                named = [c for c in columns if f"{table}.{c.name}" in failed] or columns
                names = ", ".join(f"{table}.{c.name}" for c in named)
                raise ConfigError(f"cannot redact {names}: a constraint rejects the redacted values ({exc}), so "
                                  "the snapshot could never be restored; leave it out of database.redact or "
                                  "drop the constraint") from exc
        for table in excluded:
            copy.execute(f"DELETE FROM {_quote(table)}")
        for table in rebuild:  # its index is made again from the rows as they are now
            copy.execute(f"INSERT INTO {_quote(table)}({_quote(table)}) VALUES ('rebuild')")
        for _name, sql in triggers:
            copy.execute(sql)


def _refuse_unrestorable(copy: sqlite3.Connection, excluded: list[str]) -> None:
    """ConfigError (exit 2) when a kept table references an excluded one: its rows would dangle."""
    for table in _user_tables(copy):
        if table in excluded:
            continue
        for row in copy.execute(f"PRAGMA foreign_key_list({_quote(table)})"):
            if row[2] in excluded:
                raise ConfigError(
                    f"cannot back up: table {table} keeps rows that reference the excluded table {row[2]} "
                    "(a foreign key), so the snapshot could never be restored; exclude it too, "
                    f"or keep {row[2]} out of database.exclude_tables"
                )


def _compress(source: Path, dest: Path) -> codec.Written:
    with codec.create(dest, compress=True, level=ZSTD_LEVEL, threads=-1) as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
    assert out.result is not None
    return out.result


def _what_to_leave_out(tables: list[str], columns: dict[str, list[Column]],
                       plan: DumpPlan) -> tuple[list[str], dict[str, list[Column]]]:
    """(excluded tables, columns to redact): a pattern that matches nothing fails here (exit 2)."""
    base.require_matches(columns, plan.redact)
    excluded = [t for t in tables if matches_table(t, plan.exclude_tables)]
    return excluded, columns_to_redact({t: cols for t, cols in columns.items() if t not in excluded}, plan.redact)


def _dump_in_memory(
    url: str, dest: Path, plan: DumpPlan, inspect: Inspect | None
) -> tuple[codec.Written, dict[str, list[Column]], list[str], dict[str, int], Any, Fingerprint]:
    """The encrypted snapshot's path: the copy is redacted and compacted in memory and written
    through the codec's age stage, so no plaintext copy of the database touches the disk (it
    costs memory of about twice the database's size while it runs)."""
    with closing(_open_source(url)) as source, closing(sqlite3.connect(":memory:")) as copy:
        if not hasattr(copy, "serialize"):
            raise DatabaseError("an encrypted SQLite snapshot needs Python 3.11 or newer (sqlite3 serialize)")
        try:
            _copy_from(source, copy, url)
            journal_mode = str(source.execute("PRAGMA journal_mode").fetchone()[0])
            tables = _user_tables(copy)
            columns = {t: _columns(copy, t) for t in tables}
            inspected = None
            if inspect is not None:
                from sqlalchemy import create_engine
                from sqlalchemy.pool import StaticPool

                # Not disposed: that would close the in-memory copy, which closing() ends below.
                engine = create_engine("sqlite://", creator=lambda: copy, poolclass=StaticPool)
                with engine.connect() as conn:
                    inspected = inspect(conn)
            excluded, redact = _what_to_leave_out(tables, columns, plan)
            _refuse_unrestorable(copy, excluded)
            _redact(copy, redact, excluded)
            counts = _count(copy, tables)
            # The copy is what a restore brings back; its journal mode is the source's.
            fingerprint = sqlite_fingerprint.read(copy, journal_mode=journal_mode)
            copy.execute("VACUUM")  # drops the free pages that still hold the redacted values
            image = copy.serialize()  # type: ignore[attr-defined]  # Python 3.11+, as required
        except sqlite3.Error as exc:
            raise DatabaseError(f"SQLite backup of {database_path(url)} failed: {exc}") from exc
    with codec.create(dest, compress=True, level=ZSTD_LEVEL, threads=-1) as out:
        out.write(image)
    assert out.result is not None
    return out.result, redact, excluded, counts, inspected, fingerprint


def dump(url: str, dest_dir: Path, plan: DumpPlan, inspect: Inspect | None = None) -> DumpInfo:
    if codec.encrypts(dest_dir / DUMP_FILE):
        return _dump_info(*_dump_in_memory(url, dest_dir / DUMP_FILE, plan, inspect))
    work = Path(tempfile.mkdtemp(prefix=".sqlite-work-", dir=dest_dir))
    try:
        raw = work / "raw.sqlite3"
        with closing(_open_source(url)) as source, closing(sqlite3.connect(raw)) as copy:
            try:
                _copy_from(source, copy, url)
            except sqlite3.Error as exc:
                raise DatabaseError(f"SQLite backup of {database_path(url)} failed: {exc}") from exc
            journal_mode = str(source.execute("PRAGMA journal_mode").fetchone()[0])
            copy.execute("PRAGMA journal_mode = DELETE")
            tables = _user_tables(copy)
            columns = {t: _columns(copy, t) for t in tables}
        inspected = None
        if inspect is not None:
            from relstep.databases import create_engine

            engine = create_engine(f"sqlite:///{raw}")
            try:
                with engine.connect() as conn:
                    inspected = inspect(conn)
            finally:
                engine.dispose()
        excluded, redact = _what_to_leave_out(tables, columns, plan)
        compact = work / "compact.sqlite3"
        with closing(sqlite3.connect(raw)) as copy:
            _refuse_unrestorable(copy, excluded)
            _redact(copy, redact, excluded)
            counts = _count(copy, tables)
            # The copy is what a restore brings back; its journal mode is the source's.
            fingerprint = sqlite_fingerprint.read(copy, journal_mode=journal_mode)
            copy.execute("VACUUM INTO ?", (str(compact),))
        written = _compress(compact, dest_dir / DUMP_FILE)
    except sqlite3.Error as exc:  # redacting or compacting the copy (a full disk, say): still one clear line
        raise DatabaseError(f"SQLite backup of {database_path(url)} failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _dump_info(written, redact, excluded, counts, inspected, fingerprint)


def _dump_info(written: codec.Written, redact: dict[str, list[Column]], excluded: list[str],
               counts: dict[str, int], inspected: Any, fingerprint: Fingerprint) -> DumpInfo:
    return DumpInfo(
        engine=NAME,
        format="sqlite-zstd",
        files=[DUMP_FILE],
        hashes={DUMP_FILE: written.entry()},
        row_counts=counts,
        redacted={t: [c.name for c in cols] for t, cols in redact.items()},
        excluded_tables=excluded,
        tool=f"sqlite3 backup API (SQLite {sqlite3.sqlite_version})",
        server_version=sqlite3.sqlite_version,
        inspected=inspected,
        fingerprint=fingerprint,
    )


def _decompress(db_dir: Path, target: Path) -> None:
    # The codec insists on the zstd frame's end: a truncated copy could pass SQLite's integrity check.
    # O_EXCL, 0600: the staged copy holds the data, and is never an existing file's contents.
    with os.fdopen(codec.create_private(target), "wb") as out:
        for chunk in codec.read_chunks(db_dir / DUMP_FILE, compressed=True):
            out.write(chunk)


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None = None,
            options: RestoreOptions | None = None) -> RestoreReport:
    """Copy the snapshot into the live file through SQLite's backup API, in one write transaction.

    The copy is staged beside the target, checked and proven first.  Writing into the live file
    (rather than replacing it) keeps its owner, group, mode and inode, and its journal mode; an
    app's open connection sees the restored data on its next read, and no stale -wal/-shm is left
    to be replayed.  The write is one journaled transaction: it happens whole or not at all.
    ``user_version`` and ``application_id`` come back as the snapshot has them.
    """
    options = options or RestoreOptions()
    target = database_path(url)
    if not target.parent.is_dir():
        raise DatabaseError(f"folder {target.parent} for the SQLite database does not exist")
    staging = target.with_name(f".{target.name}.relstep-restore-{os.getpid()}")
    options.report.staged, options.report.drop_staged = str(staging), shlex.join(["rm", "-f", str(staging)])
    options.report.changed()
    try:
        _decompress(db_dir, staging)
        with closing(sqlite3.connect(staging)) as conn:
            if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise DatabaseError(f"the SQLite copy in {db_dir} fails its integrity check")
        options.prove(f"sqlite:///{staging}")
        options.report.committing = True  # the copy's last step commits it: a kill may come after that
        options.report.changed()
        _copy_into(staging, target, options.lock_wait)
    except (OSError, codec.UnreadableFile, sqlite3.Error) as exc:
        raise DatabaseError(f"cannot restore {target}: {exc}; it is unchanged") from exc
    finally:
        staging.unlink(missing_ok=True)
    options.report.method = "staged beside the file, proven, then copied in by SQLite's backup API"
    return options.report


SQLITE_BUSY, SQLITE_LOCKED = 5, 6
DEFAULT_SOURCE_LOCK_WAIT = 30.0   # seconds a backup waits for an app's lock on the database
LOCK_RETRY = 0.05   # seconds between attempts to write into a locked target
RESTORE_STEP_PAGES = 1024   # pages the restore's backup-API copy writes per step (one transaction still)


class _StillLocked(Exception):
    """A database stayed locked past the wait (raised inside the backup's progress callback)."""


def _backup_within(source: sqlite3.Connection, target: sqlite3.Connection, wait: float, pages: int = -1,
                   between_steps: Callable[[], None] | None = None) -> bool:
    """The backup API's copy of ``source`` into ``target``; False, with ``target`` unchanged, when
    either stayed locked for ``wait`` seconds: Python's backup retries a locked database for ever,
    and raising from the progress callback is the only way to stop it."""
    deadline = time.monotonic() + wait

    def give_up_when_locked_too_long(status: int, remaining: int, total: int) -> None:
        if status in (SQLITE_BUSY, SQLITE_LOCKED) and time.monotonic() >= deadline:
            raise _StillLocked
        if remaining and between_steps is not None:
            between_steps()

    try:
        source.backup(target, pages=pages, progress=give_up_when_locked_too_long, sleep=LOCK_RETRY)
    except _StillLocked:
        return False
    return True


def _copy_into(staging: Path, target: Path, lock_wait: float) -> None:
    # timeout: wait at most --lock-wait for an app's write transaction to end.
    with closing(sqlite3.connect(target, timeout=lock_wait)) as live, closing(sqlite3.connect(staging)) as copy:
        journal = live.execute("PRAGMA journal_mode").fetchone()[0]
        page_size = live.execute("PRAGMA page_size").fetchone()[0]
        if journal == "wal" and copy.execute("PRAGMA page_size").fetchone()[0] != page_size:
            # The backup API cannot change a WAL database's page size: give the copy the target's.
            copy.execute(f"PRAGMA page_size = {int(page_size)}")
            copy.execute("VACUUM")
        # In steps: between them the target's write transaction is open, half copied; a kill there
        # (the seeded point) leaves a hot journal that SQLite rolls back on the next open.
        if not _backup_within(copy, live, lock_wait, RESTORE_STEP_PAGES, lambda: faults.point("sqlite-mid-copy")):
            raise SessionsInTheWay(
                f"{target} stayed locked by another connection for {lock_wait:g} s (--lock-wait); nothing "
                "was changed: stop the app (`fuser -v` names the processes that have the file open) and run "
                "the restore again")
        if live.execute("PRAGMA journal_mode").fetchone()[0] != journal:
            live.execute(f"PRAGMA journal_mode = {journal}")
        if journal == "wal":
            live.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def row_counts(url: str) -> dict[str, int]:
    with closing(_open_source(url)) as conn:
        return _count(conn, _user_tables(conn))


def is_empty(url: str) -> bool:
    path = database_path(url)
    if not path.exists() or path.stat().st_size == 0:
        return True
    with closing(_open_source(url)) as conn:
        # Any schema object counts (a view, a trigger, an index), not only tables.
        return not conn.execute("SELECT 1 FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' LIMIT 1").fetchone()


def server_version(url: str) -> str:
    """SQLite has no server: the library's version, once the file is known to open as a database."""
    with closing(_open_source(url)) as conn:
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot read SQLite database {database_path(url)}: {exc}") from exc
    return sqlite3.sqlite_version


def fingerprint(url: str, content: bool = True, like: Fingerprint | None = None) -> Fingerprint:
    """The fingerprint of the SQLite file at ``url`` as it is now (after a restore, say).

    ``like`` changes nothing: SQLite's rows have always been digested one way, at backup from the
    snapshot's own copy and here from the file, by the same ``sqlite_fingerprint.read``."""
    try:
        with closing(_open_source(url)) as conn:
            return sqlite_fingerprint.read(conn, content=content)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read the SQLite database {database_path(url)}: {exc}") from exc


def tool_versions() -> dict[str, str]:
    return {"sqlite": sqlite3.sqlite_version}


def check_files(db_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="relstep-check-") as tmp:
        copy = Path(tmp) / "check.sqlite3"
        try:
            _decompress(db_dir, copy)
            with closing(sqlite3.connect(copy)) as conn:
                result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        except (OSError, codec.UnreadableFile, sqlite3.Error) as exc:
            raise DatabaseError(f"{db_dir / DUMP_FILE} is not a readable SQLite copy: {exc}") from exc
        if result != "ok":
            raise DatabaseError(f"{db_dir / DUMP_FILE} fails SQLite's integrity check: {result}")


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="relstep-scratch-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'scratch.sqlite3'}"
