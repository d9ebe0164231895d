"""PostgreSQL content digests from the dump's own bytes, and the same digest of a restored table.

Two methods, recorded as the digest's prefix, so a restored table is read back the way its
recorded digest was made (a fingerprint may hold both):

* ``gzcrc:<crc32>:<length>`` (``GZCRC``), every table ``pg_dump`` writes itself: the CRC-32 and the
  length (mod 2^32) of the table's data file's uncompressed bytes (its COPY rows, then
  ``TRAILER``), as ``pg_dump``'s own gzip stream recorded them in the file's 8-byte trailer.  The
  backup reads only the file's header and trailer, and SHA-256es its compressed bytes for the
  manifest: nothing is inflated, which is what made the SHA-256 of the rows cost +38% backup wall
  time (bench/RESULTS.md).  A CRC-32 detects accidental change (a changed, missing or added row,
  any changed byte); it is not a cryptographic digest; the files themselves are SHA-256-checked
  (the manifest), and ``verify`` inflates every one of them.  The row count comes from
  ``count(*)`` in the dump's exported snapshot (``dump``), run while ``pg_dump`` writes.
* ``copy:<sha256>`` (``METHOD``), relstep's own COPY of each redacted table: the SHA-256 of its
  rows in COPY text format, hashed while the file is written; the row count is its line count.
  Snapshots of the ``digest`` branch before ``gzcrc`` used it for every table; they still compare.

After a restore, each table is read by ``COPY table (columns) TO STDOUT`` (run by ``psql``, read
in large blocks): the restore writes every table's rows into storage new in their transaction
(``postgres_restore._load_parallel``), so the heap returns them in the order they were loaded,
which is the dump's.  Its bytes are CRC-32'd (then ``TRAILER``) or SHA-256'd, as recorded, and counted.

Both sides run with the settings that decide COPY's text: ``pg_dump`` sets DateStyle ISO,
IntervalStyle postgres, extra_float_digits 3, synchronize_seqscans off (so a scan starts at the
first block) and row_security off itself; relstep gives it (``dump_environment``) the same
TimeZone (UTC), client_encoding (UTF8) and bytea_output (hex); the read back's psql gets all of
them (``PGOPTIONS``), relstep's own COPY of redacted tables too (``copy_settings``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from relstep import fsutil
from relstep.databases import tools
from relstep.databases.base import DatabaseError
from relstep.fingerprint import Fingerprint, TableContent

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

gzip_module: Any  # gzip's interface, from ISA-L when it is installed
_zlib: Any
INFLATE_ERRORS: tuple[type[Exception], ...]
try:  # ISA-L inflates pg_dump's .dat.gz files about 3x faster than zlib (bench/README.md, verify)
    from isal import igzip as _isal_gzip
    from isal import isal_zlib as _isal_zlib

    gzip_module, _zlib = _isal_gzip, _isal_zlib
    INFLATE_ERRORS = (zlib.error, cast(type[Exception], _isal_zlib.error))
except ImportError:  # the same files, read by the standard library
    gzip_module, _zlib, INFLATE_ERRORS = gzip, zlib, (zlib.error,)
GZIP_READ_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, *INFLATE_ERRORS)
# CRC-32 of two byte strings joined, from theirs (ISA-L has it; Python's zlib does not): without it a
# table is read back in one stream.
_crc32_combine: Any = getattr(_zlib, "crc32_combine", None)

METHOD = "copy"          # the digest's prefix for the SHA-256 of relstep's own COPY (redacted tables)
GZCRC = "gzcrc"          # the digest's prefix for pg_dump's gzip CRC-32 and length of a data file
TRAILER = b"\\.\n\n\n"   # pg_dump ends every table's data file with the end-of-data marker and two blank lines
THREADS = 2
CHUNK = 1 << 20
SPLIT_ROWS = 500_000     # a restored table of this many rows is read back as two halves at once

# What pg_dump does not set itself but COPY's text depends on; the read back sets the same.
_DUMP_ENV = {"PGTZ": "UTC", "PGCLIENTENCODING": "UTF8"}
_DUMP_OPTIONS = "-c bytea_output=hex"
_COPY_SETTINGS = ("SET LOCAL DateStyle = 'ISO'; SET LOCAL IntervalStyle = 'postgres'; "
                  "SET LOCAL extra_float_digits = 3; SET LOCAL TimeZone = 'UTC'; SET LOCAL client_encoding = 'UTF8'; "
                  "SET LOCAL bytea_output = 'hex'; SET LOCAL synchronize_seqscans = off; SET LOCAL row_security = off")
ENCODING = "UTF8"        # the encoding of relstep's own COPY files (redacted.json records it)
# The same settings for psql's read back of a restored table (pg_dump sets these itself).
_READ_OPTIONS = ("-c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c synchronize_seqscans=off "
                 "-c row_security=off")

# "3352; 0 16494 TABLE DATA public a postgres": dump id, then the table's OID.
_TABLE_DATA = re.compile(r"^(\d+); 0 (\d+) TABLE DATA ", re.MULTILINE)


def dump_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` (pg_dump's) with the settings the digests need; the caller's own PGOPTIONS kept."""
    options = " ".join(o for o in (env.get("PGOPTIONS", ""), _DUMP_OPTIONS) if o)
    return {**env, **_DUMP_ENV, "PGOPTIONS": options}


