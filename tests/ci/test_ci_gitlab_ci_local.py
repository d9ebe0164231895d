"""The GitLab template and the CI/CD component run for real by gitlab-ci-local (shell executor).

Each run happens in a shallow (GIT_DEPTH-like), detached-HEAD clone, as a GitLab runner
checks out a tag pipeline; the version comes from CI_COMMIT_TAG.  A `check` job that needs
the relstep job prints what the dotenv report gave it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .ci_support import (
    PLANTED_SECRET,
    git,
    isolated_env,
    make_app,
    offline_pip_env,
    relstep_wheel,
    require_tool,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("relstep_cli")]

ORIGIN = "https://gitlab.example.com/acme/relstep.git"
KEYS = ("RELSTEP_VERSION", "RELSTEP_DEPLOYMENT_TYPE", "RELSTEP_SNAPSHOT", "RELSTEP_RECORD_ID", "RELSTEP_EXIT_CODE")

CHECK_JOB = """
check:
  stage: .post
  needs: [{job}]
  rules:
    - if: $CI_COMMIT_TAG
      when: always
  script:
""" + "".join(f'    - echo "seen {key}=${{{key}-}}"\n' for key in KEYS)

TEMPLATE_CI = """\
include:
  - local: .gitlab-ci-template.yml
relstep:
  variables:
    RELSTEP_PACKAGE: {wheel}
    RELSTEP_CONFIG: app/relstep.yml
    RELEASE_BACKUP_RETENTION_COUNT: "2"
    RELSTEP_DEPLOY_COMMAND: echo deployed > deployed.txt
""" + CHECK_JOB.replace("{job}", "relstep")

COMPONENT_CI = """\
include:
  - component: gitlab.example.com/acme/relstep/relstep@$CI_COMMIT_SHA
    inputs:
      job-name: release-backup
      package: {wheel}
      config: app/relstep.yml
      retention-count: "2"
      deploy-command: echo deployed > deployed.txt
""" + CHECK_JOB.replace("{job}", "release-backup")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, source_tree: Path, wheelhouse: Path) -> Path:
    """The project as pushed: the app, the template, the component and two pipeline files."""
    repo = tmp_path_factory.mktemp("gitlab") / "upstream"
    repo.mkdir()
    shutil.copy2(source_tree / ".gitlab-ci-template.yml", repo)
    shutil.copytree(source_tree / "templates", repo / "templates")
    make_app(repo / "app")
    wheel = relstep_wheel(wheelhouse)
    (repo / ".gitlab-ci.yml").write_text(TEMPLATE_CI.replace("{wheel}", str(wheel)))
    (repo / "component-ci.yml").write_text(COMPONENT_CI.replace("{wheel}", str(wheel)))
    (repo / ".gitignore").write_text("backups/\n.gitlab-ci-local/\nrelstep.env\ndeployed.txt\n")
    env = isolated_env(repo.parent / "home")
    git("init", "-q", "-b", "main", cwd=repo, env=env)
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", "app", cwd=repo, env=env)
    git("tag", "-a", "v2.1.0", "-m", "release 2.1.0", cwd=repo, env=env)
    return repo


def shallow_detached_clone(upstream: Path, dest: Path) -> Path:
    env = isolated_env(dest.parent / "home")
    git("clone", "-q", "--depth", "1", f"file://{upstream}", str(dest), cwd=dest.parent, env=env)
    git("checkout", "-q", "--detach", cwd=dest, env=env)
    # gitlab-ci-local resolves a component from this very checkout when origin names its project.
    git("remote", "set-url", "origin", ORIGIN, cwd=dest, env=env)
    assert git("rev-parse", "--is-shallow-repository", cwd=dest, env=env).stdout.strip() == "true"
    return dest


def run_pipeline(
    upstream: Path, wheelhouse: Path, tmp_path: Path, *extra: str, file: str = ".gitlab-ci.yml"
) -> tuple[subprocess.CompletedProcess, dict[str, str], Path]:
    tool = require_tool("gitlab-ci-local")
    require_tool("rsync")
    work = shallow_detached_clone(upstream, tmp_path / "work")
    env = isolated_env(tmp_path / "home", DEPLOY_API_TOKEN=PLANTED_SECRET, **offline_pip_env(wheelhouse))
    proc = subprocess.run(
        [tool, "--force-shell-executor", "--file", file, "--variable", "CI_COMMIT_TAG=v2.1.0", *extra,
         "check", "--needs"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    seen = dict(re.findall(r"^check\s+> seen (\w+)=(.*)$", proc.stdout, re.MULTILINE))
    return proc, seen, work


def test_template_job_backs_up_and_hands_the_dotenv_to_a_needs_job(
    upstream: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    proc, seen, work = run_pipeline(upstream, wheelhouse, tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert seen["RELSTEP_VERSION"] == "2.1.0"
    assert seen["RELSTEP_DEPLOYMENT_TYPE"] == "release"
    assert seen["RELSTEP_EXIT_CODE"] == "0"
    assert seen["RELSTEP_RECORD_ID"].isdigit()
    snapshot = Path(seen["RELSTEP_SNAPSHOT"])
    assert (snapshot / "VERSION.txt").read_text() == "2.1.0\n"
    assert (work / "deployed.txt").read_text() == "deployed\n"
    assert PLANTED_SECRET not in log


def test_a_failing_phase_fails_the_pipeline_and_still_reports(upstream: Path, wheelhouse: Path, tmp_path: Path) -> None:
    proc, seen, _work = run_pipeline(upstream, wheelhouse, tmp_path, "--variable", "RELSTEP_DEPLOY_COMMAND=exit 9")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-4000:]
    assert re.search(r"FAIL\s+relstep", proc.stdout)
    assert "relstep: deploy failed: deploy command exited with 9" in log
    assert seen["RELSTEP_EXIT_CODE"] == "4"
    assert seen["RELSTEP_RECORD_ID"] == ""
    assert (Path(seen["RELSTEP_SNAPSHOT"]) / "VERSION.txt").read_text() == "2.1.0\n", "the snapshot is kept"


def test_component_job_runs_the_same_way(upstream: Path, wheelhouse: Path, tmp_path: Path) -> None:
    proc, seen, work = run_pipeline(upstream, wheelhouse, tmp_path, file="component-ci.yml")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert re.search(r"PASS\s+release-backup", proc.stdout)
    assert seen["RELSTEP_VERSION"] == "2.1.0"
    assert seen["RELSTEP_EXIT_CODE"] == "0"
    assert (Path(seen["RELSTEP_SNAPSHOT"]) / "MANIFEST.json").is_file()
    assert (work / "deployed.txt").read_text() == "deployed\n"
