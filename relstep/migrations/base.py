"""The contract every migration-tool module fulfils, and the helpers they share.

A module (``prisma.py``, ``alembic.py``, ...) exposes::

    NAME: str                              # as written in relstep.yml ("prisma")
    TABLE: str                             # its bookkeeping table ("_prisma_migrations")
    DEFAULT_PATH: str                      # where its migrations live in a project
    MARKERS: tuple[str, ...]               # globs under the project dir that suggest the tool
    APPLY_COMMAND: str                     # the command that applies pending migrations
    def detect(tables: set[str], columns: dict[str, set[str]], project_dir: Path) -> bool
    def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]
    def on_disk(path: Path) -> list[Migration]
    def schema_revision(applied: list[Migration]) -> str | None
    def comparable(snapshot: list[Migration], app: list[Migration]) -> list[Migration]

``applied`` reads the tool's own table through the given SQLAlchemy connection
(the same point in time as the dump) and returns migrations in applied order.
``on_disk`` lists the project's migration files in the order the tool applies
them, with the same ``name`` and ``checksum`` rules as ``applied`` so the two can be
compared by ``relstep.compat``.  ``detect`` receives the table names in lower case
(MySQL may fold them; PostgreSQL keeps quoted camelCase) and each table's lower-case
column names.  ``comparable`` narrows a snapshot's migrations to those the app's
files can speak about (Django: apps whose migrations live outside the project).

Checksums follow one rule: where the tool keeps its own checksum (Prisma's SHA-256,
Flyway's CRC32) relstep uses exactly that.  Where it keeps none, ``applied``
attaches :func:`text_checksum` of the migration's file as found on disk at backup
time (``None`` when the file is not there), so a migration edited after a backup is
still noticed at restore.  That checksum ignores line endings, trailing blanks,
blank lines and whole-line comments, so reformatting or a CRLF checkout does not
make an old snapshot look incompatible.  ``None`` always means "unknown": compat
never compares it.

Trivial tools assign the shared defaults below by name (``detect =
base.default_detect(TABLE)``, ``schema_revision = base.last_name``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

Detect = Callable[[set[str], dict[str, set[str]], Path], bool]
Applied = Callable[["Connection", "Path | None"], "list[Migration]"]
OnDisk = Callable[[Path], "list[Migration]"]


@dataclass(frozen=True)
class Migration:
    name: str
    checksum: str | None = None
    applied_at: str | None = None   # ISO 8601, UTC where the tool records it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Migration:
        return cls(name=data["name"], checksum=data.get("checksum"), applied_at=data.get("applied_at"))


# ---------------------------------------------------------------- shared defaults


def default_detect(table: str, required_columns: Iterable[str] = ()) -> Detect:
    """A ``detect`` that looks for ``table`` (any case) having ``required_columns``.

    The columns tell apart tools that share a table name: Rails' and golang-migrate's
    ``schema_migrations`` differ only by golang-migrate's ``dirty`` column, and
    TypeORM's generic ``migrations`` table must not be confused with Laravel's.
    """
    wanted = table.lower()
    required = {c.lower() for c in required_columns}

    def detect(tables: set[str], columns: dict[str, set[str]], project_dir: Path) -> bool:
        return wanted in tables and required <= columns.get(wanted, set())

    return detect


def last_name(applied: list[Migration]) -> str | None:
    return applied[-1].name if applied else None


def all_comparable(snapshot: list[Migration], app: list[Migration]) -> list[Migration]:
    return snapshot


# ---------------------------------------------------------------- reading tables


def find_table(conn: Connection, name: str) -> str | None:
    """The table's real name in this database, matched case-insensitively, or None.

    MySQL with ``lower_case_table_names=1`` reports ``sequelizemeta`` for
    ``SequelizeMeta``; PostgreSQL keeps quoted camelCase.  Queries must use the
    real spelling, so look it up rather than assume it.
    """
    from sqlalchemy import inspect

    names = inspect(conn).get_table_names()
    if name in names:   # the tool's own spelling wins over a table differing only in case
        return name
    return next((real for real in names if real.lower() == name.lower()), None)


def select_rows(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    *,
    order_by: Sequence[str] = (),
    where: Any = None,
) -> list[dict[str, Any]]:
    """Rows of ``table`` (any case; missing table: no rows) as dicts keyed by ``columns``.

    Lightweight ``table()``/``column()`` constructs let SQLAlchemy quote names for
    each dialect, so camelCase tables and reserved words (``timestamp``) just work.
    ``where`` receives the table construct and returns a SQL expression.
    """
    from sqlalchemy import column, inspect, select
    from sqlalchemy import table as sa_table

    real = find_table(conn, table)
    if real is None:
        return []
    # Declare the table's real columns so that ``where`` may use any of them.
    t = sa_table(real, *(column(c["name"]) for c in inspect(conn).get_columns(real)))
    query = select(*(t.c[c] for c in columns))
    if where is not None:
        query = query.where(where(t))
    if order_by:
        query = query.order_by(*(t.c[c] for c in order_by))
    return [dict(zip(columns, row, strict=True)) for row in conn.execute(query)]


def iso(value: Any) -> str | None:
    """An applied-at value as ISO 8601: aware datetimes in UTC, naive ones as stored.

    Drivers return datetimes (PostgreSQL, MySQL) or text (SQLite); naive values are
    left without an offset because the tools disagree on the zone they use.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------- files and checksums


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def text_checksum(path: Path, comment: str | None = None) -> str:
    """SHA-256 of a migration file's meaningful text (see the module docstring).

    Lines are split on CR, LF or CRLF only, stripped of trailing blanks; blank
    lines and, when ``comment`` is given, lines starting with it are dropped.
    """
    text = path.read_bytes().decode("utf-8", errors="replace").removeprefix("\ufeff")
    kept = []
    for line in _LINE_BREAK.split(text):
        line = line.rstrip()
        if not line or (comment is not None and line.lstrip().startswith(comment)):
            continue
        kept.append(line)
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()


