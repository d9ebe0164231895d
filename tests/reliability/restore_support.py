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


def relstep_sessions(application: str | None = None) -> list[tuple[Any, ...]]:
    """Every session a restore opened (they all carry application_name relstep-restore-<id>); with
    ``application``, only those of restores whose URL named it (``<application> (relstep-restore-<id>)``):
    other people's restores run on the same server at the same time."""
    pattern = "%relstep-restore-%" if application is None else f"{application} (relstep-restore-%"
    with pg() as conn:
        return conn.execute("SELECT pid, datname, state, query FROM pg_stat_activity "
                            "WHERE application_name LIKE %s", (pattern,)).fetchall()


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
        # Named after the database: relstep_sessions(db) then sees only this test's restores.
        yield f"postgresql://{role}:{PLANTED_DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{db}?application_name={db}", db
    finally:
        with pg() as conn:
            for name in [db, *databases_like(db)]:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


# A backup as an older relstep wrote it, before backup refused unrestorable plans (issue 12): the
# same relstep with that refusal switched off, in this subprocess only. TEST-ONLY SEAM: relstep
# itself has no way to skip the refusal; the snapshot it writes is what an older relstep left on
# disk, and restore must still leave the target unchanged when it cannot load it.
_OLDER_RELSTEP = (
    "import sys\n"
    "import relstep.databases.mysql as my, relstep.databases.postgres as pg, relstep.databases.sqlite as lite\n"
    "pg._refuse_unrestorable = my._refuse_unrestorable = lite._refuse_unrestorable = lambda *a, **k: None\n"
    "from relstep.cli import main\n"
    "main(sys.argv[1:])\n"
)


def older_relstep(*args: str, cwd: Path) -> Any:
    """``relstep ARGS`` as an older relstep, which wrote snapshots that could never be restored."""
    import subprocess
    import sys

    from tests.helpers import Ran, clean_env

    done = subprocess.run([sys.executable, "-c", _OLDER_RELSTEP, *args], cwd=cwd, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    return Ran(done.returncode, done.stdout, done.stderr)


def app_with_snapshot(tmp_path: Path, url: str, schema: bool = True, older: bool = False, **config: Any) -> Path:
    """An app on ``url`` (the tests' small schema unless ``schema`` is False) with its snapshot 1.0.0,
    written by an older relstep (see ``older_relstep``) when ``older``."""
    if schema:
        create_schema(url)
    app = tmp_path / "app"
    app.mkdir()
    (app / ".gitignore").write_text("backups/\n")
    init_repo(app)
    write_config(app, {"database": {"url": url, **config}, "migrations": {"tool": "auto"}})
    ran = (older_relstep if older else relstep)("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    if older:
        # After the upgrade this relstep refuses that plan, so the person's config now keeps every
        # table and column (the restore's safety snapshot follows it); the old snapshot stays.
        write_config(app, {"database": {"url": url, "redact_defaults": False}, "migrations": {"tool": "auto"}})
    return app


def as_role(url: str, *statements: str) -> None:
    """Run ``statements`` on ``url`` as its own role (autocommit), as the app would."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def public_state(db: str, *, blob_oids: bool = True, grantees_like: str | None = None) -> dict[str, Any]:
    """Everything a restore must bring back (and a half-done one would change) in ``public``: the
    objects, constraints, every table's rows, the large objects (with their oids unless ``blob_oids``
    is False), and with ``grantees_like`` the table privileges of the roles matching it."""
    with pg(db) as conn:
        objects = conn.execute(
            "SELECT c.relkind, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' ORDER BY 1, 2").fetchall()
        constraints = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                   "WHERE connamespace = 'public'::regnamespace ORDER BY 1").fetchall()
        tables = [name for kind, name in objects if kind == "r"]
        rows = {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}
        blobs = conn.execute(f"SELECT {'oid, ' if blob_oids else ''}lo_get(oid) FROM pg_largeobject_metadata "
                             "ORDER BY 1").fetchall()
        state = {"objects": objects, "constraints": constraints, "rows": rows, "blobs": blobs}
        if grantees_like is not None:
            state["grants"] = conn.execute(
                "SELECT grantee, table_name, privilege_type FROM information_schema.table_privileges "
                "WHERE table_schema = 'public' AND grantee LIKE %s ORDER BY 1, 2, 3", (grantees_like,)).fetchall()
    return state
