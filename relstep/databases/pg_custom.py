"""A tap on ``pg_dump --format=custom --compress=0`` as it streams: each table's CRC-32 and length.

The encrypted layout (``postgres_encrypted``) writes pg_dump's custom archive through the codec;
this parser reads the same bytes on the way (nothing is read twice) and gives, for every
``TABLE DATA`` entry, the CRC-32 and length of its COPY rows plus ``pg_digest.TRAILER``: the same
digest the plain layout takes from pg_dump's gzip trailers, so both layouts record equal values.

The format, from PostgreSQL's pg_backup_archiver.c (WriteHead/WriteToc, ReadHead/ReadToc) and
pg_backup_custom.c (_WriteExtraToc, _StartData, _CustomWriteFunc, _EndData, _StartLOs):

* header: ``PGDMP``, version major/minor/revision bytes, intSize, offSize, format (1 = custom);
  archive 1.15+ a compression-algorithm byte, before that an int compression level; seven ints
  of the creation time; strings dbname, server version, pg_dump version;
* TOC: an int count, then per entry dumpId (int), hadDumper (int), tableoid, oid, tag, desc
  (strings), section (int), defn, dropStmt, copyStmt, namespace, tablespace, tableam (1.14+)
  (strings), relkind (int, 1.16+), owner, withOids (strings), dependencies (strings until a NULL
  string), then the custom format's data state byte and offSize offset bytes;
* data blocks: a type byte (1 = table data, 3 = large objects), the dumpId int, then chunks
  (int length, bytes) until a zero length; large-object blocks hold (oid int, chunks) pairs
  until an oid of 0.  With ``--compress=0`` every COPY row is a chunk, and so is the trailer.

An int is one sign byte and intSize little-endian bytes; a string is an int length (-1: NULL) and
its bytes.  Only archive versions 1.12 to 1.16 (pg_dump 9.6 to 17) are read: anything else, or any
byte that does not fit, stops the tap with a reason (``failure``), never the dump.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"PGDMP"
_CUSTOM = 1
_BLK_DATA, _BLK_BLOBS = 1, 3
_OLDEST, _NEWEST = (1, 12), (1, 16)
_TOC_LIMIT = 1 << 28   # a table of contents larger than this is not parsed (memory), the tap stops


class _Short(Exception):
    """Not enough bytes buffered yet for the table of contents."""


class Unparsable(Exception):
    """The stream is not what this parser reads."""


@dataclass(frozen=True)
class TableData:
    """One TABLE DATA entry's rows as dumped: CRC-32 and length of its chunks (the trailer included)."""

    oid: int       # the table's OID (the entry's catalog id)
    crc: int
    length: int


