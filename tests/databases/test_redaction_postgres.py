"""PostgreSQL redaction on the layouts real apps have, against the real server, pg_dump and pg_restore.

Every dump is byte-scanned (compressed streams opened) for the redacted values, and restored for
real where the case allows, comparing every row.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import PG_USER

from relstep.databases import postgres
from relstep.databases.base import DatabaseError, DumpPlan, UnmatchedRedactPattern, plan_patterns
from tests.helpers import relstep, write_config
from tests.secret_scan import Scan


def _run(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _scan(dest: Path, secrets: list[str], present: str) -> Scan:
    scan = Scan(secrets)
    scan.add_tree("dump", dest)
    assert scan.contains(present), "the scan must see the dump's rows, or finding nothing proves nothing"
    return scan


# --------------------------------------------------------------------------- row-level security


@pytest.fixture
def rls_owner(pg_url: str) -> tuple[str, str]:
    """(URL as the table owner, role) for a table of 10 rows under FORCE ROW LEVEL SECURITY whose
    policy shows the owner only the 5 even ids: relstep's own COPY used to dump exactly those 5."""
    role = f"relstep_owner_{uuid.uuid4().hex[:8]}"
    _run(pg_url, f"CREATE ROLE {role} LOGIN; GRANT ALL ON SCHEMA public TO {role}")
    owner_url = pg_url.replace(f"//{PG_USER}:", f"//{role}:", 1)
    _run(owner_url, """
        CREATE TABLE "User" (id int PRIMARY KEY, email text NOT NULL, password text);
        INSERT INTO "User" SELECT i, 'u' || i || '@example.com', 'rls-secret-' || i FROM generate_series(1, 10) i;
        ALTER TABLE "User" ENABLE ROW LEVEL SECURITY;
        ALTER TABLE "User" FORCE ROW LEVEL SECURITY;
        CREATE POLICY even_only ON "User" USING (id % 2 = 0);
    """)
    yield owner_url, role
    _run(pg_url, f'DROP TABLE IF EXISTS "User"; REVOKE ALL ON SCHEMA public FROM {role}; DROP ROLE {role}')


def test_a_table_row_security_filters_fails_the_dump_naming_it_and_the_fix(
    rls_owner: tuple[str, str], tmp_path: Path
) -> None:
    owner_url, role = rls_owner
    assert _rows(owner_url, 'SELECT count(*) FROM "User"') == [(5,)]   # what the old redacted COPY saw
    with pytest.raises(DatabaseError) as failed:
        postgres.dump(owner_url, tmp_path, DumpPlan())
    assert failed.value.message == (
        f"row-level security hides rows of User from user {role}, so the dump would be incomplete; back up "
        "as a role with BYPASSRLS (or a superuser), as the table owner without FORCE ROW LEVEL SECURITY, "
        "or list the tables in database.exclude_tables"
    )
    assert not (tmp_path / postgres.REDACTED_DIR).exists()


def test_row_security_refusal_is_exit_3_from_the_cli_and_leaves_no_snapshot(
    rls_owner: tuple[str, str], tmp_path: Path
) -> None:
    owner_url, role = rls_owner
    app = tmp_path / "app"
    app.mkdir()
    write_config(app, {"database": {"url": owner_url}, "code": {}, "backup_root": "backups"})
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 3, ran.err
    assert ran.last_err.startswith(f"relstep: backup failed: row-level security hides rows of User from user {role}")
    assert [p.name for p in (app / "backups").iterdir()] == [".relstep.lock"]   # no snapshot, no .partial


def test_the_same_table_dumped_by_a_role_that_bypasses_row_security_keeps_every_row(
    rls_owner: tuple[str, str], pg_url: str, pg_url2: str, tmp_path: Path
) -> None:
    info = postgres.dump(pg_url, tmp_path, DumpPlan())   # the superuser: row security does not apply
    assert info.row_counts == {"User": 10}
    assert info.redacted == {"User": ["password"]}
    assert _scan(tmp_path, [f"rls-secret-{i}" for i in range(1, 11)], "u7@example.com").leaks() == []
    postgres.restore(tmp_path, pg_url2)
    assert _rows(pg_url2, 'SELECT id, email, password FROM "User" ORDER BY id') == [
        (i, f"u{i}@example.com", None) for i in range(1, 11)]


