"""Helpers for the fingerprint tests: real backups through the CLI, and damage done to a restored database.

The damage is real SQL run on the real restored (scratch or target) database, right after the
engine's real restore returns: the only stand-in is the seam, a wrapper around the engine
module's ``restore`` installed with monkeypatch, because a restore into a scratch database that
relstep creates and drops itself leaves no other moment to change it.  So these tests drive the
CLI in-process (typer's CliRunner), where the wrapper is visible; backups run as subprocesses.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.helpers import Ran, relstep


def backup(app: Path, version: str = "1.0.0") -> Path:
    ran = relstep("backup", "--version", version, cwd=app, input="")
    assert ran.code == 0, ran.out + ran.err
    return Path(ran.out.strip())


def manifest(snap: Path) -> dict[str, Any]:
    return json.loads((snap / "MANIFEST.json").read_text())


def execute(url: str, *statements: str) -> None:
    """Run statements on a real database, committed."""
    if url.startswith("sqlite:"):
        from relstep.databases.sqlite import database_path

        with sqlite3.connect(database_path(url)) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    from relstep.databases import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
    finally:
        engine.dispose()


def damage_after_restore(monkeypatch: pytest.MonkeyPatch, engine: ModuleType, *statements: str) -> list[str]:
    """Make ``engine.restore`` run the real restore, then ``statements`` on the restored database.

    Returns the list of URLs it damaged (so a test can see the seam was used)."""
    real_restore: Callable[..., None] = engine.restore
    damaged: list[str] = []

    def restore_then_damage(db_dir: Path, url: str, *args: Any, **kwargs: Any) -> Any:
        done = real_restore(db_dir, url, *args, **kwargs)
        execute(url, *statements)
        damaged.append(url)
        return done

    monkeypatch.setattr(engine, "restore", restore_then_damage)
    return damaged


def damage_before_the_proof(monkeypatch: pytest.MonkeyPatch, *statements: str) -> list[str]:
    """Run ``statements`` on the database a real restore is about to prove (its staged copy, or the
    target after an in-place restore), then the real proof.  Returns the URLs it damaged.

    PostgreSQL's staged restore has read every table's rows back by then (as each was loaded): only
    schema damage reaches its proof through this seam; row damage needs ``damage_after_restore``."""
    from relstep import restore as restore_module

    real_prove: Callable[..., None] = restore_module.prove
    damaged: list[str] = []

    def damage_then_prove(url: str, *args: Any, **kwargs: Any) -> None:
        execute(url, *statements)
        damaged.append(url)
        real_prove(url, *args, **kwargs)

    monkeypatch.setattr(restore_module, "prove", damage_then_prove)
    return damaged


def cli(app: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Ran:
    """The CLI in this process (so a monkeypatched seam applies), run from the app's folder."""
    from relstep.cli import app as typer_app

    monkeypatch.chdir(app)
    result = CliRunner().invoke(typer_app, list(args), catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def problems(out: str) -> list[str]:
    return [line.split("problem:", 1)[1].strip() for line in out.splitlines() if "problem:" in line]


def proof_line(out: str) -> str:
    lines = [line.split("proof:", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("proof:")]
    assert len(lines) == 1, out
    return lines[0]


def snapshots(app: Path) -> Iterator[Path]:
    """Everything in the app's backup root (snapshots, hidden partials), but its lock file."""
    root = app / "backups" / "releases"
    return iter(sorted(p for p in root.iterdir() if p.name != ".relstep.lock")) if root.is_dir() else iter(())


# PostgreSQL tables whose COPY text has every hard case (tabs, newlines, backslashes, timestamptz,
# floats, bytea, NULLs), one over many blocks, an empty one, one to redact (u.password) and one
# to leave out (left_out): the content-digest tests of both layouts dump these.
PG_CONTENT_TABLES = (
    "CREATE TABLE t (id int PRIMARY KEY, note text, at timestamptz, x float8, b bytea)",
    r"INSERT INTO t VALUES (1, E'tab\there\nnewline \\ backslash', '2026-01-02 03:04:05+02', 0.1, '\x00ff'), "
    "(2, NULL, NULL, 1e300, NULL)",
    "CREATE TABLE u (id int PRIMARY KEY, password text NOT NULL, note text)",
    "INSERT INTO u VALUES (1, 'hunter2', 'a'), (2, 'secret', NULL)",
    "CREATE TABLE big (id int, filler text)",
    "INSERT INTO big SELECT i, repeat(md5(i::text), 8) FROM generate_series(1, 20000) i",
    "CREATE TABLE nothing (id int)", "CREATE TABLE left_out (id int)", "INSERT INTO left_out VALUES (1)",
)
