"""The PostgreSQL engine against a real server and the real pg_dump/pg_restore: no mocks.

The source schema looks like a Prisma app's: a camelCase "User" with ``password`` (NOT NULL) and
``passwordHash`` (nullable), a "Post" with a foreign key and an index, a second schema, jsonb,
bytea, a sequence, and a table whose name needs quoting everywhere.  Secrets are planted with
a ``PLANTED-`` prefix so a byte scan of the dump can look for them.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard
from conftest import PLANTED_DB_PASSWORD  # tests/ is on sys.path (pytest's rootdir-based import)
from sqlalchemy import text

from relstep import codec
from relstep.databases import postgres
from relstep.databases.base import DatabaseError, DumpPlan
from relstep.errors import ConfigError

SCHEMA = """
CREATE SCHEMA audit;
CREATE SEQUENCE invoice_number START 1000;
CREATE TABLE "User" (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password text NOT NULL,
    "passwordHash" text,
    profile jsonb,
    avatar bytea,
    "loginCount" integer NOT NULL DEFAULT 0
);
CREATE TABLE "Post" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "authorId" integer NOT NULL REFERENCES "User" (id),
    title text NOT NULL,
    body text,
    invoice integer NOT NULL DEFAULT nextval('invoice_number')
);
CREATE INDEX "Post_authorId_idx" ON "Post" ("authorId");
CREATE TABLE audit.credentials (
    "userId" integer PRIMARY KEY REFERENCES "User" (id),
    password_hash bytea NOT NULL,
    note text
);
CREATE TABLE audit.events (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb, raw bytea);
CREATE TABLE audit."odd ""quoted"" 100%" (id integer PRIMARY KEY, password text);
CREATE TABLE "Session" (token text PRIMARY KEY, "userId" integer REFERENCES "User" (id));
"""

DATA = r"""
INSERT INTO "User" (email, password, "passwordHash", profile, avatar, "loginCount")
SELECT format('user%s@example.test', g),
       format('PLANTED-pw-%s', g),
       CASE WHEN g % 2 = 0 THEN format('PLANTED-hash-%s', g) END,
       jsonb_build_object('n', g, 'bio', E'tab\there, newline\nthere, backslash \\ and \u00fc'),
       decode(lpad(to_hex(g), 8, '0') || '00ff', 'hex'),
       g % 7
