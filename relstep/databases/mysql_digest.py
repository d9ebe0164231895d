"""MariaDB/MySQL content digests from the dump stream, as it is written, and the same digest of a restored table.

A table's digest is the SHA-256 of the rows of its INSERT statements exactly as the (redacting)
dump writes them: the ``(v1,v2,...),(...)`` part of every statement, joined by ``,``, without the
line breaks MariaDB's tool puts between rows (a value's own newlines are escaped), so how the
dump tool groups rows into statements and lines does not matter.  The rows come in the dump tool's
order, an InnoDB table's primary key order (or the order they were inserted, without one),
which a restore keeps.  Row counts are not read from the stream (that would mean parsing every
value): they stay the ``COUNT(*)`` the dump takes in its snapshot.

After a restore, the same dump tool with the same data options runs over the restored database
and its output goes through the same digester (``mysql.fingerprint``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from relstep.fingerprint import Fingerprint, TableContent

METHOD = "dump"
_INSERT = re.compile(rb"(?:INSERT(?: IGNORE)?|REPLACE) INTO `((?:[^`]|``)+)`")
_VALUES = b" VALUES "
_END = b";\n"


def content(rows: int, sha256_hex: str) -> TableContent:
    return TableContent(rows, f"{METHOD}:{sha256_hex[:32]}")


class InsertDigest:
    """Feed it the dump's lines (after redaction); it digests each table's rows."""

    def __init__(self) -> None:
        self._hashes: dict[str, hashlib._Hash] = {}
        self._current: hashlib._Hash | None = None   # inside a statement that goes on past its line
        self._in_routine = False

    def feed(self, line: bytes) -> None:
        if self._current is not None:
            self._end_or_continue(self._current, line)
            return
        if line.startswith(b"DELIMITER "):
            # Routine and trigger bodies (between DELIMITER ;; and DELIMITER ;) are code, not rows.
            self._in_routine = line.split() != [b"DELIMITER", b";"]
            return
        if self._in_routine or not line.startswith((b"INSERT", b"REPLACE")):
            return
        match = _INSERT.match(line)
        start = line.find(_VALUES, match.end()) if match else -1
        if match is None or start < 0:
            return  # not a row statement the dump tool writes; the filter has judged it already
        table = match.group(1).replace(b"``", b"`").decode("utf-8", "surrogateescape")
        digest = self._hashes.get(table)
        if digest is None:
            digest = self._hashes[table] = hashlib.sha256()
        else:
            digest.update(b",")
        self._end_or_continue(digest, memoryview(line)[start + len(_VALUES):])

    def _end_or_continue(self, digest: hashlib._Hash, rows: bytes | memoryview) -> None:
        if bytes(rows[-len(_END):]) == _END:
            digest.update(rows[: -len(_END)])
            self._current = None
        else:  # the statement goes on: MariaDB's tool writes one row a line
            digest.update(rows[:-1] if bytes(rows[-1:]) == b"\n" else rows)
            self._current = digest

    def results(self, counts: Mapping[str, int]) -> dict[str, TableContent]:
        """Every table of ``counts`` (its rows in the dump) with its digest; a table without INSERTs is empty."""
        empty = hashlib.sha256().hexdigest()
        return {table: content(rows, self._hashes[table].hexdigest() if table in self._hashes else empty)
                for table, rows in counts.items()}


def digest_lines(lines: Iterable[bytes], counts: Mapping[str, int]) -> dict[str, TableContent]:
    digest = InsertDigest()
    for line in lines:
        digest.feed(line)
    return digest.results(counts)


def made_by_dump(fingerprint: Fingerprint) -> bool:
    """Whether a recorded fingerprint's content digests are this module's (not the server-side sums
    of MD5s relstep recorded before): decides how a restored database is read to compare with it."""
    return all(c.digest.startswith(f"{METHOD}:") for c in fingerprint.content.values())
