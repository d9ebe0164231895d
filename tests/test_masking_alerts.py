"""Alerts leave the machine: every field of the body is masked (relstep.notify through relstep.masking)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import clean_env, relstep, sqlite_app, write_config
from tests.secret_scan import Scan

# The receiver is a fixture of tests/servers.py, imported so pytest finds it here.
from tests.servers import Webhook, webhook  # noqa: F401

QUERY_PASSWORD = "Qp-4d1e7a-never-leak"


def test_a_failure_alert_carries_no_url_password(tmp_path: Path, webhook: Webhook) -> None:  # noqa: F811
    app = sqlite_app(tmp_path)
    url = f"postgresql://app@127.0.0.1:1/app?password={QUERY_PASSWORD}"
    for fmt in ("slack", "json"):
        write_config(app, {"database": {"url": url}, "environment": {},
                           "notify": {"webhook": "${ALERT_URL}", "format": fmt}})
        ran = relstep("run", "--version", "2.4.1", cwd=app, env=clean_env(ALERT_URL=webhook.url))
        assert ran.code == 3, ran.err
    slack, generic = (sent["body"] for sent in webhook.requests)
    shown = "postgresql://app@127.0.0.1:1/app?password=***"
    reason = {f["title"]: f["value"] for f in slack["attachments"][0]["fields"]}["reason"]
    assert shown in reason and shown in slack["text"] and shown in generic["reason"]
    scan = Scan([QUERY_PASSWORD])
    scan.add("alerts", json.dumps(webhook.requests))
    assert scan.leaks() == []
