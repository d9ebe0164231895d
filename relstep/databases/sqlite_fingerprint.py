"""SQLite's fingerprint: every ``sqlite_master`` object, the header settings, and every table's rows.

At backup time it reads the redacted copy the snapshot is made of (the backup API's copy, so one
instant); ``journal_mode`` is the source database's, since the copy is always written in rollback
mode and a restore must bring WAL back.  Content: the sum of a 64-bit BLAKE2 hash of each row's
``repr`` (SQLite's values are ints, floats, str, bytes and None, whose reprs are exact).
AUTOINCREMENT counters (``sqlite_sequence``) are sequences with values.
"""

from __future__ import annotations

import hashlib
import sqlite3

from relstep.fingerprint import Fingerprint, RowDigest

NAME = "sqlite"
# The journal mode belongs to the database file, not to its contents: a restore into an existing
# file keeps that file's mode, and a staged or scratch copy has its own.  So it is compared only
# against the snapshot's own database (drift, or a proof of the file itself).
OUTSIDE_DUMP = {"file setting": "the journal mode belongs to the database file, which a restore keeps"}
_KINDS = {"table": "table", "index": "index", "view": "view", "trigger": "trigger"}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read(conn: sqlite3.Connection, journal_mode: str | None = None, *, content: bool = True) -> Fingerprint:
    """The fingerprint of the database ``conn`` is open on; ``journal_mode`` overrides the file's own;
    ``content=False`` reads no row."""
    fp = Fingerprint(engine=NAME)
    objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    tables = []
    for kind, name, table, sql in objects:
        if kind == "table" and name.startswith("sqlite_"):
            continue  # sqlite_sequence and sqlite_stat*: SQLite's own bookkeeping
        fp.add(_KINDS.get(kind, kind), name, table, sql)
        if kind == "table" and not (sql or "").upper().startswith("CREATE VIRTUAL"):
            tables.append(name)
    if any(name == "sqlite_sequence" for _, name, _, _ in objects):
        for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence"):
            fp.add("sequence", name, value=seq)
    for pragma in ("user_version", "application_id", "encoding", "auto_vacuum"):
        fp.add("setting", pragma, value=conn.execute(f"PRAGMA {pragma}").fetchone()[0])
    mode = journal_mode or conn.execute("PRAGMA journal_mode").fetchone()[0]
    fp.add("file setting", "journal_mode", value=str(mode).lower())
    for table in tables if content else ():
        rows = RowDigest()
        for row in conn.execute(f"SELECT * FROM {_quote(table)}"):
            rows.add(int.from_bytes(hashlib.blake2b(repr(row).encode(), digest_size=8).digest(), "big"))
        fp.content[table] = rows.result()
    return fp
