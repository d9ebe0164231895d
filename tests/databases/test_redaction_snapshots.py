"""Whole snapshots of each engine, written by the real CLI, byte-scanned for every redacted value.

The app's tables hold the credential columns of Prisma, Rails/Devise and Laravel apps; none of
their values may be anywhere in the snapshot (MANIFEST.json, environment.json, every dump file
with its compressed streams opened), and `relstep show` lists every column it redacted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relstep.databases import create_engine
from tests.apps import ENGINES, make_app
from tests.helpers import relstep
from tests.secret_scan import Scan

FRAMEWORK_COLUMNS = ["encrypted_password", "reset_password_token", "remember_token", "two_factor_secret",
                     "two_factor_recovery_codes", "otp_secret"]


def _add_framework_table(url: str) -> list[str]:
    from sqlalchemy import text

    columns = ", ".join(f"{c} VARCHAR(200)" for c in FRAMEWORK_COLUMNS)
    planted = [f"fw-{c}-{i}" for c in FRAMEWORK_COLUMNS for i in (1, 2)]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE members (id INTEGER PRIMARY KEY, nick VARCHAR(50), {columns})"))
            for i in (1, 2):
                values = ", ".join(f"'fw-{c}-{i}'" for c in FRAMEWORK_COLUMNS)
                conn.execute(text(f"INSERT INTO members VALUES ({i}, 'nick-{i}', {values})"))
    finally:
        engine.dispose()
    return planted


@pytest.mark.parametrize("engine", ENGINES)
def test_no_redacted_value_anywhere_in_a_snapshot(tmp_path: Path, request: pytest.FixtureRequest, engine: str) -> None:
    app, url = make_app(tmp_path, request, engine)
    planted = _add_framework_table(url)
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    root = app / "backups" / "releases"
    snap, = (p for p in root.iterdir() if not p.name.startswith("."))
    redacted = json.loads((snap / "MANIFEST.json").read_text())["databases"]["main"]["redacted"]
    assert redacted["members"] == FRAMEWORK_COLUMNS
    assert sorted(redacted["User"]) == ["password", "passwordHash"]
    shown = relstep("show", snap.name, cwd=app).out
    line, = (ln for ln in shown.splitlines() if ln.startswith("redacted (main): "))
    assert set(line.removeprefix("redacted (main): ").split(", ")) == {
        "User.password", "User.passwordHash", *(f"members.{c}" for c in FRAMEWORK_COLUMNS)}
    if engine == "sqlite":   # the example app's own rows
        secrets = [f"plain-password-{i}" for i in range(1, 26)] + [f"$2b$12$examplehash{i:04d}" for i in range(1, 26)]
    else:                    # tests.apps.create_schema's rows
        secrets = [f"pw-secret-{i}" for i in range(1, 11)] + [f"hash-secret-{i}" for i in range(1, 11)]
    scan = Scan(secrets + planted)
    scan.add_tree("snapshot", snap)
    scan.add("stdout", ran.out)
    scan.add("stderr", ran.err)
    assert scan.contains("nick-2"), "the scan must see the dump's rows"
    assert scan.leaks() == []