class _Reader:
    """Header and TOC fields from a buffer; _Short when it runs out."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data
        self.at = 0
        self.int_size = 4

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise _Short
        out = bytes(self.data[self.at:self.at + n])
        self.at += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", "replace")


class ArchiveTap:
    """Feed it the archive's bytes in order (``feed``), then ``finish``: each dumped table's ``TableData`` by OID.

    ``feed`` never raises: a parse failure is kept in ``failure`` and later bytes are ignored."""

    def __init__(self) -> None:
        self.failure: str | None = None
        self._buf = bytearray()
        self._toc_done = False
        self._int_size = 4
        self._hdr = 5
        self._data_oids: dict[int, int] = {}   # TABLE DATA dumpId -> table OID
        self.tables: dict[int, TableData] = {}
        self._seen: set[int] = set()   # dump ids whose data block ended
        # Data-phase state: "block" (expecting a block type), "chunk" (a length), "oid" (large objects).
        self._state = "block"
        self._block = 0          # the current block's type
        self._dump_id = 0
        self._body = 0           # bytes of the current chunk still to come
        self._crc = 0
        self._length = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.failure is not None:
            return
        try:
            self._buf += chunk
            if not self._toc_done:
                self._try_toc()
            if self._toc_done:
                self._data()
        except Exception as exc:  # any surprise only stops the tap: the dump it watches must go on
            self.failure = str(exc) or type(exc).__name__
            self._buf = bytearray()

    def finish(self) -> dict[int, TableData]:
        """Each dumped table's data by OID; Unparsable when the stream did not end cleanly."""
        if self.failure is None and not (self._toc_done and self._state == "block" and not self._buf):
            self.failure = "the archive ended inside a block" if self._toc_done else "the archive ended in its header"
        if self.failure is not None:
            raise Unparsable(self.failure)
        missing = sorted(set(self._data_oids) - self._seen)
        if missing:
            raise Unparsable(f"no data block for dump id {missing[0]}")
        return dict(self.tables)

    # ------------------------------------------------------------------ header and TOC

    def _try_toc(self) -> None:
        if len(self._buf) > _TOC_LIMIT:
            raise Unparsable("table of contents too large to parse")
        reader = _Reader(self._buf)
        try:
            self._read_head_and_toc(reader)
        except _Short:
            return  # parsed again from the start once more bytes came: the TOC is small
        self._toc_done = True
        del self._buf[:reader.at]

    def _read_head_and_toc(self, r: _Reader) -> None:
        if r.take(5) != MAGIC:
            raise Unparsable("not a pg_dump custom archive")
        version = (r.byte(), r.byte())
        r.byte()  # revision
        if not _OLDEST <= version <= _NEWEST:
            raise Unparsable(f"archive version {version[0]}.{version[1]} is not one this parser reads")
        r.int_size = r.byte()
        if not 1 <= r.int_size <= 8:
            raise Unparsable(f"int size {r.int_size}")
        off_size = r.byte()
        if r.byte() != _CUSTOM:
            raise Unparsable("not the custom format")
        if version >= (1, 15):
            compression = r.byte()   # the algorithm: 0 = none
        else:
            compression = r.int()    # the zlib level: 0 = none
        if compression != 0:
            raise Unparsable("the archive is compressed")
        for _ in range(7):
            r.int()                  # creation time
        for _ in range(3):
            r.str()                  # dbname, server version, pg_dump version
        count = r.int()
        oids: dict[int, int] = {}
        for _ in range(count):
            dump_id = r.int()
            r.int()                  # hadDumper
            r.str()                  # tableoid
            oid = r.str()
            r.str()                  # tag
            desc = r.str()
            r.int()                  # section
            for _ in range(5 if version < (1, 14) else 6):
                r.str()              # defn, dropStmt, copyStmt, namespace, tablespace, (tableam)
            if version >= (1, 16):
                r.int()              # relkind
            r.str()                  # owner
            r.str()                  # withOids
            while r.str() is not None:
                pass                 # dependencies
            r.byte()                 # data state
            r.take(off_size)         # data offset (unset when streamed)
            if desc == "TABLE DATA":
                oids[dump_id] = int(oid or "0")
        self._int_size = r.int_size
        self._hdr = 1 + r.int_size
        self._data_oids = oids

    # ------------------------------------------------------------------ data blocks

    def _int_at(self, buf: bytearray, i: int) -> int:
        value = int.from_bytes(buf[i + 1:i + self._hdr], "little")
        return -value if buf[i] else value

    def _data(self) -> None:
        buf = self._buf
        end = len(buf)
        hdr = self._hdr
        i = 0
        crc, length = self._crc, self._length
        view = memoryview(buf)
        try:
            while i < end:
                if self._body:
                    take = min(self._body, end - i)
                    if self._block == _BLK_DATA:
                        crc = zlib.crc32(view[i:i + take], crc)
                        length += take
                    i += take
                    self._body -= take
                    continue
                state = self._state
                if state == "chunk":
                    if self._block == _BLK_DATA and hdr == 5:
                        i, crc, length = _whole_rows(buf, view, i, end, crc, length)
                    if end - i < hdr:
                        break
                    n = self._int_at(buf, i)
                    i += hdr
                    if n < 0:
                        raise Unparsable(f"negative chunk length in dump id {self._dump_id}")
                    if n:
                        if self._block == _BLK_DATA and i + n <= end:  # the common case: a whole row
                            crc = zlib.crc32(view[i:i + n], crc)
                            length += n
                            i += n
                        else:
                            self._body = n
                        continue
                    if self._block == _BLK_DATA:
                        self._end_table(crc, length)
                        crc = length = 0
                        self._state = "block"
                    else:
                        self._state = "oid"
                elif state == "block":
                    if end - i < 1 + hdr:
                        break
                    self._block = buf[i]
                    self._dump_id = self._int_at(buf, i + 1)
                    i += 1 + hdr
                    if self._block == _BLK_DATA:
                        self._state = "chunk"
                    elif self._block == _BLK_BLOBS:
                        self._state = "oid"
                    else:
                        raise Unparsable(f"unknown block type {self._block}")
                else:  # "oid": the next large object, or 0 for the block's end
                    if end - i < hdr:
                        break
                    oid = self._int_at(buf, i)
                    i += hdr
                    self._state = "chunk" if oid else "block"
        finally:
            view.release()
        self._crc, self._length = crc, length
        del buf[:i]

    def _end_table(self, crc: int, length: int) -> None:
        oid = self._data_oids.get(self._dump_id)
        if oid is None:
            raise Unparsable(f"data block for dump id {self._dump_id}, which is no TABLE DATA entry")
        self._seen.add(self._dump_id)
        self.tables[oid] = TableData(oid, crc, length)


_CHUNK_HEAD = struct.Struct("<BI")   # a chunk's length as pg_dump writes it with intSize 4


def _whole_rows(buf: bytearray, view: memoryview, i: int, end: int, crc: int, length: int) -> tuple[int, int, int]:
    """The hot loop (one COPY row per chunk): CRC the whole chunks from ``i`` on, stopping before a
    zero, negative or cut-off one, which the caller handles.  (position, crc, length) after them."""
    unpack, crc32 = _CHUNK_HEAD.unpack_from, zlib.crc32
    last = end - 5
    while i <= last:
        sign, n = unpack(buf, i)
        start = i + 5
        if sign or not n or start + n > end:
            break
        crc = crc32(view[start:start + n], crc)
        length += n
        i = start + n
    return i, crc, length