FROM generate_series(1, 200) g;
INSERT INTO "Post" ("authorId", title, body)
SELECT g % 200 + 1, format('Post %s', g), CASE WHEN g % 3 = 0 THEN NULL ELSE repeat('x', g % 50) END
FROM generate_series(1, 1000) g;
INSERT INTO audit.credentials
SELECT g, convert_to(format('PLANTED-cred-%s', g), 'UTF8'), format('note %s', g) FROM generate_series(1, 50) g;
INSERT INTO audit.events (kind, payload, raw)
SELECT format('kind-%s', g % 5), jsonb_build_object('g', g, 'tags', jsonb_build_array(g, 'a')), '\x00010203'
FROM generate_series(1, 300) g;
INSERT INTO audit."odd ""quoted"" 100%" SELECT g, format('PLANTED-odd-%s', g) FROM generate_series(1, 5) g;
INSERT INTO "Session" SELECT format('session-token-%s', g), g FROM generate_series(1, 20) g;
"""

# Every table, in relstep's naming, with the SQL to read it back in a stable order.
TABLES = {
    "User": '"User"',
    "Post": '"Post"',
    "Session": '"Session"',
    "audit.credentials": "audit.credentials",
    "audit.events": "audit.events",
    'audit.odd "quoted" 100%': 'audit."odd ""quoted"" 100%"',
}
PLAN = DumpPlan(exclude_tables=("Session",))  # default redaction: password, passwordHash, password_hash, ...
EXPECTED_REDACTED = {
    "User": ["password", "passwordHash"],
    "audit.credentials": ["password_hash"],
    'audit.odd "quoted" 100%': ["password"],
}
PLANTED_VALUES = [b"PLANTED-pw-", b"PLANTED-hash-", b"PLANTED-cred-", b"PLANTED-odd-"]


# --------------------------------------------------------------------------- helpers


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def fetch(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def rows(url: str, table: str) -> list[tuple[Any, ...]]:
    return fetch(url, f"SELECT * FROM {TABLES[table]} ORDER BY 1")


def table_names(url: str) -> set[str]:
    query = "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    return {f"{schema}.{name}" for schema, name in fetch(url, query)}


def with_database(url: str, dbname: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + dbname


def decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def shim(monkeypatch: pytest.MonkeyPatch, directory: Path, tool: str, body: str) -> None:
    """Put a shell script named ``tool`` first on PATH; ``$REAL`` in ``body`` is the real binary."""
    directory.mkdir(exist_ok=True)
    script = directory / tool
    script.write_text("#!/bin/sh\n" + body.replace("$REAL", shutil.which(tool) or tool) + "\n")
    script.chmod(0o755)
    if not os.environ["PATH"].startswith(f"{directory}{os.pathsep}"):
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def source(pg_url: str) -> str:
    execute(pg_url, SCHEMA, DATA)
    return pg_url


@pytest.fixture
def dumped(source: str, tmp_path: Path) -> tuple[Path, postgres.DumpInfo]:
    dest = tmp_path / "db"
    dest.mkdir()
    return dest, postgres.dump(source, dest, PLAN)


# --------------------------------------------------------------------------- dump and restore


def test_round_trip_restores_every_row_except_redacted_values(
    source: str, pg_url2: str, dumped: tuple[Path, postgres.DumpInfo]
) -> None:
    dest, info = dumped
    source_counts = postgres.row_counts(source)

    postgres.restore(dest, pg_url2)

    assert info.row_counts == {**source_counts, "Session": 0}
    assert info.redacted == EXPECTED_REDACTED
    assert info.excluded_tables == ["Session"]
    assert postgres.row_counts(pg_url2) == info.row_counts
    assert table_names(pg_url2) == table_names(source)
    for table in ("Post", "audit.events"):
        assert rows(pg_url2, table) == rows(source, table)
    assert rows(pg_url2, "User") == [(r[0], r[1], "", None, *r[4:]) for r in rows(source, "User")]
    assert rows(pg_url2, "audit.credentials") == [(r[0], b"", r[2]) for r in rows(source, "audit.credentials")]
    assert rows(pg_url2, 'audit.odd "quoted" 100%') == [(i, None) for i in range(1, 6)]
    assert rows(pg_url2, "Session") == []


def test_restore_keeps_sequences_identities_indexes_and_foreign_keys(
    source: str, pg_url2: str, dumped: tuple[Path, postgres.DumpInfo]
) -> None:
    postgres.restore(dumped[0], pg_url2)

    sequences = "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1"
    assert fetch(pg_url2, sequences) == fetch(source, sequences)
    foreign_keys = "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' ORDER BY 1, 2"
    assert len(fetch(pg_url2, foreign_keys)) == 3
    assert fetch(pg_url2, foreign_keys) == fetch(source, foreign_keys)
    assert fetch(pg_url2, "SELECT 1 FROM pg_indexes WHERE indexname = 'Post_authorId_idx'") == [(1,)]
    # The identity and the FK work: the next post gets the next id and must name an existing user.
    assert fetch(pg_url2, "INSERT INTO \"Post\" (\"authorId\", title) VALUES (1, 'new') RETURNING id") == [(1001,)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        execute(pg_url2, "INSERT INTO \"Post\" (\"authorId\", title) VALUES (9999, 'orphan')")


def test_dump_info_describes_the_files(source: str, dumped: tuple[Path, postgres.DumpInfo]) -> None:
    dest, info = dumped

    assert info.engine == "postgresql"
    assert info.format == "pg_dump-directory"
    assert info.tool.startswith("pg_dump (PostgreSQL) ")
    assert info.server_version == fetch(source, "SHOW server_version")[0][0]
    assert info.files == sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert {"pg_dump/toc.dat", "redacted.json"} <= set(info.files)
    assert len([f for f in info.files if f.startswith("redacted/")]) == len(EXPECTED_REDACTED)
    assert all(stat.S_IMODE((dest / f).stat().st_mode) == 0o600 for f in info.files)


def test_no_secret_reaches_any_byte_of_the_dump(dumped: tuple[Path, postgres.DumpInfo]) -> None:
    dest, _ = dumped
    contents = b"\n".join(decompressed(p) for p in dest.rglob("*") if p.is_file())

    # bytea values appear hex-encoded in COPY text, so look for that form too.
    forbidden = [*PLANTED_VALUES, b"PLANTED-cred-".hex().encode(), PLANTED_DB_PASSWORD.encode(), b"session-token-"]
    assert [needle for needle in forbidden if needle in contents] == []
    # The scan really reads the decompressed data: unredacted values of each kind of file are there.
    assert b"user7@example.test" in contents   # redacted/*.zst
    assert b"Post 17" in contents              # pg_dump/*.dat.gz
    assert b"note 3" in contents               # redacted table in another schema


def test_exclusion_and_redaction_are_case_insensitive_globs(source: str, pg_url2: str, tmp_path: Path) -> None:
    plan = DumpPlan(redact=("audit.*.note",), exclude_tables=("audit.EV*", "post"))

    info = postgres.dump(source, tmp_path, plan)
    postgres.restore(tmp_path, pg_url2)

    assert info.redacted == {"audit.credentials": ["note"]}
    assert sorted(info.excluded_tables) == ["Post", "audit.events"]
    assert info.row_counts["Post"] == info.row_counts["audit.events"] == 0
    assert rows(pg_url2, "User") == rows(source, "User")   # no default redaction when patterns are given
    assert {r[2] for r in rows(pg_url2, "audit.credentials")} == {None}


def test_restore_replaces_everything_in_a_non_empty_target(
    source: str, pg_url2: str, dumped: tuple[Path, postgres.DumpInfo]
) -> None:
    execute(
        pg_url2,
        "CREATE SCHEMA legacy; CREATE TABLE legacy.old (id int); CREATE TABLE stale (id int)",
        'CREATE TABLE "User" (id int, nickname text); INSERT INTO "User" VALUES (1, \'other\'), (2, \'rows\')',
    )
    assert not postgres.is_empty(pg_url2)

    postgres.restore(dumped[0], pg_url2)

    assert table_names(pg_url2) == table_names(source)
    assert fetch(pg_url2, "SELECT 1 FROM pg_namespace WHERE nspname = 'legacy'") == []
    assert postgres.row_counts(pg_url2) == dumped[1].row_counts
    # public comes back as in a fresh PostgreSQL 15 database, so other roles can still use it.
    assert fetch(pg_url2, "SELECT has_schema_privilege('public', 'public', 'USAGE')") == [(True,)]


# --------------------------------------------------------------------------- one point in time


def test_dump_counts_and_inspect_share_one_snapshot(source: str, pg_url2: str, tmp_path: Path) -> None:
    """Rows committed by another connection after the snapshot is exported are nowhere in the dump."""

    def inspect(conn: Any) -> dict[str, int]:
        execute(
            source,
            "INSERT INTO \"User\" (email, password) VALUES ('late@example.test', 'PLANTED-pw-late')",
            "INSERT INTO \"Post\" (\"authorId\", title) VALUES (1, 'late post')",
            "INSERT INTO audit.events (kind) VALUES ('late')",
        )
        return {"users": conn.execute(text('SELECT count(*) FROM "User"')).scalar_one()}

    before = postgres.row_counts(source)

    info = postgres.dump(source, tmp_path, PLAN, inspect=inspect)
    postgres.restore(tmp_path, pg_url2)

    assert info.inspected == {"users": before["User"]}
    assert info.row_counts == {**before, "Session": 0}
    assert postgres.row_counts(pg_url2) == info.row_counts
    assert postgres.row_counts(source)["Post"] == before["Post"] + 1
    assert fetch(pg_url2, "SELECT count(*) FROM \"Post\" WHERE title = 'late post'") == [(0,)]


def test_an_error_swallowed_by_inspect_does_not_break_the_dump(source: str, tmp_path: Path) -> None:
    def inspect(conn: Any) -> str:
        try:
            conn.execute(text("SELECT * FROM _prisma_migrations"))
        except Exception:
            return "no migration table"
        return "found"

    info = postgres.dump(source, tmp_path, PLAN, inspect=inspect)

    assert info.inspected == "no migration table"
    assert info.row_counts["User"] == 200


# --------------------------------------------------------------------------- the password stays out of argv


def _watch_processes(names: tuple[str, ...], stop: threading.Event, seen: list[bytes]) -> None:
    """Collect the /proc cmdline of every running process whose program is one of ``names``."""
    while not stop.is_set():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline and os.path.basename(cmdline.split(b"\0")[0]).decode(errors="replace") in names:
                seen.append(cmdline)
        time.sleep(0.005)


def test_running_pg_dump_has_no_password_in_its_cmdline(source: str, tmp_path: Path) -> None:
    """Read /proc/<pid>/cmdline of pg_dump while it runs; a lock keeps it running for a second."""
    locker = psycopg.connect(source)

    def hold_a_lock_pg_dump_must_wait_for(conn: Any) -> None:
        # "Session" is excluded, so only pg_dump (not our own counting) waits for this lock.
        locker.execute('LOCK TABLE "Session" IN ACCESS EXCLUSIVE MODE')
        threading.Timer(1.0, locker.commit).start()

    seen: list[bytes] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_processes, args=(("pg_dump",), stop, seen))
    watcher.start()
    try:
        postgres.dump(source, tmp_path, PLAN, inspect=hold_a_lock_pg_dump_must_wait_for)
    finally:
        stop.set()
        watcher.join()
        locker.close()

    assert seen, "pg_dump was never seen running"
    assert any(b"--snapshot=" in cmdline for cmdline in seen)
    assert [c for c in seen if PLANTED_DB_PASSWORD.encode() in c] == []


def test_tools_get_the_password_and_url_options_only_through_the_environment(
    source: str, pg_url2: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    for tool in ("pg_dump", "pg_restore"):
        shim(monkeypatch, bin_dir, tool, f'printf "%s\\n" "$0" "$@" >> {log}.argv\n'
                            # --version and --list (the backup's listing of pg_dump's files) connect to nothing.
                            'case "$1" in --version|--list) ;; '
                            f'*) echo "$PGPASSWORD $PGSSLMODE $PGAPPNAME" >> {log}.env;; esac\n'
                            'exec $REAL "$@"')
    options = "?schema=public&sslmode=disable&application_name=relstep-test"
    dest = tmp_path / "db"
    dest.mkdir()

    postgres.dump(source + options, dest, PLAN)
    postgres.restore(dest, pg_url2 + options)

    argv = Path(f"{log}.argv").read_text()
    assert "--snapshot=" in argv and "--section=post-data" in argv   # both tools really ran through the shims
    assert PLANTED_DB_PASSWORD not in argv
    # The restore's sessions keep the URL's application_name and add their own tag (found again on a signal).
    assert {re.sub(r" \(relstep-restore-[0-9a-f]{8}\)$", "", line)
            for line in Path(f"{log}.env").read_text().splitlines()} == {f"{PLANTED_DB_PASSWORD} disable relstep-test"}
    assert postgres.row_counts(pg_url2)["User"] == 200


# --------------------------------------------------------------------------- errors


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_missing_client_tools_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    url = f"postgresql://postgres:{PLANTED_DB_PASSWORD}@127.0.0.1:{_closed_port()}/app"

    with pytest.raises(DatabaseError) as backup:
        postgres.dump(url, tmp_path, PLAN)
    with pytest.raises(DatabaseError) as restore:
        postgres.restore(tmp_path, url)

    assert str(backup.value) == "pg_dump not found on PATH; install the PostgreSQL client"
    assert str(restore.value) == "pg_restore not found on PATH; install the PostgreSQL client"
    assert postgres.tool_versions() == {"pg_dump": "missing", "pg_restore": "missing", "psql": "missing"}


def test_tool_versions_name_the_installed_clients() -> None:
    versions = postgres.tool_versions()
    assert versions["pg_dump"].startswith("pg_dump (PostgreSQL) ")
    assert versions["pg_restore"].startswith("pg_restore (PostgreSQL) ")


@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (lambda admin: f"postgresql://postgres:{PLANTED_DB_PASSWORD}@127.0.0.1:{_closed_port()}/app",
         "refused the connection to database app"),
        (lambda admin: with_database(admin.replace("postgres@", f"postgres:{PLANTED_DB_PASSWORD}@"), "no_such_db"),
         "database no_such_db does not exist on PostgreSQL at 127.0.0.1:"),
        (lambda admin: f"postgresql://postgres:{PLANTED_DB_PASSWORD}@no-such-host.invalid/app",
         "unknown database host no-such-host.invalid"),
    ],
    ids=["closed-port", "no-such-database", "unknown-host"],
)
def test_connection_failures_are_one_clear_masked_sentence(
    pg_admin_url: str, tmp_path: Path, make_url: Callable[[str], str], expected: str
) -> None:
    url = make_url(pg_admin_url)

    with pytest.raises(DatabaseError) as caught:
        postgres.dump(url, tmp_path, PLAN)

    message = str(caught.value)
    assert expected in message
    assert PLANTED_DB_PASSWORD not in message
    assert "postgres:***@" in message
    assert "\n" not in message


def test_failed_restore_names_the_target(pg_admin_url: str, dumped: tuple[Path, postgres.DumpInfo]) -> None:
    url = with_database(pg_admin_url.replace("postgres@", f"postgres:{PLANTED_DB_PASSWORD}@"), "no_such_target")

    with pytest.raises(DatabaseError, match="database no_such_target does not exist") as caught:
        postgres.restore(dumped[0], url)

    assert PLANTED_DB_PASSWORD not in str(caught.value)


def _restore_in_thread(dest: Path, url: str) -> BaseException | None:
    """postgres.restore in a thread; its exception, or None.  A restore that waits for a hung tool
    instead of stopping it would never return: that fails here after 120 s instead of hanging."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            postgres.restore(dest, url)
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(120)
    assert outcome, "postgres.restore did not return: it waited for pg_restore instead of stopping it"
    return outcome[0]


