"""The one command runner: shared options anywhere, `--` for the deploy command, bounded lock waits,
one line for every failure (internal errors too), --json on every reporting command.

Everything runs the real CLI in a subprocess on the bundled SQLite example, except the internal-error
tests: a bug cannot be produced on demand, so those call ``relstep.cli.main`` in-process with one core
function replaced by one that raises (the test says so where it does it).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relstep import cli, records
from relstep.snapshot import LOCK_NAME, list_snapshots
from tests.helpers import relstep, sqlite_app, write_config

pytestmark = pytest.mark.unit


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return sqlite_app(tmp_path)


def root(app: Path) -> Path:
    return app / "backups" / "releases"


def made(app: Path) -> list[Path]:
    return [s.path for s in list_snapshots(root(app))]


def err_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- shared options after the command name ------------------------------------------------------


def test_config_and_verbose_are_accepted_after_the_command_name(app: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = relstep("backup", "--config", str(app / "relstep.yml"), "-v", "--version", "1.0.0", cwd=elsewhere)
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == f"{made(app)[0]}\n"
    ran = relstep("list", "-c", str(app / "relstep.yml"), "--json", cwd=elsewhere)
    assert ran.code == 0, ran.err
    assert [row["version"] for row in json.loads(ran.out)] == ["1.0.0"]


def test_the_command_s_config_wins_over_the_top_level_one(app: Path, tmp_path: Path) -> None:
    ran = relstep("-c", "nowhere.yml", "backup", "-c", str(app / "relstep.yml"), "--version", "1.0.0", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert len(made(app)) == 1


# --- run: relstep's options before `--`, the deploy command after it ------------------------------


@pytest.mark.parametrize(("args", "line"), [
    (("run", "--dry-run"), "relstep: input failed: No such option: --dry-run (see `relstep run --help`)"),
    (("run", "--version", "1.0.0", "--dry-run", "--", "true"),
     "relstep: input failed: No such option: --dry-run (see `relstep run --help`)"),
    (("run", "--version", "1.0.0", "./deploy.sh", "--flag"),
     "relstep: input failed: No such option: --flag (see `relstep run --help`)"),
    (("run", "--version", "1.0.0", "./deploy.sh"),
     "relstep: input failed: the deploy command goes after `--`: relstep run [OPTIONS] -- ./deploy.sh "
     "(see `relstep run --help`)"),
    (("run", "--config", "nowhere.yml"),
     "relstep: config failed: config file nowhere.yml not found; pass an existing file to --config or RELSTEP_CONFIG"),
])
def test_run_refuses_a_bad_command_line_before_anything_runs(app: Path, args: tuple[str, ...], line: str) -> None:
    deployed = app / "deployed"
    (app / "deploy.sh").write_text(f"#!/bin/sh\ntouch {deployed}\n")
    (app / "deploy.sh").chmod(0o755)
    ran = relstep(*args, cwd=app)
    assert (ran.code, ran.out, err_lines(ran.err)) == (2, "", [line])
    assert not root(app).exists()              # no backup taken
    assert not deployed.exists()               # no deploy started
    assert records.read_all(f"sqlite:///{app / 'app.db'}", "ReleaseRecord") == []


def test_run_gives_the_deploy_command_everything_after_the_double_dash(app: Path, tmp_path: Path) -> None:
    argv_file = tmp_path / "argv.json"
    script = f"import json, sys; json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))"
    ran = relstep("run", "--version", "1.0.0", "--", sys.executable, "-c", script, "--dry-run", "--config", "x",
                  "--", "-v", cwd=app)
    assert ran.code == 0, ran.err
    assert json.loads(argv_file.read_text()) == ["--dry-run", "--config", "x", "--", "-v"]
    assert [r.version for r in records.read_all(f"sqlite:///{app / 'app.db'}", "ReleaseRecord")] == ["1.0.0"]


# --- --lock-timeout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "-5", "-0.5", "abc", ""])
def test_a_lock_timeout_that_is_not_a_finite_number_of_seconds_is_refused(app: Path, value: str) -> None:
    ran = relstep("run", "--version", "1.0.0", "--lock-timeout", value, cwd=app)
    assert (ran.code, ran.out) == (2, "")
    assert err_lines(ran.err) == [
        f"relstep: input failed: Invalid value for '--lock-timeout': {value!r} is not a number of seconds; "
        "give 0 or more, e.g. 600 (see `relstep run --help`)"]
    assert not root(app).exists()


def test_lock_timeout_zero_tries_once_and_names_the_wait(app: Path) -> None:
    root(app).mkdir(parents=True)
    fd = open(root(app) / LOCK_NAME, "w")   # held for the whole test
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a real flock, as another run holds it
        for command in (("backup", "--version", "1.0.0"), ("prune",), ("record",)):
            ran = relstep(*command, "--lock-timeout", "0", cwd=app)
            assert (ran.code, err_lines(ran.err)) == (3, [
                f"relstep: lock failed: another relstep run has held the lock on {root(app)} for 0 s; "
                "wait for it to finish or raise --lock-timeout"]), command
    finally:
        fd.close()
    assert made(app) == []


# --- usage errors are one line too -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "line"), [
    (("show",), "relstep: input failed: Missing argument 'ref'. (see `relstep show --help`)"),
    (("--bogus", "list"),
     "relstep: input failed: No such option: --bogus (Possible options: --verbose) (see `relstep --help`)"),
    (("lsit",), "relstep: input failed: No such command 'lsit'. Did you mean 'list'? (see `relstep --help`)"),
])
def test_a_usage_error_is_one_line_and_exit_2(app: Path, args: tuple[str, ...], line: str) -> None:
    ran = relstep(*args, cwd=app)
    assert (ran.code, ran.out, err_lines(ran.err)) == (2, "", [line])


# --- unexpected exceptions -----------------------------------------------------------------------


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(args)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.fixture
def buggy_inventory(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in for a bug (nothing real fails on demand): `relstep list` raises a bare exception whose
    text carries a database password and a second line."""
    from relstep import inventory

    def listing(config: object) -> tuple[list[object], list[str]]:
        raise RuntimeError("postgresql://app:s3cretpw@db.internal/app is gone\nsecond line")

    monkeypatch.setattr(inventory, "listing", listing)
    monkeypatch.chdir(app)


