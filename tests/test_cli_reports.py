"""What the CLI reports must be what happened, on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.apps import make_app
from tests.helpers import relstep


def test_a_restore_test_whose_restore_failed_does_not_claim_it_restored(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, _ = make_app(tmp_path, request, "postgres")
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    # Port 1: nothing listens there, so the scratch restore fails after the checks that need no server passed.
    scratch = "postgresql://postgres@127.0.0.1:1/postgres"
    ran = relstep("verify", "--restore-test", "--scratch-url", scratch, cwd=app)
    assert ran.code == 8, ran.err
    restore_lines = [line for line in ran.out.splitlines() if line.startswith("  restore:")]
    assert len(restore_lines) == 1
    assert restore_lines[0].startswith(
        "  restore:  main (postgresql) could not be restored into a scratch database on "
        "postgresql://postgres@127.0.0.1:1 (")
    assert restore_lines[0].endswith(" s); nothing was compared")
    assert "0 tables" not in ran.out
    assert any(line.startswith("  problem:  restore-test database main: ") for line in ran.out.splitlines())
    ran = relstep("verify", "--restore-test", "--scratch-url", scratch, "--json", cwd=app)
    [test] = json.loads(ran.out)["snapshots"][0]["restore_tests"]
    assert (test["restored"], test["tables"]) == (False, 0)
