"""One contract every registered engine passes, against real servers (PostgreSQL, MariaDB) and files.

Parametrized from the registry: an engine registered without a way to seed a test database here
(``SEEDS``) fails the suite, and so does one that breaks the contract.  The contract: the seeded
database is not empty and counts its rows; ``dump`` writes private files whose manifest hashes it
reports (the codec's); ``check_files`` passes on the dump and names a damaged copy; a scratch
database starts empty, takes the restore and then holds the same rows (compared row by row, not
only counted) and, where the engine has one, the same fingerprint; it is dropped afterwards.

The fake engine (``fake_engine.py``) is registered below with one line, as a maintainer would add one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relstep.databases import registry
from relstep.databases.base import DatabaseError, DumpPlan, Engine
from relstep.databases.registry import EngineSpec
from tests.apps import create_schema
from tests.databases import fake_engine

# The one registry line that adds the fake engine (the module is fake_engine.py).
registry.register(EngineSpec(key="fakejson", name="fakejson", label="fake JSON", module="tests.databases.fake_engine",
                             schemes=("fakejson",), sqlalchemy_driver="", has_server=False))

USERS, POSTS = 10, 30


@dataclass(frozen=True)
class Seed:
    """How the suite makes a database of an engine holding known rows, and reads every row back."""

    make: Callable[[pytest.FixtureRequest, Path], str]
    rows: Callable[[str], dict[str, list[tuple[Any, ...]]]]


def _sql_database(fixture: str | None) -> Callable[[pytest.FixtureRequest, Path], str]:
    def make(request: pytest.FixtureRequest, tmp_path: Path) -> str:
        url = request.getfixturevalue(fixture) if fixture else f"sqlite:///{tmp_path / 'app.db'}"
        create_schema(url, users=USERS, posts=POSTS)
        return url

    return make


def _sql_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: what a restore must give back exactly."""
    from sqlalchemy import MetaData, select

    from relstep.databases import create_engine

    engine = create_engine(url)
    try:
        metadata = MetaData()
        with engine.connect() as conn:
            metadata.reflect(conn)
            return {name: [tuple(row) for row in conn.execute(select(table).order_by(*table.primary_key.columns))]
                    for name, table in metadata.tables.items()}
    finally:
        engine.dispose()


def _fake_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    users = [[i, f"u{i}@example.com"] for i in range(1, USERS + 1)]
    posts = [[i, f"t{i}", 1 + i % USERS] for i in range(1, POSTS + 1)]
    return fake_engine.write_database(tmp_path / "fake.json", {"User": users, "Post": posts})


def _fake_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return {t: [tuple(r) for r in rows] for t, rows in fake_engine._tables(url).items()}


SEEDS: dict[str, Seed] = {
    "postgres": Seed(_sql_database("pg_url"), _sql_rows),
    "mysql": Seed(_sql_database("mysql_url"), _sql_rows),
    "sqlite": Seed(_sql_database(None), _sql_rows),
    "fakejson": Seed(_fake_database, _fake_rows),
    "fakelossy": Seed(_fake_database, _fake_rows),
}


def check_contract(spec: EngineSpec, engine: Engine, seed: Seed, url: str, work: Path) -> None:
    """Raise AssertionError naming the first clause of the contract that ``engine`` breaks."""
    assert not engine.is_empty(url), "is_empty: true for a database holding tables"
    expected = {table: len(rows) for table, rows in seed.rows(url).items()}
    assert engine.row_counts(url) == expected, "row_counts: not the seeded tables' counts"
    assert engine.server_version(url), "server_version: empty"
    assert all(isinstance(v, str) for v in engine.tool_versions().values()), "tool_versions: not strings"

    dest = work / "dump"
    dest.mkdir()
    info = engine.dump(url, dest, DumpPlan(redact=(), exclude_tables=()))
    assert info.engine == spec.name, f"dump: engine {info.engine!r}, the registry says {spec.name!r}"
    assert info.row_counts == expected, "dump: its row counts differ from the database's"
    written = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert sorted(info.files) == written, "dump: DumpInfo.files is not what it wrote"
    for relative in written:
        mode = stat.S_IMODE(os.stat(dest / relative).st_mode)
        assert mode & 0o077 == 0, f"dump: {relative} is readable by others ({oct(mode)})"
    for relative, entry in info.hashes.items():
        data = (dest / relative).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, \
            f"dump: the hash of {relative} is not of its bytes"

    engine.check_files(dest)
    damaged = work / "damaged"
    shutil.copytree(dest, damaged)
    largest = max((p for p in damaged.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])
    try:
        engine.check_files(damaged)
    except DatabaseError as exc:
        assert largest.name in str(exc), f"check_files: the message does not name {largest.name}: {exc}"
    else:
        raise AssertionError(f"check_files: a half-truncated {largest.name} passed")

    with engine.scratch_database(url) as scratch:
        assert engine.is_empty(scratch), "scratch_database: not empty"
        engine.restore(dest, scratch, info.extra)
        assert not engine.is_empty(scratch), "is_empty: true after a restore"
        assert engine.row_counts(scratch) == expected, "restore: row counts differ from the snapshot's"
        assert seed.rows(scratch) == seed.rows(url), "restore: the rows differ from the snapshot's"
        fingerprint = engine.fingerprint(url)
        if fingerprint is not None:
            assert engine.fingerprint(scratch) == fingerprint, "fingerprint: differs after the restore"


@pytest.mark.parametrize("key", [key for key in registry.ENGINES if key != "fakelossy"])
def test_every_registered_engine_keeps_the_contract(key: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    spec = registry.ENGINES[key]
    seed = SEEDS.get(key)
    assert seed is not None, f"engine {key} is registered but has no test database here; add it to SEEDS"
    url = seed.make(request, tmp_path)
    assert registry.spec_for_url(url) is spec
    check_contract(spec, spec.load(), seed, url, tmp_path)


def test_the_fake_engine_is_run_by_the_suite() -> None:
    """The registry line above is all it took: the parametrized contract includes the fake engine."""
    assert "fakejson" in registry.ENGINES
    assert registry.engine_for("fakejson:///tmp/x.json") is fake_engine
    assert registry.engine_named("fakejson") is fake_engine


def test_the_contract_fails_an_engine_that_loses_rows(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from tests.databases import fake_lossy_engine

    spec = registry.register(EngineSpec(key="fakelossy", name="fakelossy", label="lossy fake",
                                        module="tests.databases.fake_lossy_engine", schemes=("fakelossy",),
                                        sqlalchemy_driver="", has_server=False))
    try:
        url = SEEDS["fakelossy"].make(request, tmp_path)
        with pytest.raises(AssertionError, match=r"^restore: row counts differ from the snapshot's"):
            check_contract(spec, spec.load(), SEEDS["fakelossy"], url, tmp_path)
        assert spec.load() is fake_lossy_engine
    finally:
        registry.unregister("fakelossy")


def test_a_scheme_belongs_to_one_engine() -> None:
    with pytest.raises(ValueError, match=r"scheme\(s\) postgres belong to postgres"):
        registry.register(EngineSpec(key="other", name="other", label="other", module="x",
                                     schemes=("postgres",), sqlalchemy_driver=""))
