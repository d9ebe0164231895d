"""PostgreSQL content digests from the dump's own COPY data, and the same digest of a restored table.

A table's digest is the SHA-256 of its rows in COPY text format, byte for byte as the dump holds
them, in the dump's row order; its row count is the number of lines.  Computed:

* at backup, from the dump itself: ``pg_dump``'s ``<dumpId>.dat.gz`` files, read once after it
  finished (two threads; ISA-L's inflate and hashlib release the GIL), which also gives the
  files' SHA-256 for the manifest, so the folder is not read a second time; and relstep's own
  COPY of each redacted table, hashed while it is written.  Nothing reads the database twice.
* after a restore, by ``COPY table (columns) TO STDOUT`` of each table of the restored database
  (run by ``psql``, read in large blocks): a freshly loaded heap returns its rows in the order
  they were loaded, which is the dump's.

Both sides run with the settings that decide COPY's text: ``pg_dump`` sets DateStyle ISO,
IntervalStyle postgres, extra_float_digits 3, synchronize_seqscans off (so a scan starts at the
first block) and row_security off itself; relstep gives it (``dump_environment``) the same
TimeZone (UTC), client_encoding (UTF8) and bytea_output (hex); the read back's psql gets all of
them (``PGOPTIONS``), relstep's own COPY of redacted tables too (``copy_settings``).

``CopyDigest`` takes COPY bytes from any source (``feed(table, chunk)``), so another way of
writing the dump (a ``pg_dump -Fc`` stream, say) digests its data the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import queue
import re
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
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

METHOD = "copy"          # the digest's prefix: how it was computed (fingerprint.content_method)
TRAILER = b"\\.\n\n\n"   # pg_dump ends every table's data file with the end-of-data marker and two blank lines
THREADS = 2
CHUNK = 1 << 20

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


EMPTY = content(0, hashlib.sha256().hexdigest())   # an empty table, and a table whose rows are left out


class CopyDigest:
    """Per-table SHA-256 and line count of COPY text data, fed in chunks (one thread per table).

    ``feed`` takes rows only; ``feed_dump_data`` a table's data as pg_dump stores it (in any archive
    format): the rows, then ``TRAILER``, which must be there and is not digested."""

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

    def feed_dump_data(self, table: str, chunks: Iterable[bytes], name: str) -> None:
        """Rows and trailer of one table; DatabaseError naming ``name`` when the trailer is missing.
        Large chunks are hashed and counted in place, without a copy (this runs over the whole dump)."""
        state = self._state(table)
        held = b""
        for chunk in chunks:
            if len(chunk) > len(TRAILER):
                if held:
                    self.feed(table, held)
                end = len(chunk) - len(TRAILER)
                state.hash.update(memoryview(chunk)[:end])
                state.rows += chunk.count(b"\n", 0, end)
                held = chunk[end:]
            elif chunk:
                data = held + chunk
                cut = max(len(data) - len(TRAILER), 0)
                if cut:
                    self.feed(table, data[:cut])
                held = data[cut:]
        if held != TRAILER:
            raise DatabaseError(f"{name} does not end like a pg_dump data file")

    def result(self, table: str) -> TableContent:
        state = self._tables.get(table)
        return EMPTY if state is None else content(state.rows, state.hash.hexdigest())

    def results(self, tables: Iterable[str]) -> dict[str, TableContent]:
        """Every table of ``tables``: those never fed (no rows, or rows left out) are empty."""
        return {table: self.result(table) for table in tables}


# --------------------------------------------------------------------------- pg_dump's files


def _inflated(path: Path, raw_hash: Any) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file (every member), hashing its raw bytes on the way."""
    inflate = _zlib.decompressobj(31)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for chunk in fsutil.read_chunks(fd):
            raw_hash.update(chunk)
            data: bytes | memoryview = chunk  # consumed at once (only unused_data is kept, as a copy)
            while data:
                yield inflate.decompress(data)
                data = inflate.unused_data if inflate.eof else b""
                if data:  # a second gzip member
                    inflate = _zlib.decompressobj(31)
        if not inflate.eof:
            raise EOFError("the compressed stream ends early")
    finally:
        os.close(fd)


