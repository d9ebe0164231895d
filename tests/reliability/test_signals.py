"""SIGINT / SIGTERM: exit 130 / 143, no partial snapshot, and the dump tool stopped with relstep.

The signal goes to relstep's own pid only (as `kill -TERM <pid>` or a CI runner's cancel does),
not to its process group: relstep itself must stop pg_dump / mariadb-dump, which otherwise
would keep running (and writing) after relstep is gone.
"""

from __future__ import annotations

import functools
import itertools
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MY_HOST, MY_PORT, MY_USER, PG_HOST, PG_PORT, _mysql_database, _need, _pg_database

from tests.apps import create_schema
from tests.helpers import clean_env, init_repo, relstep, sqlite_app, write_config
from tests.reliability.support import (
    descendants,
    fill_postgres,
    fill_sqlite,
    is_alive,
    partials,
    program,
    record_rows,
    start_relstep,
    verify_root,
    visible,
    wait_for,
    write_code_tree,
)

DUMP_TOOLS = {"pg_dump", "mariadb-dump", "mysqldump"}
ROWS = 300_000
_versions = itertools.count(1)


def _fill_mysql(url: str, rows: int) -> None:
    import pymysql

    db = url.rsplit("/", 1)[1]
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", database=db, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE events (id bigint AUTO_INCREMENT PRIMARY KEY, payload varchar(100) NOT NULL)")
            cur.execute("SET SESSION max_recursive_iterations = 10000000")
            cur.execute("INSERT INTO events (payload) WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                        f"FROM seq WHERE n < {rows}) SELECT concat(md5(rand()), md5(rand()), md5(rand())) FROM seq")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server_urls() -> Iterator[dict[str, Callable[[], str]]]:
    """Databases shared by this module's cases (filling them is the slow part), made on first use."""
    made: dict[str, str] = {}
    closers: list[Iterator[str]] = []

    def get(engine: str) -> str:
        if engine not in made:
            if engine == "postgres":
                _need("PostgreSQL", PG_HOST, PG_PORT)
                gen = _pg_database(f"relstep_sig_{time.time_ns()}")
            else:
                _need("MariaDB", MY_HOST, MY_PORT)
                gen = _mysql_database(f"relstep_sig_{time.time_ns()}")
            made[engine] = next(gen)
            closers.append(gen)
        return made[engine]

    yield {"get": get}
    for gen in closers:
        for _ in gen:
            pass


_apps: dict[str, tuple[Path, str]] = {}


@pytest.fixture
def signal_app(engine: str, server_urls: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An app whose dump takes about a second, with one earlier snapshot and one recorded release."""
    if engine in _apps and _apps[engine][0].exists():
        return _apps[engine]
    base = tmp_path_factory.mktemp(f"signals-{engine}")
    if engine == "sqlite":
        app = sqlite_app(base)
        fill_sqlite(app / "app.db", ROWS // 2)
        url = f"sqlite:///{app / 'app.db'}"
    else:
        url = server_urls["get"](engine)
        create_schema(url)
        (fill_postgres if engine == "postgres" else _fill_mysql)(url, ROWS)
        app = base / "app"
        (app / "frontend").mkdir(parents=True)
        (app / "frontend" / "index.html").write_text("<h1>app</h1>\n")
        init_repo(app)
    write_code_tree(app / "backend" / "lib", 300)
    write_config(app, {"database": {"url": url}, "code": {"backend": "backend", "frontend": "frontend"},
                       "environment": {}, "migrations": {"tool": "auto"}})
    ran = relstep("run", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    _apps[engine] = (app, url)
    return app, url


def _dump_is_writing(engine: str, root: Path) -> Callable[[], bool]:
    def check() -> bool:
        for partial in partials(root):
            db = partial / "databases" / "main"
            if engine == "sqlite" and any(db.glob(".sqlite-work-*/raw.sqlite3")):
                return True
            # pg_dump -j2: a worker is half-way through the big table's file (its own process).
            if engine == "postgres" and any(p.stat().st_size > 1 << 20 for p in db.glob("pg_dump/*.dat.gz")):
                return True
            if engine == "mysql" and (db / "dump.sql.zst").exists() and (db / "dump.sql.zst").stat().st_size > 0:
                return True
        return False

    return check


def _server_sessions(engine: str, url: str) -> int:
    """Other sessions still connected to the app's database (a dump the server is still serving)."""
    db = url.rsplit("/", 1)[1]
    if engine == "postgres":
        import psycopg

        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres") as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,)).fetchone()[0]
    import pymysql

    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (db,))
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("engine", ["sqlite", "postgres", "mysql"])
def test_a_signal_during_the_dump_removes_the_partial_and_stops_the_dump_tool(
    engine: str, signum: int, signal_app: tuple[Path, str]
) -> None:
    app, url = signal_app
    root = app / "backups" / "releases"
    before = verify_root(root)
    rows_before = record_rows(url)
    proc = start_relstep("run", "--version", f"2.0.{next(_versions)}", cwd=app)
    wait_for(_dump_is_writing(engine, root), 60, "the dump to write data", proc=proc)
    tools = [pid for pid in descendants(proc.pid) if program(pid) in DUMP_TOOLS]
    assert bool(tools) == (engine != "sqlite"), [(p, program(p)) for p in descendants(proc.pid)]
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    # Checked the moment relstep is gone: a dump tool still alive now would still be writing.
    survivors = [(pid, program(pid)) for pid in tools if is_alive(pid)]

    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert err == f"relstep: interrupted: stopped by {name}; no partial snapshot was left behind\n"
    assert out == ""
    assert survivors == []
    assert partials(root) == []
    assert verify_root(root) == before
    assert record_rows(url) == rows_before
    if engine != "sqlite":
        # The server side of the dump ends too (the server notices its client is gone).
        wait_for(lambda: _server_sessions(engine, url) == 0, 10, "the dump's server sessions to end", poll=0.05)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (Python has none of its own: relstep's main() set it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:   # gone already: wait_for then reports how it exited
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_exits_with_its_code_and_never_a_traceback(tmp_path: Path, signum: int) -> None:
    """From relstep's start to the last line of output: 128+N, or 0 when the run ended first."""
    app = sqlite_app(tmp_path)
    root = app / "backups" / "releases"
    url = f"sqlite:///{app / 'app.db'}"
    name = signal.Signals(signum).name
    outcomes = []
    for i, delay in enumerate((0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.75)):
        proc = start_relstep("run", "--version", f"1.0.{i}", cwd=app, env=clean_env())
        # The sweep starts when relstep's handlers are in place (its main() has run): before that,
        # a signal meets the interpreter's own start-up, not relstep. The delay after that event
        # only spreads the moments over the run; every outcome asserted below holds at any moment.
        wait_for(functools.partial(_catches_sigterm, proc.pid), 60, "relstep to install its signal handlers", proc=proc)
        time.sleep(delay)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
        outcomes.append(proc.returncode)
        assert proc.returncode in (-signum, 128 + signum, 0), (delay, proc.returncode, err)
        if proc.returncode == 128 + signum:
            assert "Traceback" not in err and "Aborted" not in err, err
            assert err.splitlines()[-1].startswith(f"relstep: interrupted: stopped by {name}"), err
        assert partials(root) == []
        snapshots = verify_root(root)
        if root.exists():
            assert all(Path(r.backup_path).name in snapshots for r in record_rows(url))
    assert 128 + signum in outcomes, outcomes
    assert len(visible(root)) <= len(outcomes)
