"""A fake engine for the contract suite: a "database" is a JSON file of tables (lists of rows).

It is what a maintainer writes to add an engine: one module satisfying
``relstep.databases.base.Engine`` plus one ``registry.register`` line (in test_contract.py).
Its dump goes through the codec like the real engines' files.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relstep import codec
from relstep.databases.base import DatabaseError, DumpInfo, DumpPlan, Inspect, matches_table

NAME = "fakejson"
DUMP_FILE = "tables.json.zst"


def _path(url: str) -> Path:
    return Path(urlsplit(url).path)


def _tables(url: str) -> dict[str, list[list[Any]]]:
    path = _path(url)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["tables"]
    except (OSError, ValueError, KeyError) as exc:
        raise DatabaseError(f"cannot read the fake database {path}: {exc}") from exc


def dump(url: str, dest_dir: Path, plan: DumpPlan, inspect: Inspect | None = None) -> DumpInfo:
    tables = _tables(url)
    excluded = [t for t in tables if matches_table(t, plan.exclude_tables)]
    kept = {t: ([] if t in excluded else rows) for t, rows in tables.items()}
    with codec.create(dest_dir / DUMP_FILE, compress=True) as out:
        out.write(json.dumps({"tables": kept}).encode())
    assert out.result is not None
    return DumpInfo(engine=NAME, format="fakejson-zstd", files=[DUMP_FILE], hashes={DUMP_FILE: out.result.entry()},
                    row_counts={t: len(rows) for t, rows in kept.items()}, redacted={}, excluded_tables=excluded,
                    tool="fake", server_version=server_version(url))


def _read_dump(db_dir: Path) -> dict[str, Any]:
    try:
        return json.loads(b"".join(codec.read_chunks(db_dir / DUMP_FILE, compressed=True)))
    except codec.UnreadableFile as exc:
        raise DatabaseError(str(exc)) from exc
    except ValueError as exc:
        raise DatabaseError(f"{db_dir / DUMP_FILE} is not JSON: {exc}") from exc


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None = None) -> None:
    _path(url).write_text(json.dumps(_read_dump(db_dir)))


def row_counts(url: str) -> dict[str, int]:
    return {t: len(rows) for t, rows in _tables(url).items()}


def is_empty(url: str) -> bool:
    return not _tables(url)


def check_files(db_dir: Path) -> None:
    _read_dump(db_dir)


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="relstep-fake-") as tmp:
        yield f"fakejson://{tmp}/scratch.json"


def server_version(url: str) -> str:
    return "fake 1.0"


def tool_versions() -> dict[str, str]:
    return {}


def fingerprint(url: str) -> dict[str, Any] | None:
    """One digest per table over its rows in a canonical order (sorted)."""
    return {t: hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest() for t, rows in _tables(url).items()}


def write_database(path: Path, tables: dict[str, list[list[Any]]]) -> str:
    path.write_text(json.dumps({"tables": tables}))
    return f"fakejson://{path}"
