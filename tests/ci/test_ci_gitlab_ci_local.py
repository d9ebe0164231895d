"""The GitLab template and the CI/CD component run for real by gitlab-ci-local (shell executor).

Each run happens in a shallow (GIT_DEPTH-like), detached-HEAD clone, as a GitLab runner
checks out a tag pipeline; the version comes from CI_COMMIT_TAG.  A `check` job that needs
the relstep job prints what the dotenv report gave it.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from relstep.fsutil import human_bytes
from relstep.manifest import Manifest

from .ci_support import (
    PLANTED_SECRET,
    RELSTEP_YML,
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


# --- two releases in a row: the second job's log says what changed since the first ---------------

PRISMA_TABLE = """CREATE TABLE _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMP NULL,
    migration_name VARCHAR(255) NOT NULL, logs TEXT NULL, rolled_back_at TIMESTAMP NULL,
    started_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, applied_steps_count INTEGER NOT NULL DEFAULT 0)"""
FIRST_MIGRATION, NEW_MIGRATION = "20260101000000_init", "20260301000000_add_tags"
MIGRATED_YML = RELSTEP_YML.replace("migrations:\n  tool: none", "migrations:\n  tool: prisma")
# docs/ci/gitlab.md's scheduled health check, with this test's package and config.
HEALTH_JOB = """
backup-health:
  extends: .relstep
  variables:
    RELSTEP_COMMAND: status
    RELSTEP_ARGS: --max-age 26h --min-size-ratio 0.5
    RELSTEP_PACKAGE: {wheel}
    RELSTEP_CONFIG: app/relstep.yml
  rules:
    - if: $CI_PIPELINE_SOURCE == "schedule"
"""

def _apply_migration(db: Path, name: str, *statements: str) -> None:
    """What a release's deploy does to the database: its statements and the migration's row."""
    with sqlite3.connect(db) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name) "
                     "VALUES (?, ?, CURRENT_TIMESTAMP, ?)", (name[:8], "c" * 64, name))
    conn.close()


def _job(tool: str, work: Path, env: dict[str, str], job: str, variable: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool, "--force-shell-executor", "--variable", variable, job],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _release(tool: str, work: Path, env: dict[str, str], tag: str) -> subprocess.CompletedProcess:
    proc = _job(tool, work, env, "relstep", f"CI_COMMIT_TAG={tag}")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _job_lines(stream: str, job: str = "relstep") -> list[str]:
    """A job's lines as gitlab-ci-local shows them (``relstep > ...``), prefix cut.

    It shows the job's stdout on its stdout and the job's stderr (where relstep writes the section)
    on its stderr, each in order.
    """
    return [m.group(1) for m in re.finditer(rf"^{re.escape(job)}\s+> (.*)$", stream, re.MULTILINE)]


def test_the_second_release_job_log_shows_the_changes_since_the_first(
    source_tree: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    tool = require_tool("gitlab-ci-local")
    require_tool("rsync")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy2(source_tree / ".gitlab-ci-template.yml", work)
    app = make_app(work / "app", MIGRATED_YML)
    (app / "backend" / "old.js").write_text("going\n")
    _apply_migration(app / "app.db", FIRST_MIGRATION, PRISMA_TABLE)
    (work / ".gitlab-ci.yml").write_text((TEMPLATE_CI + HEALTH_JOB).replace("{wheel}", str(relstep_wheel(wheelhouse))))
    (work / ".gitignore").write_text("backups/\n.gitlab-ci-local/\nrelstep.env\ndeployed.txt\napp/app.db\n")
    genv = isolated_env(tmp_path / "home")
    git("init", "-q", "-b", "main", cwd=work, env=genv)
    git("add", "-A", cwd=work, env=genv)
    git("commit", "-q", "-m", "2.1.0", cwd=work, env=genv)
    git("tag", "-a", "v2.1.0", "-m", "2.1.0", cwd=work, env=genv)
    env = isolated_env(tmp_path / "home", **offline_pip_env(wheelhouse))

    first = _release(tool, work, env, "v2.1.0")
    assert not any("changes since" in line for line in _job_lines(first.stderr)), "nothing to compare with yet"

    # Release 2.2.0: a migration (a new table), two users more, and code added, changed and removed.
    _apply_migration(app / "app.db", NEW_MIGRATION, 'CREATE TABLE "Tag" (id INTEGER PRIMARY KEY, label TEXT)',
                     """INSERT INTO "User" (email, password) VALUES ('b@example.com', 'x'), ('c@example.com', 'y')""")
    (app / "backend" / "server.js").write_text("console.log('api v2');\n")
    (app / "backend" / "added.js").write_text("new\n")
    (app / "backend" / "old.js").unlink()
    git("add", "-A", cwd=work, env=genv)
    git("commit", "-q", "-m", "2.2.0", cwd=work, env=genv)
    git("tag", "-a", "v2.2.0", "-m", "2.2.0", cwd=work, env=genv)

    second = _release(tool, work, env, "v2.2.0")
    old, new = sorted(p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith("."))
    sizes = f"{human_bytes(Manifest.load(old).size)} -> {new.name}: {human_bytes(Manifest.load(new).size)}"
    grown = Manifest.load(new).size - Manifest.load(old).size
    expected = [
        f"changes since 2.1.0 ({old.name}) in 2.2.0 ({new.name})",
        "migrations:",
        f"  + {NEW_MIGRATION}",
        "schema:",
        "  + main: table ReleaseRecord",          # recorded after the first backup, in the app's database
        "  + main: table Tag",
        "rows:",
        "  main.ReleaseRecord: - -> 1 (+1)",
        "  main.Tag: - -> 0 (0)",
        "  main.User: 1 -> 3 (+2)",
        "  main._prisma_migrations: 1 -> 2 (+1)",
        "code:",
        "  + backend/added.js",
        "  - backend/old.js",
        "  ~ backend/server.js",
        "environment:",
        "  no change",
        "size:",
        f"  {old.name}: {sizes} ({'+' if grown > 0 else ''}{grown} bytes)",
    ]
    lines = _job_lines(second.stderr)
    start = lines.index(expected[0])
    assert lines[start:start + len(expected)] == expected
    # gitlab-ci-local turned relstep's markers into its section (GitLab shows it collapsible).
    assert re.search(r"^relstep relstep_changes_started$", second.stderr, re.MULTILINE)
    assert re.search(r"^relstep relstep_changes took \d+ms$", second.stderr, re.MULTILINE)
    assert "relstep_changes" not in first.stdout + first.stderr

    # The scheduled health check of docs/ci/gitlab.md: the newest snapshot deleted by hand fails it, exit 11.
    shutil.rmtree(new)
    health = _job(tool, work, env, "backup-health", "CI_PIPELINE_SOURCE=schedule")
    assert health.returncode != 0, health.stdout + health.stderr
    assert re.search(r"FAIL\s+backup-health", health.stdout)
    assert re.search(r"^backup-health finished in \d+ s  FAIL 11 ?$", health.stderr, re.MULTILINE), health.stderr
    assert _job_lines(health.stderr, "backup-health")[-1] == (
        f"relstep: status failed: recorded release 2.2.0 points at {new.name}, which is gone from backup_root "
        "although relstep did not prune it (deleted by hand?)")
    assert (work / "relstep.env").read_text() == "RELSTEP_EXIT_CODE=11\n"