@pytest.mark.usefixtures("buggy_inventory")
def test_an_unexpected_exception_is_one_masked_line_and_exit_70(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(["list"], capsys)
    assert (code, out) == (70, "")
    assert err_lines(err) == [
        "relstep: list failed: internal error: RuntimeError: postgresql://app:***@db.internal/app is gone; "
        "run with -v for the traceback"]


@pytest.mark.usefixtures("buggy_inventory")
def test_verbose_shows_the_masked_traceback_then_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(["list", "-v"], capsys)
    lines = err_lines(err)
    assert code == 70
    assert lines[0] == "Traceback (most recent call last):"
    assert "s3cretpw" not in err and "in listing" in err
    assert lines[-1] == ("relstep: list failed: internal error: RuntimeError: "
                         "postgresql://app:***@db.internal/app is gone; run with -v for the traceback")


@pytest.mark.usefixtures("buggy_inventory")
def test_an_internal_error_under_json_is_still_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(["list", "--json"], capsys)
    data = json.loads(out)
    assert (code, data["ok"], data["exit_code"], data["failed_phase"]) == (70, False, 70, "list")
    assert data["error"] == "internal error: RuntimeError: postgresql://app:***@db.internal/app is gone; " \
                            "run with -v for the traceback"
    assert err_lines(err)[-1].startswith("relstep: list failed: internal error: ")


# --- --json on every reporting command, success and failure --------------------------------------


def test_every_reporting_command_prints_one_json_object(app: Path, tmp_path: Path) -> None:
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    assert relstep("backup", "--version", "1.0.1", cwd=app).code == 0
    first, second = sorted(made(app))

    ran = relstep("prune", "--keep", "1", "--dry-run", "--json", cwd=app)
    assert ran.code == 0, ran.err
    assert json.loads(ran.out) == {"dry_run": True, "retention": 1, "removed": [str(first)], "kept": [str(second)],
                                   "leftovers_removed": [], "leftovers_left": [], "notes": []}

    ran = relstep("record", "--snapshot", second.name, "--json", cwd=app)
    assert ran.code == 0, ran.err
    assert json.loads(ran.out) == {"id": 1, "snapshot": str(second), "version": "1.0.1", "already_recorded": False,
                                   "created_table": True}

    ran = relstep("restore", "1.0.1", "--check-only", "--json", cwd=app)
    assert ran.code == 0, ran.err
    check = json.loads(ran.out)
    assert check["restored"] is None
    assert (check["check"]["snapshot"], check["check"]["version"], check["check"]["database"]) == (
        str(second), "1.0.1", "main")
    assert check["check"]["verdict"]["verdict"] == "identical"

    ran = relstep("doctor", "--json", cwd=app)
    data = json.loads(ran.out)
    assert (ran.code, data["ok"]) == (0, True)
    assert data["checks"][0] == {"name": "config", "ok": True, "detail": str(app / "relstep.yml")}

    fresh = tmp_path / "fresh"
    shutil.copytree(app, fresh, ignore=shutil.ignore_patterns("relstep.yml", "backups"))
    ran = relstep("init", "--json", cwd=fresh)
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)
    assert (data["config"], data["written"]) == (str(fresh / "relstep.yml"), [str(fresh / "relstep.yml")])

    offsite = tmp_path / "offsite"
    write_config(app, {**_config(app), "offsite": {"url": f"file://{offsite}"}})
    ran = relstep("offsite", "--json", cwd=app)
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)
    assert (data["name"], data["uploaded"], data["removed"]) == (second.name, True, [])
    assert (offsite / second.name / "MANIFEST.json").is_file()


