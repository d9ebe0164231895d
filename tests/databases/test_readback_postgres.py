"""The proof's read back of a restored PostgreSQL database, as the restore overlaps it with the load.

Real server, real pg_dump/pg_restore/psql: a large table read as two halves at once gives the dump's
own CRC-32 (and still names a change in either half); pg_restore's progress lines say a table is
loaded only once its rows can be read; closing the read back ends a psql that is still waiting.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from relstep import fingerprint as fp
from relstep.databases import pg_digest, postgres
from relstep.databases.base import DumpPlan
from relstep.databases.pg_restore_watch import ENV, LoadWatch
from relstep.databases.postgres_encrypted import Archive
from tests.databases.fingerprint_support import execute

# Rows of mixed sizes: a heap whose pages end at different places, so a wrong block boundary or a
# wrong half order changes the bytes.
MIXED = ("CREATE TABLE big (id int PRIMARY KEY, note text)",
         "INSERT INTO big SELECT i, repeat(md5(i::text), 1 + i % 40) FROM generate_series(1, 6000) i")


def _scalar(url: str, sql: str) -> Any:
    from relstep.databases import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql(sql).scalar_one()
    finally:
        engine.dispose()


def _read(url: str, recorded: fp.Fingerprint) -> dict[str, fp.TableContent]:
    target = postgres._Target.parse(url)
    return pg_digest.read_back(postgres.PSQL.require(), target.tool_env(),
                               {"big": ('"public"."big"', ["id", "note"])}, recorded.content)


def test_a_large_table_read_back_as_two_halves_gives_the_dumps_crc_and_names_a_change_in_either_half(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    execute(pg_url, *MIXED)
    info = postgres.dump(pg_url, tmp_path, DumpPlan())
    monkeypatch.setattr(pg_digest, "SPLIT_ROWS", 1000)   # 6,000 rows: split
    halves: list[int] = []
    real = pg_digest.ReadBack._read_halves

    def spy(self: pg_digest.ReadBack, name: str, columns: list[str], middle: int) -> fp.TableContent:
        halves.append(middle)
        return real(self, name, columns, middle)

    monkeypatch.setattr(pg_digest.ReadBack, "_read_halves", spy)
    with postgres.scratch_database(pg_url) as scratch:
        postgres.restore(tmp_path, scratch)
        blocks = _scalar(scratch, "SELECT pg_relation_size('big') / current_setting('block_size')::int")
        assert blocks >= 20   # the table spans many pages: the halves are real halves

        assert _read(scratch, info.fingerprint) == {"big": info.fingerprint.content["big"]}
        assert halves == [blocks // 2]

        # After a change the split read still equals one stream's read of the same table (which is what
        # names a change), and both differ from the snapshot's.
        for row in (2, 5990):
            execute(scratch, f"UPDATE big SET note = upper(note) WHERE id = {row}")
            split = _read(scratch, info.fingerprint)["big"]
            monkeypatch.setattr(pg_digest, "SPLIT_ROWS", 10**9)
            assert _read(scratch, info.fingerprint)["big"] == split
            monkeypatch.setattr(pg_digest, "SPLIT_ROWS", 1000)
            assert split != info.fingerprint.content["big"] and split.rows == 6000
        assert len(halves) == 3


def test_pg_restore_says_a_table_is_loaded_only_once_its_rows_can_be_read(pg_url: str, tmp_path: Path) -> None:
    """The restore reads a table back when pg_restore --verbose says its data item is finished: the
    rows must be committed by then (each is counted from another session at that very line)."""
    execute(pg_url, *MIXED, "CREATE SCHEMA other", "CREATE TABLE other.small (id int)",
            "INSERT INTO other.small SELECT generate_series(1, 7)", "CREATE TABLE empty (id int)")
    postgres.dump(pg_url, tmp_path, DumpPlan())
    archive = Archive.of(tmp_path)
    watch = LoadWatch()
    seen: dict[str, int] = {}
    created_first: list[bool] = []

    with postgres.scratch_database(pg_url) as scratch:
        def loaded(name: str) -> None:
            created_first.append(watch.tables_created.is_set())
            table = {"big": "public.big", "small": "other.small", "empty": "public.empty"}[name]
            seen[name] = _scalar(scratch, f"SELECT count(*) FROM {table}")

        watch.on_table_loaded(loaded)
        target = postgres._Target.parse(scratch)
        args = archive.argv([postgres.PG_RESTORE.require(), "--verbose", "--exit-on-error",
                             f"--dbname={scratch.rsplit('/', 1)[1]}"], jobs=2)
        with archive.started(args, {**target.tool_env(), **ENV}, on_line=watch.line) as running:
            done = running.finish()
        assert done.returncode == 0, done.stderr

    assert seen == {"big": 6000, "small": 7, "empty": 0}
    assert created_first == [True, True, True]
    assert watch.tables_created.is_set() and watch.loading


def test_closing_the_read_back_ends_a_psql_still_waiting_for_its_table(pg_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An error or SIGINT in the restore leaves the read back's ``with`` block: no psql of it may go on
    (here one waits on a lock a test session holds, as one would behind the post-data section)."""
    from relstep.databases import create_engine

    execute(pg_url, "CREATE TABLE held (id int)", "INSERT INTO held VALUES (1)")
    engine = create_engine(pg_url)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql("BEGIN")
            holder.exec_driver_sql("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
            target = postgres._Target.parse(pg_url)
            reads = pg_digest.ReadBack(postgres.PSQL.require(), target.tool_env())
            started = threading.Event()
            running: list[Any] = []
            real = pg_digest.tools.popen

            def popen(*args: Any, **kwargs: Any) -> Any:
                proc = real(*args, **kwargs)
                running.append(proc)
                started.set()
                return proc

            monkeypatch.setattr(pg_digest.tools, "popen", popen)
            try:
                with reads:
                    reads.submit("held", '"public"."held"', ["id"])
                    # The COPY cannot finish while the lock is held: only the close can end it.
                    assert started.wait(30)
            finally:
                monkeypatch.undo()
            assert running[0].wait(timeout=30) != 0      # killed, not finished
            with pytest.raises(Exception, match="cannot read table"):
                reads.results()
            holder.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def test_the_restore_proves_content_read_back_during_the_load(pg_url: str, tmp_path: Path) -> None:
    """The staged restore hands the proof every table's digest, read as the load went (the proof then
    reads only the schema); they are the snapshot's, redacted table included."""
    execute(pg_url, *MIXED, "CREATE TABLE people (id int PRIMARY KEY, email text)",
            "INSERT INTO people VALUES (1, 'a@example.com')")
    info = postgres.dump(pg_url, tmp_path, DumpPlan(redact=("people.email",)))
    handed: list[Any] = []
    from relstep.databases.restoring import RestoreOptions

    def prove(url: str, content: Any = None) -> None:
        handed.append(content)

    with postgres.scratch_database(pg_url) as scratch:
        options = RestoreOptions(prove=prove, recorded=info.fingerprint)
        report = postgres.restore(tmp_path, scratch, None, options)
    assert report.method == "loaded into a staged database, proven, then swapped in by rename"
    assert handed == [info.fingerprint.content]