_DONE = object()


def _from_another_thread(chunks: Iterator[bytes], depth: int = 2) -> Iterator[bytes]:
    """The items of ``chunks``, produced by a thread of their own meanwhile: one file is inflated
    there while this thread hashes and counts it (the largest table's file is the backup's tail;
    split in two stages it ends about twice as soon).  ``depth`` bounds the memory held between."""
    handed: queue.Queue[Any] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for chunk in chunks:
                handed.put(chunk)
            handed.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            handed.put(exc)

    producer = threading.Thread(target=produce, name="relstep-inflate", daemon=True)
    producer.start()
    while (item := handed.get()) is not _DONE:
        if isinstance(item, BaseException):
            raise item
        yield item
    producer.join()


def _digest_file(path: Path, table: str | None, digest: CopyDigest) -> dict[str, Any]:
    raw = hashlib.sha256()
    try:
        chunks = _inflated(path, raw) if table is None else _from_another_thread(_inflated(path, raw))
        if table is None:  # data of a table relstep does not digest: only hashed for the manifest
            for _ in chunks:
                pass
        else:
            digest.feed_dump_data(table, chunks, str(path))
    except GZIP_READ_ERRORS as exc:
        raise DatabaseError(f"{path} is corrupt or truncated: {exc}") from exc
    return {"size": path.stat().st_size, "sha256": raw.hexdigest()}


def data_files(listing: str) -> dict[str, int]:
    """``pg_restore --list`` output -> {data file name: the table's OID}."""
    return {f"{dump_id}.dat.gz": int(oid) for dump_id, oid in _TABLE_DATA.findall(listing)}


def digest_dump_dir(dump_dir: Path, files: Mapping[str, int], keys: Mapping[int, str],
                    digest: CopyDigest) -> Future[dict[str, dict[str, Any]]]:
    """Start digesting pg_dump's data files (``files``: name -> table OID; ``keys``: OID -> table key)
    on threads; the future gives the files' manifest entries (size, SHA-256 of the bytes on disk)."""
    pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="relstep-digest")
    # Largest first: the two threads finish together.
    names = sorted(files, key=lambda n: -(dump_dir / n).stat().st_size)
    jobs = {name: pool.submit(_digest_file, dump_dir / name, keys.get(files[name]), digest) for name in names}
    done: Future[dict[str, dict[str, Any]]] = Future()

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


def read_back(psql: str, env: Mapping[str, str],
              tables: Mapping[str, tuple[str, list[str]]]) -> dict[str, TableContent]:
    """``tables``: key -> (quoted table name, its dumped columns, in order): each table's digest, from
    ``COPY ... TO STDOUT`` run by ``psql`` (``env``: its environment, the database's libpq variables) with pg_dump's
    settings, read in 1 MiB blocks.  psql, not the driver: the driver hands COPY data over one row
    at a time, which cost 2.3 s per million rows against psql's 1.0 s."""
    env = {**dump_environment(env), "PGOPTIONS": " ".join(o for o in (env.get("PGOPTIONS", ""), _READ_OPTIONS) if o)}
    digest = CopyDigest()
    for key, (name, columns) in tables.items():
        # COPY of a table reads only its own rows (not its inheritors'), like pg_dump's.
        column_list = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        statement = f"COPY {name} ({column_list}) TO STDOUT" if columns else f"COPY {name} TO STDOUT"
        with tools.owned(tools.popen([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement], env=env)) as proc:
            out, err = proc.stdout, proc.stderr
            assert out is not None and err is not None
            while block := out.read(CHUNK):
                digest.feed(key, block)
            problem = err.read().decode("utf-8", "replace")
            if proc.wait() != 0:
                raise DatabaseError(f"cannot read table {name} back: {tools.error_line(problem)}")
    return digest.results(tables)


def made_by_dump(fingerprint: Fingerprint) -> bool:
    """Whether a recorded fingerprint's content digests are this module's (not the server-side sums
    relstep recorded before): decides how a restored database is read to compare with it."""
    return all(c.digest.startswith(f"{METHOD}:") for c in fingerprint.content.values())