def test_excluding_the_filtered_table_lets_the_backup_run(rls_owner: tuple[str, str], tmp_path: Path) -> None:
    owner_url, _ = rls_owner
    info = postgres.dump(owner_url, tmp_path, DumpPlan(exclude_tables=("User",)))
    assert info.excluded_tables == ["User"] and info.row_counts == {"User": 0}


# --------------------------------------------------------------------------- partitions and inheritance


PARTITIONED = """
CREATE TABLE accounts (id int NOT NULL, region text NOT NULL, secret_note text, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE accounts_eu PARTITION OF accounts FOR VALUES IN ('eu');
CREATE TABLE accounts_us PARTITION OF accounts FOR VALUES IN ('us') PARTITION BY RANGE (id);
CREATE TABLE accounts_us_low PARTITION OF accounts_us FOR VALUES FROM (0) TO (100);
CREATE TABLE accounts_us_high PARTITION OF accounts_us FOR VALUES FROM (100) TO (1000);
INSERT INTO accounts SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 'part-secret-' || i
    FROM generate_series(1, 200) i;
CREATE TABLE people (id int PRIMARY KEY, secret_note text);
CREATE TABLE staff (badge text) INHERITS (people);
INSERT INTO people VALUES (1, 'inh-secret-1');
INSERT INTO staff VALUES (2, 'inh-secret-2', 'B-2');
"""


def test_a_pattern_on_a_partitioned_table_or_an_inheritance_parent_redacts_every_partition_and_child(
    pg_url: str, pg_url2: str, tmp_path: Path
) -> None:
    _run(pg_url, PARTITIONED)
    plan = DumpPlan(redact=plan_patterns(["accounts.secret_note", "people.secret_note"]))
    info = postgres.dump(pg_url, tmp_path, plan)
    assert info.redacted == {t: ["secret_note"] for t in (
        "accounts_eu", "accounts_us_high", "accounts_us_low", "people", "staff")}
    assert info.row_counts == {"accounts_eu": 100, "accounts_us_high": 50, "accounts_us_low": 50,
                               "people": 1, "staff": 1}
    secrets = [f"part-secret-{i}" for i in range(1, 201)] + ["inh-secret-1", "inh-secret-2"]
    assert _scan(tmp_path, secrets, "B-2").leaks() == []
    postgres.restore(tmp_path, pg_url2)
    assert _rows(pg_url2, "SELECT count(*), count(secret_note) FROM accounts") == [(200, 0)]
    assert _rows(pg_url2, "SELECT id, region FROM accounts ORDER BY id") == [
        (i, "eu" if i % 2 == 0 else "us") for i in range(1, 201)]
    assert _rows(pg_url2, "SELECT id, secret_note, badge FROM staff") == [(2, None, "B-2")]
    assert _rows(pg_url2, "SELECT id, secret_note FROM ONLY people") == [(1, None)]


def test_excluding_a_partitioned_table_excludes_its_partitions(pg_url: str, tmp_path: Path) -> None:
    _run(pg_url, PARTITIONED)
    info = postgres.dump(pg_url, tmp_path, DumpPlan(exclude_tables=("accounts",)))
    assert info.excluded_tables == ["accounts_eu", "accounts_us_high", "accounts_us_low"]
    assert {t: n for t, n in info.row_counts.items() if n} == {"people": 1, "staff": 1}
    assert _scan(tmp_path, ["part-secret-2", "part-secret-101", "part-secret-199"], "B-2").leaks() == []


# --------------------------------------------------------------------------- generated columns


