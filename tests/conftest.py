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


def _need(service: str, host: str, port: int) -> None:
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
