"""No planted secret in any byte relstep writes, on all three engines.

One real `relstep -v run --json` per engine with GitHub's and GitLab's output files switched on.
Secrets are planted where real apps have them:

* the database URL's password, as userinfo and (PostgreSQL, where the server's trust auth lets a
  backup still run) as ``?password=``; a replica URL with ``?password=`` printed by a deploy script;
* a real ``pm2`` daemon (npm's pm2, PM2_HOME in the test's folder, offline) running an app whose
  environment holds DB_PASS, SMTP_PASS, PGPASS, SENTRY_DSN and a Stripe ``sk_live_`` key under a
  name that does not look secret; without pm2 installed, a stand-in prints a ``pm2 jlist`` output
  recorded from that real pm2 (tests/data/pm2-jlist.json), and the test says so in its output;
* a secret environment variable of relstep's own process, and a key printed by a command.

Then every byte is scanned (tests/secret_scan.py): the snapshot with its zstd/gzip streams, tar,
zip and pg_dump archives opened, stdout, stderr (-v), $GITHUB_OUTPUT, $GITHUB_STEP_SUMMARY and the
dotenv report.  The test also shows the secrets went through relstep, masked where they stood.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PLANTED_DB_PASSWORD

from tests.apps import make_app
from tests.ci.ci_support import TOOLS_DIR
from tests.helpers import clean_env, relstep, write_config
from tests.reliability.support import verify_root
from tests.secret_scan import Scan

RECORDED_JLIST = Path(__file__).resolve().parent.parent / "data" / "pm2-jlist.json"
PM2_INSTALL = f"npm install --prefix {TOOLS_DIR} pm2@6"

QUERY_PASSWORD = "Qp-4d1e7a-never-leak"
REPLICA_PASSWORD = "Rq-8c2f-never-leak"
REPLICA_URL = f"mysql://app@db.internal:3306/app?password={REPLICA_PASSWORD}&ssl=true"
STRIPE_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXq81"
SENTRY_KEY = "5f2d9c7e1a3b4c6d8e0f1a2b3c4d5e6f"
PM2_APP_ENV = {
    "DB_PASS": "dbpass-2b7f-never-leak",
    "SMTP_PASS": "smtp-91c3-never-leak",
    "PGPASS": "pgpass-5e0a-never-leak",
    "SENTRY_DSN": f"https://{SENTRY_KEY}@o123.ingest.sentry.io/42",
    "PAYMENTS": STRIPE_KEY,         # a name that does not look secret: masked for its shape
    "REPLICA_URL": REPLICA_URL,     # a name that does not look secret: masked by URL structure
    "PORT": "3000",
}
ENV_SECRET = "planted-env-secret-4242"
REDACTED = [f"pw-secret-{i}" for i in range(1, 11)] + [f"hash-secret-{i}" for i in range(1, 11)]
SQLITE_REDACTED = [f"plain-password-{i}" for i in range(1, 26)] + [f"$2b$12$examplehash{i:04d}" for i in range(1, 26)]


def _pm2() -> str | None:
    return shutil.which("pm2", path=f"{TOOLS_DIR / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}")


@pytest.fixture
def pm2_bin(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """(a folder to put first on PATH, variables relstep's process needs) for a `pm2 jlist` that
    lists one app holding PM2_APP_ENV."""
    bin_dir = tmp_path / "pm2-bin"
    bin_dir.mkdir()
    real = _pm2()
    if real is None:
        print(f"pm2 is not installed ({PM2_INSTALL}): a stand-in prints a recorded real `pm2 jlist`")
        stand_in = bin_dir / "pm2"
        stand_in.write_text(f"#!/bin/sh\nexec cat '{RECORDED_JLIST}'\n")
        stand_in.chmod(0o755)
        yield bin_dir, {}
        return
    home = tmp_path / "pm2-home"
    (bin_dir / "pm2").symlink_to(real)
    node = shutil.which("node")
    assert node is not None, "pm2 is installed but node is not"
    (bin_dir / "node").symlink_to(node)
    app = tmp_path / "pm2-app.js"
    app.write_text("require('http').createServer((q, s) => s.end('ok')).listen(0);\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PM2_HOME": str(home), **PM2_APP_ENV}
    try:
        # `pm2 start` returns once the daemon runs the app: jlist then lists it, no waiting needed.
        subprocess.run([real, "start", str(app), "--name", "api"], env=env, check=True, capture_output=True,
                       timeout=120)
        yield bin_dir, {"PM2_HOME": str(home)}
    finally:
        subprocess.run([real, "kill"], env=env, check=False, capture_output=True, timeout=120)


def _command_bin(bin_dir: Path) -> None:
    """Commands a deploy's environment capture might run: one prints a URL, one a key."""
    for name, text in (("show-replica-url", REPLICA_URL), ("show-billing-key", STRIPE_KEY)):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\n")
        script.chmod(0o755)


def _run(app: Path, tmp_path: Path, bin_dir: Path, extra: dict[str, str]) -> tuple[object, Scan, dict]:
    _command_bin(bin_dir)
    env = clean_env(GITHUB_OUTPUT=str(tmp_path / "github_output"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
                    GITHUB_ACTIONS="true", RELSTEP_DOTENV=str(tmp_path / "relstep.env"),
                    PATH=f"{bin_dir}:{os.environ['PATH']}", APP_STRIPE_SECRET=ENV_SECRET, **extra)
    ran = relstep("-v", "run", "--version", "1.0.0", "--json", cwd=app, env=env)
    assert ran.code == 0, ran.err
    snapshot = Path(json.loads(ran.out)["snapshot"])
    scan = Scan([])
    scan.add_tree("snapshot", snapshot)
    scan.add("stdout", ran.out)
    scan.add("stderr", ran.err)
    for name in ("github_output", "summary.md", "relstep.env"):
        scan.add(name, (tmp_path / name).read_bytes())
    verify_root(app / "backups" / "releases")
    return snapshot, scan, json.loads((snapshot / "environment.json").read_text())


def _assert_masked_where_they_stood(environment: dict) -> None:
    """The planted values really reached relstep, and each was masked by the rule meant for it."""
    commands = environment["commands"]
    apps = commands["pm2"]["json"]
    api = next(app for app in apps if app["name"] == "api")
    for where in (api["pm2_env"], api["pm2_env"]["env"]):
        assert {k: where[k] for k in PM2_APP_ENV} == {
            "DB_PASS": "***", "SMTP_PASS": "***", "PGPASS": "***", "SENTRY_DSN": "***",
            "PAYMENTS": "***", "REPLICA_URL": "mysql://app@db.internal:3306/app?password=***&ssl=true",
            "PORT": "3000",
        }
    assert commands["replica"]["output"] == "mysql://app@db.internal:3306/app?password=***&ssl=true"
    assert commands["billing"]["output"] == "***"
    assert commands["leak"]["output"] == "***"


CASES = {
    # engine, where the database password is planted
    "sqlite": ("sqlite", None),
    "postgres-userinfo": ("postgres", "userinfo"),
    "postgres-query": ("postgres", "query"),
    "mysql-userinfo": ("mysql", "userinfo"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_planted_secret_in_any_byte_relstep_writes(
    case: str, tmp_path: Path, request: pytest.FixtureRequest, pm2_bin: tuple[Path, dict[str, str]]
) -> None:
    engine, planted = CASES[case]
    app, url = make_app(tmp_path, request, engine)
    password = PLANTED_DB_PASSWORD
    if engine == "mysql":  # the same database, through a user that has a password
        url = request.getfixturevalue("mysql_password_url")
    elif planted == "query":
        url = url.replace(f":{PLANTED_DB_PASSWORD}@", "@") + f"?password={QUERY_PASSWORD}"
        password = QUERY_PASSWORD
    environment_commands = {"pm2": "pm2 jlist", "leak": "printenv APP_STRIPE_SECRET",
                            "replica": "show-replica-url", "billing": "show-billing-key"}
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"}, "environment": environment_commands})

    bin_dir, extra = pm2_bin
    snapshot, scan, environment = _run(app, tmp_path, bin_dir, extra)

    _assert_masked_where_they_stood(environment)
    manifest = json.loads((snapshot / "MANIFEST.json").read_text())
    stored_url = next(iter(manifest["databases"].values()))["url"]
    if planted == "query":
        assert stored_url == url.replace(QUERY_PASSWORD, "***")
    elif planted == "userinfo":
        assert stored_url == url.replace(f":{PLANTED_DB_PASSWORD}@", ":***@")
    # The scan can see the dump's other values (or finding nothing would prove nothing).
    assert scan.contains(b"u1@example.com") or scan.contains(b"user1@example.com")

    pm2_secrets = [PM2_APP_ENV[name] for name in ("DB_PASS", "SMTP_PASS", "PGPASS")]
    scan.secrets = [*pm2_secrets, SENTRY_KEY, REPLICA_PASSWORD, STRIPE_KEY, ENV_SECRET,
                    *(SQLITE_REDACTED if engine == "sqlite" else REDACTED),
                    *([password] if planted else [])]
    assert scan.leaks() == []


def test_the_scanner_opens_compressed_streams_archives_and_pg_dump_archives(pg_url: str, tmp_path: Path) -> None:
    """The helper itself: a value hidden in a pg_dump custom archive (zlib data blocks), inside zstd,
    inside a tar, inside a zip, inside gzip, is found, and named by where it was."""
    import gzip
    import io
    import tarfile
    import zipfile

    import psycopg
    import zstandard

    planted = "scan-me-7c1d9e-planted"
    with psycopg.connect(pg_url.replace(f":{PLANTED_DB_PASSWORD}", ""), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t SELECT %s || i FROM generate_series(1, 200) i", (planted,))
    dump = subprocess.run(["pg_dump", "-Fc", "-Z9", "--dbname", pg_url.replace(f":{PLANTED_DB_PASSWORD}", "")],
                          capture_output=True, check=True).stdout
    assert planted.encode() not in dump  # compressed: a plain byte search would miss it
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        member = tarfile.TarInfo("db.dump.zst")
        data = zstandard.ZstdCompressor().compress(dump)
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    zip_bytes = io.BytesIO()
    with zipfile.ZipFile(zip_bytes, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner.tar", tar_bytes.getvalue())
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "bundle.bin").write_bytes(gzip.compress(zip_bytes.getvalue()))

    scan = Scan([planted, "never-there-0000"])
    scan.add_tree("tree", tmp_path / "tree")
    assert scan.leaks() == [(planted, "tree/bundle.bin > gzip > inner.tar > db.dump.zst > zstd > pg_restore",
                             "utf-8")]