def test_a_stored_generated_column_computed_from_a_redacted_one_holds_no_value(
    pg_url: str, pg_url2: str, tmp_path: Path
) -> None:
    _run(pg_url, """
        CREATE TABLE "User" (id int PRIMARY KEY, email text NOT NULL, password text,
                             shout text GENERATED ALWAYS AS (upper(password)) STORED,
                             hint text GENERATED ALWAYS AS ('hint:' || left(password, 4)) STORED);
        INSERT INTO "User" (id, email, password) VALUES (1, 'a@example.com', 'gen-secret-one'),
                                                        (2, 'b@example.com', 'gen-secret-two');
    """)
    info = postgres.dump(pg_url, tmp_path, DumpPlan())
    assert info.redacted == {"User": ["password"]}
    scan = _scan(tmp_path, ["gen-secret-one", "GEN-SECRET-ONE", "GEN-SECRET-TWO", "hint:gen-"], "b@example.com")
    assert scan.leaks() == []
    # naming the generated column is no typo: its values are never in the dump
    (tmp_path / "named").mkdir()
    assert postgres.dump(pg_url, tmp_path / "named", DumpPlan(redact=plan_patterns(["User.shout"]))).redacted == {
        "User": ["password"]}
    postgres.restore(tmp_path, pg_url2)
    assert _rows(pg_url2, 'SELECT id, email, password, shout, hint FROM "User" ORDER BY id') == [
        (1, "a@example.com", None, None, None), (2, "b@example.com", None, None, None)]


# --------------------------------------------------------------------------- patterns and defaults


def test_a_pattern_that_matches_nothing_fails_naming_the_closest_columns(pg_url: str, tmp_path: Path) -> None:
    _run(pg_url, 'CREATE TABLE "User" (id int PRIMARY KEY, password text, "passwordHash" text)')
    with pytest.raises(UnmatchedRedactPattern) as failed:
        postgres.dump(pg_url, tmp_path, DumpPlan(redact=plan_patterns(["Users.password"])))
    assert failed.value.exit_code == 2
    assert failed.value.message == (
        "database.redact pattern 'Users.password' matches no column (the closest columns are User.password, "
        "User.passwordHash); fix the pattern, or end it with '?' if it may match nothing"
    )
    assert list(tmp_path.iterdir()) == []   # refused before pg_dump ran
    info = postgres.dump(pg_url, tmp_path, DumpPlan(redact=plan_patterns(["Users.password?"])))
    assert info.redacted == {"User": ["password", "passwordHash"]}   # the defaults still apply


def test_defaults_cover_rails_laravel_and_token_columns_and_can_be_turned_off(
    pg_url: str, tmp_path: Path
) -> None:
    columns = ["encrypted_password", "reset_password_token", "unlock_token", "confirmation_token",
               "remember_token", "two_factor_secret", "two_factor_recovery_codes", "api_token", "otp_secret",
               "totp_secret", "refresh_token"]
    _run(pg_url, f"CREATE TABLE users (id int PRIMARY KEY, name text, {', '.join(c + ' text' for c in columns)});"
                 f"INSERT INTO users VALUES (1, 'ann', {', '.join(repr('dflt-' + c) for c in columns)})")
    (tmp_path / "on").mkdir()
    info = postgres.dump(pg_url, tmp_path / "on", DumpPlan())
    assert info.redacted == {"users": columns}
    assert _scan(tmp_path / "on", [f"dflt-{c}" for c in columns], "ann").leaks() == []
    (tmp_path / "off").mkdir()
    off = postgres.dump(pg_url, tmp_path / "off", DumpPlan(redact=plan_patterns(["users.api_token"], defaults=False)))
    assert off.redacted == {"users": ["api_token"]}
    leaks = _scan(tmp_path / "off", [f"dflt-{c}" for c in columns], "ann").leaks()
    assert sorted({secret for secret, _, _ in leaks}) == sorted(f"dflt-{c}" for c in columns if c != "api_token")
