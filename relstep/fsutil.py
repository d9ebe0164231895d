"""Small filesystem helpers that keep snapshots private and durable."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
CHUNK = 1024 * 1024


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def make_private_dir(path: Path) -> None:
    """mkdir with 0700 regardless of the caller's umask (chmod, because mkdir's mode is masked)."""
    path.mkdir(mode=PRIVATE_DIR, parents=False, exist_ok=False)
    os.chmod(path, PRIVATE_DIR)


def privatize_tree(root: Path) -> None:
    """Dirs 0700, files 0600, under root (tools like pg_dump pick their own modes)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, PRIVATE_DIR)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, PRIVATE_FILE)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True) if os.name == "posix" else None


def sync_filesystem_of(path: Path) -> None:
    """Flush everything written under path to disk.

    One syncfs(2) for the filesystem beats an fsync per file when a snapshot holds
    thousands of code files; where syncfs is unavailable, fsync each file and dir.
    """
    syncfs = getattr(_libc, "syncfs", None) if _libc is not None else None
    if syncfs is not None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            fd = os.open(full, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total
