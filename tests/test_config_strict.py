"""relstep.yml read strictly (YAML 1.2 core, no duplicate keys, bounded aliases), ${VAR:-d} and
${VAR:?m}, URLs checked at config time, and Prisma's file: URLs resolved as Prisma resolves them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relstep.config import load_config
from relstep.errors import ConfigError


def load(tmp_path: Path, text: str | None, **env: str):
    if text is not None:
        (tmp_path / "relstep.yml").write_text(text)
    return load_config(None, environ=env, cwd=tmp_path)


def refused(tmp_path: Path, text: str | None, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **env)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message, message
    return message


@pytest.mark.parametrize(("text", "expected"), [
    ("retention: 3\ntag_prefix: v\nretention: 5\n",
     "line 3: key 'retention' is given twice (first on line 1); keep one"),
    ("database:\n  url: sqlite:///a.db\n  url: sqlite:///b.db\n",
     "line 3: key 'url' is given twice (first on line 2); keep one"),
    ("code:\n  api: a\n  web: w\n  api: b\n", "line 4: key 'api' is given twice (first on line 2); keep one"),
])
def test_duplicate_keys_are_errors_naming_key_and_lines(tmp_path: Path, text: str, expected: str) -> None:
    assert refused(tmp_path, text) == f"{tmp_path / 'relstep.yml'}: {expected}"


@pytest.mark.parametrize("value", ["010", "0x1F", "1:30", "0o17", "0b101", "1_000", "08", "-010", "1:30:00"])
def test_numbers_yaml_1_1_would_misread_are_refused(tmp_path: Path, value: str) -> None:
    # YAML 1.1 (PyYAML's SafeLoader) reads 010 as 8, 0x1F as 31, 1:30 as 90.
    assert refused(tmp_path, f"tag_prefix: v\nretention: {value}\n") == (
        f"{tmp_path / 'relstep.yml'}: line 2: {value} is not a plain decimal number; relstep reads YAML 1.2, "
        "where it would not mean what YAML 1.1 makes of it: write decimal digits for a number, or quote it "
        f"('{value}') for text"
    )


def test_yaml_1_2_core_scalars(tmp_path: Path) -> None:
    assert load(tmp_path, "retention: 10\n").retention == 10
    assert load(tmp_path, "retention: '010'\n").retention == 10  # quoted: the text 010, read as decimal
    # `yes`, `on` and dates are strings in YAML 1.2: a boolean key says so instead of reading true.
    assert "offsite.required: input should be a valid boolean" in refused(
        tmp_path, "offsite:\n  url: s3://b/p\n  required: yes\n")
    assert load(tmp_path, "tag_prefix: 2024-01-01\n").tag_prefix == "2024-01-01"
    assert load(tmp_path, "tag_prefix: on\n").tag_prefix == "on"
    config = load(tmp_path, "notify:\n  webhook: https://h/x\n  on: [success]\n")
    assert config.notify is not None and config.notify.on == ("success",)


def test_merge_keys_still_work(tmp_path: Path) -> None:
    # The second entry merges the first and overrides two of its keys: not a duplicate key.
    config = load(tmp_path, "databases:\n  - &first\n    name: a\n    url: sqlite:///a.db\n    redact: [User.token]\n"
                            "  - <<: *first\n    name: b\n    url: sqlite:///b.db\n")
    assert [db.redact for db in config.databases] == [("User.token",), ("User.token",)]


BILLION_LAUGHS = "code:\n  a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def test_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    message = refused(tmp_path, BILLION_LAUGHS)
    assert time.monotonic() - started < 2
    assert message.startswith(f"{tmp_path / 'relstep.yml'}: line ")
    assert message.endswith("the aliases here expand to more than 10000 values; write the values out instead "
                            "of nesting aliases")


@pytest.mark.parametrize("text", ["code: &a [*a]\n", "database: &d\n  redact: *d\n"])
def test_recursive_alias_is_one_line(tmp_path: Path, text: str) -> None:
    message = refused(tmp_path, text)
    assert message.endswith("an alias refers to the value that contains it (a recursive alias); remove it")


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    assert refused(tmp_path, "code: " + "[" * 5000 + "]" * 5000 + "\n").endswith(
        "invalid YAML: nested too deeply; relstep.yml needs a few levels at most")


# --- ${VAR}, ${VAR:-default}, ${VAR:?message} ----------------------------------------------------


@pytest.mark.parametrize(("template", "env", "expected"), [
    ("${DB_FILE:-app.db}", {}, "app.db"),
    ("${DB_FILE:-app.db}", {"DB_FILE": ""}, "app.db"),
    ("${DB_FILE:-app.db}", {"DB_FILE": "live.db"}, "live.db"),
    ("${DB_FILE-app.db}", {}, "app.db"),
    ("x${DB_FILE-}.db", {"DB_FILE": ""}, "x.db"),
    ("${DB_FILE:?set DB_FILE}", {"DB_FILE": "live.db"}, "live.db"),
    ("$${DB_FILE:-app.db}", {}, "${DB_FILE:-app.db}"),
])
def test_default_and_required_variables(tmp_path: Path, template: str, env: dict[str, str], expected: str) -> None:
    config = load(tmp_path, f"database:\n  url: 'sqlite:////data/{template}'\n", **env)
    assert config.database is not None and config.database.url == f"sqlite:////data/{expected}"


@pytest.mark.parametrize(("template", "env", "expected"), [
    ("${DB_URL:?set DB_URL to the database URL}", {}, "database.url: DB_URL is not set: set DB_URL to the "
                                                             "database URL"),
    ("${DB_URL:?set it}", {"DB_URL": ""}, "database.url: DB_URL is not set: set it"),
    ("${DB_URL:?}", {}, "database.url uses ${DB_URL}, but the environment variable DB_URL is not set"),
    ("${1DB}", {}, "database.url: '${' must start ${NAME}, ${NAME:-default} or ${NAME:?message} (NAME: letters, "
                   "digits, '_'); write $$ for a literal $"),
    ("${DB_URL", {}, "database.url: '${' must start"),
])
def test_required_and_malformed_variables(tmp_path: Path, template: str, env: dict[str, str], expected: str) -> None:
    message = refused(tmp_path, f"database:\n  url: '{template}'\n", **env)
    assert message.startswith(f"{tmp_path / 'relstep.yml'}: {expected}")


# --- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("padded", ["postgresql://app:pw@db:5432/app\n", "  postgresql://app:pw@db:5432/app \n",
                                    "\tpostgresql://app:pw@db:5432/app\r\n"])
def test_database_url_whitespace_is_trimmed(tmp_path: Path, padded: str) -> None:
    config = load(tmp_path, None, DATABASE_URL=padded)
    assert config.database is not None and config.database.url == "postgresql://app:pw@db:5432/app"
    assert config.record.url == "postgresql://app:pw@db:5432/app"


def test_blank_database_url_means_none(tmp_path: Path) -> None:
    assert load(tmp_path, None, DATABASE_URL=" \n").database is None


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://app:Pw-secret-9@db:fivefour/app", "postgresql://app:***@db:fivefour/app"),
    ("mysql://root@db:3306x/app", "mysql://root@db:3306x/app"),
    ("mysql://root@db:99999/app", "mysql://root@db:99999/app"),
])
def test_bad_port_is_one_line_naming_the_masked_url(tmp_path: Path, url: str, shown: str) -> None:
    message = refused(tmp_path, None, DATABASE_URL=url)
    assert message == (f"relstep.yml: DATABASE_URL {shown} has a port that is not a number from 1 to 65535; "
                       "write host:PORT, and percent-encode ':' '/' '@' in the password")
    assert "Pw-secret-9" not in message


@pytest.mark.parametrize("param", ["ssl_ca", "ssl_cert", "ssl_key"])
def test_missing_mariadb_tls_file_is_named(tmp_path: Path, param: str) -> None:
    message = refused(tmp_path, f"database:\n  url: mysql://app:pw@db/app?{param}=/nonexistent/ca.pem\n")
    assert message == (f"{tmp_path / 'relstep.yml'}: database.url mysql://app:***@db/app?{param}=/nonexistent/ca.pem: "
                       f"{param}=/nonexistent/ca.pem does not exist; fix the path (relative paths are read from the "
                       "working directory) or remove the parameter")
    (tmp_path / "ca.pem").write_text("pem\n")
    config = load(tmp_path, f"database:\n  url: mysql://app:pw@db/app?{param}={tmp_path / 'ca.pem'}\n")
    assert config.database is not None


def test_missing_postgres_tls_file_is_named(tmp_path: Path) -> None:
    message = refused(tmp_path, "record:\n  url: postgresql://db/app?sslmode=verify-full&sslrootcert=certs/root.crt\n")
    assert ("record.url postgresql://db/app?sslmode=verify-full&sslrootcert=certs/root.crt: "
            "sslrootcert=certs/root.crt does not exist") in message
    assert load(tmp_path, "database:\n  url: postgresql://db/app?sslrootcert=system\n").database is not None


# --- Prisma's file: URLs --------------------------------------------------------------------------


def prisma_layout(tmp_path: Path) -> Path:
    schema_dir = tmp_path / "backend" / "prisma"
    schema_dir.mkdir(parents=True)
    (schema_dir / "schema.prisma").write_text(
        'datasource db {\n  provider = "sqlite"\n  url = env("DATABASE_URL")\n}\n')
    (schema_dir / "dev.db").write_bytes(b"the real one")
    (tmp_path / "dev.db").write_bytes(b"a stale copy")
    return schema_dir


def test_prisma_file_url_is_relative_to_schema_prisma(tmp_path: Path) -> None:
    schema_dir = prisma_layout(tmp_path)
    config = load(tmp_path, "database:\n  url: file:./dev.db\n")
    assert config.database is not None and config.database.url == f"sqlite:///{schema_dir / 'dev.db'}"
    assert config.record.url == f"sqlite:///{schema_dir / 'dev.db'}"
    # The same from DATABASE_URL (what Prisma reads), and without the ./
    config = load(tmp_path, "code:\n  backend: backend\n", DATABASE_URL="file:dev.db?connection_limit=1")
    assert config.database is not None
    assert config.database.url == f"sqlite:///{schema_dir / 'dev.db'}?connection_limit=1"
    # sqlite:/// keeps meaning the config's folder; an absolute file: path stays absolute.
    assert load(tmp_path, "database:\n  url: sqlite:///dev.db\n").database.url == f"sqlite:///{tmp_path / 'dev.db'}"
    assert load(tmp_path, "database:\n  url: file:/srv/x.db\n").database.url == "sqlite:////srv/x.db"


def test_prisma_schema_found_next_to_migrations_path_and_ambiguity(tmp_path: Path) -> None:
    schema_dir = prisma_layout(tmp_path)
    other = tmp_path / "frontend" / "prisma"
    other.mkdir(parents=True)
    (other / "schema.prisma").write_text("// another app's schema\n")
    message = refused(tmp_path, "database:\n  url: file:./dev.db\n")
    assert "a file: database URL is relative to schema.prisma, and there are several" in message
    assert "set migrations.path to the app's prisma/migrations folder" in message
    config = load(tmp_path, "database:\n  url: file:./dev.db\nmigrations:\n  path: backend/prisma/migrations\n")
    assert config.database is not None and config.database.url == f"sqlite:///{schema_dir / 'dev.db'}"
    # Without a file: URL the second schema is no concern.
    assert load(tmp_path, "database:\n  url: sqlite:///app.db\n").database is not None


def test_record_table_must_be_table_or_schema_table(tmp_path: Path) -> None:
    assert load(tmp_path, "record:\n  table: app.ReleaseRecord\n").record.table == "app.ReleaseRecord"
    assert refused(tmp_path, "record:\n  table: a.b.c\n") == (
        f"{tmp_path / 'relstep.yml'}: record.table: 'a.b.c' must be TABLE or SCHEMA.TABLE (one dot at most, "
        "neither part empty)")


def test_prisma_layout_backs_up_the_database_prisma_uses(tmp_path: Path) -> None:
    """The real backup of Prisma's SQLite layout reads backend/prisma/dev.db, not a stale ./dev.db."""
    import io
    import sqlite3

    import zstandard

    from tests.helpers import clean_env, relstep

    schema_dir = tmp_path / "backend" / "prisma"
    schema_dir.mkdir(parents=True)
    (schema_dir / "schema.prisma").write_text(
        'datasource db {\n  provider = "sqlite"\n  url = env("DATABASE_URL")\n}\n')
    for path, who in ((schema_dir / "dev.db", "live"), (tmp_path / "dev.db", "stale")):
        with sqlite3.connect(path) as conn:
            conn.execute('CREATE TABLE "Post" (id INTEGER PRIMARY KEY, title TEXT)')
            conn.execute('INSERT INTO "Post" (title) VALUES (?)', (f"{who} row",))
        conn.close()
    (tmp_path / "relstep.yml").write_text("code:\n  backend: backend\nmigrations:\n  tool: none\nenvironment: {}\n")
    ran = relstep("backup", "--version", "1.0.0", cwd=tmp_path, env=clean_env(DATABASE_URL="file:./dev.db"))
    assert ran.code == 0, ran.err
    (snapshot,) = [p for p in (tmp_path / "backups" / "releases").iterdir() if not p.name.startswith(".")]
    dump = zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO((snapshot / "databases" / "main" / "database.sqlite3.zst").read_bytes())).read()
    restored = tmp_path / "restored.db"
    restored.write_bytes(dump)
    with sqlite3.connect(restored) as conn:
        assert conn.execute('SELECT title FROM "Post"').fetchall() == [("live row",)]
    conn.close()
