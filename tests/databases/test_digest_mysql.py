"""MariaDB content digests come from the dump stream as written; a re-dump of the restored database gives them again.

Real server, real mariadb-dump; the digests are checked against the dump file relstep wrote.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from relstep import codec
from relstep import fingerprint as fp
from relstep.databases import mysql, mysql_digest, mysql_fingerprint
from relstep.databases.base import DatabaseError, DumpPlan
from tests.databases.fingerprint_support import execute


def _rows_of(dump: bytes, table: str) -> bytes:
    """The rows of ``table``'s INSERT statements in the dump file, joined by ',' (MariaDB's tool
    writes one row a line)."""
    found = re.findall(rb"^INSERT INTO `" + table.encode() + rb"` \([^)]*\) VALUES (.*?);$", dump,
                       re.MULTILINE | re.DOTALL)
    return b",".join(found).replace(b"\n", b"")


def test_each_digest_is_of_the_rows_as_the_dump_file_holds_them(mysql_url: str, tmp_path: Path) -> None:
    execute(mysql_url,
            "CREATE TABLE u (id int PRIMARY KEY, password varchar(50) NOT NULL, note text, photo blob)",
            "INSERT INTO u VALUES (1, 'hunter2', 'it''s (a), test;', x'00ff'), (2, 'secret', NULL, NULL)",
            "CREATE TABLE kept_out (id int PRIMARY KEY)", "INSERT INTO kept_out VALUES (1)",
            "CREATE TABLE empty_one (id int)",
            "CREATE PROCEDURE fill() INSERT INTO empty_one VALUES (7)")

    info = mysql.dump(mysql_url, tmp_path, DumpPlan(redact=("u.password",), exclude_tables=("kept_out",)))

    dump = b"".join(codec.read_chunks(tmp_path / "dump.sql.zst", compressed=True))
    rows = _rows_of(dump, "u")
    assert rows == b"(1,'','it\\'s (a), test;',0x00FF),(2,'',NULL,NULL)"
    assert info.fingerprint.content["u"] == fp.TableContent(2, "dump:" + hashlib.sha256(rows).hexdigest()[:32])
    empty = fp.TableContent(0, "dump:" + hashlib.sha256(b"").hexdigest()[:32])
    assert info.fingerprint.content["kept_out"] == empty
    assert info.fingerprint.content["empty_one"] == empty  # the procedure's INSERT is code, not a row
    with mysql.scratch_database(mysql_url) as scratch:
        mysql.restore(tmp_path, scratch)
        assert fp.compare(info.fingerprint, mysql.fingerprint(scratch), mysql.FINGERPRINT_OUTSIDE_DUMP) == []
        execute(scratch, "UPDATE u SET note = 'other' WHERE id = 2")
        assert fp.compare(info.fingerprint, mysql.fingerprint(scratch), mysql.FINGERPRINT_OUTSIDE_DUMP) == [
            "table u: content differs"]


def test_how_rows_are_grouped_into_statements_lines_and_chunks_does_not_change_the_digest() -> None:
    one = b"INSERT INTO `t` (`a`) VALUES (1),(2),(3);\n"
    three = b"INSERT INTO `t` (`a`) VALUES (1),\n(2);\n-- a comment\nINSERT INTO `t` (`a`) VALUES (3);\n"
    code = (b"DELIMITER ;;\nCREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW\n"
            b"INSERT INTO `t` (`a`) VALUES (9);;\nDELIMITER ;\n")

    first = mysql_digest.digest_stream([one], {"t": 3})
    assert mysql_digest.digest_stream([three], {"t": 3}) == first
    # Cut anywhere (the stream arrives in pipe-sized chunks), with code in between: the same digest.
    stream = code + three + code
    assert all(mysql_digest.digest_stream([stream[:cut], stream[cut:]], {"t": 3}) == first
               for cut in range(len(stream) + 1))
    assert mysql_digest.digest_stream([b"INSERT INTO `t` (`a`) VALUES (1),(2),(4);\n"], {"t": 3}) != first


def test_a_snapshot_of_an_older_relstep_is_compared_by_its_own_method(mysql_url: str, tmp_path: Path) -> None:
    """Snapshots made before the dump was digested hold server-side sums of MD5s (no method prefix):
    a restore of one is read back that way, so its content is still compared."""
    execute(mysql_url, "CREATE TABLE t (id int PRIMARY KEY, note text)", "INSERT INTO t VALUES (1, 'a'), (2, NULL)")
    mysql.dump(mysql_url, tmp_path, DumpPlan())
    target = mysql._Target.from_url(mysql_url, DatabaseError)
    with mysql._connect(target, DatabaseError) as conn:
        older = mysql_fingerprint.read(conn, target.database, {"t": {}})
    assert ":" not in older.content["t"].digest and not mysql_digest.made_by_dump(older)

    with mysql.scratch_database(mysql_url) as scratch:
        mysql.restore(tmp_path, scratch)
        assert fp.compare(older, mysql.fingerprint(scratch, like=older), mysql.FINGERPRINT_OUTSIDE_DUMP) == []
        execute(scratch, "UPDATE t SET note = 'b' WHERE id = 2")
        assert fp.compare(older, mysql.fingerprint(scratch, like=older), mysql.FINGERPRINT_OUTSIDE_DUMP) == [
            "table t: content differs"]
