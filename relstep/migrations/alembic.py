"""Alembic: ``alembic_version(version_num)`` and ``<script dir>/versions/*.py``.

The table holds only the head revision(s).  The applied chain is rebuilt from the
revision files (``revision`` / ``down_revision`` / ``depends_on`` read with
``ast``, never by importing the user's code): every ancestor of the database's
heads, parents first.  Without the files only the heads are known.  Alembic keeps
no checksum; see ``base`` for the file checksum relstep records instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from relstep.migrations import base
from relstep.migrations.base import Migration

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "alembic"
TABLE = "alembic_version"
DEFAULT_PATH = "alembic"   # the script directory; its versions/ folder is also accepted
MARKERS = ("alembic.ini", "alembic/env.py", "migrations/env.py")
APPLY_COMMAND = "alembic upgrade head"  # what applies pending migrations (restore's advice)

detect = base.default_detect(TABLE, ["version_num"])
schema_revision = base.last_name   # the (last) head: the chain ends with it
comparable = base.all_comparable


def _revisions(path: Path) -> tuple[dict[str, tuple[str, ...]], dict[str, Path]]:
    """Each revision's parents (down revisions and dependencies) and its file."""
    versions = path / "versions" if (path / "versions").is_dir() else path
    parents: dict[str, tuple[str, ...]] = {}
    file_of: dict[str, Path] = {}
    for file in base.files(versions, [".py"], recursive=True):
        values = base.python_assignments(file, {"revision", "down_revision", "depends_on"})
        revision = values.get("revision")
        if not isinstance(revision, str):
            continue   # not a revision file (helpers, __init__.py)
        parents[revision] = _as_tuple(values.get("down_revision")) + _as_tuple(values.get("depends_on"))
        file_of[revision] = file
    return parents, file_of


def _as_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _chain(parents: dict[str, tuple[str, ...]], file_of: dict[str, Path], heads: list[str]) -> list[Migration]:
    order = base.topological(parents, sorted(heads))
    known = [Migration(rev, base.text_checksum(file_of[rev], "#")) for rev in order]
    # A head with no file means the database is newer than the code: keep it, so
    # that compat reports it as unknown.
    return known + [Migration(rev) for rev in sorted(heads) if rev not in parents]


def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]:
    heads = [str(r["version_num"]) for r in base.select_rows(conn, TABLE, ["version_num"])]
    parents, file_of = _revisions(migrations_path) if migrations_path else ({}, {})
    return _chain(parents, file_of, heads)


def on_disk(path: Path) -> list[Migration]:
    parents, file_of = _revisions(path)
    children = {p for ps in parents.values() for p in ps}
    return _chain(parents, file_of, [rev for rev in parents if rev not in children])
