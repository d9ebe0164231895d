"""MariaDB redaction on the layouts real apps have, against the real server, mariadb-dump and mariadb.

MariaDB has no row-level security, so the row-loss case of PostgreSQL has no counterpart here:
an account that may not read a table makes mariadb-dump fail, it never returns fewer rows.
Every dump is byte-scanned (the zstd stream opened) and restored for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pymysql
import pytest
from conftest import MY_HOST, MY_PORT, MY_USER

from relstep.databases import mysql
from relstep.databases.base import DumpPlan, UnmatchedRedactPattern, plan_patterns
from tests.secret_scan import Scan


def _conn(url: str) -> pymysql.connections.Connection:
    return pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_USER, password="", autocommit=True,
                           database=url.rsplit("/", 1)[1])


def _run(url: str, *statements: str) -> None:
    conn = _conn(url)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _rows(url: str, sql: str) -> list[tuple]:
    conn = _conn(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(row) for row in cur.fetchall()]
    finally:
        conn.close()


def _scan(dest: Path, secrets: list[str], present: str) -> Scan:
    scan = Scan(secrets)
    scan.add_tree("dump", dest)
    assert scan.contains(present), "the scan must see the dump's rows, or finding nothing proves nothing"
    return scan


def test_virtual_and_stored_generated_columns_of_a_redacted_column_are_blanked_too(
    mysql_url: str, mysql_url2: str, tmp_path: Path
) -> None:
    _run(mysql_url,
         "CREATE TABLE User (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, password VARCHAR(100), "
         "shout VARCHAR(100) AS (upper(password)) VIRTUAL, "
         "tagged VARCHAR(120) AS (concat('tag:', `password`)) STORED, "
         "domain VARCHAR(100) AS (substring_index(email, '@', -1)) STORED)",
         "INSERT INTO User (id, email, password) VALUES (1, 'a@one.example', 'gen-secret-one'), "
         "(2, 'b@two.example', 'gen-secret-two')")
    info = mysql.dump(mysql_url, tmp_path, DumpPlan())
    assert info.redacted == {"User": ["password", "shout", "tagged"]}
    secrets = ["gen-secret-one", "GEN-SECRET-ONE", "GEN-SECRET-TWO", "tag:gen-"]
    assert _scan(tmp_path, secrets, "two.example").leaks() == []
    mysql.restore(tmp_path, mysql_url2)
    assert _rows(mysql_url2, "SELECT id, email, password, shout, tagged, domain FROM User ORDER BY id") == [
        (1, "a@one.example", None, None, None, "one.example"), (2, "b@two.example", None, None, None, "two.example")]


def test_system_versioned_history_is_kept_and_redacted(mysql_url: str, mysql_url2: str, tmp_path: Path) -> None:
    _run(mysql_url,
         "CREATE TABLE User (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, password VARCHAR(100)) "
         "WITH SYSTEM VERSIONING",
         "INSERT INTO User VALUES (1, 'first@example.com', 'hist-secret-old')",
         "UPDATE User SET email = 'second@example.com', password = 'hist-secret-new'")
    history_sql = "SELECT id, email, password FROM User FOR SYSTEM_TIME ALL ORDER BY row_start"
    info = mysql.dump(mysql_url, tmp_path, DumpPlan())
    assert "history_skipped" not in info.extra
    assert info.row_counts == {"User": 1} and info.redacted == {"User": ["password"]}
    assert _scan(tmp_path, ["hist-secret-old", "hist-secret-new"], "first@example.com").leaks() == []
    mysql.restore(tmp_path, mysql_url2)
    assert _rows(mysql_url2, history_sql) == [(1, "first@example.com", None), (1, "second@example.com", None)]
    # the history rows keep their periods: the old version ended when the new one began
    source = _rows(mysql_url, "SELECT row_start, row_end FROM User FOR SYSTEM_TIME ALL ORDER BY row_start")
    assert _rows(mysql_url2, "SELECT row_start, row_end FROM User FOR SYSTEM_TIME ALL ORDER BY row_start") == source


def test_transaction_precise_history_is_said_to_be_left_out(mysql_url: str, tmp_path: Path) -> None:
    _run(mysql_url,
         "CREATE TABLE ledger (id INT PRIMARY KEY, amount INT, "
         "trx_start BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE, "
         "trx_end BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE, "
         "PERIOD FOR SYSTEM_TIME(trx_start, trx_end)) WITH SYSTEM VERSIONING",
         "CREATE TABLE plain (id INT PRIMARY KEY) WITH SYSTEM VERSIONING",
         "INSERT INTO ledger (id, amount) VALUES (1, 10)", "UPDATE ledger SET amount = 20")
    info = mysql.dump(mysql_url, tmp_path, DumpPlan())
    assert info.extra["history_skipped"] == (
        "--dump-history cannot dump transaction-precise history (ledger), so the history of ledger, plain is "
        "left out; only their current rows are kept")
    assert info.row_counts == {"ledger": 1, "plain": 0}


def test_a_pattern_that_matches_nothing_fails_before_anything_is_written(mysql_url: str, tmp_path: Path) -> None:
    _run(mysql_url, "CREATE TABLE User (id INT PRIMARY KEY, password VARCHAR(100))")
    with pytest.raises(UnmatchedRedactPattern) as failed:
        mysql.dump(mysql_url, tmp_path, DumpPlan(redact=plan_patterns(["Users.password"])))
    assert failed.value.message.startswith(
        "database.redact pattern 'Users.password' matches no column (the closest columns are User.password)")
    assert list(tmp_path.iterdir()) == []


def test_show_and_the_manifest_say_history_was_left_out(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from tests.apps import make_app
    from tests.helpers import relstep

    app, url = make_app(tmp_path, request, "mysql")
    _run(url, "CREATE TABLE ledger (id INT PRIMARY KEY, amount INT, "
              "s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE, "
              "e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME(s, e)) "
              "WITH SYSTEM VERSIONING")
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    snap, = (p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith("."))
    why = ("--dump-history cannot dump transaction-precise history (ledger), so the history of ledger is left "
           "out; only their current rows are kept")
    assert json.loads((snap / "MANIFEST.json").read_text())["databases"]["main"]["extra"]["history_skipped"] == why
    assert f"left out (main): history: {why}" in relstep("show", snap.name, cwd=app).out.splitlines()


def test_an_excluded_system_versioned_table_loses_its_rows_and_history_but_not_its_schema(
    mysql_url: str, mysql_url2: str, tmp_path: Path
) -> None:
    _run(mysql_url,
         "CREATE TABLE Session (id INT PRIMARY KEY, token VARCHAR(100)) WITH SYSTEM VERSIONING",
         "INSERT INTO Session VALUES (1, 'sess-secret-old')", "UPDATE Session SET token = 'sess-secret-new'",
         "CREATE TABLE User (id INT PRIMARY KEY, email VARCHAR(100)) WITH SYSTEM VERSIONING",
         "INSERT INTO User VALUES (1, 'kept@example.com')")
    info = mysql.dump(mysql_url, tmp_path, DumpPlan(exclude_tables=("Session",)))
    assert info.excluded_tables == ["Session"] and "history_skipped" not in info.extra
    assert _scan(tmp_path, ["sess-secret-old", "sess-secret-new"], "kept@example.com").leaks() == []
    mysql.restore(tmp_path, mysql_url2)
    assert _rows(mysql_url2, "SELECT count(*) FROM Session FOR SYSTEM_TIME ALL") == [(0,)]
    assert _rows(mysql_url2, "SELECT id, email FROM User FOR SYSTEM_TIME ALL") == [(1, "kept@example.com")]
