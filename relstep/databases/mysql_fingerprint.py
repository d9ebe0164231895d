"""MariaDB/MySQL's fingerprint: ``SHOW CREATE`` and information_schema, normalized, and every table's rows.

``read`` runs on connection A of the dump, inside the consistent-snapshot transaction whose rows the
dump tool also reads, so the content digests describe exactly the rows of the dump.  Metadata
comes from ``SHOW CREATE TABLE`` (split into the table's columns and options, each index and each
constraint, so that a missing one is named) and information_schema (views, routines, triggers,
events, grants).  Normalized: ``AUTO_INCREMENT=N`` (a value of its own) and the database's own name
where the server qualifies names with it (view bodies).  Grants on the database and its objects
live on the server, outside the dump: they are recorded where the account can read them, and
compared only when the restored database has the same name (``OUTSIDE_DUMP``).

Content: ``COUNT(*)`` and the exact sum of the first 64 bits of ``MD5`` over each row's quoted
values (``QUOTE`` tells NULL from the string 'NULL'); generated columns are left out, like the
values the dump leaves for the server to compute.  AUTO_INCREMENT counters and non-transactional
tables are read as they are at that moment, not at the snapshot's instant (as the dump reads them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from relstep.fingerprint import Fingerprint, content_of

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "mysql"
# Kinds kept outside the dump, so a restore into a database of another name cannot bring them:
# kind -> why (for the proof's note).
OUTSIDE_DUMP = {"grant": "the server keeps them under the database's name, outside the dump"}
# Of those, what a restore into a database of the snapshot's name finds there, untouched by the load.
KEPT_BY_NAME = ("grant",)

_KEY_LINE = re.compile(r"^(?:(PRIMARY)|UNIQUE|FULLTEXT|SPATIAL|VECTOR)?\s*KEY\s*(`(?:[^`]|``)*`)?")
_CONSTRAINT_LINE = re.compile(r"^CONSTRAINT\s+(`(?:[^`]|``)*`)")
_AUTO_INCREMENT = re.compile(r"\s+AUTO_INCREMENT=\d+")


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _rows(conn: Connection, sql: str, **params: Any) -> list[Any]:
    from sqlalchemy import text

    return list(conn.execute(text(sql), params).all())


def read(conn: Connection, database: str, tables: Mapping[str, Mapping[str, str] | None],
         skip_kinds: Iterable[str] = (), *, content: bool = True) -> Fingerprint:
    """The fingerprint of ``database`` as ``conn`` sees it.

    ``tables``: every base table -> {column: SQL expression written in its place} for redacted
    columns ({} when none), or None when the dump leaves its rows out (it counts as empty).
    ``skip_kinds``: parts the dump leaves out (``routine``, ``event``), so not recorded either.
    ``content=False``: the schema only (no row is read).
    """
    skip = set(skip_kinds)
    fp = Fingerprint(engine=NAME)
    for table in sorted(tables):
        _table(conn, fp, table)
    _views(conn, fp, database)
    _sequences(conn, fp, database)
    if "routine" not in skip:
        _routines(conn, fp, database)
    _triggers(conn, fp, database)
    if "event" not in skip:
        _events(conn, fp, database)
    _grants(conn, fp, database)
    if not content:
        return fp
    generated = {(t, c) for t, c in _rows(conn, "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                                                "WHERE TABLE_SCHEMA = :db AND IS_GENERATED = 'ALWAYS'", db=database)}
    columns: dict[str, list[str]] = {}
    for table, column in _rows(conn, "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
                                     "WHERE TABLE_SCHEMA = :db ORDER BY TABLE_NAME, ORDINAL_POSITION", db=database):
        if (table, column) not in generated:
            columns.setdefault(table, []).append(column)
    for table, redacted in tables.items():
        if redacted is None or not columns.get(table):
            fp.content[table] = content_of(0, 0)
            continue
        values = [f"QUOTE({redacted.get(c, _quote(c))})" for c in columns[table]]
        row = f"CONCAT_WS(',', {', '.join(values)})"
        count, total = _rows(conn, f"SELECT COUNT(*), COALESCE(SUM(CAST(CONV(LEFT(MD5({row}), 16), 16, 10) "
                                   f"AS UNSIGNED)), 0) FROM {_quote(table)}")[0]
        fp.content[table] = content_of(int(count), int(total))
    return fp


def _table(conn: Connection, fp: Fingerprint, table: str) -> None:
    create = str(_rows(conn, f"SHOW CREATE TABLE {_quote(table)}")[0][1])
    body: list[str] = []
    for raw in create.splitlines():
        line = raw.strip().rstrip(",")
        key, constraint = _KEY_LINE.match(line), _CONSTRAINT_LINE.match(line)
        if key and (key.group(1) or key.group(2)):
            fp.add("index", f"{table}.{'PRIMARY' if key.group(1) else key.group(2).strip('`')}", line)
        elif constraint:
            fp.add("constraint", f"{constraint.group(1).strip('`')} on {table}", line)
        else:
            body.append(_AUTO_INCREMENT.sub("", line))
    fp.add("table", table, body)
    counter = _rows(conn, "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
                          "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t", t=table)
    if counter and counter[0][0] is not None:
        fp.add("auto_increment", table, value=counter[0][0])


def _unqualify(text: str | None, database: str) -> str | None:
    """Drop the database's own name from server-qualified names (a restore may use another)."""
    return None if text is None else text.replace(_quote(database) + ".", "")


