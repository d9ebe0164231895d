"""Faithful: owners, GRANTs and default privileges come back; a role the snapshot needs and the
server lacks is named before anything changes; --no-owner --no-privileges says what it left out.

Real roles and grants on the real server, on both PostgreSQL paths.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.apps import create_schema
from tests.helpers import relstep
from tests.reliability.restore_support import app_with_snapshot, pg, pg_role_database


def _acl(db: str, reporting: str) -> dict[str, Any]:
    with pg(db) as conn:
        return {
            "select": conn.execute("SELECT has_table_privilege(%s, 'public.\"User\"', 'SELECT')",
                                   (reporting,)).fetchone()[0],
            "owner": conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'User'").fetchone()[0],
            "default acl": conn.execute("SELECT count(*) FROM pg_default_acl").fetchone()[0],
            "users": conn.execute('SELECT count(*) FROM "User"').fetchone()[0],
        }


@pytest.mark.parametrize("kind", ["owner", "no-createdb"])
def test_grants_and_default_privileges_come_back_and_a_missing_role_is_named_first(tmp_path: Path,
                                                                                   kind: str) -> None:
    import psycopg

    reporting = f"rep_{uuid.uuid4().hex[:8]}"
    with pg() as conn:
        conn.execute(f'CREATE ROLE "{reporting}"')
    try:
        with pg_role_database(kind) as (url, db):
            role = url.split("//")[1].split(":")[0]
            create_schema(url)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'GRANT SELECT ON "User" TO "{reporting}"')
                conn.execute(f'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "{reporting}"')
            app = app_with_snapshot(tmp_path, url, schema=False)
            snapshot = _acl(db, reporting)
            assert snapshot == {"select": True, "owner": role, "default acl": 1, "users": 10}
            with psycopg.connect(url, autocommit=True) as conn:   # a bad deploy lost the grants
                conn.execute(f'REVOKE SELECT ON "User" FROM "{reporting}"')
                conn.execute(f'ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM "{reporting}"')

            ran = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

            assert ran.code == 0, ran.err
            assert _acl(db, reporting) == snapshot

            # The reporting role is gone from the server: named before anything changes, exit 2.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'REVOKE SELECT ON "User" FROM "{reporting}"')
                conn.execute(f'ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM "{reporting}"')
                conn.execute("""DELETE FROM "Post" WHERE id > 5""")
            with pg() as conn:
                for name in [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with("
                                                        "datname, %s)", (db,)).fetchall()]:
                    with pg(name) as inner:
                        inner.execute(f'DROP OWNED BY "{reporting}"')
                conn.execute(f'DROP ROLE "{reporting}"')
            with pg(db) as conn:
                posts_before = conn.execute('SELECT count(*) FROM "Post"').fetchone()[0]

            refused = relstep("restore", "1.0.0", "--yes", cwd=app, input="")

            assert refused.code == 2, refused.err
            assert f"the snapshot needs role(s) {reporting}, which the server" in refused.last_err
            assert "nothing was changed" in refused.last_err and "--no-owner --no-privileges" in refused.last_err
            with pg(db) as conn:
                assert conn.execute('SELECT count(*) FROM "Post"').fetchone()[0] == posts_before == 5

            other = relstep("restore", "1.0.0", "--yes", "--no-owner", "--no-privileges", cwd=app, input="")

            assert other.code == 0, other.err
            # GRANT SELECT and the default privilege; the app's own role is no loss, so not listed.
            assert f"note: --no-privileges left out privilege statements for these roles: {reporting} (2)\n" \
                in other.out, other.out
            assert "--no-owner left out" not in other.out
            with pg(db) as conn:
                assert conn.execute('SELECT count(*) FROM "Post"').fetchone()[0] == 30
    finally:
        with pg() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{reporting}"')
