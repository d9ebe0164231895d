"""A byte scan for secrets and redacted values, for any test that must prove "this value is nowhere".

    from tests.secret_scan import Scan
    scan = Scan(["hunter2-planted", "pw-secret-1"])
    scan.add_tree("snapshot", snapshot_path)       # every file, with compressed streams and archives opened
    scan.add("stderr", ran.err)
    assert scan.leaks() == []                       # [(secret, where, encoding), ...]

Every file is searched as it is on disk and, recursively, as what it holds: zstd frames and gzip
members (by magic number, whatever the file's name), tar and zip members, and PostgreSQL custom-format
archives (rendered to SQL by the real ``pg_restore``: their data blocks are zlib streams).  Each
secret is looked for in the forms it may be written in: as UTF-8, percent-encoded (URLs), JSON-escaped,
and UTF-16 (little-endian, what some tools and Windows files hold).
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import zstandard

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
PG_CUSTOM_MAGIC = b"PGDMP"
# The archive header: magic, 3 version bytes, int and offset sizes, then the format (1 custom,
# 3 directory: a directory's toc.dat holds its DDL in clear, its data in .dat.gz files opened here).
PG_FORMAT_OFFSET = 10
PG_CUSTOM_FORMAT = b"\x01"
#: Archives nested deeper than this are not opened (a zip bomb must not hang a test).
MAX_DEPTH = 8


class Scan:
    """Named blobs of bytes, and the secrets that must not be in any of them."""

    def __init__(self, secrets: Iterable[str | bytes]) -> None:
        self.secrets = [s.decode() if isinstance(s, bytes) else s for s in secrets]
        assert all(self.secrets), "an empty secret is found everywhere; plant a real value"
        self.blobs: dict[str, bytes] = {}

    def add(self, where: str, data: str | bytes) -> None:
        self.blobs[where] = data.encode() if isinstance(data, str) else data

    def add_file(self, where: str, path: Path) -> None:
        for inner, data in opened(path.name, path.read_bytes()):
            self.blobs[f"{where}{inner}"] = data

    def add_tree(self, where: str, root: Path) -> None:
        """Every regular file under root (symlinks are not followed: they point outside)."""
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            self.add_file(f"{where}/{path.relative_to(root).as_posix()}", path)

    def leaks(self) -> list[tuple[str, str, str]]:
        """(secret, where, encoding) for every secret found in every blob."""
        found = []
        for secret in self.secrets:
            for encoding, needle in encodings(secret):
                found += [(secret, where, encoding) for where, blob in self.blobs.items() if needle in blob]
        return found

    def contains(self, value: str | bytes) -> bool:
        """Whether a value is there (to show that a scan could have found something)."""
        needle = value.encode() if isinstance(value, str) else value
        return any(needle in blob for blob in self.blobs.values())


def encodings(secret: str) -> Iterator[tuple[str, bytes]]:
    forms = {
        "utf-8": secret.encode(),
        "percent-encoded": quote(secret, safe="").encode(),
        "json-escaped": json.dumps(secret)[1:-1].encode(),
        "utf-16": secret.encode("utf-16-le"),
    }
    seen: set[bytes] = set()
    for name, needle in forms.items():
        if needle not in seen:
            seen.add(needle)
            yield name, needle


def opened(name: str, data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """("", data) and then (" > member", bytes) for everything the data holds, recursively."""
    yield "", data
    if depth >= MAX_DEPTH:
        return
    for inner_name, inner in _contents(name, data):
        for suffix, blob in opened(inner_name, inner, depth + 1):
            yield f" > {inner_name}{suffix}", blob


def _contents(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    if data.startswith(ZSTD_MAGIC):
        # stream_reader reads every frame of a multi-frame file, as zstd -d does.
        yield "zstd", zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    elif data.startswith(GZIP_MAGIC):
        yield "gzip", gzip.decompress(data)
    elif data.startswith(PG_CUSTOM_MAGIC) and data[PG_FORMAT_OFFSET:PG_FORMAT_OFFSET + 1] == PG_CUSTOM_FORMAT:
        yield "pg_restore", _pg_custom_as_sql(name, data)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield member, archive.read(member)
    elif _is_tar(data):
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield member.name, extracted.read()


def _is_tar(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data)):
            return True
    except (tarfile.TarError, EOFError, OSError):
        return False


def _pg_custom_as_sql(name: str, data: bytes) -> bytes:
    tool = shutil.which("pg_restore")
    assert tool is not None, f"{name} is a pg_dump custom archive and pg_restore is not installed to open it"
    done = subprocess.run([tool, "--file=-"], input=data, capture_output=True, check=False)
    assert done.returncode == 0, f"pg_restore cannot read {name}: {done.stderr.decode(errors='replace')}"
    return done.stdout