def _views(conn: Connection, fp: Fingerprint, database: str) -> None:
    for name, definition, check, definer, security, algorithm in _rows(
        conn, "SELECT TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, DEFINER, SECURITY_TYPE, ALGORITHM "
              "FROM information_schema.VIEWS WHERE TABLE_SCHEMA = :db", db=database):
        fp.add("view", name, _unqualify(definition, database), check, security, algorithm)
        fp.add("owner", f"view {name}", definer, value=definer)


def _sequences(conn: Connection, fp: Fingerprint, database: str) -> None:
    for (name,) in _rows(conn, "SELECT TABLE_NAME FROM information_schema.TABLES "
                               "WHERE TABLE_SCHEMA = :db AND TABLE_TYPE = 'SEQUENCE'", db=database):
        create = str(_rows(conn, f"SHOW CREATE SEQUENCE {_quote(name)}")[0][1])
        value = _rows(conn, f"SELECT next_not_cached_value FROM {_quote(name)}")[0][0]
        fp.add("sequence", name, create, value=value)


def _routines(conn: Connection, fp: Fingerprint, database: str) -> None:
    parameters: dict[tuple[str, str], list[str]] = {}
    for kind, name, mode, pname, dtd in _rows(
        conn, "SELECT ROUTINE_TYPE, SPECIFIC_NAME, PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER "
              "FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA = :db ORDER BY ORDINAL_POSITION", db=database):
        parameters.setdefault((kind, name), []).append(" ".join(str(p) for p in (mode, pname, dtd) if p))
    for kind, name, returns, body, deterministic, access, security, mode, comment, definer in _rows(
        conn, "SELECT ROUTINE_TYPE, ROUTINE_NAME, DTD_IDENTIFIER, ROUTINE_DEFINITION, IS_DETERMINISTIC, "
              "SQL_DATA_ACCESS, SECURITY_TYPE, SQL_MODE, ROUTINE_COMMENT, DEFINER FROM information_schema.ROUTINES "
              "WHERE ROUTINE_SCHEMA = :db", db=database):
        label = kind.lower()
        fp.add(label, name, parameters.get((kind, name), []), returns, body, deterministic, access, security, mode,
               comment)
        fp.add("owner", f"{label} {name}", definer, value=definer)


def _triggers(conn: Connection, fp: Fingerprint, database: str) -> None:
    for name, table, event, timing, order, statement, mode, definer in _rows(
        conn, "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER, "
              "ACTION_STATEMENT, SQL_MODE, DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = :db",
            db=database):
        fp.add("trigger", f"{name} on {table}", event, timing, order, statement, mode)
        fp.add("owner", f"trigger {name}", definer, value=definer)


def _events(conn: Connection, fp: Fingerprint, database: str) -> None:
    for name, definer, *description in _rows(
        conn, "SELECT EVENT_NAME, DEFINER, EVENT_DEFINITION, EVENT_TYPE, EXECUTE_AT, INTERVAL_VALUE, INTERVAL_FIELD, "
              "SQL_MODE, STARTS, ENDS, STATUS, ON_COMPLETION, EVENT_COMMENT FROM information_schema.EVENTS "
              "WHERE EVENT_SCHEMA = :db", db=database):
        fp.add("event", name, *description)
        fp.add("owner", f"event {name}", definer, value=definer)


def _grants(conn: Connection, fp: Fingerprint, database: str) -> None:
    """The grants on this database and its tables and columns that the account can see."""
    queries = (
        ("SELECT GRANTEE, PRIVILEGE_TYPE, IS_GRANTABLE, 'the database' FROM information_schema.SCHEMA_PRIVILEGES "
         "WHERE TABLE_SCHEMA = :db"),
        ("SELECT GRANTEE, PRIVILEGE_TYPE, IS_GRANTABLE, TABLE_NAME FROM information_schema.TABLE_PRIVILEGES "
         "WHERE TABLE_SCHEMA = :db"),
        ("SELECT GRANTEE, PRIVILEGE_TYPE, IS_GRANTABLE, CONCAT(TABLE_NAME, ' (', COLUMN_NAME, ')') "
         "FROM information_schema.COLUMN_PRIVILEGES WHERE TABLE_SCHEMA = :db"),
    )
    for query in queries:
        for grantee, privilege, grantable, target in _rows(conn, query, db=database):
            option = " WITH GRANT OPTION" if grantable == "YES" else ""
            fp.add("grant", f"{privilege}{option} on {target} to {grantee}")