def test_a_failed_redacted_copy_fails_the_restore_naming_the_file(
    pg_url2: str, dumped: tuple[Path, postgres.DumpInfo]
) -> None:
    """The redacted tables load after pg_restore's tables and rows (each into storage new in its
    transaction, so their rows keep the file's order); a damaged file fails the restore, names
    the file, and the target is untouched."""
    dest = dumped[0]
    damaged = _flip_a_byte(_largest(dest, "redacted/*.zst"))

    failure = _restore_in_thread(dest, pg_url2)

    assert isinstance(failure, DatabaseError) and str(damaged) in str(failure), failure
    assert postgres.is_empty(pg_url2)


def test_a_failed_data_step_fails_the_restore_with_the_workers_own_error(
    pg_url2: str, dumped: tuple[Path, postgres.DumpInfo]
) -> None:
    dest = dumped[0]
    missing = _delete(_largest(dest, "pg_dump/*.dat.gz"))

    failure = _restore_in_thread(dest, pg_url2)

    assert isinstance(failure, DatabaseError), failure
    # The worker's own error, not pg_restore's closing "a worker process died unexpectedly":
    assert str(failure) == f'pg_restore failed: could not open input file "{missing.with_suffix("")}": ' \
                           "No such file or directory", failure


def test_pg_dump_older_than_the_server_says_which_client_to_install(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim(monkeypatch, tmp_path / "bin", "pg_dump", 'echo "pg_dump (PostgreSQL) 9.6.24"; exit 1')
    server_major = int(fetch(source, "SHOW server_version_num")[0][0]) // 10000

    with pytest.raises(DatabaseError) as caught:
        postgres.dump(source, tmp_path, PLAN)

    assert str(caught.value) == (
        f"pg_dump 9 is older than the PostgreSQL {server_major} server at 127.0.0.1:5432; "
        f"install a PostgreSQL client of version {server_major} or newer"
    )


def test_pg_dump_failure_reports_its_last_error_line_masked(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim(monkeypatch, tmp_path / "bin", "pg_dump", '[ "$1" = --version ] && exec $REAL --version\n'
                                      'echo "pg_dump: error: query failed: boom for $PGPASSWORD" >&2\n'
                                      'echo "pg_dump: detail: Query was: SELECT 1" >&2\nexit 1')
    dest = tmp_path / "db"
    dest.mkdir()

    with pytest.raises(DatabaseError) as caught:
        postgres.dump(source, dest, PLAN)

    assert str(caught.value) == "pg_dump failed: query failed: boom for ***"


def test_a_not_null_column_without_an_empty_value_cannot_be_redacted(source: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot redact Post\.authorId: it is NOT NULL and of type integer"):
        postgres.dump(source, tmp_path, DumpPlan(redact=("Post.authorId",)))


# --------------------------------------------------------------------------- check_files


def _largest(dest: Path, pattern: str) -> Path:
    return max(dest.glob(pattern), key=lambda p: p.stat().st_size)


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _delete(path: Path) -> Path:
    path.unlink()
    return path


def _break_the_first_block(path: Path) -> Path:
    """Zero the bytes after the 10-byte gzip header: an invalid deflate block, not just a bad CRC."""
    data = bytearray(path.read_bytes())
    data[10:30] = bytes(20)
    path.write_bytes(bytes(data))
    return path


def _flip_a_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda dest: _truncate(_largest(dest, "pg_dump/*.dat.gz")), "corrupt or truncated"),
        (lambda dest: _flip_a_byte(_largest(dest, "pg_dump/*.dat.gz")), "corrupt or truncated"),
        (lambda dest: _break_the_first_block(_largest(dest, "pg_dump/*.dat.gz")), "corrupt or truncated"),
        (lambda dest: _truncate(_largest(dest, "redacted/*.zst")), "truncated"),
        (lambda dest: _flip_a_byte(_largest(dest, "redacted/*.zst")), "is corrupt"),
        (lambda dest: _truncate(dest / "pg_dump" / "toc.dat"), "unreadable"),
        (lambda dest: _delete(_largest(dest, "pg_dump/*.dat.gz")), "missing"),
        (lambda dest: _delete(dest / "redacted.json"), "missing"),
    ],
    ids=["gz-truncated", "gz-flipped", "gz-bad-block",
         "zst-truncated", "zst-flipped", "toc-truncated", "gz-deleted", "index-deleted"],
)
@pytest.mark.parametrize("inflater", ["isal", "standard gzip"])
def test_check_files_names_a_damaged_file(
    dumped: tuple[Path, postgres.DumpInfo], damage: Callable[[Path], Path], problem: str, inflater: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same verdicts whether ISA-L (the postgres extra) or the standard library reads the .gz files."""
    import isal.igzip

    assert postgres._gzip is isal.igzip  # the extra is installed, so relstep uses it
    if inflater == "standard gzip":
        monkeypatch.setattr(postgres, "_gzip", gzip)
    dest = dumped[0]
    postgres.check_files(dest)  # intact first

    damaged = damage(dest)

    with pytest.raises(DatabaseError, match=problem) as caught:
        postgres.check_files(dest)
    assert str(damaged) in str(caught.value)


# --------------------------------------------------------------------------- scratch databases, emptiness


def test_scratch_database_is_created_empty_and_dropped(pg_url: str) -> None:
    def exists(name: str) -> bool:
        return bool(fetch(pg_url, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))

    with postgres.scratch_database(pg_url) as scratch:
        name = scratch.rsplit("/", 1)[1]
        assert name.startswith("relstep_scratch_")
        assert exists(name)
        assert postgres.is_empty(scratch)
        execute(scratch, "CREATE TABLE t (id int)")   # a held connection must not stop the drop
        held = psycopg.connect(scratch)
    held.close()

    assert not exists(name)


def test_is_empty_and_row_counts(pg_url: str) -> None:
    assert postgres.is_empty(pg_url)
    assert postgres.row_counts(pg_url) == {}

    execute(pg_url, "CREATE SCHEMA s; CREATE TABLE s.t (id int); INSERT INTO s.t VALUES (1), (2)")

    assert not postgres.is_empty(pg_url)
    assert postgres.row_counts(pg_url) == {"s.t": 2}


def test_redacted_copy_streams_are_read_in_chunks(tmp_path: Path) -> None:
    """A large redacted file is decompressed chunk by chunk, never whole."""
    payload = os.urandom(1 << 16) * 64
    path = tmp_path / "big.zst"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(payload))

    chunks = list(postgres._zstd_chunks(path, len(payload), DatabaseError))

    assert b"".join(chunks) == payload
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= codec.CHUNK
