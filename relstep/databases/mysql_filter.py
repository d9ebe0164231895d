"""The redacting filter of MariaDB/MySQL dump streams: ``mariadb-dump`` SQL in, the same SQL out
with the values of redacted columns replaced and the rows of excluded tables left out.

The dump tool cannot leave out a column, so its output is parsed on the fly, line by line; every
line that is not an INSERT of an affected table passes through as the same bytes.  It fails
closed: a statement of a redacted table it cannot read, or an INSERT naming a column to redact
that was not planned (the schema changed meanwhile), raises :class:`DumpFormatError`, whose
message never shows row data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from relstep.databases.base import Column, DatabaseError, columns_to_redact

# One SQL value as mariadb-dump writes it: a quoted string (backslash escapes, as the
# tool always sets sql_mode='' for itself; '' for a quote is accepted too), a bare token
# (NULL, 12, -1.5e3, 0x0A), or a prefixed string (b'101', _binary '...').  Possessive
# quantifiers: no backtracking, even on huge rows.
_VALUE = re.compile(rb"(?:'(?:[^'\\]++|\\.|'')*+'|[^',()]++)++", re.DOTALL)
_SPACE = re.compile(rb"[ \t\r\n]*")
# Column names are quoted, except the history columns ``--dump-history`` appends (row_start, row_end).
_IDENT = re.compile(rb"`((?:[^`]|``)+)`|([A-Za-z_][A-Za-z0-9_$]*)")
_INSERT_TABLE = re.compile(rb"(?:INSERT(?: IGNORE)?|REPLACE) INTO `((?:[^`]|``)+)`")
_COLUMN_LIST = re.compile(rb" \(((?:(?:`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_$]*)(?:, )?)+)\) VALUES ")
_NO_COLUMN_LIST = re.compile(rb" VALUES ")


def _skip_space(line: bytes, pos: int) -> int:
    match = _SPACE.match(line, pos)
    return match.end() if match else pos


def _unquote(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "surrogateescape")


class DumpFormatError(DatabaseError):
    """The dump stream is not what the filter can safely rewrite (it never shows row data)."""


@functools.lru_cache(maxsize=64)
def _row_pattern(width: int) -> re.Pattern[bytes]:
    """A whole row of ``width`` values as one regex: one match per row instead of one per value."""
    value = b"(" + _VALUE.pattern + b")"
    return re.compile(rb"\(" + b",".join([value] * width) + rb"\)", re.DOTALL)


def parse_row(line: bytes, pos: int) -> tuple[list[tuple[int, int]], int]:
    """Parse one ``(v1,v2,...)`` row starting at ``line[pos] == '('``.

    Returns the (start, end) span of every value and the position after ``)``.
    A row must end on its line: the dump tool escapes newlines inside values.
    """
    if line[pos : pos + 1] != b"(":
        raise DumpFormatError(f"expected '(' at byte {pos}")
    spans: list[tuple[int, int]] = []
    pos += 1
    while True:
        match = _VALUE.match(line, pos)
        if match is None:
            raise DumpFormatError(f"unreadable value at byte {pos}")
        spans.append((pos, match.end()))
        pos = match.end()
        delimiter = line[pos : pos + 1]
        if delimiter == b")":
            return spans, pos + 1
        if delimiter != b",":
            raise DumpFormatError(f"expected ',' or ')' at byte {pos}")
        pos += 1


class _InsertRewriter:
    """Follows one INSERT statement across lines, replacing values at given positions.

    ``replacements`` maps a column position to the literal written instead;
    ``None`` drops the statement's rows altogether (an excluded table).
    """

    def __init__(self, width: int | None, replacements: Mapping[int, bytes] | None) -> None:
        self.width = width
        self.drop = replacements is None
        self.replacements = sorted((replacements or {}).items())  # spliced left to right
        self.pattern = _row_pattern(width) if width and self.replacements else None
        self.expect_row = True
        self.done = False

    def _spans(self, line: bytes, pos: int) -> tuple[list[tuple[int, int]], int]:
        """Spans of the values to replace, in order, and the position after the row."""
        match = self.pattern.match(line, pos) if self.pattern else None
        if match is not None:
            return [match.span(index + 1) for index, _ in self.replacements], match.end()
        # Slow path: rows of unknown width (dropped tables), or an exact reason for a bad row.
        spans, end = parse_row(line, pos)
        if self.width is not None and len(spans) != self.width:
            raise DumpFormatError(f"a row has {len(spans)} values for {self.width} columns")
        return [spans[index] for index, _ in self.replacements], end

    def feed(self, line: bytes, pos: int = 0) -> bytes:
        pieces: list[bytes] = []
        copied = 0
        end = len(line)
        while not self.done:
            pos = _skip_space(line, pos)
            if pos == end:
                break  # the statement continues on the next line
            if self.expect_row:
                spans, pos = self._spans(line, pos)
                for (start, stop), (_, literal) in zip(spans, self.replacements, strict=True):
                    pieces += (line[copied:start], literal)
                    copied = stop
                self.expect_row = False
            elif line[pos : pos + 1] == b",":
                pos, self.expect_row = pos + 1, True
            elif line[pos : pos + 1] == b";" and not line[pos + 1 :].strip():
                self.done = True
            else:
                raise DumpFormatError(f"expected ',' or ';' after a row at byte {pos}")
        if self.drop:
            return b""
        pieces.append(line[copied:])
        return b"".join(pieces)


class DumpFilter:
    """Rewrites a mariadb-dump SQL stream line by line.

    ``redact`` maps a table to ``{column: SQL literal}``: in that table's INSERT
    statements each such column's values become the literal (NULL or '').
    ``drop_rows_of`` names tables whose INSERT statements are left out entirely.
    Every other line passes through as the same bytes.  Stored routines and triggers
    (between ``DELIMITER ;;`` and ``DELIMITER ;``) are code, never row data.

    ``redact_patterns`` guards against a schema that changed after ``redact`` was
    planned: an INSERT naming a column that matches a pattern but is not planned
    (a table or column created meanwhile) stops the dump instead of leaking it.
    """

    def __init__(
        self,
        redact: Mapping[str, Mapping[str, bytes]],
        drop_rows_of: Iterable[str] = (),
        *,
        redact_patterns: Iterable[str] = (),
    ) -> None:
        self.redact = {table: {c.lower(): v for c, v in cols.items()} for table, cols in redact.items() if cols}
        self.drop = set(drop_rows_of)
        self.patterns = tuple(redact_patterns)
        self._insert: _InsertRewriter | None = None
        self._table = ""
        self._in_routine = False

    @property
    def active(self) -> bool:
        """False when every line would pass through unchanged (nothing to rewrite or to guard)."""
        return bool(self.redact or self.drop or self.patterns)

    def feed(self, line: bytes) -> bytes:
        if self._insert is not None:
            return self._continue(line, 0)
        if line.startswith(b"DELIMITER "):
            self._in_routine = line.split() != [b"DELIMITER", b";"]
            return line
        if self._in_routine or not line.startswith((b"INSERT", b"REPLACE")):
            return line
        return self._start(line)

    def close(self) -> None:
        if self._insert is not None:
            raise DumpFormatError(f"the dump ended inside an INSERT statement of table `{self._table}`")

    def _start(self, line: bytes) -> bytes:
        match = _INSERT_TABLE.match(line)
        if match is None:
            # Unreadable table name: it might be a redacted table, so never pass it on.
            raise DumpFormatError("cannot read the table name of an INSERT statement in the dump")
        table = _unquote(match.group(1))
        columns = _COLUMN_LIST.match(line, match.end())
        if table in self.drop:
            values = columns or _NO_COLUMN_LIST.match(line, match.end())
            if values is None:
                raise DumpFormatError(f"cannot read an INSERT statement of table `{table}`")
            return self._begin(table, _InsertRewriter(None, None), line, values.end())
        if table not in self.redact and not self.patterns:
            return line
        if columns is None:
            raise DumpFormatError(f"cannot read the column list of an INSERT statement of table `{table}`")
        names = [_unquote(quoted or bare).lower() for quoted, bare in _IDENT.findall(columns.group(1))]
        self._check_planned(table, names)
        if table not in self.redact:
            return line
        wanted = self.redact[table]
        rewriter = _InsertRewriter(len(names), {i: wanted[name] for i, name in enumerate(names) if name in wanted})
        return self._begin(table, rewriter, line, columns.end())

    def _check_planned(self, table: str, names: list[str]) -> None:
        matching = columns_to_redact({table: [Column(name, True) for name in names]}, self.patterns)
        unplanned = sorted({c.name for c in matching.get(table, [])} - set(self.redact.get(table, {})))
        if unplanned:
            raise DumpFormatError(
                f"table `{table}` gained columns to redact during the dump ({', '.join(unplanned)}); "
                "stopped so that they are not written, run the backup again"
            )

    def _begin(self, table: str, rewriter: _InsertRewriter, line: bytes, pos: int) -> bytes:
        self._table, self._insert = table, rewriter
        return self._continue(line, pos)

    def _continue(self, line: bytes, pos: int) -> bytes:
        assert self._insert is not None
        try:
            out = self._insert.feed(line, pos)
        except DumpFormatError as exc:
            # The message names the table and a byte offset, never the line's content.
            raise DumpFormatError(
                f"cannot parse the dump's INSERT statement of table `{self._table}` ({exc}); "
                "stopped so that no redacted value is written"
            ) from None
        if self._insert.done:
            self._insert = None
        return out
