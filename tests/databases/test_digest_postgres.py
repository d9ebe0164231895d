"""PostgreSQL content digests come from the dump's own bytes, and a restored table re-read gives them again.

Real server, real pg_dump/pg_restore; the digests are checked against the very files the dump wrote
(each table's: pg_dump's gzip CRC-32 and length; a redacted table's: the SHA-256 of relstep's COPY).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from pathlib import Path

import pytest

from relstep import codec
from relstep import fingerprint as fp
from relstep.databases import pg_digest, pg_fingerprint, postgres
from relstep.databases.base import DatabaseError, DumpPlan
from relstep.databases.pg_digest import gzip_module
from tests.databases.fingerprint_support import PG_CONTENT_TABLES, execute

TRAILER = b"\\.\n\n\n"


def _table_files(dump_dir: Path) -> dict[str, bytes]:
    """{table name: its data file, inflated} read from pg_dump's files with the stock tools' view of the TOC."""
    listing = postgres.tools.run([postgres.PG_RESTORE.require(), "--list", str(dump_dir)]).stdout
    found = {}
    for dump_id, name in re.findall(r"^(\d+); 0 \d+ TABLE DATA \S+ (\S+) ", listing, re.MULTILINE):
        with gzip_module.open(dump_dir / f"{dump_id}.dat.gz", "rb") as data:
            found[name] = data.read()
    return found


def _sha(rows: bytes) -> str:
    return "copy:" + hashlib.sha256(rows).hexdigest()[:32]


def _crc(inflated: bytes) -> str:
    """zlib's own CRC-32 and the length of a data file's whole uncompressed bytes."""
    return f"gzcrc:{zlib.crc32(inflated):08x}:{len(inflated)}"


def test_each_digest_is_the_crc_and_length_of_the_tables_data_file_or_the_sha256_of_its_redacted_rows(
        pg_url: str, tmp_path: Path) -> None:
    execute(pg_url, *PG_CONTENT_TABLES)

    info = postgres.dump(pg_url, tmp_path, DumpPlan(redact=("u.password",), exclude_tables=("left_out",)))

    files = _table_files(tmp_path / "pg_dump")
    assert set(files) == {"t", "big", "nothing"}
    assert files["t"].endswith(TRAILER) and files["nothing"] == TRAILER
    # The recorded CRC-32 and length are zlib's of the inflated file (rows, then pg_dump's trailer).
    assert info.fingerprint.content["t"] == fp.TableContent(2, _crc(files["t"]))
    assert info.fingerprint.content["big"] == fp.TableContent(20000, _crc(files["big"]))
    assert info.fingerprint.content["nothing"] == fp.TableContent(0, _crc(TRAILER))
    assert info.fingerprint.content["left_out"] == info.fingerprint.content["nothing"]
    # The redacted table: the SHA-256 of relstep's own COPY file, redacted values included.
    index = json.loads((tmp_path / "redacted.json").read_text())["tables"]
    assert [(e["table"], e["encoding"]) for e in index] == [("u", "UTF8")]
    redacted = b"".join(codec.read_chunks(tmp_path / index[0]["file"], compressed=True))
    assert redacted == b"1\t\ta\n2\t\t\\N\n"
    assert info.fingerprint.content["u"] == fp.TableContent(2, _sha(redacted))
    assert info.row_counts == {"t": 2, "u": 2, "big": 20000, "nothing": 0, "left_out": 0}
    # The data files' manifest entries were taken while their trailers were read: they are the files' own.
    for name in (p.name for p in (tmp_path / "pg_dump").glob("*.dat.gz")):
        entry = info.hashes[f"pg_dump/{name}"]
        data = (tmp_path / "pg_dump" / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_changed_row_a_missing_row_and_a_same_length_change_are_each_named_after_a_restore(
        pg_url: str, tmp_path: Path) -> None:
    """One fingerprint holds both methods (CRC-32 for pg_dump's tables, SHA-256 for the redacted
    one): a faithful restore proves equal, and each kind of damage is named under its table."""
    execute(pg_url, "CREATE TABLE changed (id int PRIMARY KEY, note text)",
            "INSERT INTO changed SELECT i, 'note ' || i FROM generate_series(1, 500) i",
            "CREATE TABLE missing (id int PRIMARY KEY, note text)",
            "INSERT INTO missing SELECT i, 'row ' || i FROM generate_series(1, 500) i",
            "CREATE TABLE same_length (id int PRIMARY KEY, code char(3), n int)",
            "INSERT INTO same_length SELECT i, 'abc', 1000 + i FROM generate_series(1, 500) i",
            "CREATE TABLE untouched (id int PRIMARY KEY)", "INSERT INTO untouched VALUES (1), (2)",
            "CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL, name text)",
            "INSERT INTO people VALUES (1, 'a@example.com', 'Ann'), (2, 'b@example.com', 'Bob')")
    info = postgres.dump(pg_url, tmp_path, DumpPlan(redact=("people.email",)))
    assert {k: pg_digest.method_of(c) for k, c in info.fingerprint.content.items()} == {
        "changed": "gzcrc", "missing": "gzcrc", "same_length": "gzcrc", "untouched": "gzcrc", "people": "copy"}

    with postgres.scratch_database(pg_url) as scratch:
        postgres.restore(tmp_path, scratch)
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch, like=info.fingerprint)) == []
        execute(scratch, "UPDATE changed SET note = 'edited by hand' WHERE id = 250",
                "DELETE FROM missing WHERE id = 17",
                # One byte of the last row: same length, same rows, same order (the new version stays last).
                "UPDATE same_length SET code = 'abd' WHERE id = 500",
                "UPDATE people SET name = 'Bo' WHERE id = 2")
        found = postgres.fingerprint(scratch, like=info.fingerprint)
        recorded = info.fingerprint.content["same_length"].digest.split(":")
        assert found.content["same_length"].digest.split(":")[2] == recorded[2]   # only the CRC tells
        assert fp.compare(info.fingerprint, found) == [
            "table changed: content differs",
            "table missing: content differs (499 rows, the snapshot has 500)",
            "table people: content differs",
            "table same_length: content differs",
        ]


def test_a_snapshot_digested_by_sha256_of_every_table_is_compared_by_that_method(pg_url: str, tmp_path: Path) -> None:
    """Snapshots of the digest branch before the gzip CRC recorded ``copy:`` (SHA-256 of the rows)
    for every table: a restore of one is read back the same way."""
    execute(pg_url, "CREATE TABLE docs (id int PRIMARY KEY, doc text)",
            "INSERT INTO docs SELECT i, 'doc ' || i FROM generate_series(1, 300) i")
    info = postgres.dump(pg_url, tmp_path, DumpPlan())
    rows = _table_files(tmp_path / "pg_dump")["docs"].removesuffix(TRAILER)
    older = fp.Fingerprint(engine=info.fingerprint.engine, objects=info.fingerprint.objects,
                           values=info.fingerprint.values, content={"docs": fp.TableContent(300, _sha(rows))})
    assert pg_digest.made_by_dump(older)

    with postgres.scratch_database(pg_url) as scratch:
        postgres.restore(tmp_path, scratch)
        assert postgres.fingerprint(scratch, like=older).content == older.content
        execute(scratch, "UPDATE docs SET doc = 'doc 8' WHERE id = 9")
        assert fp.compare(older, postgres.fingerprint(scratch, like=older)) == ["table docs: content differs"]


def test_a_restored_database_reads_back_equal_whatever_the_sessions_settings(pg_url: str, tmp_path: Path) -> None:
    """Settings that change COPY's text are fixed on both sides, so a source whose database
    defaults differ from the scratch database's still proves equal; one changed value is named."""
    dbname = pg_url.rsplit("/", 1)[1]
    execute(pg_url,
            f"ALTER DATABASE {dbname} SET TimeZone = 'Pacific/Chatham'",
            f"ALTER DATABASE {dbname} SET DateStyle = 'SQL, DMY'",
            f"ALTER DATABASE {dbname} SET IntervalStyle = 'sql_standard'",
            f"ALTER DATABASE {dbname} SET extra_float_digits = 0",
            f"ALTER DATABASE {dbname} SET bytea_output = 'escape'",
            "CREATE TABLE kinds (id int, at timestamptz, d date, span interval, x float8, b bytea, "
            "doubled int GENERATED ALWAYS AS (id * 2) STORED, j json, p point)",
            r"INSERT INTO kinds (id, at, d, span, x, b, j, p) VALUES "
            "(1, '2026-05-06 07:08:09.123456+00', '2026-05-06', '1 year 2 days 03:04:05', 0.1, '\\x00ff', "
            "'{\"a\": [1, 2]}', '(1,2)'), (2, NULL, NULL, NULL, 'NaN', '', NULL, NULL)",
            "CREATE TABLE measures (id int, at date) PARTITION BY RANGE (at)",
            "CREATE TABLE measures_2025 PARTITION OF measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
            "CREATE TABLE measures_2026 PARTITION OF measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
            "INSERT INTO measures SELECT i, date '2025-06-01' + i FROM generate_series(1, 400) i",
            "CREATE TABLE parent (id int)", "CREATE TABLE child (extra text) INHERITS (parent)",
            "INSERT INTO parent VALUES (1)", "INSERT INTO child VALUES (2, 'two')",
            "CREATE TABLE empty_one (id int)", "CREATE TABLE no_columns ()", "INSERT INTO no_columns DEFAULT VALUES",
            "CREATE TABLE left_out (id int)", "INSERT INTO left_out VALUES (1)")

    info = postgres.dump(pg_url, tmp_path, DumpPlan(exclude_tables=("left_out",)))

    assert {k: c.rows for k, c in info.fingerprint.content.items()} == {
        "kinds": 2, "measures_2025": 213, "measures_2026": 187, "parent": 1, "child": 1, "empty_one": 0,
        "no_columns": 1, "left_out": 0}
    assert info.fingerprint.content["left_out"] == info.fingerprint.content["empty_one"]
    with postgres.scratch_database(pg_url) as scratch:
        postgres.restore(tmp_path, scratch)
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch)) == []
        execute(scratch, "UPDATE measures SET id = -id WHERE id = 400")
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch)) == ["table measures_2026: content differs"]


