"""The `relstep` hook of .pre-commit-hooks.yaml run by the real pre-commit framework on `git push`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .ci_support import git, isolated_env, make_app, offline_pip_env, require_tool, snapshots

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("hook_cli")]


@pytest.fixture(scope="module")
def relstep_repo(tmp_path_factory: pytest.TempPathFactory, source_tree: Path) -> tuple[Path, str]:
    """relstep as a git repository pre-commit can clone: (path, commit)."""
    repo = tmp_path_factory.mktemp("pre-commit") / "relstep"
    shutil.copytree(source_tree, repo)
    env = isolated_env(repo.parent / "home")
    git("init", "-q", "-b", "main", cwd=repo, env=env)
    git("add", "-A", cwd=repo, env=env)
    git("commit", "-q", "-m", "relstep", cwd=repo, env=env)
    return repo, git("rev-parse", "HEAD", cwd=repo, env=env).stdout.strip()


def test_pre_commit_runs_relstep_for_a_pushed_version_tag(
    tmp_path: Path, relstep_repo: tuple[Path, str], wheelhouse: Path
) -> None:
    tool = require_tool("pre-commit")
    source, rev = relstep_repo
    env = isolated_env(
        tmp_path / "home", PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"), **offline_pip_env(wheelhouse)
    )
    remote = tmp_path / "remote.git"
    remote.mkdir()
    git("init", "-q", "--bare", cwd=remote, env=env)
    work = make_app(tmp_path / "work")
    # pre-commit fails a hook that changes tracked files: the database and the backups stay untracked.
    (work / ".gitignore").write_text("backups/\napp.db\n")
    (work / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {source}\n    rev: {rev}\n    hooks:\n      - id: relstep\n"
    )
    git("init", "-q", "-b", "main", cwd=work, env=env)
    git("add", "-A", cwd=work, env=env)
    git("commit", "-q", "-m", "app", cwd=work, env=env)
    git("remote", "add", "origin", str(remote), cwd=work, env=env)
    proc = subprocess.run(
        [tool, "install", "--hook-type", "pre-push"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # The tag goes first, with commits the remote does not have yet: pre-commit hands the hook
    # refs/tags/v1.2.3 (it passes only the first ref with new commits; see docs/ci/git-hooks.md).
    git("tag", "-a", "v1.2.3", "-m", "release", cwd=work, env=env)
    proc = git("push", "origin", "v1.2.3", cwd=work, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "relstep" in proc.stdout + proc.stderr
    (snapshot,) = snapshots(work)
    assert (snapshot / "VERSION.txt").read_text() == "1.2.3\n"

    # A branch push passes without running relstep.
    (work / "backend" / "server.js").write_text("console.log('v2');\n")
    git("commit", "-q", "-am", "change", cwd=work, env=env)
    proc = git("push", "origin", "main", cwd=work, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(snapshots(work)) == 1

    # A failing run refuses the push.
    (work / "relstep.yml").write_text("retention: 0\n")
    git("commit", "-q", "-am", "break config", cwd=work, env=env)
    git("tag", "v1.2.4", cwd=work, env=env)
    proc = git("push", "origin", "v1.2.4", cwd=work, env=env, check=False)
    assert proc.returncode != 0
    assert "refs/tags/v1.2.4" not in git("for-each-ref", cwd=remote, env=env).stdout
