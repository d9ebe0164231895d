"""PostgreSQL content digests come from the dump's own bytes, and a restored table re-read gives them again.

Real server, real pg_dump/pg_restore; the digests are checked against the very files the dump wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from relstep import codec
from relstep import fingerprint as fp
from relstep.databases import pg_digest, pg_fingerprint, postgres
from relstep.databases.base import DatabaseError, DumpPlan
from relstep.databases.pg_digest import gzip_module
from tests.databases.fingerprint_support import execute


def _table_files(dump_dir: Path) -> dict[str, bytes]:
    """{table name: its COPY rows} read from pg_dump's files with the stock tools' view of the TOC."""
    listing = postgres.tools.run([postgres.PG_RESTORE.require(), "--list", str(dump_dir)]).stdout
    found = {}
    for dump_id, name in re.findall(r"^(\d+); 0 \d+ TABLE DATA \S+ (\S+) ", listing, re.MULTILINE):
        with gzip_module.open(dump_dir / f"{dump_id}.dat.gz", "rb") as data:
            found[name] = data.read()
    return found


def _sha(rows: bytes) -> str:
    return "copy:" + hashlib.sha256(rows).hexdigest()[:32]


def test_each_digest_is_the_sha256_of_the_tables_rows_as_the_dump_holds_them(pg_url: str, tmp_path: Path) -> None:
    execute(pg_url, "CREATE TABLE t (id int PRIMARY KEY, note text, at timestamptz, x float8, b bytea)",
            r"INSERT INTO t VALUES (1, E'tab\there\nnewline \\ backslash', '2026-01-02 03:04:05+02', 0.1, '\x00ff'), "
            "(2, NULL, NULL, 1e300, NULL)",
            "CREATE TABLE u (id int PRIMARY KEY, password text NOT NULL, note text)",
            "INSERT INTO u VALUES (1, 'hunter2', 'a'), (2, 'secret', NULL)",
            "CREATE TABLE nothing (id int)")

    info = postgres.dump(pg_url, tmp_path, DumpPlan(redact=("u.password",)))

    files = _table_files(tmp_path / "pg_dump")
    assert files["t"].endswith(b"\\.\n\n\n")
    rows_t = files["t"].removesuffix(b"\\.\n\n\n")
    assert info.fingerprint.content["t"] == fp.TableContent(2, _sha(rows_t))
    assert info.fingerprint.content["nothing"] == fp.TableContent(0, _sha(b""))
    # The redacted table: the digest of relstep's own COPY file, redacted values included.
    index = json.loads((tmp_path / "redacted.json").read_text())["tables"]
    assert [(e["table"], e["encoding"]) for e in index] == [("u", "UTF8")]
    redacted = b"".join(codec.read_chunks(tmp_path / index[0]["file"], compressed=True))
    assert redacted == b"1\t\ta\n2\t\t\\N\n"
    assert info.fingerprint.content["u"] == fp.TableContent(2, _sha(redacted))
    assert info.row_counts == {"t": 2, "u": 2, "nothing": 0}
    # The data files' manifest entries were taken while digesting them: they are the files' own.
    for name in (p.name for p in (tmp_path / "pg_dump").glob("*.dat.gz")):
        entry = info.hashes[f"pg_dump/{name}"]
        data = (tmp_path / "pg_dump" / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


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


def test_a_cut_data_file_fails_the_backup_naming_it(tmp_path: Path) -> None:
    """A data file without pg_dump's end-of-data trailer is no complete table: the digest refuses it."""
    path = tmp_path / "3001.dat.gz"
    with gzip_module.open(path, "wb") as out:
        out.write(b"1\tone\n2\ttw")

    with pytest.raises(DatabaseError, match=r"3001\.dat\.gz does not end like a pg_dump data file"):
        pg_digest.digest_dump_dir(tmp_path, {"3001.dat.gz": 1}, {1: "t"}, pg_digest.CopyDigest()).result()
