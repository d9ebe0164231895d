"""GitLab dotenv report: the keys, and GitLab's parsing limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relstep import ci
from relstep.ci import gitlab
from relstep.ci.gitlab import DotenvReport
from relstep.result import PhaseResult, RunResult

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`


def parse_dotenv(text: str) -> dict[str, str]:
    """GitLab's rules: one KEY=value per line, no blank lines, no comments, keys [A-Za-z0-9_]."""
    assert len(text.encode()) <= gitlab.MAX_DOTENV_BYTES
    values = {}
    for line in text.split("\n")[:-1]:
        assert line and not line.startswith("#"), f"GitLab rejects blank lines and comments: {line!r}"
        key, value = line.split("=", 1)
        assert re.fullmatch(r"[A-Za-z0-9_]+", key)
        assert value == value.strip()
        values[key] = value
    assert text.endswith("\n")
    return values


def result(**overrides: object) -> RunResult:
    res = RunResult(
        version="4.0.84",
        deployment_type="patch",
        snapshot="/srv/app/backups/releases/20261124T010423Z",
        schema_revision="20261101_add_users",
        record_id=12,
        phases=[PhaseResult("backup", True, 1.0)],
    )
    for key, value in overrides.items():
        setattr(res, key, value)
    return res


def test_report_writes_every_key(tmp_path: Path) -> None:
    path = tmp_path / "relstep.env"
    ci.report(result(), {"RELSTEP_DOTENV": str(path)})
    assert parse_dotenv(path.read_text()) == {
        "RELSTEP_VERSION": "4.0.84",
        "RELSTEP_DEPLOYMENT_TYPE": "patch",
        "RELSTEP_SNAPSHOT": "/srv/app/backups/releases/20261124T010423Z",
        "RELSTEP_SCHEMA_REVISION": "20261101_add_users",
        "RELSTEP_RECORD_ID": "12",
        "RELSTEP_EXIT_CODE": "0",
    }


def test_failure_still_reports_what_is_known_and_the_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "relstep.env"
    failed = result(record_id=None, schema_revision=None, exit_code=4, failed_phase="deploy", error="boom")
    ci.report(failed, {"RELSTEP_DOTENV": str(path)})
    values = parse_dotenv(path.read_text())
    # Empty values are left out: a dotenv variable would override a later job's own default.
    assert "RELSTEP_RECORD_ID" not in values
    assert "RELSTEP_SCHEMA_REVISION" not in values
    assert values["RELSTEP_EXIT_CODE"] == "4"
    assert values["RELSTEP_SNAPSHOT"].endswith("20261124T010423Z")


def test_newlines_and_control_characters_cannot_add_variables(tmp_path: Path) -> None:
    path = tmp_path / "relstep.env"
    ci.report(result(schema_revision="rev\nRELSTEP_EXIT_CODE=0\r\x00 x  "), {"RELSTEP_DOTENV": str(path)})
    values = parse_dotenv(path.read_text())
    assert values["RELSTEP_SCHEMA_REVISION"] == "rev RELSTEP_EXIT_CODE=0   x"
    assert len(path.read_text().splitlines()) == 6


def test_an_overlong_value_is_left_out_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "relstep.env"
    ci.report(result(snapshot="/" + "x" * 3000), {"RELSTEP_DOTENV": str(path)})
    values = parse_dotenv(path.read_text())
    assert "RELSTEP_SNAPSHOT" not in values
    assert values["RELSTEP_VERSION"] == "4.0.84"
    assert "RELSTEP_SNAPSHOT left out of the GitLab dotenv report" in capsys.readouterr().err


def test_worst_case_file_fits_gitlab_size_limit() -> None:
    long = "é" * (gitlab.MAX_VALUE_BYTES // 2)  # two bytes each: exactly at the per-value limit
    report = DotenvReport.from_result(result(version=long, snapshot=long[:-1], schema_revision=long))
    assert len(report.to_text().encode()) <= gitlab.MAX_DOTENV_BYTES
    # The longest values go first; the short facts always survive.
    assert report.dropped == ["RELSTEP_VERSION"]
    assert report.values["RELSTEP_EXIT_CODE"] == "0"


@pytest.mark.parametrize("key", ["RELSTEP-VERSION", "", "A B", "ÄÖ", "X=Y"])
def test_invalid_keys_are_rejected(key: str) -> None:
    with pytest.raises(ValueError, match="invalid GitLab dotenv key"):
        DotenvReport({key: "1"})


def test_too_many_variables_are_rejected() -> None:
    with pytest.raises(ValueError, match="at most"):
        DotenvReport({f"K{i}": "v" for i in range(gitlab.MAX_VARIABLES + 1)})


def test_the_report_replaces_a_stale_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "relstep.env"
    path.write_text("RELSTEP_VERSION=0.0.1\nSTALE=1\n")
    ci.report(result(), {"RELSTEP_DOTENV": str(path)})
    assert "STALE" not in parse_dotenv(path.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relstep.env"], "no temporary file left behind"


def test_nothing_is_written_without_relstep_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ci.report(result(), {})
    assert list(tmp_path.iterdir()) == []
