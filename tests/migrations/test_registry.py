"""The registry: tool names, the contract every module keeps, and migrations.json's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from relstep.databases import create_engine
from relstep.errors import BackupError, ConfigError
from relstep.migrations import CHOICES, TOOLS, MigrationState, read_state, tool_for
from relstep.migrations.base import Migration, topological


def test_choices_are_the_config_names() -> None:
    assert CHOICES == ("auto", "prisma", "alembic", "django", "flyway", "knex", "sequelize", "golang-migrate",
                       "rails", "typeorm", "none")
    assert tool_for("none") is None
    with pytest.raises(ConfigError, match="unknown migrations.tool 'liquibase'; use one of auto, prisma"):
        tool_for("liquibase")


@pytest.mark.parametrize("name", list(TOOLS))
def test_every_module_keeps_the_contract(name: str, tmp_path: Path) -> None:
    module = tool_for(name)
    assert module is not None and module.NAME == name
    for attribute in ("TABLE", "DEFAULT_PATH", "MARKERS", "detect", "applied", "on_disk", "schema_revision",
                      "comparable"):
        assert hasattr(module, attribute), attribute
    assert module.on_disk(tmp_path / "missing") == []
    assert module.schema_revision([]) is None
    assert module.detect(set(), {}, tmp_path) is False


def test_migrations_json_shape_round_trips() -> None:
    state = MigrationState("prisma", [Migration("1_init", "ab" * 32, "2026-01-01T00:00:00+00:00"), Migration("2")],
                           "2")
    data = json.loads(json.dumps(state.to_json()))
    assert data == {
        "tool": "prisma",
        "applied": [{"name": "1_init", "checksum": "ab" * 32, "applied_at": "2026-01-01T00:00:00+00:00"},
                    {"name": "2", "checksum": None, "applied_at": None}],
        "schema_revision": "2",
    }
    assert MigrationState.from_json(data) == state


def test_read_state_none_and_fresh_database(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.connect() as conn:
        assert read_state(conn, "none", None, tmp_path) == MigrationState("none")
        assert read_state(conn, "prisma", None, tmp_path) == MigrationState("prisma")   # table not created yet
    engine.dispose()


def test_an_unreadable_table_is_a_backup_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE _prisma_migrations (id TEXT)"))   # not Prisma's shape
    with engine.connect() as conn, pytest.raises(BackupError, match="could not read the prisma migration table"):
        read_state(conn, "prisma", None, tmp_path)
    engine.dispose()


def test_camel_case_table_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text('CREATE TABLE "SequelizeMeta" (name VARCHAR(255) PRIMARY KEY)'))
        conn.execute(text('INSERT INTO "SequelizeMeta" VALUES (\'1-a.js\')'))
        conn.execute(text("CREATE TABLE sequelizemeta (name VARCHAR(255))"))   # a decoy differing only in case
    with engine.connect() as conn:
        assert [m.name for m in read_state(conn, "sequelize", None, tmp_path).applied] == ["1-a.js"]
    engine.dispose()


def test_topological_is_deterministic_iterative_and_survives_cycles() -> None:
    chain = {str(i): [str(i - 1)] if i else [] for i in range(5000)}   # deeper than Python's recursion limit
    assert topological(chain, ["4999"]) == [str(i) for i in range(5000)]
    assert topological({"a": ["b"], "b": ["a"]}, ["a"]) == ["b", "a"]
    assert topological({"m": ["x", "y"], "x": ["r"], "y": ["r"], "r": ["gone"]}, ["m"]) == ["r", "x", "y", "m"]
