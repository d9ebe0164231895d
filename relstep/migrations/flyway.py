"""Flyway: ``flyway_schema_history`` and ``V<version>__<description>.sql`` files.

A migration is named by its ``script`` and carries Flyway's own checksum (a
signed CRC32, as a decimal string), computed for files exactly as Flyway does for
SQL migrations.  Successful rows count, in ``installed_rank`` order; Flyway's
bookkeeping rows (schema creation, baseline, repair deletions) are not migrations.
A repeatable migration (``R__``) is re-run whenever it changes, so only its last
run counts.
"""

from __future__ import annotations

import re
import zlib
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from relstep.migrations import base
from relstep.migrations.base import Migration

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "flyway"
TABLE = "flyway_schema_history"
DEFAULT_PATH = "src/main/resources/db/migration"   # Spring Boot's; the Flyway CLI's is sql/
MARKERS = ("flyway.conf", "flyway.toml", "conf/flyway.conf", "src/main/resources/db/migration")
APPLY_COMMAND = "flyway migrate"  # what applies pending migrations (restore's advice)

detect = base.default_detect(TABLE, ["installed_rank", "script", "checksum", "success"])
comparable = base.all_comparable

BOOKKEEPING_TYPES = {"SCHEMA", "BASELINE", "DELETE"}
_VERSIONED = re.compile(r"^V(?P<version>[0-9]+(?:[._][0-9]+)*)__.*\.sql$")
_REPEATABLE = re.compile(r"^R__(?P<description>.*)\.sql$")
# Java's BufferedReader.readLine() ends a line at CR, LF or CRLF (unlike str.splitlines).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def checksum(path: Path) -> int:
    """Flyway's checksum of a SQL migration: CRC32 over the lines without terminators.

    Mirrors ``ChecksumCalculator``: read as UTF-8 (malformed bytes become U+FFFD,
    as Java's decoder does), BOM dropped from the first line, each line fed to one
    running CRC32 without its line break, the result cast to a signed 32-bit int.
    """
    text = path.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()   # readLine() returns no empty line after a final line break
    crc = 0
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def _truthy(value: object) -> bool:
    # PostgreSQL gives bool, MySQL tinyint, SQLite integer or text.
    return str(value).lower() in ("1", "true", "t")


def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]:
    rows = base.select_rows(
        conn, TABLE, ["version", "type", "script", "checksum", "installed_on", "success"], order_by=["installed_rank"]
    )
    found: list[Migration] = []
    for r in rows:
        script = str(r["script"])
        if not _truthy(r["success"]) or str(r["type"]).upper() in BOOKKEEPING_TYPES or script.startswith("<<"):
            continue
        if r["version"] is None:   # repeatable: this run replaces the previous one
            found = [m for m in found if m.name != script]
        cs = None if r["checksum"] is None else str(r["checksum"])
        found.append(Migration(script, cs, base.iso(r["installed_on"])))
    return found


def schema_revision(applied: list[Migration]) -> str | None:
    """The last versioned migration: repeatables re-run after it and do not move the version."""
    versioned = [m for m in applied if not _REPEATABLE.match(m.name.rpartition("/")[2])]
    return base.last_name(versioned)


def _version_key(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.split(r"[._]", version)]
    while len(parts) > 1 and parts[-1] == 0:   # Flyway: 1.0 == 1
        parts.pop()
    return tuple(parts)


def on_disk(path: Path) -> list[Migration]:
    versioned: list[tuple[tuple[int, ...], Migration]] = []
    repeatable: list[tuple[str, Migration]] = []
    for file in base.files(path, [".sql"], recursive=True):
        migration = Migration(file.relative_to(path).as_posix(), str(checksum(file)))
        if match := _VERSIONED.match(file.name):
            versioned.append((_version_key(match["version"]), migration))
        elif match := _REPEATABLE.match(file.name):
            repeatable.append((match["description"], migration))
    # Flyway applies versioned migrations by version, then repeatables by description.
    first = itemgetter(0)
    return [m for _, m in sorted(versioned, key=first)] + [m for _, m in sorted(repeatable, key=first)]
