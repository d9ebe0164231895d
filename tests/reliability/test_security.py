"""Secrets and permissions: what relstep writes is private, and no secret leaves it.

One real `relstep -v run --json` per engine, with GitHub's and GitLab's output files switched on,
a pm2 stand-in on PATH whose `jlist` carries secrets, and secret environment variables.  strace
records the argv and environment of every process it starts (every execve(2), however short-lived).
Afterwards every byte it produced is searched: stdout, stderr (with -v tracebacks), $GITHUB_OUTPUT,
$GITHUB_STEP_SUMMARY, the dotenv report, and the snapshot with every zstd/gzip stream opened
(tests/helpers.py `all_bytes`).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import PLANTED_DB_PASSWORD

from tests.apps import make_app
from tests.helpers import all_bytes, clean_env, relstep, write_config
from tests.reliability.support import relstep_argv, run_traced, verify_root

ENV_SECRET = "planted-env-secret-4242"
PM2_SECRET = "pm2-inner-secret-8181"
# A generated password as people have them: '/' and '+' unencoded in the URL, where urllib and
# SQLAlchemy read the password differently.
ODD_PASSWORD = "Zq8/x+Rk2w9pLm4v"
REDACTED = {
    "sqlite": [f"plain-password-{i}" for i in range(1, 26)] + [f"$2b$12$examplehash{i:04d}" for i in range(1, 26)],
    "postgres": [f"pw-secret-{i}" for i in range(1, 11)] + [f"hash-secret-{i}" for i in range(1, 11)],
}
REDACTED["mysql"] = REDACTED["postgres"]
DUMP_TOOLS = {"postgres": "pg_dump", "mysql": "mariadb-dump"}


def _pm2_shim(bin_dir: Path, url: str) -> None:
    bin_dir.mkdir()
    pm2 = bin_dir / "pm2"
    pm2.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps([{
        "name": "api", "pid": 42,
        "pm2_env": {"status": "online", "DB_PASSWORD": PM2_SECRET, "DATABASE_URL": url,
                    "env": {"JWT_SECRET": PM2_SECRET + "-jwt", "PORT": "3000"}},
    }]) + "\nEOF\n")
    pm2.chmod(0o755)


def _url_shim(bin_dir: Path, url: str) -> None:
    """A command that prints the database URL, as a deploy script might; the URL is not in its argv."""
    show = bin_dir / "show-database-url"
    show.write_text(f"#!/bin/sh\ncat <<'EOF'\n{url}\nEOF\n")
    show.chmod(0o755)


def _ci_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(GITHUB_OUTPUT=str(tmp_path / "github_output"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
                     GITHUB_ACTIONS="true", RELSTEP_DOTENV=str(tmp_path / "relstep.env"),
                     PYTHONPATH=os.environ["PYTHONPATH"], **extra)


def _ci_files(tmp_path: Path) -> bytes:
    return b"".join((tmp_path / name).read_bytes() for name in ("github_output", "summary.md", "relstep.env"))


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "mysql"])
def test_no_secret_in_argv_output_ci_files_or_any_byte_of_the_snapshot(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, url = make_app(tmp_path, request, engine)
    if engine == "mysql":  # the same database, through a user that has a password
        url = request.getfixturevalue("mysql_password_url")
    password = PLANTED_DB_PASSWORD if engine != "sqlite" else None
    _pm2_shim(tmp_path / "bin", url)
    _url_shim(tmp_path / "bin", url)
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"},
                       "environment": {"pm2": "pm2 jlist", "leak": "printenv APP_STRIPE_SECRET",
                                       "url": "show-database-url"}})
    env = _ci_env(tmp_path, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", APP_STRIPE_SECRET=ENV_SECRET)

    watcher, code, out, err = run_traced(relstep_argv("-v", "run", "--version", "1.0.0", "--json"), cwd=app,
                                         env=env, log=tmp_path / "execve.strace")
    assert code == 0, err
    assert "pm2" in watcher.programs() and "show-database-url" in watcher.programs(), watcher.programs()

    result = json.loads(out)
    snapshot = Path(result["snapshot"])
    environment = json.loads((snapshot / "environment.json").read_text())["commands"]
    # The planted secrets really went through relstep (or this test could not fail):
    assert environment["pm2"]["json"][0]["pm2_env"]["DB_PASSWORD"] == "***"
    assert environment["leak"]["output"] == "***"
    if password:
        assert DUMP_TOOLS[engine] in watcher.programs(), watcher.programs()
        assert environment["url"]["output"] == url.replace(password, "***")
        assert any(password.encode() in env_block for env_block in watcher.environs) == (engine == "postgres")
    ci = _ci_files(tmp_path)
    assert str(snapshot).encode() in ci and b"RELSTEP_SNAPSHOT=" + str(snapshot).encode() in ci

    secrets = [ENV_SECRET, PM2_SECRET, *REDACTED[engine]] + ([password] if password else [])
    argv = b"\n".join(b" ".join(args) for args in watcher.argvs)
    snapshot_bytes = all_bytes(snapshot)
    produced = {"argv": argv, "stdout": out.encode(), "stderr": err.encode(), "CI files": ci,
                "snapshot": snapshot_bytes}
    leaks = [(secret, where) for secret in secrets for where, blob in produced.items() if secret.encode() in blob]
    assert leaks == []
    # The redacted columns' rows are in the dump, only their values are not.
    assert b"u1@example.com" in snapshot_bytes or b"user1@example.com" in snapshot_bytes
    verify_root(app / "backups" / "releases")


@pytest.mark.parametrize("where", ["record.url", "database.url"])
def test_a_password_with_unencoded_characters_is_masked_on_failure(where: str, tmp_path: Path) -> None:
    """`/` and `+` in a password: urllib sees a path where the drivers see the password."""
    from tests.helpers import sqlite_app

    app = sqlite_app(tmp_path)
    bad = f"postgresql://app:{ODD_PASSWORD}@127.0.0.1:1/app"
    config = {"database": {"url": bad if where == "database.url" else "sqlite:///app.db"}, "environment": {}}
    if where == "record.url":
        config["record"] = {"url": bad}
    write_config(app, config)
    env = _ci_env(tmp_path)
    pieces = [ODD_PASSWORD, *(p for p in ODD_PASSWORD.split("/") if len(p) >= 4)]
    for args in (["-v", "run", "--version", "1.0.0", "--json"], ["-v", "record"]):
        if args[1] == "record" and where == "database.url":
            continue
        ran = relstep(*args, cwd=app, env=env)
        assert ran.code == (3 if where == "database.url" else 5), ran.err
        assert "postgresql://app:***@127.0.0.1:1/app" in ran.last_err, ran.err
        produced = (ran.out + ran.err).encode() + (_ci_files(tmp_path) if args[1] == "run" else b"")
        assert [p for p in pieces if p.encode() in produced] == []


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "mysql"])
def test_everything_relstep_creates_is_private_even_under_umask_000(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, _url = make_app(tmp_path, request, engine, environment={})
    before = {p for p in app.rglob("*") if ".git" not in p.parts}
    done = subprocess.run(relstep_argv("run", "--version", "1.0.0"), cwd=app, env=clean_env(), umask=0,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    created = sorted(p for p in app.rglob("*") if ".git" not in p.parts and p not in before)
    assert app / "backups" in created and app / "backups" / "releases" / ".relstep.lock" in created
    modes = {p.relative_to(app).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in created}
    wrong = {rel: oct(mode) for rel, mode in modes.items()
             if mode != (0o700 if (app / rel).is_dir() else 0o600)}
    assert wrong == {}
    verify_root(app / "backups" / "releases")  # 0700 folders, 0600 files inside every snapshot


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_query_password_is_masked_in_errors_doctor_and_ci_files(scheme: str, tmp_path: Path) -> None:
    """`?password=` is no userinfo: it used to reach messages, `doctor` and the step summary in clear."""
    from tests.helpers import sqlite_app
    from tests.secret_scan import Scan

    app = sqlite_app(tmp_path)
    bad = f"{scheme}://app@127.0.0.1:1/app?password={ODD_PASSWORD}"
    write_config(app, {"database": {"url": bad}, "environment": {}})
    env = _ci_env(tmp_path)
    shown = f"{scheme}://app@127.0.0.1:1/app?password=***"
    ran = relstep("-v", "run", "--version", "1.0.0", "--json", cwd=app, env=env)
    assert ran.code == 3, ran.err
    assert shown in ran.last_err and ran.last_err.startswith("relstep: backup failed: "), ran.last_err
    assert shown in (tmp_path / "summary.md").read_text()
    doctor = relstep("doctor", cwd=app, env=env)
    assert doctor.code == 1
    failed = [line for line in doctor.out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1, failed
    assert failed[0].startswith(f"FAIL  database main            cannot connect to {shown}: "), failed
    scan = Scan([ODD_PASSWORD, *(p for p in ODD_PASSWORD.split("/") if len(p) >= 4)])
    for where, blob in (("stdout", ran.out), ("stderr", ran.err), ("doctor", doctor.out + doctor.err),
                        ("CI files", _ci_files(tmp_path))):
        scan.add(where, blob)
    assert scan.leaks() == []
