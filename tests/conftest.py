"""Shared fixtures: real PostgreSQL / MariaDB databases, created fresh per test.

Tests that need a server skip with a reason when none is reachable, unless
RELSTEP_TEST_REQUIRE_SERVICES=1 (set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apps import ENGINES, make_app

PG_HOST = os.environ.get("RELSTEP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RELSTEP_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RELSTEP_TEST_PG_USER", "postgres")
MY_HOST = os.environ.get("RELSTEP_TEST_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("RELSTEP_TEST_MYSQL_PORT", "3306"))
MY_USER = os.environ.get("RELSTEP_TEST_MYSQL_USER", "root")

# Servers here use trust auth (PostgreSQL) or an empty root password (MariaDB), so
# any password in a URL is accepted by PostgreSQL; tests plant this one and then
# scan snapshots, logs and argv for it.
PLANTED_DB_PASSWORD = "Pw-7f3c9e-never-leak"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


_running: list[str] = []   # the node id of the test being set up or run, if it is server-free


def _need(service: str, host: str, port: int) -> None:
    if _running:
        pytest.fail(f"{_running[0]} reached {service}, but tests/conftest.py's id_needs_servers calls it "
                    "server-free (it would run beside the server tests): give it a parameter id naming the "
                    "server, or name the server in its file", pytrace=False)
    if _reachable(host, port):
        return
    message = f"{service} not reachable on {host}:{port}"
    if os.environ.get("RELSTEP_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " and RELSTEP_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_admin_url() -> str:
    _need("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"


def _pg_database(name: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}:{PLANTED_DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True) as conn:
            # A restore keeps the database it replaced as <name>_before_restore_<time>: those go too.
            kept = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                (f"{name}_before_restore_",)).fetchall()
            for (database,) in [(name,), *kept]:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; its URL carries PLANTED_DB_PASSWORD."""
    _need("PostgreSQL", PG_HOST, PG_PORT)
    yield from _pg_database(_unique("relstep_t"))


@pytest.fixture
def pg_url2() -> Iterator[str]:
    """A second fresh PostgreSQL database (restore target)."""
    _need("PostgreSQL", PG_HOST, PG_PORT)
    yield from _pg_database(_unique("relstep_r"))


def _mysql_database(name: str) -> Iterator[str]:
    import pymysql

    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
    finally:
        conn.close()
    try:
        yield f"mysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{name}"
    finally:
        conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh, empty MariaDB database (root, empty password)."""
    _need("MariaDB", MY_HOST, MY_PORT)
    yield from _mysql_database(_unique("relstep_t"))


@pytest.fixture
def mysql_url2() -> Iterator[str]:
    _need("MariaDB", MY_HOST, MY_PORT)
    yield from _mysql_database(_unique("relstep_r"))


@pytest.fixture
def mysql_password_url(mysql_url: str) -> Iterator[str]:
    """A MariaDB user with a real password (PLANTED_DB_PASSWORD) owning mysql_url's database."""
    import pymysql

    db = mysql_url.rsplit("/", 1)[1]
    user = _unique("u")[:16]
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PLANTED_DB_PASSWORD}'")
            cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{PLANTED_DB_PASSWORD}'")
            cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'")
            cur.execute(f"GRANT ALL ON `{db}`.* TO '{user}'@'localhost'")
            cur.execute(f"GRANT RELOAD, PROCESS ON *.* TO '{user}'@'%'")
            cur.execute(f"GRANT RELOAD, PROCESS ON *.* TO '{user}'@'localhost'")
    finally:
        conn.close()
    try:
        yield f"mysql://{user}:{PLANTED_DB_PASSWORD}@{MY_HOST}:{MY_PORT}/{db}"
    finally:
        conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
                cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")
        finally:
            conn.close()


@pytest.fixture(params=ENGINES)
def engine_app(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """The same small app on each engine in turn: (app folder, database URL)."""
    return make_app(tmp_path, request, request.param)


# --------------------------------------------------------------------------- running in two processes
#
# `pytest -n 2 --dist loadgroup` (the README's command, .ci/run's) runs the suite in two worker
# processes.  Every test that may touch the shared PostgreSQL or MariaDB server is put in one
# group, ``servers``, whose tests run one after another in a single worker, exactly as in a serial
# run: several of them assert on server-wide state (relstep's sessions, scratch databases, locks).
# The other worker takes the tests that touch no server (SQLite, the CI runners, units), which
# share nothing with them but the machine.
#
# xdist's own loadgroup reads ``xdist_group`` marks by rewriting node ids, which pytest 9 no longer
# allows, so the scheduler below groups by node id itself: a test is server-free only when its file
# never names a server, or when its parameters name SQLite and no server.  Each worker checks, at
# collection, that no test the id calls server-free requests a server fixture (a collection error
# if one does): anything in doubt stays in the ``servers`` group.

SERVERS_GROUP = "servers"
# A file naming any of these may reach a server (directly, through a fixture, or parametrized over
# the engines).  A test that reaches one anyway, through a helper that asks for a server fixture by
# name, fails at once (``_need``): the classification is checked on every run, not left to timing.
_SERVER_WORDS = ("postgres", "mysql", "mariadb", "psycopg", "pymysql", "pg_url", "pg_admin", "engine_app",
                 "private_pg", "running_pg", "PrivatePostgres", "real_project", "session_database", "ENGINES",
                 "realtools")
_SERVER_FIXTURES = {"pg_url", "pg_url2", "mysql_url", "mysql_url2", "mysql_password_url", "pg_admin_url",
                    "private_pg", "running_pg", "password_pg", "prisma_project"}
_SERVER_PARAMS = {"postgres", "postgresql", "mysql", "mariadb", "pg", "my"}
_ROOT = Path(__file__).resolve().parent.parent
_mentions_servers: dict[str, bool] = {}


def _file_mentions_servers(relative: str) -> bool:
    if relative not in _mentions_servers:
        text = (_ROOT / relative).read_text(errors="replace").lower()
        _mentions_servers[relative] = any(word.lower() in text for word in _SERVER_WORDS)
    return _mentions_servers[relative]


def id_needs_servers(nodeid: str) -> bool:
    """Whether the test with this node id may touch a server, judged from the id (and its file) alone."""
    if not _file_mentions_servers(nodeid.split("::", 1)[0]):
        return False
    name = nodeid.rsplit("::", 1)[-1]
    if not name.endswith("]") or "[" not in name:
        return True
    tokens = set(name[name.index("[") + 1:-1].lower().split("-"))
    return not ("sqlite" in tokens and not tokens & _SERVER_PARAMS)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if id_needs_servers(item.nodeid):
            item.add_marker(pytest.mark.xdist_group(SERVERS_GROUP))
        elif _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            raise pytest.UsageError(
                f"{item.nodeid} requests a server fixture, but its id makes it server-free for the two-worker "
                "run (tests/conftest.py, id_needs_servers): give it a parameter id naming the server")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[:] = [] if id_needs_servers(item.nodeid) else [item.nodeid]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _running.clear()


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ServersTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SERVERS_GROUP if id_needs_servers(nodeid) else nodeid

    return ServersTogether(config, log)