def _config(app: Path) -> dict:
    import yaml

    return yaml.safe_load((app / "relstep.yml").read_text())


def test_a_failure_under_json_prints_the_failure_as_json(app: Path) -> None:
    ran = relstep("list", "--json", "--config", "nowhere.yml", cwd=app)
    assert ran.code == 2
    data = json.loads(ran.out)
    assert (data["ok"], data["exit_code"], data["failed_phase"]) == (False, 2, "config")
    assert err_lines(ran.err) == ["relstep: config failed: config file nowhere.yml not found; "
                                  "pass an existing file to --config or RELSTEP_CONFIG"]


def test_doctor_names_the_failed_checks_in_its_last_line(app: Path) -> None:
    write_config(app, {**_config(app), "database": {"url": f"sqlite:///{app / 'missing' / 'app.db'}"}})
    ran = relstep("doctor", cwd=app)
    assert ran.code == 1
    assert err_lines(ran.err)[-1].startswith("relstep: doctor failed: ")
    assert "checks failed: database main" in err_lines(ran.err)[-1]


# --- prune says what really happened to leftovers ----------------------------------------------------


def test_prune_reports_a_leftover_it_could_not_remove(app: Path) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    stuck, gone = root(app) / ".20260101T000000Z.partial", root(app) / ".20260101T000001Z.partial"
    for leftover in (stuck, gone):
        leftover.mkdir()
        (leftover / "dump.sql").write_text("half")
    # Immutable: not even root may unlink it, so rmtree really fails (permissions would not stop root).
    if subprocess.run(["chattr", "+i", str(stuck / "dump.sql")], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support chattr +i")
    try:
        ran = relstep("prune", cwd=app)
        assert ran.code == 0, ran.err
        assert ran.out.splitlines() == [f"removed leftover {gone}", "kept 1 snapshot(s) (retention 30)"]
        assert err_lines(ran.err) == [
            f"relstep: warning: could not remove leftover {stuck}: Operation not permitted; remove it by hand"]
        assert stuck.exists() and not gone.exists()
        ran = relstep("prune", "--json", cwd=app)
        assert json.loads(ran.out)["leftovers_left"] == [{"path": str(stuck), "reason": "Operation not permitted"}]
    finally:
        subprocess.run(["chattr", "-i", str(stuck / "dump.sql")], check=False)


# --- progress ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "soon"])
def test_a_progress_interval_that_is_not_a_finite_number_falls_back_to_the_default(value: str) -> None:
    import io

    from relstep import progress

    reporter = progress.choose(io.StringIO(), {"RELSTEP_PROGRESS": "plain", "RELSTEP_PROGRESS_INTERVAL": value})
    assert isinstance(reporter, progress.PlainReporter)
    assert reporter.interval == progress.DEFAULT_INTERVAL


def test_an_unexpected_exception_in_a_hook_command_is_the_same_one_line(
    app: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stand-in for a bug in `relstep hook uninstall` (the hook commands run outside the main runner)."""
    from relstep import hooks

    def uninstall(repo: object, hook: object) -> bool:
        raise OSError("disk on fire")

    monkeypatch.setattr(hooks, "uninstall", uninstall)
    monkeypatch.chdir(app)
    code, out, err = _main(["hook", "uninstall"], capsys)
    assert (code, out, err_lines(err)) == (70, "", [
        "relstep: hook uninstall failed: internal error: OSError: disk on fire; run with -v for the traceback"])
