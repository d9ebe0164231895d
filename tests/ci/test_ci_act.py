"""The GitHub Action (action.yml) run for real by act, in host mode, offline.

The workflow checks out a repository holding relstep itself (so `uses: ./` is the action
under test) and a tiny tagged SQLite app in app/, on a tag-push event.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .ci_support import PLANTED_SECRET, git, isolated_env, make_app, offline_pip_env, require_tool

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("relstep_cli")]

# One job on a tag push, after the checkout; each workflow below adds its steps.
JOB = """\
on: push
jobs:
  release:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
"""

WORKFLOW = "name: release\n" + JOB + """\
      - id: relstep
        uses: ./
        with:
          working-directory: app
          retention-count: "2"
          deploy-command: {deploy}
          version: {version}
          python-version: {python}
      - name: a later step sees the outputs
        if: always()
        env:
          OUT_VERSION: ${{{{ steps.relstep.outputs.version }}}}
          OUT_TYPE: ${{{{ steps.relstep.outputs.deployment-type }}}}
          OUT_SNAPSHOT: ${{{{ steps.relstep.outputs.snapshot }}}}
          OUT_REVISION: ${{{{ steps.relstep.outputs.schema-revision }}}}
          OUT_RECORD: ${{{{ steps.relstep.outputs.record-id }}}}
          OUT_OUTCOME: ${{{{ steps.relstep.outcome }}}}
        run: |
          env | grep '^OUT_' > "$EVIDENCE/outputs.env"
          if [ -n "$OUT_SNAPSHOT" ]; then cp -r "$OUT_SNAPSHOT" "$EVIDENCE/snapshot"; fi
          if [ -f app/deployed.txt ]; then cp app/deployed.txt "$EVIDENCE/"; fi
"""


# Two releases in one job, with a code change between them: the second step's summary and
# its `diff` output say what changed since the first.
TWICE = "name: twice\n" + JOB + """\
      - uses: ./
        with:
          working-directory: app
          version: "1.0.0"
      - run: echo "new" > app/backend/added.js
      - id: second
        uses: ./
        with:
          working-directory: app
          version: "1.0.1"
      - env:
          OUT_DIFF: ${{ steps.second.outputs.diff }}
        run: printf '%s' "$OUT_DIFF" > "$EVIDENCE/diff.json"
"""


# docs/ci/github-actions.md's scheduled health check, after one release to check.
HEALTH = "name: health\n" + JOB + """\
      - uses: ./
        with:
          working-directory: app
          version: "1.0.0"
      - uses: ./
        with:
          working-directory: app
          command: status
          args: |
            --max-age
            26h
            --min-size-ratio
            0.5