@contextmanager
def copy_settings(conn: Connection) -> Iterator[None]:
    """The session settings of pg_dump's COPY, inside a savepoint rolled back afterwards."""
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(_COPY_SETTINGS, execution_options={"no_parameters": True})
        yield
    finally:
        savepoint.rollback()


class _Table:
    __slots__ = ("hash", "rows")

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.rows = 0


def content(rows: int, sha256_hex: str) -> TableContent:
    return TableContent(rows, f"{METHOD}:{sha256_hex[:32]}")


def gzcrc(rows: int, crc: int, length: int) -> TableContent:
    """A table's content from its data file's CRC-32 and length (rows and ``TRAILER``, mod 2^32)."""
    return TableContent(rows, f"{GZCRC}:{crc:08x}:{length % (1 << 32)}")


EMPTY = content(0, hashlib.sha256().hexdigest())   # an empty redacted table
# An empty table, and a table whose rows are left out: a data file of ``TRAILER`` alone.
EMPTY_GZCRC = gzcrc(0, zlib.crc32(TRAILER), len(TRAILER))


def method_of(table_content: TableContent | None) -> str:
    """How a recorded digest was made (its prefix); a table not recorded is read like pg_dump's."""
    return GZCRC if table_content is None else table_content.digest.split(":", 1)[0]


