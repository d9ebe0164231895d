"""SQLite files found in code folders, recognised by their first bytes, whatever their names.

A database inside a code folder (Prisma's ``prisma/dev.db``, a cache, a copy left
by someone) would be copied raw into the snapshot, with every value that the dump
redacts.  Code capture leaves such files out; these are the formats' own magic
numbers (https://www.sqlite.org/fileformat2.html), so a database named ``data.bin``
is found as surely as ``app.db``.
"""

from __future__ import annotations

import os

DATABASE_HEADER = b"SQLite format 3\x00"
WAL_MAGICS = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")        # big- or little-endian checksums
WAL_VERSION = (3007000).to_bytes(4, "big")                          # the only WAL format there is
JOURNAL_MAGIC = b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7"
# Files SQLite keeps beside a database; they hold its pages (-wal, -journal) or its index (-shm).
COMPANION_SUFFIXES = ("-wal", "-journal", "-shm")

DATABASE = "an SQLite database (copied raw, it would keep every redacted value)"
WAL = "an SQLite write-ahead log (it holds database pages)"
JOURNAL = "an SQLite rollback journal (it holds database pages)"


def kind(path: str, size: int) -> str | None:
    """Why the file at ``path`` is left out, or None when it is not an SQLite file."""
    if size < len(JOURNAL_MAGIC):
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        head = os.pread(fd, len(DATABASE_HEADER), 0)
    finally:
        os.close(fd)
    if head.startswith(DATABASE_HEADER):
        return DATABASE
    if head[:4] in WAL_MAGICS and head[4:8] == WAL_VERSION:
        return WAL
    if head.startswith(JOURNAL_MAGIC):
        return JOURNAL
    return None


def companion_of(name: str, databases: set[str]) -> str | None:
    """The database (one of ``databases``, names in the same folder) that ``name`` belongs to."""
    for suffix in COMPANION_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in databases:
            return name[: -len(suffix)]
    return None
