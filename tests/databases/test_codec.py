"""The snapshot-file codec: private O_EXCL files, hashes of the bytes on disk taken while writing,
one reader that catches every damaged zstd file, and no half-written file after a failure."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import zstandard

from relstep import codec, fsutil
from tests.helpers import sqlite_app

CONTENT = b"".join(b"row %d,'some text'\n" % i for i in range(50_000))


def _written(path: Path, compress: bool) -> codec.Written:
    with codec.create(path, compress=compress) as out:
        for start in range(0, len(CONTENT), 7_000):
            out.write(CONTENT[start:start + 7_000])
    assert out.result is not None
    return out.result


@pytest.mark.parametrize("compress", [False, True])
def test_a_file_is_private_and_its_hash_is_of_the_bytes_on_disk(tmp_path: Path, compress: bool) -> None:
    previous = os.umask(0)  # the caller's umask must not matter
    try:
        written = _written(tmp_path / "f", compress)
    finally:
        os.umask(previous)
    on_disk = (tmp_path / "f").read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o600
    assert written.entry() == {"size": len(on_disk), "sha256": hashlib.sha256(on_disk).hexdigest()}
    assert written.content_size == len(CONTENT)
    assert (len(on_disk) < len(CONTENT) // 5) is compress
    assert b"".join(codec.read_chunks(tmp_path / "f", compressed=compress, expected_size=len(CONTENT))) == CONTENT


def test_nothing_standing_at_the_name_is_overwritten_or_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "existing").write_bytes(b"keep too")
    for name in ("link", "existing"):
        with pytest.raises(FileExistsError):
            codec.write_bytes(tmp_path / name, b"new")
    assert target.read_bytes() == b"keep" and (tmp_path / "existing").read_bytes() == b"keep too"


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), codec.create(tmp_path / "half.zst", compress=True) as out:
        out.write(CONTENT)
        raise RuntimeError("the dump tool died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda raw: raw[: len(raw) // 2], "is truncated: its zstd stream ends early"),
        (lambda raw: raw[:-3], "is truncated: its zstd stream ends early"),
        (lambda raw: raw[:40] + bytes([raw[40] ^ 0xFF]) + raw[41:], "is corrupt: "),
        (lambda raw: raw + b"junk", "is corrupt: bytes follow the end of its zstd stream"),
        (lambda raw: b"not zstd at all", "is corrupt: "),
    ],
    ids=["half", "last-bytes", "flipped-byte", "trailing-bytes", "garbage"],
)
def test_the_reader_names_a_damaged_zstd_file(tmp_path: Path, damage, problem: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "dump.zst"
    _written(path, compress=True)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(codec.UnreadableFile) as caught:
        codec.drain(codec.read_chunks(path, compressed=True))
    assert str(caught.value).startswith(f"{path} {problem}")


def test_the_reader_checks_the_recorded_size(tmp_path: Path) -> None:
    path = tmp_path / "short.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(CONTENT))
    with pytest.raises(codec.UnreadableFile, match=rf"is truncated: it holds {len(CONTENT)} of {len(CONTENT) + 1}"):
        codec.drain(codec.read_chunks(path, compressed=True, expected_size=len(CONTENT) + 1))
    with pytest.raises(codec.UnreadableFile, match="is unreadable: No such file or directory"):
        codec.drain(codec.read_chunks(tmp_path / "absent"))


def test_the_manifest_takes_the_dump_hashes_from_the_codec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup reads none of the files relstep wrote itself a second time to hash them."""
    from relstep.backup import create_snapshot
    from relstep.config import load_config
    from relstep.version import Release

    app = sqlite_app(tmp_path, {"database": {"url": "sqlite:///app.db"}, "code": {}})
    reread: list[str] = []
    real = fsutil.sha256_file
    monkeypatch.setattr(fsutil, "sha256_file", lambda path: reread.append(str(path)) or real(path))
    outcome = create_snapshot(load_config(None, environ={}, cwd=app), Release("1.0.0", "release", "test"))

    files = outcome.manifest["files"]
    dump = "databases/main/database.sqlite3.zst"
    on_disk = (outcome.path / dump).read_bytes()
    assert files[dump] == {"size": len(on_disk), "sha256": hashlib.sha256(on_disk).hexdigest()}
    assert {"VERSION.txt", "migrations.json", "environment.json"} <= files.keys()
    assert reread == []
