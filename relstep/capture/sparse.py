"""Copies that keep a sparse file sparse.

A plain read/write copy turns every hole of a sparse file (a VM image, a
preallocated log, a database created with ``truncate``) into real zeros on disk:
a 10 GiB file holding 4 KiB of data would cost 10 GiB in every snapshot and again
on restore.  ``SEEK_DATA``/``SEEK_HOLE`` (Linux, the BSDs, macOS) find the parts
that hold data; only those are read and written, and the holes are recreated by
writing at the right offsets and extending the file to its length.
"""

from __future__ import annotations

import errno
import os
from typing import Protocol

from relstep import fsutil

_ZEROS = bytes(fsutil.CHUNK)


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def is_sparse(st: os.stat_result) -> bool:
    """Whether the file has holes: it occupies fewer 512-byte blocks than its length needs."""
    return st.st_blocks * 512 < st.st_size


def _data_segments(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of every part of the file that holds data, in order."""
    segments = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:      # only a hole is left up to the end
                break
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                return [(0, size)]            # a filesystem that cannot say: treat it all as data
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        segments.append((start, end))
        offset = end
    return segments


def _hash_zeros(digest: _Hash | None, count: int) -> None:
    if digest is None:
        return
    view = memoryview(_ZEROS)
    while count > 0:
        step = min(count, len(_ZEROS))
        digest.update(view[:step])
        count -= step


def copy_sparse(source: int, dest: int, digest: _Hash | None = None) -> int:
    """Copy open file ``source`` into the empty open file ``dest``, holes included; returns its length.

    ``digest`` sees every byte of the file in order, the holes' zeros too, so the hash
    is the same as a plain read's.  A file that shrinks meanwhile ends where the last
    read ended: the copy and its hash always describe the same bytes.
    """
    size = os.fstat(source).st_size
    buffer = fsutil.chunk_buffer()
    written_to = 0
    for start, end in _data_segments(source, size):
        _hash_zeros(digest, start - written_to)
        position = start
        while position < end:
            n = os.preadv(source, [memoryview(buffer)[:min(len(buffer), end - position)]], position)
            if n == 0:
                break
            chunk = memoryview(buffer)[:n]
            if digest is not None:
                digest.update(chunk)
            while chunk:
                chunk = chunk[os.pwrite(dest, chunk, position + (n - len(chunk))):]
            position += n
        written_to = position
        if position < end:   # the file shrank under us
            size = position
            break
    _hash_zeros(digest, size - written_to)
    os.ftruncate(dest, size)
    return size
