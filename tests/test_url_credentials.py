"""Database passwords, however a URL carries them, reach every connection relstep makes.

Real accounts that need their password, on both server engines:

* PostgreSQL: the shared server trusts every connection from 127.0.0.1, so it would accept any
  password (or none) and prove nothing.  These tests start a private cluster
  (``tests/reliability/support.py``'s ``PrivatePostgres``) whose ``pg_hba.conf`` asks every role but
  ``postgres`` for its password (``scram-sha-256``): a pg_dump, pg_restore, psql or driver
  connection without the right password is refused by the server.
* MariaDB: an account created ``IDENTIFIED BY`` the password.

The passwords hold every character a URL reserves (``/ @ : # ? % + & =``) and a space, or non-ASCII
letters (``é``, and ``€`` which Latin-1 lacks), percent-encoded in the URL's userinfo or given as a
``?password=`` query parameter; and a generated one with ``/ + =`` written unencoded.
``backup``, ``verify --restore-test``, ``record``, ``restore`` and ``doctor`` must all succeed, and
the password must appear nowhere: not in any argv (strace records every execve), not on
stdout/stderr, not in the CI files, not in any byte of the snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import all_bytes, clean_env, init_repo, relstep, write_config
from tests.reliability.support import PrivatePostgres, relstep_argv, run_traced

MY_HOST = os.environ.get("RELSTEP_TEST_MYSQL_HOST", "127.0.0.1")
MY_PORT = int(os.environ.get("RELSTEP_TEST_MYSQL_PORT", "3306"))
MY_ROOT = os.environ.get("RELSTEP_TEST_MYSQL_USER", "root")

# Every URL-reserved character and a space, between pieces long enough to be searched for on their
# own (a leak of half the password is a leak); and one with non-ASCII letters: 'é' is Latin-1 (which
# PyMySQL used to encode a str password as, sending other bytes than the account's UTF-8 ones), '€' is
# not Latin-1 at all (PyMySQL raised UnicodeEncodeError).
PASSWORDS = {
    "reserved": ("Rk2w/9pLm@4vQx:7hTz#Yb3n?Wc5s%Jd8f+Ge6 Hu&Ka1=No",
                 ["Rk2w", "9pLm", "4vQx", "7hTz", "Yb3n", "Wc5s", "Jd8f", "Ge6 Hu", "Hu&Ka1", "Ka1=No"]),
    "non-latin1": ("Zw3€Tq8éRv/5 Np#Lx", ["Zw3€Tq8", "Tq8éRv", "Rv/5", "5 Np", "Np#Lx"]),
    # A generated password as people paste it, '/' '+' '=' not encoded: urllib reads the '/' as the
    # start of the path while the drivers read the password up to the '@'.
    "base64": ("Zq8/x+Rk2w9pLm4v==", ["Zq8/", "x+Rk2w9pLm4v"]),
}
# (password, how the URL carries it): percent-encoded userinfo, ?password=, or written as is.
CASES = [("reserved", "userinfo"), ("reserved", "query"), ("non-latin1", "userinfo"), ("non-latin1", "query"),
         ("base64", "unencoded")]
DUMP_TOOLS = {"postgres": "pg_dump", "mysql": "mariadb-dump"}


def pieces(password: str) -> list[str]:
    """The password as it may leak: whole, percent-encoded either way, or in pieces."""
    return [password, quote(password, safe=""), quote(password), *dict(PASSWORDS.values())[password]]


@dataclass
class Account:
    """A database that only ``user`` with ``password`` may use, and how to reach it as an admin."""

    engine: str
    user: str
    host: str
    port: int
    database: str

    password: str

    def url(self, form: str, password: str | None = None) -> str:
        scheme = "postgresql" if self.engine == "postgres" else "mysql"
        password = self.password if password is None else password
        secret = password if form == "unencoded" else quote(password, safe="")
        if form != "query":
            return f"{scheme}://{self.user}:{secret}@{self.host}:{self.port}/{self.database}"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.database}?password={secret}"

    def query(self, sql: str) -> list[tuple]:
        """Run SQL as the administrator (not through relstep)."""
        if self.engine == "postgres":
            import psycopg

            with psycopg.connect(host=self.host, port=self.port, user="postgres", dbname=self.database,
                                 autocommit=True) as conn:
                cur = conn.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        import pymysql

        conn = pymysql.connect(host=self.host, port=self.port, user=MY_ROOT, password="", database=self.database,
                               autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


# --------------------------------------------------------------------------- servers and accounts


@pytest.fixture(scope="module")
def password_pg() -> Iterator[PrivatePostgres]:
    """A private cluster where every role but postgres must give its password."""
    cluster = PrivatePostgres()
    try:
        hba = cluster.data / "pg_hba.conf"
        hba.write_text("local all all trust\n"
                       "host all postgres 127.0.0.1/32 trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n")
        shutil.chown(hba, "postgres", "postgres") if cluster.as_user else None
        cluster._run("pg_ctl", "-D", str(cluster.data), "reload")
        yield cluster
    finally:
        cluster.destroy()


def _pg_account(cluster: PrivatePostgres, password: str) -> Iterator[Account]:
    import psycopg
    from psycopg import sql

    name = f"creds_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(name),
                                                                                sql.Literal(password)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    # The tables belong to the account, as an app's do.
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user=name, password=password, dbname=name,
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items SELECT i, 'item-' || i FROM generate_series(1, 7) i")
    try:
        yield Account("postgres", name, "127.0.0.1", cluster.port, name, password)
    finally:
        _drop_pg_account(cluster, name)


def _drop_pg_account(cluster: PrivatePostgres, name: str) -> None:
    """The role, its database, the copies a restore kept and the scratch databases left behind."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        for (db,) in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s) "
                                  "OR starts_with(datname, 'relstep_scratch_')", (name,)).fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _mysql_account(password: str) -> Iterator[Account]:
    import pymysql

    from tests.conftest import _need

    _need("MariaDB", MY_HOST, MY_PORT)
    name = f"creds_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_ROOT, password="", autocommit=True,
                           charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
            for host in ("%", "localhost"):
                cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password))
                # ALL on *.*: verify's restore test creates its scratch database beside this one.
                cur.execute(f"GRANT ALL ON *.* TO '{name}'@'{host}'")
            cur.execute(f"CREATE TABLE `{name}`.items (id int PRIMARY KEY, name varchar(50) NOT NULL)")
            cur.execute(f"INSERT INTO `{name}`.items VALUES " + ", ".join(f"({i}, 'item-{i}')" for i in range(1, 8)))
    finally:
        conn.close()
    try:
        yield Account("mysql", name, MY_HOST, MY_PORT, name, password)
    finally:
        conn = pymysql.connect(host=MY_HOST, port=MY_PORT, user=MY_ROOT, password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
                for host in ("%", "localhost"):
                    cur.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
        finally:
            conn.close()


@pytest.fixture(params=CASES, ids=[f"{kind}-{form}" for kind, form in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(password, form)"""
    kind, form = request.param
    return PASSWORDS[kind][0], form


@pytest.fixture(params=["postgres", "mysql"])
def account(request: pytest.FixtureRequest, case: tuple[str, str]) -> Iterator[Account]:
    password = case[0]
    if request.param == "postgres":
        yield from _pg_account(request.getfixturevalue("password_pg"), password)
    else:
        yield from _mysql_account(password)


def _app(tmp_path: Path, url: str) -> Path:
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "server.js").write_text("// app\n")
    (app / ".gitignore").write_text("backups/\n")
    init_repo(app)
    write_config(app, {"database": {"url": url}, "code": {"src": "src"}, "migrations": {"tool": "none"},
                       "environment": {}})
    return app


def _env(tmp_path: Path) -> dict[str, str]:
    return clean_env(GITHUB_OUTPUT=str(tmp_path / "github_output"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
                     GITHUB_ACTIONS="true", RELSTEP_DOTENV=str(tmp_path / "relstep.env"))


def _leaks(password: str, produced: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(piece, where) for piece in pieces(password) for where, blob in produced.items()
            if piece.encode() in blob]


# --------------------------------------------------------------------------- the tests


def test_every_command_connects_with_a_password_of_reserved_and_non_latin1_characters(
    account: Account, case: tuple[str, str], tmp_path: Path
) -> None:
    url = account.url(case[1])
    app = _app(tmp_path, url)
    env = _env(tmp_path)

    trace, code, out, err = run_traced(relstep_argv("backup", "--version", "1.0.0", "--json"), cwd=app, env=env,
                                       log=tmp_path / "execve.strace")
    assert code == 0, err
    assert DUMP_TOOLS[account.engine] in trace.programs(), trace.programs()
    snapshot = Path(json.loads(out)["snapshot"])
    manifest = json.loads((snapshot / "MANIFEST.json").read_text())
    (stored,) = [db["url"] for db in manifest["databases"].values()]
    assert "***" in stored and account.database in stored, stored

    verify = relstep("verify", "--restore-test", cwd=app, env=env)
    assert verify.code == 0, verify.err
    record = relstep("record", cwd=app, env=env)
    assert record.code == 0, record.err
    assert account.query('SELECT "version" FROM "ReleaseRecord"' if account.engine == "postgres"
                         else "SELECT version FROM ReleaseRecord") == [("1.0.0",)]

    account.query("DELETE FROM items WHERE id > 2")
    restore = relstep("restore", "1.0.0", "--yes", cwd=app, env=env)
    assert restore.code == 0, restore.err
    assert account.query("SELECT id, name FROM items ORDER BY id") == [(i, f"item-{i}") for i in range(1, 8)]

    doctor = relstep("doctor", cwd=app, env=env)
    database_lines = [line for line in doctor.out.splitlines() if " database main " in line]
    assert len(database_lines) == 1 and database_lines[0].startswith("ok"), doctor.out

    ci = b"".join((tmp_path / name).read_bytes() for name in ("github_output", "summary.md", "relstep.env")
                  if (tmp_path / name).exists())
    produced = {
        "argv": b"\n".join(b" ".join(args) for args in trace.argvs),
        "output": "".join(r.out + r.err for r in (verify, record, restore, doctor)).encode() + (out + err).encode(),
        "CI files": ci,
        "snapshot": all_bytes(snapshot),
    }
    assert _leaks(account.password, produced) == []


@pytest.mark.parametrize("case", CASES[:2], ids=["userinfo", "query"], indirect=True)
def test_a_wrong_password_is_refused_by_the_server(account: Account, case: tuple[str, str], tmp_path: Path) -> None:
    """The control: these accounts really need their password, so the test above proves it arrived."""
    app = _app(tmp_path, account.url(case[1], password=account.password[::-1]))
    ran = relstep("backup", "--version", "1.0.0", cwd=app, env=_env(tmp_path))
    assert ran.code == 3, ran.err
    assert ran.last_err.startswith("relstep: backup failed: "), ran.err
    assert ("authentication failed" if account.engine == "postgres" else "access denied") in ran.last_err
    assert _leaks(account.password, {"output": (ran.out + ran.err).encode()}) == []
    releases = app / "backups" / "releases"
    assert {p.name for p in releases.iterdir()} <= {".relstep.lock"}  # no snapshot, no partial


@pytest.mark.parametrize("case", [CASES[-1]], ids=["base64-unencoded"], indirect=True)
def test_urls_given_on_the_command_line_are_read_like_database_url(account: Account, tmp_path: Path) -> None:
    """`restore --database-url` and `verify --scratch-url`, pasted from a CI secret with a trailing
    newline and an unencoded password: trimmed as database.url is (itself from `${VAR:-default}`
    here), connected, and masked.  The
    config's own URL is unusable (wrong password), so the command-line ones are what connected."""
    url = account.url("unencoded")
    # The backup's URL comes from a ${VAR:-default} holding it with a trailing newline, as a CI
    # secret often does.
    app = _app(tmp_path, "${CREDS_DATABASE_URL:-sqlite:///nothing.db}")
    env = _env(tmp_path)
    backup = relstep("backup", "--version", "1.0.0", "--json", cwd=app, env={**env, "CREDS_DATABASE_URL": url + "\n"})
    assert backup.code == 0, backup.err
    assert json.loads(backup.out)["snapshot"]
    write_config(app, {"database": {"url": account.url("unencoded", password="wrong-password-1")},
                       "code": {"src": "src"}, "migrations": {"tool": "none"}, "environment": {}})

    verify = relstep("verify", "--restore-test", "--scratch-url", f" {url}\n", cwd=app, env=env)
    assert verify.code == 0, verify.err
    account.query("DELETE FROM items")
    restore = relstep("restore", "1.0.0", "--yes", "--database-url", f"{url}\n", cwd=app, env=env)
    assert restore.code == 0, restore.err
    assert account.query("SELECT count(*) FROM items") == [(7,)]
    # A failure names the URL with its password masked, every piece of it.
    bad = url.replace(f":{account.port}/", ":1/")
    failed = relstep("restore", "1.0.0", "--yes", "--database-url", bad, cwd=app, env=env)
    assert failed.code != 0 and failed.last_err.startswith("relstep: restore failed: "), failed.err
    assert ":***@" in failed.last_err, failed.last_err
    outputs = "".join(r.out + r.err for r in (backup, verify, restore, failed)).encode()
    assert _leaks(account.password, {"output": outputs}) == []


# --------------------------------------------------------------------------- sslpassword


KEY_PASSPHRASE = "Kp4/Vx9 Lm#Qr2€Ws"


def _openssl(*args: str, cwd: Path) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_pg() -> Iterator[tuple[PrivatePostgres, Path]]:
    """A private cluster that lets roles in only with a client certificate (``cert`` in pg_hba.conf),
    and a folder with a CA, the server's certificate and the means to sign client certificates."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cluster = PrivatePostgres()
    pki = cluster.base / "pki"
    pki.mkdir()
    try:
        _openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2", "-subj", "/CN=relstep-ca",
                 "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
        _openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
                 "-out", "server.csr", cwd=pki)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", "server.crt", cwd=pki)
        for name in ("ca.crt", "server.crt", "server.key"):
            (pki / name).chmod(0o600)
            if cluster.as_user:
                shutil.chown(pki / name, "postgres", "postgres")
        with (cluster.data / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{pki / 'server.crt'}'\nssl_key_file = '{pki / 'server.key'}'\n"
                       f"ssl_ca_file = '{pki / 'ca.crt'}'\n")
        (cluster.data / "pg_hba.conf").write_text("local all all trust\n"
                                                  "host all postgres 127.0.0.1/32 trust\n"
                                                  "hostssl all all 127.0.0.1/32 cert\n")
        cluster.stop("fast")
        cluster.start()
        yield cluster, pki
    finally:
        cluster.destroy()


@pytest.fixture
def cert_account(tls_pg: tuple[PrivatePostgres, Path], tmp_path: Path) -> Iterator[tuple[Account, str]]:
    """A role that logs in with a client certificate whose key is encrypted with KEY_PASSPHRASE;
    yields the account and the URL's TLS parameters (sslpassword included, encoded)."""
    import psycopg
    from psycopg import sql

    cluster, pki = tls_pg
    name = f"creds_{uuid.uuid4().hex[:10]}"
    client = tmp_path / "client"
    client.mkdir()
    _openssl("req", "-new", "-newkey", "rsa:2048", "-subj", f"/CN={name}", "-passout", f"pass:{KEY_PASSPHRASE}",
             "-keyout", "client.key", "-out", "client.csr", cwd=client)
    _openssl("x509", "-req", "-in", "client.csr", "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
             "-CAcreateserial", "-days", "2", "-out", "client.crt", cwd=client)
    (client / "client.key").chmod(0o600)
    assert b"ENCRYPTED" in (client / "client.key").read_bytes()
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    account = Account("postgres", name, "127.0.0.1", cluster.port, name, KEY_PASSPHRASE)
    # The tables belong to the account (created through the administrator, then handed over).
    with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname=name, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items SELECT i, 'item-' || i FROM generate_series(1, 7) i")
        conn.execute(sql.SQL("ALTER TABLE items OWNER TO {}").format(sql.Identifier(name)))
    params = (f"sslmode=require&sslcert={quote(str(client / 'client.crt'))}&sslkey={quote(str(client / 'client.key'))}"
              f"&sslpassword={quote(KEY_PASSPHRASE, safe='')}")
    try:
        yield account, params
    finally:
        _drop_pg_account(cluster, name)


def test_the_client_key_passphrase_sslpassword_reaches_pg_dump_pg_restore_and_psql(
    cert_account: tuple[Account, str], tmp_path: Path
) -> None:
    """libpq reads ``sslpassword`` from no environment variable; relstep hands it to the tools in a
    service file that lives in memory only, so the encrypted client key opens for them too."""
    account, params = cert_account
    url = f"postgresql://{account.user}@{account.host}:{account.port}/{account.database}?{params}"
    app = _app(tmp_path, url)
    env = _env(tmp_path)
    trace, code, out, err = run_traced(relstep_argv("backup", "--version", "1.0.0", "--json"), cwd=app, env=env,
                                       log=tmp_path / "execve.strace")
    assert code == 0, err
    assert "pg_dump" in trace.programs()
    verify = relstep("verify", "--restore-test", cwd=app, env=env)
    assert verify.code == 0, verify.err
    account.query("DELETE FROM items")
    restore = relstep("restore", "1.0.0", "--yes", cwd=app, env=env)
    assert restore.code == 0, restore.err
    assert account.query("SELECT count(*) FROM items") == [(7,)]
    record = relstep("record", cwd=app, env=env)
    assert record.code == 0, record.err
    snapshot = Path(json.loads(out)["snapshot"])
    produced = {
        "argv": b"\n".join(b" ".join(args) for args in trace.argvs),
        "environment": b"\n".join(trace.environs),  # not even the tools' environment holds it
        "output": "".join(r.out + r.err for r in (verify, restore, record)).encode() + (out + err).encode(),
        "snapshot": all_bytes(snapshot),
    }
    assert [(p, w) for p in (KEY_PASSPHRASE, quote(KEY_PASSPHRASE, safe=""), "Kp4/Vx9", "Qr2€Ws")
            for w, blob in produced.items() if p.encode() in blob] == []
    assert not list(tmp_path.rglob("*service*")) and not list(app.rglob("*.conf"))  # nothing on disk


def test_a_one_letter_password_leaves_the_message_readable(password_pg: PrivatePostgres, tmp_path: Path) -> None:
    """The server refuses the wrong one-letter password 'p'; the message is whole, not '***assword'."""
    made = _pg_account(password_pg, PASSWORDS["reserved"][0])
    account = next(made)
    try:
        app = _app(tmp_path, account.url("userinfo", password="p"))
        ran = relstep("backup", "--version", "1.0.0", cwd=app, env=_env(tmp_path))
        assert ran.code == 3, ran.err
        assert ran.last_err == (
            f"relstep: backup failed: authentication failed for user {account.user} on PostgreSQL at 127.0.0.1:"
            f"{account.port}, database {account.database} (postgresql://{account.user}:***@127.0.0.1:{account.port}/"
            f"{account.database}); check the password")
    finally:
        made.close()  # drops the account
