"""GitHub Actions writers: $GITHUB_OUTPUT syntax, step summary, ::error annotations."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from relstep import ci
from relstep.ci import github
from relstep.ci.github import GitHubActionsOutput, error_annotation, escape_data, escape_property
from relstep.result import PhaseResult, RunResult

from .ci_support import REPO_ROOT

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`


def parse_github_output(text: str) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT the way the runner does (name=value and name<<DELIM blocks)."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            name, value = line.split("=", 1)
            values[name] = value
            i += 1
    return values


def ok_result(**overrides: object) -> RunResult:
    result = RunResult(
        version="1.2.3",
        deployment_type="patch",
        snapshot="/srv/app/backups/releases/20261124T010423Z",
        schema_revision="20261101_add_users",
        record_id=7,
        pruned=["20261001T000000Z"],
        phases=[
            PhaseResult("backup", True, 1.234, "/srv/app/backups/releases/20261124T010423Z"),
            PhaseResult("deploy", True, 0.5, "./deploy.sh exited 0"),
            PhaseResult("record", True, 0.01, "ReleaseRecord id 7"),
            PhaseResult("prune", True, 0.0, "kept 30, removed 1"),
        ],
    )
    for key, value in overrides.items():
        setattr(result, key, value)
    return result


def failed_result() -> RunResult:
    return RunResult(
        version="1.2.3",
        deployment_type="patch",
        snapshot="/srv/app/backups/releases/20261124T010423Z",
        phases=[
            PhaseResult("backup", True, 1.0, "/srv/app/backups/releases/20261124T010423Z"),
            PhaseResult("deploy", False, 0.2, "deploy command exited with 9", exit_code=4),
        ],
        failed_phase="deploy",
        error="deploy command exited with 9; the snapshot is kept and nothing was recorded",
        exit_code=4,
    )


def test_outputs_use_the_heredoc_syntax_for_every_name(tmp_path: Path) -> None:
    out = tmp_path / "github_output"
    GitHubActionsOutput.from_result(ok_result()).write(out)
    text = out.read_text()
    assert parse_github_output(text) == {
        "version": "1.2.3",
        "deployment-type": "patch",
        "snapshot": "/srv/app/backups/releases/20261124T010423Z",
        "schema-revision": "20261101_add_users",
        "record-id": "7",
    }
    headers = [line for line in text.splitlines() if "<<" in line]
    assert [h.split("<<")[0] for h in headers] == list(github.OUTPUT_NAMES)
    delimiters = [h.split("<<")[1] for h in headers]
    assert len(set(delimiters)) == len(delimiters), "each value gets its own random delimiter"
    assert all(re.fullmatch(r"ghadelimiter_[0-9a-f-]{36}", d) for d in delimiters)


def test_missing_values_are_written_empty_so_outputs_are_always_defined(tmp_path: Path) -> None:
    out = tmp_path / "github_output"
    GitHubActionsOutput().write(out)
    assert parse_github_output(out.read_text()) == dict.fromkeys(github.OUTPUT_NAMES, "")


def test_a_multiline_value_cannot_inject_another_output(tmp_path: Path) -> None:
    out = tmp_path / "github_output"
    sneaky = "rev1\nrecord-id=999\nsnapshot<<EOF\n/etc\nEOF"
    GitHubActionsOutput(schema_revision=sneaky).write(out)
    parsed = parse_github_output(out.read_text())
    assert parsed["schema-revision"] == sneaky
    assert parsed["record-id"] == ""
    assert parsed["snapshot"] == ""


def test_outputs_are_appended_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "github_output"
    out.write_text("earlier=1\n")
    GitHubActionsOutput(version="2.0.0").write(out)
    parsed = parse_github_output(out.read_text())
    assert parsed["earlier"] == "1"
    assert parsed["version"] == "2.0.0"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"version": 123}, TypeError),
        ({"deployment_type": "hotfix"}, ValueError),
        ({"record_id": "7"}, TypeError),
        ({"record_id": True}, TypeError),
    ],
)
def test_outputs_are_validated(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        GitHubActionsOutput(**kwargs)  # type: ignore[arg-type]


def test_output_names_match_action_yml() -> None:
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text())
    assert list(action["outputs"]) == list(github.OUTPUT_NAMES)
    for name, spec in action["outputs"].items():
        assert spec["value"] == f"${{{{ steps.relstep.outputs.{name} }}}}"


@pytest.mark.parametrize(
    ("raw", "data", "prop"),
    [
        ("plain", "plain", "plain"),
        ("100% done", "100%25 done", "100%25 done"),
        ("a\r\nb", "a%0D%0Ab", "a%0D%0Ab"),
        ("k: v, w", "k: v, w", "k%3A v%2C w"),
        ("%0A literal", "%250A literal", "%250A literal"),
    ],
)
def test_workflow_command_escaping(raw: str, data: str, prop: str) -> None:
    assert escape_data(raw) == data
    assert escape_property(raw) == prop


def test_error_annotation_names_phase_and_reason() -> None:
    result = failed_result()
    result.error = "pg_dump failed:\nconnection refused, 100% sure"
    assert error_annotation(result) == (
        "::error title=relstep deploy failed::pg_dump failed:%0Aconnection refused, 100%25 sure"
    )


def test_error_annotation_without_a_reason_gives_the_exit_code() -> None:
    result = RunResult(exit_code=3, failed_phase="backup")
    assert error_annotation(result) == "::error title=relstep backup failed::exited with code 3"


def test_summary_has_a_row_per_phase() -> None:
    md = github.summary_markdown(ok_result())
    assert md.startswith("### relstep 1.2.3 (patch): passed\n")
    assert "| Phase | Outcome | Seconds | Detail |" in md
    assert "| backup | ✅ passed | 1.23 | /srv/app/backups/releases/20261124T010423Z |" in md
    assert "| prune | ✅ passed | 0.00 | kept 30, removed 1 |" in md
    assert "- **Record id:** 7" in md
    assert "- **Schema revision:** 20261101_add_users" in md


def test_summary_lists_the_notes() -> None:
    result = ok_result()
    result.notes = ["relstep created the ReleaseRecord table; the app should own it"]
    md = github.summary_markdown(result)
    assert "- **Note:** relstep created the ReleaseRecord table; the app should own it" in md


def test_summary_cells_cannot_break_the_table() -> None:
    result = failed_result()
    result.phases[1].detail = "a | b\nc <script>"
    md = github.summary_markdown(result)
    row = next(line for line in md.splitlines() if line.startswith("| deploy"))
    assert row == "| deploy | ❌ failed | 0.20 | a &#124; b c &lt;script&gt; |"
    assert "failed in deploy (exit 4)" in md.splitlines()[0]


def test_report_writes_outputs_summary_and_annotation_on_failure(tmp_path: Path) -> None:
    env = {
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_ACTIONS": "true",
    }
    stream = io.StringIO()
    ci.report(failed_result(), env, stream=stream)
    assert parse_github_output((tmp_path / "out").read_text())["snapshot"].endswith("20261124T010423Z")
    assert "| deploy | ❌ failed |" in (tmp_path / "summary.md").read_text()
    assert stream.getvalue() == (
        "::error title=relstep deploy failed::"
        "deploy command exited with 9; the snapshot is kept and nothing was recorded\n"
    )


def test_no_annotation_on_success_or_outside_github(tmp_path: Path) -> None:
    stream = io.StringIO()
    ci.report(ok_result(), {"GITHUB_ACTIONS": "true"}, stream=stream)
    ci.report(failed_result(), {}, stream=stream)
    assert stream.getvalue() == ""
    assert list(tmp_path.iterdir()) == []


def test_report_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    ci.report(failed_result(), {"GITHUB_ACTIONS": "true"})
    assert capsys.readouterr().out.startswith("::error title=relstep deploy failed::")


def test_unwritable_output_file_is_a_warning_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"GITHUB_OUTPUT": str(tmp_path / "missing-dir" / "out")}
    ci.report(ok_result(), env)
    assert "relstep: warning: could not write the GitHub Actions outputs" in capsys.readouterr().err