class CopyDigest:
    """Per-table SHA-256 and line count of COPY text data, fed in chunks (one thread per table)."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._lock = threading.Lock()

    def _state(self, table: str) -> _Table:
        state = self._tables.get(table)
        if state is None:
            with self._lock:
                state = self._tables.setdefault(table, _Table())
        return state

    def feed(self, table: str, chunk: bytes | memoryview) -> None:
        state = self._state(table)
        state.hash.update(chunk)
        state.rows += (chunk.tobytes() if isinstance(chunk, memoryview) else chunk).count(b"\n")

    def result(self, table: str) -> TableContent:
        state = self._tables.get(table)
        return EMPTY if state is None else content(state.rows, state.hash.hexdigest())


# --------------------------------------------------------------------------- pg_dump's files


@dataclass(frozen=True)
class DataFile:
    """What the backup takes from one of pg_dump's data files without inflating it."""

    size: int
    sha256: str     # of the compressed bytes on disk, for the manifest
    crc: int        # the gzip trailer's CRC-32 of the uncompressed bytes
    length: int     # the gzip trailer's ISIZE: their length mod 2^32

    def entry(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


_GZIP_MAGIC = b"\x1f\x8b\x08"   # gzip, deflate
_FHCRC, _FEXTRA, _FNAME, _FCOMMENT, _RESERVED = 0x02, 0x04, 0x08, 0x10, 0xE0


def _header_end(head: bytes) -> int:
    """Where a gzip member's header ends in ``head`` (the file's first bytes); ValueError if it is none."""
    if len(head) < 10 or head[:3] != _GZIP_MAGIC or head[3] & _RESERVED:
        raise ValueError("no gzip header")
    flags, at = head[3], 10
    if flags & _FEXTRA:
        at += 2 + int.from_bytes(head[at:at + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            at = head.index(b"\0", at) + 1  # ValueError when the name runs past what was read
    return at + (2 if flags & _FHCRC else 0)


def _read_data_file(path: Path) -> DataFile:
    """SHA-256 of the file's bytes, and its gzip trailer; DatabaseError naming it if it is no gzip file.

    pg_dump writes each data file as one gzip member (zlib's gzwrite), so the trailer's CRC-32 and
    length cover the whole table; ``verify`` inflates the files and would find any other shape."""
    raw = hashlib.sha256()
    head = bytearray()
    tail = b""
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for chunk in fsutil.read_chunks(fd):  # views of one buffer: what is kept is copied
            raw.update(chunk)
            size += len(chunk)
            if len(head) < 4096:
                head += chunk[:4096 - len(head)]
            tail = (tail + chunk[-8:].tobytes())[-8:]
    finally:
        os.close(fd)
    try:
        # The smallest deflate stream is 2 bytes: a member is at least header + 2 + trailer.
        if _header_end(bytes(head)) + 2 + 8 > size:
            raise ValueError("shorter than a gzip member")
    except ValueError as exc:
        raise DatabaseError(f"{path} is not a pg_dump data file: {exc}") from exc
    return DataFile(size, raw.hexdigest(), int.from_bytes(tail[:4], "little"), int.from_bytes(tail[4:], "little"))


def data_files(listing: str) -> dict[str, int]:
    """``pg_restore --list`` output -> {data file name: the table's OID}."""
    return {f"{dump_id}.dat.gz": int(oid) for dump_id, oid in _TABLE_DATA.findall(listing)}


def read_dump_dir(dump_dir: Path, files: Iterable[str]) -> Future[dict[str, DataFile]]:
    """Start reading pg_dump's data files (``files``: their names) on threads; the future gives
    each one's ``DataFile`` (manifest entry, gzip CRC-32 and length)."""
    pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="relstep-digest")
    # Largest first: the two threads finish together.
    names = sorted(files, key=lambda n: -(dump_dir / n).stat().st_size)
    jobs = {name: pool.submit(_read_data_file, dump_dir / name) for name in names}
    done: Future[dict[str, DataFile]] = Future()

    def collect() -> None:
        try:
            done.set_result({name: job.result() for name, job in jobs.items()})
        except BaseException as exc:  # handed to the caller by done.result()
            done.set_exception(exc)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    threading.Thread(target=collect, name="relstep-digest-collect", daemon=True).start()
    return done


# --------------------------------------------------------------------------- a restored database


class _ReadBack:
    """One table's COPY stream, digested by ``method``: CRC-32 (then ``TRAILER``) or SHA-256, and lines."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.rows = self.length = self.crc = 0
        self.hash = hashlib.sha256() if method == METHOD else None

    def feed(self, block: bytes) -> None:
        self.rows += block.count(b"\n")
        self.length += len(block)
        if self.hash is not None:
            self.hash.update(block)
        else:
            self.crc = _zlib.crc32(block, self.crc)

    def result(self) -> TableContent:
        if self.hash is not None:
            return content(self.rows, self.hash.hexdigest())
        return gzcrc(self.rows, _zlib.crc32(TRAILER, self.crc), self.length + len(TRAILER))


def read_back(psql: str, env: Mapping[str, str], tables: Mapping[str, tuple[str, list[str]]],
              like: Mapping[str, TableContent] | None = None) -> dict[str, TableContent]:
    """``tables``: key -> (quoted table name, its dumped columns, in order): each table's digest (see
    :class:`ReadBack`), two tables at a time."""
    with ReadBack(psql, env, like) as reads:
        for key, (name, columns) in tables.items():
            reads.submit(key, name, columns)
        return reads.results()


class ReadBack:
    """Restored tables read back on ``THREADS`` threads, each as soon as it is handed over.

    Each table's digest comes from ``COPY ... TO STDOUT`` run by ``psql`` (``env``: its environment,
    the database's libpq variables) with pg_dump's settings, read in 1 MiB blocks, by the method of
    its digest in ``like`` (the recorded content; ``GZCRC`` for a table it does not hold).  psql, not
    the driver: the driver hands COPY data over one row at a time, which cost 2.3 s per million rows
    against psql's 1.0 s.  A restore hands each table over once its rows are final
    (``postgres_restore``), so the reading overlaps the rest of the load.

    Leaving the ``with`` block ends every ``psql`` still reading (an error, SIGINT: nothing keeps
    reading behind relstep); :meth:`results` waits for every table handed over.
    """

    def __init__(self, psql: str, env: Mapping[str, str], like: Mapping[str, TableContent] | None = None) -> None:
        self._psql = psql
        self._env = {**dump_environment(env),
                     "PGOPTIONS": " ".join(o for o in (env.get("PGOPTIONS", ""), _READ_OPTIONS) if o)}
        self._like = like or {}
        self._pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="relstep-read-back")
        self._jobs: dict[str, Future[TableContent]] = {}
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def __enter__(self) -> ReadBack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, key: str, name: str, columns: list[str]) -> None:
        """Read table ``key`` (quoted ``name``, its dumped ``columns`` in order); once per key."""
        with self._lock:
            if self._closed or key in self._jobs:
                return
            self._jobs[key] = self._pool.submit(self._read, name, columns, self._like.get(key))

    def results(self) -> dict[str, TableContent]:
        """Every table's digest, once all are read; the first failure raised."""
        with self._lock:
            jobs = dict(self._jobs)
        return {key: job.result() for key, job in jobs.items()}

    def close(self) -> None:
        """Stop: nothing more starts, and every psql still reading is killed."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for proc in running:
            tools.kill_group(proc)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _read(self, name: str, columns: list[str], recorded: TableContent | None) -> TableContent:
        method = method_of(recorded)
        # A large table is read as two halves at once (by block range), its CRC-32s combined: one
        # COPY stream keeps one core busy, and the proof of the largest table is what a restore waits
        # for last.  A SHA-256 cannot be combined; a server before 14 has no block range scan.
        if (method == GZCRC and _crc32_combine is not None and columns and recorded is not None
                and recorded.rows >= SPLIT_ROWS):
            middle = self._middle_block(name)
            if middle is not None:
                return self._read_halves(name, columns, middle)
        digest = _ReadBack(method)
        self._stream(_copy_statement(name, columns), digest, name)
        return digest.result()

    def _middle_block(self, name: str) -> int | None:
        """Half the table's blocks, or None when the server cannot scan a block range (before 14)."""
        literal = "'" + name.replace("'", "''") + "'"
        query = (f"SELECT current_setting('server_version_num')::int >= 140000, "
                 f"pg_relation_size({literal}::regclass) / current_setting('block_size')::int")
        done = tools.run([self._psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", query], self._env)
        if done.returncode != 0:
            raise DatabaseError(f"cannot read table {name} back: {tools.error_line(done.stderr)}")
        ranges, blocks = done.stdout.strip().split("|")
        return int(blocks) // 2 if ranges == "t" and int(blocks) >= 2 else None

    def _read_halves(self, name: str, columns: list[str], middle: int) -> TableContent:
        selected = ", ".join(_quote(c) for c in columns)
        halves = [_ReadBack(GZCRC), _ReadBack(GZCRC)]
        statements = [f"COPY (SELECT {selected} FROM ONLY {name} WHERE ctid < '({middle},0)'::tid) TO STDOUT",
                      f"COPY (SELECT {selected} FROM ONLY {name} WHERE ctid >= '({middle},0)'::tid) TO STDOUT"]
        failure: list[BaseException] = []

        def second() -> None:
            try:
                self._stream(statements[1], halves[1], name)
            except BaseException as exc:  # handed to this job's thread below
                failure.append(exc)

        helper = threading.Thread(target=second, name="relstep-read-back-half", daemon=True)
        helper.start()
        try:
            self._stream(statements[0], halves[0], name)
        finally:
            helper.join()
        if failure:
            raise failure[0]
        first, last = halves
        assert _crc32_combine is not None
        whole = _ReadBack(GZCRC)
        whole.rows, whole.length = first.rows + last.rows, first.length + last.length
        whole.crc = _crc32_combine(first.crc, last.crc, last.length)
        return whole.result()

    def _stream(self, statement: str, digest: _ReadBack, name: str) -> None:
        """Feed ``digest`` the output of one ``COPY ... TO STDOUT`` run by psql."""
        proc = tools.popen([self._psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement], env=self._env)
        with self._lock:
            self._running.add(proc)
            if self._closed:  # closed while this psql started: it must not outlive the close
                tools.kill_group(proc)
        try:
            with tools.owned(proc):
                out, err = proc.stdout, proc.stderr
                assert out is not None and err is not None
                while block := out.read(CHUNK):
                    digest.feed(block)
                problem = err.read().decode("utf-8", "replace")
                if proc.wait() != 0:
                    raise DatabaseError(f"cannot read table {name} back: {tools.error_line(problem)}")
        finally:
            with self._lock:
                self._running.discard(proc)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _copy_statement(name: str, columns: list[str]) -> str:
    # COPY of a table reads only its own rows (not its inheritors'), like pg_dump's.
    return f"COPY {name} ({', '.join(_quote(c) for c in columns)}) TO STDOUT" if columns else f"COPY {name} TO STDOUT"


def made_by_dump(fingerprint: Fingerprint) -> bool:
    """Whether a recorded fingerprint's content digests are this module's (not the server-side sums
    relstep recorded before): decides how a restored database is read to compare with it."""
    return all(method_of(c) in (METHOD, GZCRC) for c in fingerprint.content.values())
