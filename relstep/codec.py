"""The snapshot-file codec: the one way relstep writes a file into a snapshot and reads it back.

Writing (:func:`create`) is a pipeline of stages, each a writer feeding the next::

    your bytes -> [zstd compress] -> [encrypt: the place for age, issue 16] -> hash + count -> private file

* the file is created with ``O_EXCL`` and mode 0600 whatever the umask: it holds production
  data, and nothing may already stand at its name (a symlink planted there is refused, not followed);
* data is written as it comes, never held whole;
* the SHA-256 and size are of the bytes that reach the disk, computed while they are written, so
  the manifest's checksum comes from here (:attr:`Written.sha256`), not from reading the file again;
* a file whose writing fails is removed: no half-written file stays behind.

Reading (:func:`read_chunks`) runs the same stages backwards and is where every zstd file is
checked: a corrupt frame, a stream that ends early (zstd's stream readers end quietly on a cut-off
frame, so a decompression object, which knows where the frame ends, is used), bytes after the
frame, or fewer bytes than were written are each one :class:`UnreadableFile` naming the file.
Memory: compressed input is fed :data:`READ_SIZE` bytes at a time, so what is held at once is what
4 KiB of zstd expands to (a few hundred KiB for a dump; a crafted run-length file could expand
further), handed on in pieces of at most :data:`CHUNK`.

Files a tool writes itself (PostgreSQL's directory-format dump) cannot pass through the writer; they are
hashed with :func:`hash_files` once the tool has finished, which reads each file once.

Encryption at rest is a change to this module and to config only: a stage between compression
and hashing in :func:`create`, its inverse in :func:`read_chunks`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

from relstep import fsutil

ZSTD_LEVEL = 3
READ_SIZE = 1 << 12     # compressed bytes fed at once: bounds what one step can expand to
CHUNK = 1 << 18         # largest piece of content handed to a reader
HASH_THREADS = 2        # hashlib releases the GIL on large buffers: two files at once use two cores


class UnreadableFile(Exception):
    """A snapshot file cannot be read back as written (missing, corrupt, truncated); one line."""


@dataclass(frozen=True)
class Written:
    """What was written: on-disk size and SHA-256 (the manifest's entry) and the content's size."""

    path: Path
    size: int
    sha256: str
    content_size: int

    def entry(self) -> dict[str, Any]:
        """The manifest's ``files`` entry for this file."""
        return {"size": self.size, "sha256": self.sha256}


def create_private(path: Path | str) -> int:
    """A new file only its owner can read or write (0600, O_EXCL); returns its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, fsutil.PRIVATE_FILE)


class _HashingSink:
    """The last stage: counts, hashes and writes what reaches the disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        fsutil.write_all(self.fd, data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """zstandard's stream writer flushes its sink; writes already went to the descriptor."""


class Writer:
    """A snapshot file being written through the codec's stages (use :func:`create`)."""

    def __init__(self, path: Path, *, compress: bool, level: int, threads: int) -> None:
        self.path = path
        self.result: Written | None = None
        self._content = 0
        self._sink = _HashingSink(create_private(path))
        self._top: Any = self._sink
        # [encrypt]: an encrypting stage wraps self._sink here, before compression is put on top.
        if compress:
            import zstandard

            compressor = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=threads)
            # The sink has the only method a stream writer calls (write), not the whole IO interface.
            sink = cast("IO[bytes]", self._sink)
            self._top = compressor.stream_writer(sink, closefd=False, write_return_read=True)

    def write(self, data: bytes | memoryview) -> None:
        self._content += len(data)
        self._top.write(data)

    def close(self) -> Written:
        """Finish every stage and the file; the result is also kept as :attr:`result`."""
        try:
            if self._top is not self._sink:
                self._top.close()  # ends the zstd frame (closefd=False: the descriptor stays open)
        finally:
            os.close(self._sink.fd)
        self.result = Written(self.path, self._sink.size, self._sink.digest.hexdigest(), self._content)
        return self.result

    def abort(self) -> None:
        """Close and remove the file: a file that was not written completely never stays."""
        try:
            os.close(self._sink.fd)
        except OSError:
            pass
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def create(path: Path | str, *, compress: bool = False, level: int = ZSTD_LEVEL, threads: int = 0) -> Writer:
    """Start writing a new private snapshot file; ``with create(p) as out: out.write(...)``, then
    ``out.result`` holds its size and SHA-256.  ``threads=-1``: zstd on every core (large dumps)."""
    return Writer(Path(path), compress=compress, level=level, threads=threads)


def write_bytes(path: Path | str, data: bytes, *, compress: bool = False) -> Written:
    """A whole small file (a manifest, an index) through the codec."""
    with create(path, compress=compress) as out:
        out.write(data)
    assert out.result is not None
    return out.result


def read_chunks(path: Path | str, *, compressed: bool = False, expected_size: int | None = None) -> Iterator[bytes]:
    """The content of a snapshot file, chunk by chunk, checked as it is read.

    ``expected_size``: the content size recorded when it was written (:attr:`Written.content_size`),
    checked at the end.  Raises UnreadableFile naming the file.
    """
    total = 0
    try:
        with open(path, "rb") as raw:
            # [decrypt]: the encrypting stage's inverse goes here, under decompression.
            chunks = _decompressed(raw, path) if compressed else iter(lambda: raw.read(READ_SIZE), b"")
            for chunk in chunks:
                total += len(chunk)
                yield chunk
    except OSError as exc:
        raise UnreadableFile(f"{path} is unreadable: {exc.strerror or exc}") from exc
    if expected_size is not None and total != expected_size:
        raise UnreadableFile(f"{path} is truncated: it holds {total} of {expected_size} bytes")


def _decompressed(raw: Any, path: Path | str) -> Iterator[bytes]:
    import zstandard

    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        while block := raw.read(READ_SIZE):
            if decompressor.eof:
                raise UnreadableFile(f"{path} is corrupt: bytes follow the end of its zstd stream")
            out = decompressor.decompress(block)
            for start in range(0, len(out), CHUNK):
                yield out[start:start + CHUNK]
    except zstandard.ZstdError as exc:
        raise UnreadableFile(f"{path} is corrupt: {exc}") from exc
    if not decompressor.eof:
        raise UnreadableFile(f"{path} is truncated: its zstd stream ends early")
    if decompressor.unused_data:
        raise UnreadableFile(f"{path} is corrupt: bytes follow the end of its zstd stream")


def drain(chunks: Iterable[bytes]) -> None:
    """Read a file to its end (its checks run as it is read)."""
    for _ in chunks:
        pass


def hash_files(root: Path, relative: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{path: manifest entry}`` for files under ``root`` that a tool wrote, each read once."""
    paths = list(relative)
    with ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="relstep-hash") as pool:
        digests = pool.map(lambda rel: fsutil.sha256_file(root / rel), paths)
        return {rel: {"size": size, "sha256": sha} for rel, (size, sha) in zip(paths, digests, strict=True)}
