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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from relstep.fingerprint import Fingerprint, TableContent

METHOD = "dump"
# Where rows start (an INSERT's VALUES) or code starts (DELIMITER ;; before a routine or trigger
# body, whose INSERTs are code, not rows), at the start of a line.
_START = re.compile(rb"^(?:(?:INSERT(?: IGNORE)?|REPLACE) INTO `((?:[^`]|``)+)`[^\n]*? VALUES |DELIMITER ;;\n)",
                    re.MULTILINE)
_CODE_END = re.compile(rb"^DELIMITER ;\n", re.MULTILINE)
_END = b";\n"   # a statement's end: inside rows a newline is escaped, so ";" + newline ends the INSERT


def content(rows: int, sha256_hex: str) -> TableContent:
    return TableContent(rows, f"{METHOD}:{sha256_hex[:32]}")


class InsertDigest:
    """Feed it the dump's bytes (after redaction) in blocks of whole lines; it digests each table's rows.

    Works on blocks, not lines (MariaDB's tool writes one row a line: a Python call per row would
    cost more than the dump): a block is searched for statement starts, and each statement's rows
    are hashed with their line breaks taken out in one ``replace``."""

    def __init__(self) -> None:
        self._hashes: dict[str, Any] = {}
        self._current: Any = None   # the hash of a statement that goes on in the next block
        self._in_code = False       # inside DELIMITER ;; ... DELIMITER ;

    def feed(self, block: bytes) -> None:
        pos = 0
        while pos < len(block):
            if self._in_code:
                found = _CODE_END.search(block, pos)
                if found is None:
                    return
                self._in_code, pos = False, found.end()
            elif self._current is not None:
                end = block.find(_END, pos)
                rows = block[pos:] if end < 0 else block[pos:end]
                self._current.update(rows.replace(b"\n", b""))
                if end < 0:
                    return
                self._current, pos = None, end + len(_END)
            else:
                found = _START.search(block, pos)
                if found is None:
                    return
                pos = found.end()
                if found.group(1) is None:
                    self._in_code = True
                    continue
                table = found.group(1).replace(b"``", b"`").decode("utf-8", "surrogateescape")
                digest = self._hashes.get(table)
                if digest is None:
                    digest = self._hashes[table] = hashlib.sha256()
                else:
                    digest.update(b",")  # rows of the next statement go on the same list
                self._current = digest

    def results(self, counts: Mapping[str, int]) -> dict[str, TableContent]:
        """Every table of ``counts`` (its rows in the dump) with its digest; a table without INSERTs is empty."""
        empty = hashlib.sha256().hexdigest()
        return {table: content(rows, self._hashes[table].hexdigest() if table in self._hashes else empty)
                for table, rows in counts.items()}


def whole_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Blocks of whole lines from arbitrary chunks (the last line may lack its newline)."""
    held = b""
    for chunk in chunks:
        data = held + chunk
        cut = data.rfind(b"\n") + 1
        held = data[cut:]
        if cut:
            yield data[:cut]
    if held:
        yield held


def digest_stream(chunks: Iterable[bytes], counts: Mapping[str, int]) -> dict[str, TableContent]:
    digest = InsertDigest()
    for block in whole_lines(chunks):
        digest.feed(block)
    return digest.results(counts)


def made_by_dump(fingerprint: Fingerprint) -> bool:
    """Whether a recorded fingerprint's content digests are this module's (not the server-side sums
    of MD5s relstep recorded before): decides how a restored database is read to compare with it."""
    return all(c.digest.startswith(f"{METHOD}:") for c in fingerprint.content.values())
