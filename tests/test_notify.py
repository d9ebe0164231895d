"""Alerts through the real CLI to a local HTTP server: bodies, retries, timeout, exit codes unchanged."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_env, relstep, sqlite_app, write_config
from tests.marker import Marker

# The receiver is a fixture of tests/servers.py, imported so pytest finds it here.
from tests.servers import Webhook, webhook  # noqa: F401

TOKEN = "planted-webhook-token"


def configured(tmp_path: Path, hook: Webhook, **notify: Any) -> Path:
    app = sqlite_app(tmp_path)
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "prisma"},
                       "notify": {"webhook": "${ALERT_URL}", **notify}})
    return app


def env(hook: Webhook, **extra: str) -> dict[str, str]:
    return clean_env(ALERT_URL=hook.url, **extra)


def break_database(app: Path) -> None:
    (app / "app.db").unlink()


def test_failed_backup_sends_one_slack_alert_and_keeps_exit_3(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook)
    break_database(app)
    ran = relstep("run", "--version", "2.4.1", cwd=app, env=env(webhook))
    assert ran.code == 3
    assert ran.last_err.startswith("relstep: backup failed: SQLite database")
    (sent,) = webhook.requests
    assert sent["path"].endswith(TOKEN) and sent["headers"]["Content-Type"] == "application/json"
    body = sent["body"]
    host = socket.gethostname()
    assert body["text"].startswith(f"relstep: backup failed for app 2.4.1 on {host}: SQLite database")
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["project"] == "app" and fields["version"] == "2.4.1" and fields["phase"] == "backup"
    assert fields["host"] == host and fields["exit code"] == "3" and "does not exist" in fields["reason"]
    assert body["attachments"][0]["color"] == "danger"
    assert TOKEN not in ran.out + ran.err


def test_generic_json_body_and_success_alerts(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook, format="json", on=["failure", "success"], project="shop/api")
    ran = relstep("run", "--version", "3.0.0", cwd=app, env=env(webhook))
    assert ran.code == 0, ran.err
    (sent,) = webhook.requests
    body = sent["body"]
    assert body["source"] == "relstep" and body["event"] == "success"
    assert (body["project"], body["version"], body["deployment_type"], body["exit_code"]) == \
        ("shop/api", "3.0.0", "release", 0)
    assert body["snapshot"] and body["host"] == socket.gethostname() and body["phase"] is None
    # `relstep backup` alone is not the step: success is only announced for `run`.
    assert relstep("backup", "--version", "3.0.1", cwd=app, env=env(webhook)).code == 0
    assert len(webhook.requests) == 1
    # A failure with format json.
    break_database(app)
    assert relstep("run", "--version", "3.0.2", cwd=app, env=env(webhook)).code == 3
    body = webhook.requests[-1]["body"]
    assert (body["event"], body["phase"], body["exit_code"], body["version"]) == ("failure", "backup", 3, "3.0.2")
    assert "does not exist" in body["reason"]


def test_success_is_not_sent_unless_asked(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook)
    assert relstep("run", "--version", "1.0.0", cwd=app, env=env(webhook)).code == 0
    assert webhook.requests == []


def test_two_retries_then_delivered(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook)
    break_database(app)
    webhook.script = [(500, 0.0), (503, 0.0)]
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env(webhook))
    assert ran.code == 3
    assert len(webhook.requests) == 3
    assert "not delivered" not in ran.err


def test_undeliverable_alert_is_a_note_and_never_changes_the_exit_code(
    tmp_path: Path, webhook: Webhook  # noqa: F811
) -> None:
    app = configured(tmp_path, webhook, on=["failure", "success"])
    webhook.script = [(500, 0.0)] * 3
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env(webhook))
    assert ran.code == 0, ran.err                      # the step passed; its alert failing does not fail it
    assert len(webhook.requests) == 3
    assert ("relstep: note: the success alert was not delivered to notify.webhook (HTTP 500 after 3 attempts); "
            "the exit code is unchanged") in ran.err
    break_database(app)
    webhook.script = [(500, 0.0)] * 3
    ran = relstep("run", "--version", "1.0.1", cwd=app, env=env(webhook))
    assert ran.code == 3 and ran.last_err.startswith("relstep: backup failed:")
    assert TOKEN not in ran.out + ran.err


def test_client_errors_are_not_retried(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook)
    break_database(app)
    webhook.script = [(404, 0.0)]
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env(webhook))
    assert ran.code == 3 and len(webhook.requests) == 1
    assert "HTTP 404 after 1 attempt)" in ran.err


def test_a_hanging_webhook_times_out(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook)
    break_database(app)
    webhook.script = [(200, 3.0)] * 3
    # The server answers after 3 s; three attempts and "no answer" prove each one gave up at
    # the 0.5 s timeout (a waiting client would have had its 200 on the first attempt).
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env(webhook, RELSTEP_NOTIFY_TIMEOUT="0.5"))
    assert ran.code == 3
    assert len(webhook.requests) == 3
    assert "no answer within 0.5 s after 3 attempts" in ran.err


def test_an_unreachable_webhook_does_not_change_the_exit_code(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    app = sqlite_app(tmp_path)
    write_config(app, {"database": {"url": "sqlite:///missing.db"},
                       "notify": {"webhook": f"http://127.0.0.1:{port}/hook"}})
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 3 and ran.last_err.startswith("relstep: backup failed:")
    assert "alert was not delivered" in ran.err


def test_bad_input_is_not_alerted_but_a_failed_record_command_is(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = configured(tmp_path, webhook)
    ran = relstep("run", "--version", "not-a-version", cwd=app, env=env(webhook))
    assert ran.code == 2 and webhook.requests == []
    assert relstep("backup", "--version", "1.0.0", cwd=app, env=env(webhook)).code == 0
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "record": {"url": "sqlite:///no/such/dir/r.db"},
                       "notify": {"webhook": "${ALERT_URL}"}})
    ran = relstep("record", cwd=app, env=env(webhook))
    assert ran.code == 5
    (sent,) = webhook.requests
    assert "relstep: record failed for app (no version)" in sent["body"]["text"]


@pytest.mark.parametrize(("notify", "message"), [
    ({"webhook": "ftp://x"}, "notify.webhook must be an http:// or https:// URL"),
    ({"webhook": "https://x", "format": "xml"}, "notify.format: input should be 'slack' or 'json'"),
    ({"webhook": "https://x", "on": ["always"]}, "notify.on.0: input should be 'failure' or 'success'"),
    ({"webhook": "https://x", "on": []}, "notify.on must list failure, success or both"),
    ({"format": "json"}, "notify needs a webhook, a ping_url or both"),
    ({"ping_url": "ftp://x"}, "notify.ping_url must be an http:// or https:// URL"),
])
def test_bad_notify_config(tmp_path: Path, notify: dict[str, Any], message: str) -> None:
    app = sqlite_app(tmp_path, with_git=False)
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "notify": notify})
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 2 and message in ran.last_err and "relstep.yml" in ran.last_err


def _health_app(tmp_path: Path, hook: Webhook) -> Path:
    app = configured(tmp_path, hook)
    base = hook.url.split("/hooks/")[0]
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "prisma"},
                       "notify": {"webhook": hook.url, "ping_url": f"{base}/ping/check-key"}})
    return app


def test_an_internal_error_alerts_and_pings_fail(tmp_path: Path, webhook: Webhook,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 70 is a failed command too.  The bug is a stand-in (nothing real fails on demand):
    in-process, `relstep.status.gather` raises; the receiver is a real HTTP server."""
    from relstep import cli
    from relstep import status as core

    app = _health_app(tmp_path, webhook)

    def broken(config: object, now: float | None = None) -> object:
        raise RuntimeError("a bug in status")

    monkeypatch.setattr(core, "gather", broken)
    monkeypatch.chdir(app)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(["status", "--max-age", "1d"])
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert exited.value.code == 70
    assert capsys.readouterr().err.splitlines()[-1] == (
        "relstep: status failed: internal error: RuntimeError: a bug in status; run with -v for the traceback")
    alert, heartbeat = webhook.requests
    assert alert["path"].endswith(TOKEN)
    assert alert["body"]["text"] == (f"relstep: status failed for app (no version) on {socket.gethostname()}: "
                                     "internal error: RuntimeError: a bug in status; run with -v for the traceback")
    assert {f["title"]: f["value"] for f in alert["body"]["attachments"][0]["fields"]}["exit code"] == "70"
    assert heartbeat["path"] == "/ping/check-key/fail"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_run_alerts_and_pings_fail(tmp_path: Path, webhook: Webhook, signum: int) -> None:  # noqa: F811
    app = _health_app(tmp_path, webhook)
    marker = Marker(tmp_path / "deploying")
    # The deploy writes the marker (the event the test waits on), then takes its time.
    proc = subprocess.Popen(
        [sys.executable, "-m", "relstep", "run", "--version", "1.0.0", "--",
         "sh", "-c", f'echo deploying > "{marker.path}"; exec sleep 120'],
        cwd=app, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert marker.wait(proc) == "deploying"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        marker.close()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert err.splitlines()[-1] == f"relstep: interrupted: stopped by {name}; no partial snapshot was left behind"
    alert, heartbeat = webhook.requests
    assert alert["body"]["text"] == (f"relstep: run failed for app (no version) on {socket.gethostname()}: "
                                     f"interrupted by {name}; the command did not finish")
    assert {f["title"]: f["value"] for f in alert["body"]["attachments"][0]["fields"]}["exit code"] == \
        str(128 + signum)
    assert heartbeat["path"] == "/ping/check-key/fail"
