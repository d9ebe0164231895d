"""TLS to MariaDB: the URL's ssl_* parameters reach mariadb-dump and the mariadb client, not only PyMySQL.

A private mariadbd (``mariadb-install-db`` into a temporary folder, its own port) with a test CA,
a server certificate for 127.0.0.1 and ``require_secure_transport``, and an account that
``REQUIRE X509``: only a client that presents a certificate signed by the CA gets in.  PyMySQL
(relstep's connection A) gets in with the URL's parameters alone; the dump tool and the restore
client get in only if relstep hands them the same parameters, so the round trip below fails
without that.  Everything is real: openssl, mariadbd, mariadb-dump, mariadb.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pymysql
import pytest

from relstep.databases import mysql
from relstep.databases.base import DatabaseError, DumpPlan
from tests.reliability.support import free_port, need

PASSWORD = "tls-Pw-31e8"


@dataclass(frozen=True)
class TlsServer:
    port: int
    certs: Path

    def url(self, database: str, **params: str) -> str:
        query = "&".join(f"{key}={quote(value, safe='/')}" for key, value in params.items())
        return f"mysql://x509user:{PASSWORD}@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def client_params(self) -> dict[str, str]:
        return {"ssl_ca": str(self.certs / "ca.pem"), "ssl_cert": str(self.certs / "client.pem"),
                "ssl_key": str(self.certs / "client.key")}

    def root(self, *statements: str) -> None:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", autocommit=True,
                               ssl={"ca": str(self.certs / "ca.pem")})
        with conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate; and a second, unrelated CA."""
    folder.mkdir()
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=relstep test {ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, extra in (("server", "/CN=127.0.0.1", ["-extfile", "san.ext"]),
                                 ("client", "/CN=relstep-client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{name}.pem", *extra, cwd=folder)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    tools = ("openssl", "mariadb-install-db", "mariadb-dump", "mariadb")
    need(all(shutil.which(t) for t in tools) and Path("/usr/sbin/mariadbd").exists(),
         f"a private TLS MariaDB needs {', '.join(tools)} and /usr/sbin/mariadbd")
    base = tmp_path_factory.mktemp("tls-mariadb")
    certs = base / "certs"
    _make_certificates(certs)
    data = base / "data"
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", f"--user={getpass.getuser()}",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}", f"--user={getpass.getuser()}",
         f"--port={port}", "--bind-address=127.0.0.1", f"--socket={base / 'mysqld.sock'}",
         f"--pid-file={base / 'mysqld.pid'}", f"--log-error={base / 'error.log'}", "--skip-log-bin",
         "--innodb-buffer-pool-size=32M", f"--ssl-ca={certs / 'ca.pem'}", f"--ssl-cert={certs / 'server.pem'}",
         f"--ssl-key={certs / 'server.key'}", "--require-secure-transport=ON"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    tls = TlsServer(port, certs)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                tls.root("SELECT 1")
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError("the private MariaDB did not start: "
                                         + (base / "error.log").read_text(errors="replace")[-2000:]) from None
                time.sleep(0.2)
        tls.root("CREATE DATABASE app", "CREATE DATABASE restored",
                 f"CREATE USER 'x509user'@'%' IDENTIFIED BY '{PASSWORD}' REQUIRE X509",
                 "GRANT ALL ON *.* TO 'x509user'@'%'",
                 "CREATE TABLE app.`User` (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL,"
                 " password VARCHAR(100) NOT NULL)",
                 "INSERT INTO app.`User` VALUES (1, 'a@example.com', 'secret-1'), (2, 'b@example.com', 'secret-2')")
        yield tls
    finally:
        server.terminate()
        server.wait(30)


def test_dump_and_restore_through_a_client_certificate(tls_server: TlsServer, tmp_path: Path) -> None:
    source = tls_server.url("app", **tls_server.client_params())
    dest = tmp_path / "db"
    dest.mkdir()

    info = mysql.dump(source, dest, DumpPlan())

    assert info.row_counts == {"User": 2} and info.consistent
    assert info.redacted == {"User": ["password"]}
    target = tls_server.url("restored", **tls_server.client_params())
    mysql.restore(dest, target)
    assert mysql.row_counts(target) == {"User": 2}
    conn = pymysql.connect(host="127.0.0.1", port=tls_server.port, user="x509user", password=PASSWORD,
                           database="restored", ssl={"ca": str(tls_server.certs / "ca.pem"),
                                                     "cert": str(tls_server.certs / "client.pem"),
                                                     "key": str(tls_server.certs / "client.key")})
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, email, password FROM `User` ORDER BY id")
        assert cur.fetchall() == ((1, "a@example.com", ""), (2, "b@example.com", ""))


def test_without_the_client_certificate_the_account_is_refused(tls_server: TlsServer, tmp_path: Path) -> None:
    """The server really demands the certificate (or the test above would prove nothing)."""
    with pytest.raises(DatabaseError, match="access denied for user 'x509user'"):
        mysql.dump(tls_server.url("app", ssl_ca=str(tls_server.certs / "ca.pem")), tmp_path, DumpPlan())


@pytest.mark.parametrize(
    ("params", "verifies"),
    [
        ({"ssl_ca": "CA"}, True),
        ({"ssl_ca": "CA", "ssl_check_hostname": "false"}, False),
        ({"ssl_ca": "CA", "ssl_check_hostname": "0"}, False),
        ({"ssl_ca": "CA", "ssl_check_hostname": "true"}, True),
        ({"ssl_cert": "CERT", "ssl_key": "KEY"}, False),   # PyMySQL checks nothing without a CA either
        ({}, False),
    ],
)
def test_the_option_file_carries_the_urls_tls_parameters(params: dict[str, str], verifies: bool) -> None:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    target = mysql._Target.from_url(f"mysql://u:p@db.example:3306/app?{query}", DatabaseError)
    lines = mysql.option_lines(target, shutil.which("mariadb-dump") or "mariadb-dump")
    expected = [f'{option}="{params[key]}"' for key, option in (("ssl_ca", "ssl-ca"), ("ssl_cert", "ssl-cert"),
                                                                 ("ssl_key", "ssl-key")) if key in params]
    assert [line for line in lines if line.startswith("ssl-") and "=" in line] == expected
    assert ("ssl-verify-server-cert" in lines) == verifies


def test_the_tools_check_the_server_certificate_against_the_urls_ca(tls_server: TlsServer, tmp_path: Path) -> None:
    """The real client, given relstep's option file: the right CA connects, another CA is refused."""
    results = {}
    for ca in ("ca", "other-ca"):
        params = {**tls_server.client_params(), "ssl_ca": str(tls_server.certs / f"{ca}.pem")}
        target = mysql._Target.from_url(tls_server.url("app", **params), DatabaseError)
        options = tmp_path / f"{ca}.cnf"
        options.write_text("\n".join(mysql.option_lines(target, shutil.which("mariadb") or "mariadb")) + "\n")
        done = subprocess.run(["mariadb", f"--defaults-extra-file={options}", "--batch", "--skip-column-names",
                               "-e", "SHOW STATUS LIKE 'Ssl_version'"], capture_output=True, text=True, check=False)
        results[ca] = (done.returncode, done.stdout.split()[1:] or done.stderr.strip())
    assert results["ca"][0] == 0 and results["ca"][1][0].startswith("TLSv"), results
    assert results["other-ca"][0] != 0 and "certificate" in str(results["other-ca"][1]).lower(), results
