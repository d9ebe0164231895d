"""Helpers for the restore reliability tests: PostgreSQL roles and databases, apps with a snapshot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import PG_HOST, PG_PORT, PLANTED_DB_PASSWORD, _need

from tests.apps import create_schema
from tests.helpers import init_repo, relstep, write_config


def pg(dbname: str = "postgres", **kwargs: Any) -> Any:
    """A psycopg connection as the superuser (autocommit unless told otherwise)."""
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=kwargs.pop("user", "postgres"), dbname=dbname,
                           autocommit=kwargs.pop("autocommit", True), **kwargs)


def databases_like(prefix: str) -> list[str]:
    with pg() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                           (prefix,)).fetchall()]


def relstep_sessions() -> list[tuple[Any, ...]]:
    """Every session a restore opened (they all carry application_name relstep-restore-<id>)."""
    with pg() as conn:
        return conn.execute("SELECT pid, datname, state, query FROM pg_stat_activity "
                            "WHERE application_name LIKE '%relstep-restore-%'").fetchall()


@contextmanager
def pg_role_database(kind: str) -> Iterator[tuple[str, str]]:
    """(URL, database) of a new database owned by a new login role, dropped with everything a restore kept.

    ``kind`` "owner": the role may create databases (the staged swap); "no-createdb": it may
    not (the one-transaction path).
    """
    _need("PostgreSQL", PG_HOST, PG_PORT)
    db = f"relstep_rs_{uuid.uuid4().hex[:10]}"
    role = f"app_{uuid.uuid4().hex[:8]}"
    with pg() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN {"CREATEDB" if kind == "owner" else "NOCREATEDB"}')
        conn.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')
    try:
        yield f"postgresql://{role}:{PLANTED_DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{db}", db
    finally:
        with pg() as conn:
            for name in [db, *databases_like(db)]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def app_with_snapshot(tmp_path: Path, url: str, schema: bool = True, **config: Any) -> Path:
    """An app on ``url`` (the tests' small schema unless ``schema`` is False) with its snapshot 1.0.0."""
    if schema:
        create_schema(url)
    app = tmp_path / "app"
    app.mkdir()
    (app / ".gitignore").write_text("backups/\n")
    init_repo(app)
    write_config(app, {"database": {"url": url, **config}, "migrations": {"tool": "auto"}})
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    return app