def test_a_snapshot_of_an_older_relstep_is_compared_by_its_own_method(pg_url: str, tmp_path: Path) -> None:
    """Snapshots made before the dump was digested hold server-side sums of row hashes ("h:", "t:"):
    a restore of one is read back the same way, so its content is still compared."""
    execute(pg_url, "CREATE TABLE docs (id int PRIMARY KEY, doc json)", """INSERT INTO docs VALUES (1, '{"a": 1}')""",
            "CREATE TABLE plain (id int PRIMARY KEY, doc jsonb)", """INSERT INTO plain VALUES (1, '{"b": 2}')""")
    postgres.dump(pg_url, tmp_path, DumpPlan())
    target = postgres._Target.parse(pg_url)
    with postgres._connect(target, DatabaseError, postgres.READ_ONLY_SNAPSHOT) as conn:
        older = pg_fingerprint.read(conn, postgres._content_sources(postgres._list_tables(conn), [], []))
    assert {k: c.digest[:2] for k, c in older.content.items()} == {"docs": "t:", "plain": "h:"}
    assert not pg_digest.made_by_dump(older)

    with postgres.scratch_database(pg_url) as scratch:
        postgres.restore(tmp_path, scratch)
        assert fp.compare(older, postgres.fingerprint(scratch, like=older)) == []
        execute(scratch, """UPDATE docs SET doc = '{"a": 2}' WHERE id = 1""")
        assert fp.compare(older, postgres.fingerprint(scratch, like=older)) == ["table docs: content differs"]


def test_a_data_file_that_is_no_gzip_member_fails_the_backup_naming_it(tmp_path: Path) -> None:
    """The CRC is read from the file's gzip trailer: a file without a gzip header, or too short to
    be a member, is refused by name instead of yielding a CRC made of whatever its last bytes are."""
    (tmp_path / "3001.dat.gz").write_bytes(b"1\tone\n2\ttwo\n\\.\n\n\n")
    (tmp_path / "3002.dat.gz").write_bytes(gzip_module.compress(b"1\n" + TRAILER)[:12])

    for name in ("3001.dat.gz", "3002.dat.gz"):
        with pytest.raises(DatabaseError, match=rf"{name.replace('.', '[.]')} is not a pg_dump data file"):
            pg_digest.read_dump_dir(tmp_path, [name]).result()