def files(path: Path, suffixes: Sequence[str], *, recursive: bool = False) -> list[Path]:
    """Regular files under ``path`` whose names end with one of ``suffixes``, sorted by path."""
    if not path.is_dir():
        return []
    candidates = path.rglob("*") if recursive else path.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.name.endswith(tuple(suffixes)))


def files_on_disk(
    suffixes: Sequence[str],
    *,
    comment: str | None,
    name_of: Callable[[Path], str | None] = lambda p: p.name,
    sort_key: Callable[[Migration], Any] | None = None,
) -> OnDisk:
    """An ``on_disk`` for tools whose migrations are one file each in one folder.

    ``name_of`` maps a file to the name the tool records (None: not a migration);
    files are taken in name order unless ``sort_key`` says otherwise.
    """

    def on_disk(path: Path) -> list[Migration]:
        found = []
        for file in files(path, suffixes):
            name = name_of(file)
            if name is not None:
                found.append(Migration(name=name, checksum=text_checksum(file, comment)))
        return sorted(found, key=sort_key or (lambda m: m.name))

    return on_disk


def with_disk_checksums(applied: list[Migration], disk: list[Migration]) -> list[Migration]:
    """``applied`` with each checksum taken from the on-disk migration of the same name."""
    by_name = {m.name: m.checksum for m in disk}
    return [Migration(m.name, by_name.get(m.name), m.applied_at) for m in applied]


def table_applied(
    table: str,
    *,
    name: str,
    order_by: Sequence[str],
    applied_at: str | None = None,
    on_disk: OnDisk,
    sort_key: Callable[[Migration], Any] | None = None,
) -> Applied:
    """An ``applied`` for tools whose table lists every applied migration by name.

    Checksums come from the files (``on_disk``) when a migrations path is given.
    """
    columns = [name] if applied_at is None else [name, applied_at]

    def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]:
        rows = select_rows(conn, table, columns, order_by=order_by)
        found = [Migration(str(r[name]), None, iso(r[applied_at]) if applied_at else None) for r in rows]
        if sort_key is not None:
            found.sort(key=sort_key)
        return with_disk_checksums(found, on_disk(migrations_path)) if migrations_path else found

    return applied


def numeric_key(m: Migration) -> tuple[int, str]:
    """Order numeric versions as numbers ("9" before "10"), anything else after, by text."""
    return (int(m.name), "") if m.name.isdigit() else (2**63, m.name)


def version_prefix(path: Path, suffix: str) -> str | None:
    """``20240101120000`` from ``20240101120000_create_users.rb``; None if there is no number."""
    stem = path.name.removesuffix(suffix)
    digits = stem.split("_", 1)[0]
    return str(int(digits)) if digits.isdigit() else None


# ---------------------------------------------------------------- dependency graphs


def topological(parents: Mapping[str, Sequence[str]], start: Iterable[str]) -> list[str]:
    """Every node reachable from ``start`` through ``parents``, parents before children.

    Deterministic: nodes are visited in ``start`` order and each node's parents in
    their listed order.  Iterative, because real histories run to thousands of
    revisions; parents that are not in ``parents`` (missing files) are skipped, and
    a cycle cannot loop forever.
    """
    order: list[str] = []
    done: set[str] = set()
    entered: set[str] = set()
    for root in start:
        if root in done or root not in parents:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        entered.add(root)
        while stack:
            node, index = stack[-1]
            deps = [p for p in parents[node] if p in parents]
            if index < len(deps):
                stack[-1] = (node, index + 1)
                dep = deps[index]
                if dep not in done and dep not in entered:
                    entered.add(dep)
                    stack.append((dep, 0))
            else:
                stack.pop()
                done.add(node)
                order.append(node)
    return order


def python_assignments(path: Path, names: set[str], *, in_class: str | None = None) -> dict[str, Any]:
    """Literal values assigned to ``names`` in a Python file, read without running it.

    ``ast.parse`` never executes the user's code, and ``literal_eval`` accepts
    only literals; a value that is not a literal (``swappable_dependency(...)``)
    is left out, as is any item of a list or tuple that is not one.  With
    ``in_class``, the assignments are read from that top-level class's body.
    """
    import ast

    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError):
        return {}
    body: list[ast.stmt] = tree.body
    if in_class is not None:
        body = next((n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == in_class), [])
    found: dict[str, Any] = {}
    for node in body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names:
                found[target.id] = _literal(value)
    return found


def _literal(node: Any) -> Any:
    import ast

    try:
        return ast.literal_eval(node)
    except ValueError:
        if isinstance(node, (ast.List, ast.Tuple)):
            items = []
            for element in node.elts:
                try:
                    items.append(ast.literal_eval(element))
                except ValueError:
                    continue
            return items
        return None