"""


@pytest.fixture(scope="module")
def act_repo(tmp_path_factory: pytest.TempPathFactory, source_tree: Path) -> Path:
    repo = tmp_path_factory.mktemp("act") / "repo"
    shutil.copytree(source_tree, repo)
    make_app(repo / "app")
    (repo / ".gitignore").write_text("backups/\n")
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ok.yml").write_text(WORKFLOW.format(deploy="echo deployed > deployed.txt", version="''", python="''"))
    (workflows / "deploy-fails.yml").write_text(
        WORKFLOW.format(deploy="'echo partial; exit 9'", version="''", python="'3.11'")
    )
    (workflows / "twice.yml").write_text(TWICE)
    (workflows / "health.yml").write_text(HEALTH)
    # An input that a script pasting ${{ inputs.version }} into bash would execute.
    (workflows / "injection.yml").write_text(
        WORKFLOW.format(deploy="''", version="'1.2.3$(touch ../pwned)'", python="''")
    )
    env = isolated_env(repo.parent / "home")
    git("init", "-q", "-b", "main", cwd=repo, env=env)
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", "app", cwd=repo, env=env)
    git("tag", "-a", "v1.2.3", "-m", "release 1.2.3", cwd=repo, env=env)  # annotated, as people release
    (repo.parent / "event.json").write_text(json.dumps({"ref": "refs/tags/v1.2.3"}))
    return repo


def read_outputs(evidence: Path) -> dict[str, str]:
    lines = (evidence / "outputs.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


SETUP_PYTHON_STAND_IN = """\
name: setup-python stand-in
description: Replaces actions/setup-python offline; the runner's Python is used.
inputs:
  python-version:
    description: ignored
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "setup-python stand-in ran"
"""


@pytest.fixture(scope="module")
def setup_python_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """act fetches every remote action a composite action names, even a skipped one, and has no
    network here: --local-repository points actions/setup-python at this stand-in instead."""
    path = tmp_path_factory.mktemp("setup-python")
    (path / "action.yml").write_text(SETUP_PYTHON_STAND_IN)
    return path


def run_act(
    repo: Path, workflow: str, wheelhouse: Path, tmp_path: Path, stand_in: Path
) -> tuple[subprocess.CompletedProcess, Path]:
    act = require_tool("act")
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    env = isolated_env(
        tmp_path / "home",
        EVIDENCE=str(evidence),
        # A secret in the runner's environment: relstep must never print it.
        DEPLOY_API_TOKEN=PLANTED_SECRET,
        **offline_pip_env(wheelhouse),
    )
    proc = subprocess.run(
        [act, "push", "-W", f".github/workflows/{workflow}", "-e", str(repo.parent / "event.json"),
         "-P", "ubuntu-latest=-self-hosted", "--no-cache-server", "--artifact-server-addr", "127.0.0.1",
         "--local-repository", f"actions/setup-python@v5={stand_in}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return proc, evidence


def test_tag_push_backs_up_deploys_records_and_publishes_outputs(
    act_repo: Path, wheelhouse: Path, tmp_path: Path, setup_python_stand_in: Path
) -> None:
    proc, evidence = run_act(act_repo, "ok.yml", wheelhouse, tmp_path, setup_python_stand_in)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    outputs = read_outputs(evidence)
    assert outputs["OUT_VERSION"] == "1.2.3"  # from GITHUB_REF_NAME, prefix stripped
    assert outputs["OUT_TYPE"] == "patch"
    assert outputs["OUT_OUTCOME"] == "success"
    assert outputs["OUT_RECORD"].isdigit()
    assert outputs["OUT_SNAPSHOT"].endswith(Path(outputs["OUT_SNAPSHOT"]).name)
    assert (evidence / "snapshot" / "VERSION.txt").read_text() == "1.2.3\n"
    assert (evidence / "snapshot" / "MANIFEST.json").is_file()
    assert (evidence / "deployed.txt").read_text() == "deployed\n"
    # act echoes each line written to $GITHUB_STEP_SUMMARY.
    assert "Summary - ### relstep 1.2.3 (patch): passed" in log
    assert "| backup | ✅ passed |" in log and "| record | ✅ passed |" in log
    assert PLANTED_SECRET not in log
    assert "setup-python stand-in ran" not in log  # python-version not given: the runner's Python


def test_a_failing_phase_fails_the_job_with_the_annotation(
    act_repo: Path, wheelhouse: Path, tmp_path: Path, setup_python_stand_in: Path
) -> None:
    proc, evidence = run_act(act_repo, "deploy-fails.yml", wheelhouse, tmp_path, setup_python_stand_in)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    assert "::error title=relstep deploy failed::deploy command exited with 9" in log
    assert "setup-python stand-in ran" in log  # python-version given: setup-python runs first
    assert "exit status 4" in log  # the step failed with relstep's exit code for the deploy phase
    outputs = read_outputs(evidence)
    assert outputs["OUT_OUTCOME"] == "failure"
    assert outputs["OUT_RECORD"] == ""  # nothing recorded
    assert (evidence / "snapshot" / "VERSION.txt").read_text() == "1.2.3\n", "the snapshot is kept"


def test_inputs_are_data_not_shell(
    act_repo: Path, wheelhouse: Path, tmp_path: Path, setup_python_stand_in: Path
) -> None:
    proc, _evidence = run_act(act_repo, "injection.yml", wheelhouse, tmp_path, setup_python_stand_in)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "exit status 2" in log  # relstep rejected the version as bad input
    assert "::error title=relstep version failed::" in log  # bad input is annotated like any failure
    assert not list(tmp_path.rglob("pwned")), "an input was executed by the shell"


def test_the_second_release_summary_and_diff_output_show_the_changes_since_the_first(
    act_repo: Path, wheelhouse: Path, tmp_path: Path, setup_python_stand_in: Path
) -> None:
    proc, evidence = run_act(act_repo, "twice.yml", wheelhouse, tmp_path, setup_python_stand_in)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # act prefixes the first line of each summary write with "Summary - " and echoes the rest as they are.
    assert "\n### Changes since 1.0.0\n" in log
    assert "\n**code**\n\n- `+ backend/added.js`\n\n**environment**\n" in log
    diff = json.loads((evidence / "diff.json").read_text())
    assert (diff["old"]["version"], diff["new"]["version"]) == ("1.0.0", "1.0.1")
    assert diff["code"] == {"backend": {"added": ["added.js"], "removed": [], "changed": []}}
    assert diff["migrations"] == {"added": [], "removed": [], "changed": []}


def test_the_scheduled_health_check_runs_status_through_the_action(
    act_repo: Path, wheelhouse: Path, tmp_path: Path, setup_python_stand_in: Path
) -> None:
    proc, _evidence = run_act(act_repo, "health.yml", wheelhouse, tmp_path, setup_python_stand_in)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "command must be" not in log
    assert re.search(r"\|\s+kept:\s+1 of retention 30$", log, re.MULTILINE), log[-4000:]
    assert re.search(r"\|\s+healthy$", log, re.MULTILINE), log[-4000:]
