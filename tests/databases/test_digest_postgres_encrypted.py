"""Encrypted PostgreSQL snapshots take their content digests from pg_dump's custom-format stream as
it passes through relstep (pg_custom), equal to the plain layout's gzip CRC-32 and length.

Real server, real pg_dump (-Fc -Z0) and pg_restore, real age keys (pyrage).
"""

from __future__ import annotations

import re
import subprocess
import zlib
from pathlib import Path

import pyrage
import pytest

from relstep import codec
from relstep import fingerprint as fp
from relstep.databases import pg_custom, pg_digest, postgres
from relstep.databases.base import DumpInfo, DumpPlan
from tests.databases.fingerprint_support import PG_CONTENT_TABLES, execute

_FIXTURE = (*PG_CONTENT_TABLES, "SELECT lo_from_bytea(0, 'a large object, skipped by the tap')")
_PLAN = DumpPlan(redact=("u.password",), exclude_tables=("left_out",))
_COPY_DATA = re.compile(rb"^COPY \S+ .*FROM stdin;\n(.*?^\\\.\n\n\n)", re.MULTILINE | re.DOTALL)


def _encrypted_dump(url: str, dest: Path, plan: DumpPlan) -> tuple[DumpInfo, pyrage.x25519.Identity]:
    identity = pyrage.x25519.Identity.generate()
    dest.mkdir(exist_ok=True)
    with codec.encrypting(dest, [identity.to_public()]):
        info = postgres.dump(url, dest, plan)
    assert info.format == "pg_dump-custom-zstd-age"
    return info, identity


def test_the_tap_reads_each_table_data_entry_as_exactly_the_copy_data_pg_restore_prints(
        pg_url: str, tmp_path: Path) -> None:
    execute(pg_url, *_FIXTURE)
    archive = tmp_path / "dump.custom"
    target = postgres._Target.parse(pg_url)
    pg_dump, pg_restore = postgres.PG_DUMP.require(), postgres.PG_RESTORE.require()
    dumped = postgres.tools.run([pg_dump, "--format=custom", "--compress=0", f"--file={archive}"],
                                env=pg_digest.dump_environment(target.tool_env()))
    assert dumped.returncode == 0, dumped.stderr
    data = archive.read_bytes()
    listing = postgres.tools.run([pg_restore, "--list", str(archive)]).stdout
    entries = re.findall(r"^\d+; 0 (\d+) TABLE DATA \S+ (\S+) ", listing, re.MULTILINE)
    assert sorted(name for _oid, name in entries) == ["big", "left_out", "nothing", "t", "u"]

    # Fed in odd pieces (a header, a length or a row cut anywhere) and in one piece: the same result.
    results = []
    for size in (1, 7, 4093, len(data)):
        tap = pg_custom.ArchiveTap()
        for at in range(0, len(data), size):
            tap.feed(data[at:at + size])
        results.append(tap.finish())
    assert all(r == results[0] for r in results)
    tapped = results[0]
    assert set(tapped) == {int(oid) for oid, _name in entries}   # the large object's block is skipped
    for oid, name in entries:
        printed = subprocess.run([pg_restore, "--data-only", f"--table={name}", "--file=-", str(archive)],
                                 check=True, capture_output=True).stdout
        (copy_data,) = _COPY_DATA.findall(printed)
        assert copy_data.endswith(pg_digest.TRAILER)
        assert tapped[int(oid)] == pg_custom.TableData(int(oid), zlib.crc32(copy_data), len(copy_data)), name


def test_a_stream_the_tap_cannot_parse_is_named_and_never_raises_from_feed() -> None:
    tap = pg_custom.ArchiveTap()
    tap.feed(b"PGDMP\x09\x00\x00\x04\x08\x01")   # archive 9.0: no pg_dump writes it
    tap.feed(b"more bytes are ignored")
    with pytest.raises(pg_custom.Unparsable, match=r"archive version 9\.0 is not one this parser reads"):
        tap.finish()
    cut = pg_custom.ArchiveTap()
    cut.feed(b"PGDMP\x01\x0e")
    with pytest.raises(pg_custom.Unparsable, match="ended in its header"):
        cut.finish()


def test_an_encrypted_backup_records_the_plain_backups_gzcrc_and_a_restore_proves_equal_or_names_the_row(
        pg_url: str, tmp_path: Path) -> None:
    execute(pg_url, *_FIXTURE)
    (tmp_path / "plain").mkdir()
    plain = postgres.dump(pg_url, tmp_path / "plain", _PLAN)
    info, identity = _encrypted_dump(pg_url, tmp_path / "enc", _PLAN)

    assert {k: pg_digest.method_of(c) for k, c in info.fingerprint.content.items()} == {
        "t": "gzcrc", "big": "gzcrc", "nothing": "gzcrc", "left_out": "gzcrc", "u": "copy"}
    assert info.fingerprint.content == plain.fingerprint.content
    assert info.fingerprint.content["nothing"] == pg_digest.EMPTY_GZCRC
    assert info.fingerprint.notes == []
    assert info.row_counts == {"t": 2, "u": 2, "big": 20000, "nothing": 0, "left_out": 0}

    with postgres.scratch_database(pg_url) as scratch:
        with codec.decrypting(tmp_path / "enc", [identity]):
            postgres.restore(tmp_path / "enc", scratch)
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch, like=info.fingerprint)) == []
        execute(scratch, "UPDATE big SET filler = 'edited by hand' WHERE id = 250")
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch, like=info.fingerprint)) == [
            "table big: content differs"]


def test_when_the_tap_cannot_parse_the_stream_the_backup_records_the_servers_sums_and_says_why(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed pg_dump writes archive 1.14; the parser is told 1.13 is the newest it reads, as
    a future pg_dump's format would be new to it (the only part not as shipped)."""
    execute(pg_url, *_FIXTURE)
    monkeypatch.setattr(pg_custom, "_NEWEST", (1, 13))
    info, identity = _encrypted_dump(pg_url, tmp_path, _PLAN)

    assert info.fingerprint.notes == [
        "content: pg_dump's stream could not be parsed (archive version 1.14 is not one this parser reads); "
        "the server's sums of row hashes were recorded instead"]
    assert not pg_digest.made_by_dump(info.fingerprint)
    # Every table summed by the server (hash_record_extended); the left-out one as an empty table reads.
    assert {k: pg_digest.method_of(c) for k, c in info.fingerprint.content.items()} == {
        "t": "h", "u": "h", "big": "h", "nothing": "h", "left_out": "h"}
    assert info.fingerprint.content["left_out"] == info.fingerprint.content["nothing"]
    assert info.row_counts == {"t": 2, "u": 2, "big": 20000, "nothing": 0, "left_out": 0}
    with postgres.scratch_database(pg_url) as scratch:
        with codec.decrypting(tmp_path, [identity]):
            postgres.restore(tmp_path, scratch)
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch, like=info.fingerprint)) == []
        execute(scratch, "DELETE FROM t WHERE id = 2")
        assert fp.compare(info.fingerprint, postgres.fingerprint(scratch, like=info.fingerprint)) == [
            "table t: content differs (1 rows, the snapshot has 2)"]
