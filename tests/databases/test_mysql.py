"""The MySQL/MariaDB engine against the real MariaDB server, plus its pure stream filter.

Every database test uses fresh databases from tests/conftest.py; nothing is mocked:
dumps are made by the real mariadb-dump and restored by the real mariadb client.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pymysql
import pytest
import zstandard
from conftest import MY_HOST, MY_PORT, PLANTED_DB_PASSWORD  # tests/ is on sys.path (pytest's rootdir-based import)
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.converters import escape_string

from relstep.databases import mysql, mysql_filter, sqlalchemy_url
from relstep.databases.base import DatabaseError, DumpPlan

# ---------------------------------------------------------------------------- helpers

USERS = 120
AUDIT_MARK = b"AUDITROW"  # only in the excluded table's rows
PW_MARK = b"PLANTEDPW"  # in every redacted password value
HASH_MARK = b"PLANTEDHASH"  # in every redacted passwordHash value

TRICKY_TEXT = [
    'O\'Brien, "Bob" (admin)',
    "C:\\path\\to\\dir\\",
    "line1\nline2\r\nline3\ttabbed",
    "Zoë 🚀 日本語 ünïcödé",
    "'), (999, 'x'); DROP TABLE `User`; --",
    "nul\0byte and ctrl-z \x1a end",
    "",
    "\\'\\\\''",
]


@contextmanager
def _db(url: str) -> Iterator[pymysql.connections.Connection]:
    """A PyMySQL connection with autocommit (as another application would write)."""
    parsed = sqlalchemy_url(url)
    conn = pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.username,
        password=parsed.password or "",
        database=parsed.database,
        autocommit=True,
        charset="utf8mb4",
    )
    try:
        yield conn
    finally:
        conn.close()


def _execute(url: str, *statements: str, args: Any = None) -> None:
    with _db(url) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement, args)


def _rows(url: str, table: str) -> list[tuple[Any, ...]]:
    with _db(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM `{table}` ORDER BY id")
        return list(cur.fetchall())


def _objects(url: str) -> dict[str, str]:
    database = urlsplit(url).path.lstrip("/")
    with _db(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,))
        return dict(cur.fetchall())


def _with_db(url: str, database: str) -> str:
    return urlsplit(url)._replace(path="/" + database).geturl()


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _password_hash(i: int) -> str | None:
    return None if i % 5 == 0 else f"$argon2id$v=19$PLANTEDHASH{i:04d}'\\\"x"


def _build_app(url: str, users: int = USERS, filler_rows: int = 0) -> None:
    """A realistic schema: redacted columns, tricky values, a FK child, an excluded table, code objects."""
    _execute(
        url,
        """CREATE TABLE `User` (
            id INT PRIMARY KEY AUTO_INCREMENT,
            email VARCHAR(191) NOT NULL UNIQUE,
            name VARCHAR(300) NULL,
            password VARCHAR(255) NOT NULL,
            passwordHash VARCHAR(255) NULL,
            avatar BLOB NULL,
            flags BIT(7) NULL,
            settings JSON NULL,
            balance DECIMAL(12,2) NULL,
            score DOUBLE NULL,
            created DATETIME(6) NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        """CREATE TABLE `Post` (
            id INT PRIMARY KEY AUTO_INCREMENT,
            userId INT NOT NULL,
            title VARCHAR(200) NOT NULL,
            body TEXT NULL,
            CONSTRAINT fk_post_user FOREIGN KEY (userId) REFERENCES `User`(id) ON DELETE CASCADE
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        "CREATE TABLE `AuditLog` (id INT PRIMARY KEY AUTO_INCREMENT, event VARCHAR(100), detail TEXT) ENGINE=InnoDB",
        "CREATE TABLE `Filler` (id INT PRIMARY KEY, pad VARCHAR(1000) NOT NULL) ENGINE=InnoDB",
        "CREATE VIEW `UserEmails` AS SELECT id, email FROM `User`",
        # A routine whose body holds an INSERT for the redacted table: code, not data.
        "CREATE PROCEDURE add_user(IN e VARCHAR(191))\nBEGIN\n"
        "INSERT INTO `User` (email, password) VALUES (e, 'literal-in-code');\nEND",
        "CREATE TRIGGER post_title BEFORE INSERT ON `Post` FOR EACH ROW SET NEW.title = TRIM(NEW.title)",
    )
    with _db(url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO `User` (email, name, password, passwordHash, avatar, flags, settings, balance, score, created)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    f"user{i}@example.com",
                    None if i % 7 == 0 else TRICKY_TEXT[i % len(TRICKY_TEXT)] + f" #{i}",
                    f"pw'\\\",(){i}-PLANTEDPW{i:04d}x",
                    _password_hash(i),
                    None if i % 3 == 0 else bytes([0, 39, 92, 255, 10, i % 256]) + b"\x00'\\",
                    None if i % 4 == 0 else bytes([i % 128]),
                    None if i % 6 == 0 else f'{{"k": "v\'\\\\\\"{i}", "n": [1, 2, {i}], "u": "é🚀"}}',
                    Decimal(f"{i}.{i % 100:02d}"),
                    i / 7 if i % 9 else None,
                    f"2026-11-{1 + i % 28:02d} 12:34:56.{i:06d}",
                )
                for i in range(1, users + 1)
            ],
        )
        cur.executemany(
            "INSERT INTO `Post` (userId, title, body) VALUES (%s, %s, %s)",
            [(1 + i % users, f"  Post {i}  ", TRICKY_TEXT[(i + 3) % len(TRICKY_TEXT)]) for i in range(users * 2)],
        )
        cur.executemany(
            "INSERT INTO `AuditLog` (event, detail) VALUES (%s, %s)",
            [(f"login {i}", f"AUDITROW-{i} secret detail") for i in range(50)],
        )
        if filler_rows:
            cur.execute(f"INSERT INTO `Filler` SELECT seq, REPEAT('x', 1000) FROM seq_1_to_{filler_rows}")


def _snapshot_bytes(dest: Path) -> bytes:
    """Every byte under dest, with .zst files also decompressed."""
    chunks = []
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        chunks.append(raw)
        if path.suffix == ".zst":
            chunks.append(zstandard.ZstdDecompressor().stream_reader(raw).read())
    return b"\n".join(chunks)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _user(database: str, password: str, *, reload: bool) -> Iterator[str]:
    """A MariaDB account owning ``database``; with or without the RELOAD privilege."""
    name = f"u{uuid.uuid4().hex[:12]}"
    admin = f"mysql://root@{MY_HOST}:{MY_PORT}/{database}"
    grants = [f"GRANT ALL ON `{database}`.* TO '{name}'@'{host}'" for host in ("%", "localhost")]
    if reload:
        grants += [f"GRANT RELOAD ON *.* TO '{name}'@'{host}'" for host in ("%", "localhost")]
    with _db(admin) as conn, conn.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
        for grant in grants:
            cur.execute(grant)
    try:
        yield f"mysql://{name}:{quote(password, safe='')}@{MY_HOST}:{MY_PORT}/{database}"
    finally:
        _execute(admin, *[f"DROP USER IF EXISTS '{name}'@'{host}'" for host in ("%", "localhost")])


@pytest.fixture
def app_url(mysql_url: str) -> str:
    _build_app(mysql_url)
    return mysql_url


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Route tempfile into a folder the test can inspect for leftovers."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _dest(tmp_path: Path) -> Path:
    dest = tmp_path / "snapshot" / "database"
    dest.mkdir(parents=True)
    return dest


def _real(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} must be installed for these tests"
    return path


def _shim(folder: Path, tool: str, body: str) -> None:
    """A PATH shim standing in for ``tool`` (``--version`` still answered by the real one)."""
    folder.mkdir(exist_ok=True)
    script = folder / tool
    real = _real(tool)
    script.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then exec {real} --version; fi\n{body}\n')
    script.chmod(0o755)


# ---------------------------------------------------------------------------- round trip


def test_dump_and_restore_round_trip(app_url: str, mysql_url2: str, tmp_path: Path) -> None:
    dest = _dest(tmp_path)
    info = mysql.dump(app_url, dest, DumpPlan(exclude_tables=("AuditLog",)))

    assert info.engine == "mysql" and info.format == "mariadb-dump-sql-zstd"
    assert info.files == ["dump.sql.zst"] and sorted(os.listdir(dest)) == ["dump.sql.zst"]
    assert stat.S_IMODE((dest / "dump.sql.zst").stat().st_mode) == 0o600
    assert info.redacted == {"User": ["password", "passwordHash"]}
    assert info.excluded_tables == ["AuditLog"]
    assert info.row_counts == {"AuditLog": 0, "Filler": 0, "Post": USERS * 2, "User": USERS}
    assert info.consistent, info.extra
    assert info.tool.startswith("mariadb-dump") and "MariaDB" in info.server_version
    assert "routines_skipped" not in info.extra and "events_skipped" not in info.extra
    mysql.check_files(dest)

    mysql.restore(dest, mysql_url2)

    assert mysql.row_counts(mysql_url2) == info.row_counts
    assert mysql.row_counts(app_url) == {**info.row_counts, "AuditLog": 50}
    expected_users = [(*row[:3], "", None, *row[5:]) for row in _rows(app_url, "User")]
    assert _rows(mysql_url2, "User") == expected_users
    assert _rows(mysql_url2, "Post") == _rows(app_url, "Post")
    assert _objects(mysql_url2) == _objects(app_url)  # the excluded table and the view are there
    with _db(mysql_url2) as conn, conn.cursor() as cur:
        cur.execute("SHOW CREATE TABLE `AuditLog`")  # schema kept, rows left out
        cur.execute("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()")
        assert cur.fetchall() == (("add_user",),)
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()")
        assert cur.fetchall() == (("post_title",),)
        cur.execute("SELECT COUNT(*) FROM `UserEmails`")
        assert cur.fetchone() == (USERS,)


def test_redact_patterns_and_not_null_columns(app_url: str, mysql_url2: str, tmp_path: Path) -> None:
    """Explicit patterns, matched case-insensitively: NOT NULL columns become '', nullable ones NULL."""
    dest = _dest(tmp_path)
    info = mysql.dump(app_url, dest, DumpPlan(redact=("user.NAME", "post.TITLE"), exclude_tables=()))
    assert info.redacted == {"Post": ["title"], "User": ["name"]}
    dump_text = _snapshot_bytes(dest)
    assert b" #11'" not in dump_text and b"Post 7" not in dump_text
    assert AUDIT_MARK in dump_text and PW_MARK in dump_text  # the default patterns no longer apply

    mysql.restore(dest, mysql_url2)
    assert {row[2] for row in _rows(mysql_url2, "User")} == {None}
    assert {row[2] for row in _rows(mysql_url2, "Post")} == {""}
    assert [row[3] for row in _rows(mysql_url2, "Post")] == [row[3] for row in _rows(app_url, "Post")]


def test_no_secret_reaches_the_snapshot(
    mysql_url: str, mysql_password_url: str, tmp_path: Path, private_tmp: Path
) -> None:
    _build_app(mysql_url)
    dest = _dest(tmp_path)
    info = mysql.dump(mysql_password_url, dest, DumpPlan(exclude_tables=("Audit*",)))
    assert info.consistent, info.extra  # this user has RELOAD
    # root defined add_user; this account may not read its body, so the routines are left out.
    assert info.extra["routines_skipped"] == "the account may not read the body of add_user"

    data = _snapshot_bytes(dest)
    assert b"user1@example.com" in data  # the scan really looks at decompressed rows
    for needle in (PLANTED_DB_PASSWORD.encode(), PW_MARK, HASH_MARK, AUDIT_MARK):
        assert needle not in data, needle
        assert needle.hex().encode() not in data.lower()
    assert list(private_tmp.iterdir()) == []  # nothing, the options included, was written to a temp dir


def test_restore_replaces_a_non_empty_target(app_url: str, mysql_url2: str, tmp_path: Path) -> None:
    _execute(
        mysql_url2,
        "CREATE TABLE `Stale` (id INT PRIMARY KEY)",
        "CREATE TABLE `StaleChild` (id INT PRIMARY KEY, s INT, FOREIGN KEY (s) REFERENCES `Stale`(id))",
        "INSERT INTO `Stale` VALUES (1)",
        "INSERT INTO `StaleChild` VALUES (1, 1)",
        "CREATE TABLE `User` (id INT PRIMARY KEY, other TEXT)",
        "INSERT INTO `User` VALUES (424242, 'old')",
        "CREATE VIEW `StaleView` AS SELECT id FROM `Stale`",
    )
    assert not mysql.is_empty(mysql_url2)
    dest = _dest(tmp_path)
    info = mysql.dump(app_url, dest, DumpPlan())

    mysql.restore(dest, mysql_url2)

    assert _objects(mysql_url2) == _objects(app_url)
    assert mysql.row_counts(mysql_url2) == info.row_counts
    assert 424242 not in {row[0] for row in _rows(mysql_url2, "User")}


def _code_objects(url: str) -> dict[str, str]:
    """Routines and events of the database: name -> kind and body."""
    with _db(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES "
                    "WHERE ROUTINE_SCHEMA = DATABASE()")
        found = {name: f"{kind}: {body}" for name, kind, body in cur.fetchall()}
        cur.execute("SELECT EVENT_NAME, EVENT_DEFINITION FROM information_schema.EVENTS "
                    "WHERE EVENT_SCHEMA = DATABASE()")
        return found | {name: f"EVENT: {body}" for name, body in cur.fetchall()}


@pytest.mark.parametrize("left_out", [False, True], ids=["in-the-dump", "left-out-by-the-dump"])
def test_restore_replaces_routines_and_events_unless_the_dump_left_them_out(
    app_url: str, mysql_url2: str, tmp_path: Path, left_out: bool
) -> None:
    """A newer release's procedure or scheduled event must not outlive a restore of an older snapshot."""
    _execute(
        mysql_url2,
        "CREATE TABLE `Jobs` (id INT)",
        "CREATE PROCEDURE stale_proc() SELECT 1",
        "CREATE FUNCTION stale_fn() RETURNS INT DETERMINISTIC RETURN 7",
        "CREATE EVENT stale_event ON SCHEDULE EVERY 1 DAY DO DELETE FROM `Jobs`",
        "CREATE PROCEDURE add_user(IN e VARCHAR(191)) SELECT 'the newer body'",
    )
    stale = {"stale_proc", "stale_fn", "stale_event"}
    dest = _dest(tmp_path)
    info = mysql.dump(app_url, dest, DumpPlan())
    assert "routines_skipped" not in info.extra and "events_skipped" not in info.extra
    # As the manifest records it for an account that could not read them:
    extra = {"routines_skipped": "the account may not read the body of x",
             "events_skipped": "the account lacks the EVENT privilege"} if left_out else info.extra

    mysql.restore(dest, mysql_url2, extra)

    restored = _code_objects(mysql_url2)
    assert restored["add_user"] == _code_objects(app_url)["add_user"]  # the dump's own, in both cases
    if left_out:  # nothing in the dump replaces them, so the target keeps its own
        assert stale <= restored.keys()
    else:
        assert restored == _code_objects(app_url) and not stale & restored.keys()


def test_restore_of_a_damaged_dump_leaves_the_target_alone(app_url: str, mysql_url2: str, tmp_path: Path) -> None:
    dest = _dest(tmp_path)
    mysql.dump(app_url, dest, DumpPlan())
    dump_file = dest / "dump.sql.zst"
    dump_file.write_bytes(dump_file.read_bytes()[:-200])
    _execute(mysql_url2, "CREATE TABLE `Keep` (id INT PRIMARY KEY)")

    with pytest.raises(DatabaseError, match=r"refusing to restore: .*dump\.sql\.zst is truncated"):
        mysql.restore(dest, mysql_url2)
    assert _objects(mysql_url2) == {"Keep": "BASE TABLE"}


# ---------------------------------------------------------------------------- one point in time


def _insert_late_user(url: str, email: str) -> threading.Thread:
    thread = threading.Thread(
        target=_execute,
        args=(url, "INSERT INTO `User` (email, password) VALUES (%s, 'x')"),
        kwargs={"args": (email,)},
        daemon=True,
    )
    thread.start()
    return thread


def test_write_during_inspect_lands_after_the_dump(app_url: str, mysql_url2: str, tmp_path: Path) -> None:
    """inspect sees the dump's instant, and the global read lock is gone before it runs."""
    late = "late@example.com"
    seen: dict[str, Any] = {}

    def inspect(conn: Any) -> int:
        writer = _insert_late_user(app_url, late)
        writer.join(timeout=20)
        # Still alive means the writer is queued behind FLUSH TABLES WITH READ LOCK:
        # the lock would be blocking the site for the whole dump.
        seen["writer_blocked"] = writer.is_alive()
        seen["late_visible"] = conn.exec_driver_sql(f"SELECT COUNT(*) FROM `User` WHERE email = '{late}'").scalar()
        return conn.exec_driver_sql("SELECT COUNT(*) FROM `User`").scalar()

    dest = _dest(tmp_path)
    info = mysql.dump(app_url, dest, DumpPlan(), inspect=inspect)

    assert seen == {"writer_blocked": False, "late_visible": 0}
    assert info.inspected == USERS and info.row_counts["User"] == USERS and info.consistent
    assert late.encode() not in _snapshot_bytes(dest)
    assert mysql.row_counts(app_url)["User"] == USERS + 1  # the write happened, just after the dump
    mysql.restore(dest, mysql_url2)
    assert mysql.row_counts(mysql_url2)["User"] == USERS


@contextmanager
def _busy_writer(url: str) -> Iterator[list[int]]:
    """Commits rows into two tables as fast as it can until the block ends; yields its commit count."""
    stop = threading.Event()
    done = [0]

    def write() -> None:
        with _db(url) as conn, conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO `User` (email, password) VALUES (%s, 'x')", (f"w{uuid.uuid4().hex}@x",))
                cur.execute("INSERT INTO `Post` (userId, title) VALUES (1, 'busy')")
                done[0] += 1

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        while done[0] < 20:  # make sure it is really writing before the dump starts
            time.sleep(0.01)
        yield done
    finally:
        stop.set()
        thread.join(timeout=30)


def test_counts_and_dump_agree_under_concurrent_writes(mysql_url: str, mysql_url2: str, tmp_path: Path) -> None:
    _build_app(mysql_url, filler_rows=3000)
    dest = _dest(tmp_path)
    with _busy_writer(mysql_url) as commits:
        info = mysql.dump(mysql_url, dest, DumpPlan(), inspect=lambda c: mysql._count(c, "Post"))
        during = commits[0]
    assert info.consistent, info.extra
    assert during > 20  # writers kept committing around the dump
    mysql.restore(dest, mysql_url2)
    assert mysql.row_counts(mysql_url2) == info.row_counts
    assert info.inspected == info.row_counts["Post"]


def test_without_reload_privilege_the_dump_is_marked_inconsistent(
    app_url: str, mysql_url2: str, tmp_path: Path
) -> None:
    database = urlsplit(app_url).path.lstrip("/")
    with _user(database, "no-Reload-pw1", reload=False) as url:
        dest = _dest(tmp_path)
        info = mysql.dump(url, dest, DumpPlan())
    assert info.consistent is False
    assert "RELOAD" in info.extra["inconsistency"]
    mysql.restore(dest, mysql_url2)  # still a complete, self-consistent dump
    assert mysql.row_counts(mysql_url2) == info.row_counts


def test_non_transactional_tables_make_the_dump_inconsistent(app_url: str, tmp_path: Path) -> None:
    _execute(app_url, "CREATE TABLE `Counter` (id INT PRIMARY KEY) ENGINE=MyISAM", "INSERT INTO `Counter` VALUES (1)")
    info = mysql.dump(app_url, _dest(tmp_path), DumpPlan())
    assert info.consistent is False and info.row_counts["Counter"] == 1
    assert info.extra["non_transactional_tables"] == ["Counter"]
    assert "non-transactional" in info.extra["inconsistency"]


# ---------------------------------------------------------------------------- passwords and argv


def _children() -> list[tuple[list[str], list[str]]]:
    """(argv, environment) of every running child of this process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == os.getpid():
                argv, env = ((entry / name).read_bytes().split(b"\0") for name in ("cmdline", "environ"))
                found.append(([a.decode() for a in argv if a], [e.decode("utf-8", "replace") for e in env if e]))
        except (OSError, IndexError, ValueError):
            continue
    return found


def test_password_never_in_argv_or_environment(
    mysql_url: str, mysql_password_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build_app(mysql_url, filler_rows=3000)  # ~3 MB: the tool is still writing while inspect runs
    shims, log = tmp_path / "shims", tmp_path / "argv.log"
    real = _real("mariadb-dump")
    _shim(
        shims,
        "mariadb-dump",
        f'printf "%s\\n" "$@" > {log}\nstat -L -c %F "${{1#--defaults-extra-file=}}" >> {log}\nexec {real} "$@"',
    )
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv("MYSQL_PWD", "stray-Env-Password")
    seen: list[tuple[list[str], list[str]]] = []

    def inspect(conn: Any) -> None:
        seen.extend(child for child in _children() if "--single-transaction" in child[0])

    dest = _dest(tmp_path)
    mysql.dump(mysql_password_url, dest, DumpPlan(), inspect=inspect)

    assert len(seen) == 1, "the dump tool should have been running during inspect"
    argv, environment = seen[0]
    assert not any(PLANTED_DB_PASSWORD in var or var.startswith("MYSQL_PWD=") for var in environment)
    assert argv[0] == real and re.fullmatch(r"--defaults-extra-file=/dev/fd/\d+", argv[1])
    assert not any(PLANTED_DB_PASSWORD in arg for arg in argv)
    recorded = log.read_text().splitlines()
    assert recorded[:-1] == argv[1:] and recorded[-1] == "fifo"  # the options came through a pipe, not a file


def test_option_file_carries_awkward_passwords(app_url: str, tmp_path: Path) -> None:
    database = urlsplit(app_url).path.lstrip("/")
    awkward = "p\"w'#x ;\\y $z\tq"
    with _user(database, awkward, reload=True) as url:
        info = mysql.dump(url, _dest(tmp_path), DumpPlan())
    assert info.consistent and info.row_counts["User"] == USERS


# ---------------------------------------------------------------------------- errors


def test_missing_dump_tool(app_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DatabaseError) as caught:
        mysql.dump(app_url, _dest(tmp_path), DumpPlan())
    assert str(caught.value) == "mariadb-dump not found on PATH; install the MariaDB client (mariadb-client)"
    assert mysql.tool_versions() == {"mariadb-dump": "missing", "mariadb": "missing"}


def test_missing_client_for_restore(app_url: str, mysql_url2: str, tmp_path: Path, monkeypatch: Any) -> None:
    dest = _dest(tmp_path)
    mysql.dump(app_url, dest, DumpPlan())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DatabaseError, match=r"^mariadb not found on PATH; install the MariaDB client"):
        mysql.restore(dest, mysql_url2)


def _dump_error(url: str, tmp_path: Path) -> str:
    dest = _dest(tmp_path)
    with pytest.raises(DatabaseError) as caught:
        mysql.dump(url, dest, DumpPlan())
    assert list(dest.iterdir()) == []
    message = str(caught.value)
    assert PLANTED_DB_PASSWORD not in message and "\n" not in message
    return message


def test_unreachable_port(tmp_path: Path) -> None:
    port = _free_port()
    message = _dump_error(f"mysql://root:{PLANTED_DB_PASSWORD}@127.0.0.1:{port}/shop", tmp_path)
    assert message == (
        f"cannot connect to MariaDB/MySQL at mysql://root:***@127.0.0.1:{port}/shop: "
        f"connection refused; is the server running on 127.0.0.1:{port}?"
    )


def test_unknown_host(tmp_path: Path) -> None:
    message = _dump_error(f"mysql://root:{PLANTED_DB_PASSWORD}@no-such-host.invalid:3306/shop", tmp_path)
    assert message == (
        "cannot connect to MariaDB/MySQL at mysql://root:***@no-such-host.invalid:3306/shop: "
        "cannot resolve host 'no-such-host.invalid'"
    )


def test_unknown_database(mysql_url: str, mysql_password_url: str, tmp_path: Path) -> None:
    missing = f"nope_{uuid.uuid4().hex[:8]}"
    as_root = _dump_error(_with_db(mysql_url, missing), tmp_path / "a")
    assert as_root.endswith(f"/{missing}: database '{missing}' does not exist")
    # An account without rights there gets "no access" from the server, whether or not it exists.
    as_user = _dump_error(_with_db(mysql_password_url, missing), tmp_path / "b")
    assert f":***@{MY_HOST}:{MY_PORT}/{missing}: user '" in as_user and f"no access to database '{missing}'" in as_user


def test_wrong_password(mysql_password_url: str, tmp_path: Path) -> None:
    wrong = "Wrong-Pw-31337"
    message = _dump_error(_with_password(mysql_password_url, wrong), tmp_path)
    assert "access denied for user 'u_" in message and "check the user name and password" in message
    assert wrong not in message and ":***@" in message


def test_dump_tool_failure_reports_its_last_stderr_line_masked(
    mysql_url: str, mysql_password_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build_app(mysql_url)
    shims = tmp_path / "shims"
    _shim(
        shims,
        "mariadb-dump",
        f'echo "-- Starting transaction..." >&2\necho "warning: first" >&2\n'
        f'echo "mariadb-dump: Got error: 2013: Lost connection (password {PLANTED_DB_PASSWORD})" >&2\nexit 2',
    )
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    message = _dump_error(mysql_password_url, tmp_path)
    assert message.startswith("mariadb-dump failed on mysql://u_")
    assert message.endswith(": mariadb-dump: Got error: 2013: Lost connection (password ***)")


def test_url_without_database(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match=r"names no database; add /DBNAME"):
        mysql.dump(f"mysql://root:{PLANTED_DB_PASSWORD}@127.0.0.1:3306", _dest(tmp_path), DumpPlan())


# ---------------------------------------------------------------------------- check_files


def _compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw[: len(raw) // 2], "is truncated"),
        (lambda raw: raw[:-3], "is truncated"),
        (lambda raw: raw[:40] + bytes([raw[40] ^ 0xFF]) + raw[41:], "is corrupt"),
        (
            lambda raw: _compress(b"-- MariaDB dump\nINSERT INTO `t` VALUES (1);\n"),
            "is incomplete: it lacks the dump tool's",
        ),
        (lambda raw: b"not zstd at all", "is corrupt"),
    ],
    ids=["half", "last-bytes", "flipped-byte", "no-trailer", "garbage"],
)
def test_check_files_catches_damage(app_url: str, tmp_path: Path, damage: Any, reason: str) -> None:
    dest = _dest(tmp_path)
    mysql.dump(app_url, dest, DumpPlan())
    mysql.check_files(dest)
    dump_file = dest / "dump.sql.zst"
    dump_file.write_bytes(damage(dump_file.read_bytes()))
    with pytest.raises(DatabaseError, match=re.escape(str(dump_file)) + " " + reason):
        mysql.check_files(dest)


def test_check_files_missing_dump(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match=r"dump\.sql\.zst is missing"):
        mysql.check_files(tmp_path)


# ---------------------------------------------------------------------------- small helpers


def test_scratch_database_is_created_empty_and_dropped(mysql_url: str) -> None:
    with mysql.scratch_database(mysql_url) as url:
        name = urlsplit(url).path.lstrip("/")
        assert name.startswith("relstep_scratch_")
        assert mysql.is_empty(url) and mysql.row_counts(url) == {}
        _execute(url, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1), (2)")
        assert mysql.row_counts(url) == {"t": 2} and not mysql.is_empty(url)
    with _db(_with_db(url, "")) as conn, conn.cursor() as cur:
        assert cur.execute("SHOW DATABASES LIKE %s", (name,)) == 0


def test_tool_versions_names_the_real_tools() -> None:
    versions = mysql.tool_versions()
    assert set(versions) == {"mariadb-dump", "mariadb"}
    assert all("MariaDB" in v for v in versions.values())


# ---------------------------------------------------------------------------- the stream filter (pure)

REDACT = {"User": {"password": b"''", "passwordHash": b"NULL"}}
HEAD = b"INSERT INTO `User` (`id`, `password`, `passwordHash`, `note`) VALUES "

TRICKY_LITERALS = [
    rb"'plain'",
    rb"''",
    rb"'it\'s'",
    rb"'it''s'",
    rb"''''",
    rb"'back\\slash\\'",
    rb"'\\'",
    rb"'\\\''",
    rb"'comma, (paren) ),( \');'",
    rb"'line\nbreak\r\n\ttab\0nul\Z'",
    "'日本語 🚀 ünï'".encode(),
    rb"'\"double\"'",
    b"NULL",
    b"-12.5e-3",
    b"42",
    b"0x00FF27",
    b"b'0101'",
    rb"_binary 'x\'y'",
    rb"_utf8mb4'a,b'",
]


def _run_filter(dump_filter: mysql_filter.DumpFilter, text: bytes) -> bytes:
    out = b"".join(dump_filter.feed(line) for line in text.splitlines(keepends=True))
    dump_filter.close()
    return out


@pytest.mark.parametrize("literal", TRICKY_LITERALS)
def test_filter_replaces_only_redacted_positions(literal: bytes) -> None:
    row = b"(1," + literal + b"," + literal + b"," + literal + b")"
    statement = HEAD + row + b",\n" + row + b";\n"
    expected = HEAD + b"(1,'',NULL," + literal + b"),\n(1,'',NULL," + literal + b");\n"
    assert _run_filter(mysql_filter.DumpFilter(REDACT), statement) == expected


@pytest.mark.parametrize("literal", TRICKY_LITERALS)
def test_parse_row_spans_each_literal(literal: bytes) -> None:
    line = b"(" + literal + b"," + literal + b")\n"
    spans, end = mysql_filter.parse_row(line, 0)
    assert [line[a:b] for a, b in spans] == [literal, literal]
    assert line[end:] == b"\n"


def test_filter_handles_single_line_extended_inserts_and_spacing() -> None:
    statement = HEAD + b"(1,'a','b','c'),(2,'d','e','f') , (3,'g',NULL,'i') ;\n"
    out = _run_filter(mysql_filter.DumpFilter(REDACT), statement)
    assert out == HEAD + b"(1,'',NULL,'c'),(2,'',NULL,'f') , (3,'',NULL,'i') ;\n"


def test_filter_passes_other_lines_through_unchanged() -> None:
    text = (
        b"-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n"
        b"INSERT INTO `Post` (`id`, `password`) VALUES (1,'keep'),\n(2,'keep');\n"
        b"INSERT INTO `Users` (`id`, `password`) VALUES (1,'keep');\n"
        b"CREATE TABLE `User` (\n  `password` varchar(9) NOT NULL DEFAULT 'x'\n);\n"
    )
    assert _run_filter(mysql_filter.DumpFilter(REDACT), text) == text


def test_filter_leaves_routine_bodies_alone() -> None:
    text = (
        b"DELIMITER ;;\nCREATE PROCEDURE p()\nBEGIN\n"
        b"INSERT INTO `User` (id, password) VALUES (5, 'code');\nEND\n;;\nDELIMITER ;\n"
    )
    after = HEAD + b"(1,'s','h','n');\n"
    assert _run_filter(mysql_filter.DumpFilter(REDACT), text + after) == text + HEAD + b"(1,'',NULL,'n');\n"


def test_filter_matches_columns_case_insensitively_and_unquotes_names() -> None:
    dump_filter = mysql_filter.DumpFilter({"we`ird": {"PassWord": b"NULL"}})
    statement = b"INSERT INTO `we``ird` (`a``b`, `PASSWORD`) VALUES (1,'secret');\n"
    assert _run_filter(dump_filter, statement) == b"INSERT INTO `we``ird` (`a``b`, `PASSWORD`) VALUES (1,NULL);\n"


def test_filter_drops_rows_of_excluded_tables() -> None:
    text = (
        b"LOCK TABLES `AuditLog` WRITE;\n"
        b"INSERT INTO `AuditLog` (`id`, `detail`) VALUES (1,'a;\\nb'),\n(2,'x),(y');\n"
        b"INSERT INTO `AuditLog` VALUES (3,'z');\n"
        b"UNLOCK TABLES;\n"
    )
    dump_filter = mysql_filter.DumpFilter({}, drop_rows_of=["AuditLog"])
    assert dump_filter.active
    assert _run_filter(dump_filter, text) == b"LOCK TABLES `AuditLog` WRITE;\nUNLOCK TABLES;\n"


def test_inactive_filter() -> None:
    assert not mysql_filter.DumpFilter({}, ()).active
    assert not mysql_filter.DumpFilter({"User": {}}).active
    assert mysql_filter.DumpFilter({}, redact_patterns=["*.password"]).active


GUARD = ("*.password", "*.passwordHash")


def test_filter_guard_lets_planned_statements_through() -> None:
    text = (
        HEAD + b"(1,'s','h','n');\n"
        b"INSERT INTO `Post` (`id`, `title`) VALUES (1,'password');\n"
        b"INSERT INTO `Empty` (`id`) VALUES (1);\n"
    )
    out = _run_filter(mysql_filter.DumpFilter(REDACT, redact_patterns=GUARD), text)
    assert out == HEAD + b"(1,'',NULL,'n');\n" + text.split(b"\n", 1)[1]


@pytest.mark.parametrize(
    ("statement", "columns"),
    [
        # a table created after the plan was made
        (b"INSERT INTO `Admin` (`id`, `Password`) VALUES (1,'SECRETVALUE');\n", "password"),
        # a column added to a table that had none to redact
        (b"INSERT INTO `Post` (`id`, `passwordhash`) VALUES (1,'SECRETVALUE');\n", "passwordhash"),
        # a column added to a table that already had one
        (
            b"INSERT INTO `User` (`id`, `password`, `passwordHash`, `note`, `password_hash`) "
            b"VALUES (1,'a','b','c','SECRETVALUE');\n",
            "",
        ),
    ],
)
def test_filter_guard_stops_on_unplanned_columns_to_redact(statement: bytes, columns: str) -> None:
    patterns = (*GUARD, "*.password_hash")
    with pytest.raises(mysql_filter.DumpFormatError, match=r"gained columns to redact during the dump") as caught:
        _run_filter(mysql_filter.DumpFilter(REDACT, redact_patterns=patterns), statement)
    assert columns in str(caught.value) and "SECRETVALUE" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        HEAD + b"(1,'SECRETVALUE,NULL,'n');\n",  # unterminated string
        HEAD + b"(1,'SECRETVALUE',NULL);\n",  # too few values
        HEAD + b"(1,'SECRETVALUE',NULL,'n',5);\n",  # too many values
        HEAD + b"(1,'SECRETVALUE',NULL,'n') garbage;\n",
        HEAD + b"(1,'SECRETVALUE',NULL,'n');trailing\n",
        HEAD + b"(1,'SECRETVALUE',NULL,\n'n');\n",  # a row split over lines
        HEAD + b"(1,'SECRETVALUE',NULL,'n'),\n",  # the dump ends inside the statement
        b"INSERT INTO `User` VALUES (1,'SECRETVALUE',NULL,'n');\n",  # no column list
        b"INSERT INTO User (`id`) VALUES (1,'SECRETVALUE');\n",  # unquoted table name
        HEAD + b"1,'SECRETVALUE',NULL,'n';\n",
    ],
)
def test_filter_fails_closed_without_echoing_data(text: bytes) -> None:
    with pytest.raises(mysql_filter.DumpFormatError) as caught:
        _run_filter(mysql_filter.DumpFilter(REDACT), text)
    assert "SECRETVALUE" not in str(caught.value)
    assert isinstance(caught.value, DatabaseError)


# Hypothesis: render rows the way mariadb-dump does (mysql_real_escape_string is what
# PyMySQL's escape_string implements), filter them, parse the result back.

_UNESCAPE = {b"0": b"\0", b"n": b"\n", b"r": b"\r", b"Z": b"\x1a", b"b": b"\b", b"t": b"\t"}
_ESCAPE_OR_DOUBLED = re.compile(rb"\\(.)|''", re.DOTALL)


def _unescape(literal: bytes) -> bytes | None:
    if literal == b"NULL":
        return None
    if literal.startswith(b"0x"):
        return bytes.fromhex(literal[2:].decode())
    if literal[:1] != b"'":
        return literal
    assert literal[-1:] == b"'"

    def one(match: re.Match[bytes]) -> bytes:
        return b"'" if match.group(1) is None else _UNESCAPE.get(match.group(1), match.group(1))

    return _ESCAPE_OR_DOUBLED.sub(one, literal[1:-1])


_VALUES = st.one_of(
    st.none(),
    st.text(),
    st.text(alphabet="'\\\",()\n\r\0\x1a;` ").map(str),
    st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=20),
)


def _literal(value: Any, doubled: bool) -> bytes:
    if value is None:
        return b"NULL"
    if isinstance(value, bytes):
        return b"0x" + value.hex().upper().encode() if value else b"''"
    if isinstance(value, str):
        if doubled:  # a quote may also be written '' inside a backslash-escaped string
            return b"'" + escape_string(value).replace("\\'", "''").encode() + b"'"
        return b"'" + escape_string(value).encode() + b"'"
    return repr(value).encode()


def _expected(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return value.encode() if isinstance(value, str) else repr(value).encode()


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(_VALUES, min_size=4, max_size=4), min_size=1, max_size=6),
    redacted=st.sets(st.integers(0, 3)),
    one_row_per_line=st.booleans(),
    doubled=st.booleans(),
)
def test_filter_round_trip(rows: list[list[Any]], redacted: set[int], one_row_per_line: bool, doubled: bool) -> None:
    names = ["a", "b", "c", "d"]
    head = b"INSERT INTO `T` (" + b", ".join(b"`%s`" % n.encode() for n in names) + b") VALUES "
    rendered = [b"(" + b",".join(_literal(v, doubled) for v in row) + b")" for row in rows]
    text = head + (b",\n" if one_row_per_line else b",").join(rendered) + b";\n"
    replacement = {i: (b"NULL" if i % 2 else b"''") for i in redacted}
    dump_filter = mysql_filter.DumpFilter({"T": {names[i]: literal for i, literal in replacement.items()}})

    out = _run_filter(dump_filter, text)

    assert out.startswith(head) and out.endswith(b";\n")
    pos, parsed = len(head), []
    while out[pos : pos + 1] == b"(":
        spans, pos = mysql_filter.parse_row(out, pos)
        parsed.append([out[a:b] for a, b in spans])
        pos += 2 if out[pos : pos + 2] == b",\n" else 1
    assert len(parsed) == len(rows)
    for got, row in zip(parsed, rows, strict=True):
        for index, (literal, value) in enumerate(zip(got, row, strict=True)):
            if index in replacement:
                assert literal == replacement[index]
            else:
                assert literal == _literal(value, doubled) and _unescape(literal) == _expected(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_filter_never_crashes_on_arbitrary_rows(junk: bytes) -> None:
    """Arbitrary bytes after VALUES: either parsed or DumpFormatError, nothing else."""
    try:
        _run_filter(mysql_filter.DumpFilter(REDACT), HEAD + junk.replace(b"\n", b" ") + b"\n")
    except mysql_filter.DumpFormatError:
        pass
