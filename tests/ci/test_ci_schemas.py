"""The CI files validate against the vendors' own schemas, and the two GitLab files agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from .ci_support import REPO_ROOT, isolated_env, require_tool

GITLAB_SCHEMA = [
    "--builtin-schema",
    "vendor.gitlab-ci",
    "--data-transform",
    "gitlab-ci",
    "--regex-variant",
    "nonunicode",
]


def check(files: list[Path], *schema: str, home: Path) -> subprocess.CompletedProcess:
    tool = require_tool("check-jsonschema")
    return subprocess.run(
        [tool, *schema, *map(str, files)], capture_output=True, text=True, env=isolated_env(home), timeout=120
    )


def component_documents(tmp_path: Path) -> list[Path]:
    """templates/relstep.yml is two YAML documents (spec, then jobs); the schema checks one at a time."""
    text = (REPO_ROOT / "templates" / "relstep.yml").read_text()
    docs = text.split("\n---\n")
    assert len(docs) == 2
    paths = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"component-{i}.yml"
        path.write_text(doc + "\n")
        paths.append(path)
    return paths


def test_action_yml_matches_the_github_actions_schema(tmp_path: Path) -> None:
    proc = check([REPO_ROOT / "action.yml"], "--builtin-schema", "vendor.github-actions", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_template_and_component_match_the_gitlab_ci_schema(tmp_path: Path) -> None:
    files = [REPO_ROOT / ".gitlab-ci-template.yml", *component_documents(tmp_path)]
    proc = check(files, *GITLAB_SCHEMA, home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_does_reject_a_broken_job(tmp_path: Path) -> None:
    # Guards against a check that passes everything (e.g. a schema that did not load).
    broken = tmp_path / "broken.yml"
    broken.write_text("job:\n  script: [true]\n  artifacts:\n    when: sometimes\n")
    proc = check([broken], *GITLAB_SCHEMA, home=tmp_path)
    assert proc.returncode == 1
    assert "sometimes" in proc.stdout


def test_pre_commit_manifest_is_valid(tmp_path: Path) -> None:
    tool = require_tool("pre-commit")
    proc = subprocess.run(
        [tool, "validate-manifest", str(REPO_ROOT / ".pre-commit-hooks.yaml")],
        capture_output=True,
        text=True,
        env=isolated_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (hook,) = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "relstep"
    assert hook["stages"] == ["pre-push"]
    assert hook["always_run"] is True and hook["pass_filenames"] is False


def test_template_and_component_run_the_same_script() -> None:
    template = yaml.safe_load((REPO_ROOT / ".gitlab-ci-template.yml").read_text())
    _spec, jobs = yaml.safe_load_all((REPO_ROOT / "templates" / "relstep.yml").read_text())
    (job,) = jobs.values()
    assert job["script"] == template[".relstep"]["script"]
    assert job["artifacts"] == template[".relstep"]["artifacts"]
    assert template["relstep"] == {"extends": ".relstep", "rules": [{"if": "$CI_COMMIT_TAG"}]}
    assert job["rules"] == [{"if": "$CI_COMMIT_TAG"}]


def test_template_pins_the_package_to_its_own_version() -> None:
    import relstep

    template = yaml.safe_load((REPO_ROOT / ".gitlab-ci-template.yml").read_text())
    spec, _jobs = yaml.safe_load_all((REPO_ROOT / "templates" / "relstep.yml").read_text())
    pinned = f"relstep=={relstep.__version__}"
    assert template[".relstep"]["variables"]["RELSTEP_PACKAGE"] == pinned
    assert spec["spec"]["inputs"]["package"]["default"] == pinned


@pytest.mark.parametrize("name", ["version", "deployment-type", "config", "retention-count", "deploy-command", "args"])
def test_action_inputs_reach_scripts_only_through_env(name: str) -> None:
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text())
    expression = f"${{{{ inputs.{name} }}}}"
    for step in action["runs"]["steps"]:
        assert expression not in step.get("run", ""), f"inputs.{name} pasted into a run: script"
    assert any(expression in (step.get("env") or {}).values() for step in action["runs"]["steps"])


def test_action_has_no_unconditional_remote_action() -> None:
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text())
    remote = [s for s in action["runs"]["steps"] if "uses" in s]
    assert remote and all(s.get("if") == "inputs.python-version != ''" for s in remote)
