"""relstep's git hooks driven by real `git push`es to a local bare repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relstep import hooks

from .ci_support import git, isolated_env, make_app, snapshots

pytestmark = pytest.mark.usefixtures("hook_cli")


def push(repo: Path, *refs: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return git("push", "origin", *refs, cwd=repo, env=env, check=False)


def remote_refs(remote: Path, env: dict[str, str]) -> str:
    return git("for-each-ref", "--format=%(refname)", cwd=remote, env=env).stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "home")


@pytest.fixture
def remote(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "remote.git"
    path.mkdir()
    git("init", "-q", "--bare", cwd=path, env=env)
    return path


@pytest.fixture
def clone(tmp_path: Path, remote: Path, env: dict[str, str]) -> Path:
    """The machine you deploy from: the app's working tree, with `origin` the bare repository."""
    work = make_app(tmp_path / "work")
    (work / ".gitignore").write_text("backups/\n")
    git("init", "-q", "-b", "main", cwd=work, env=env)
    git("add", "-A", cwd=work, env=env)
    git("commit", "-q", "-m", "app", cwd=work, env=env)
    git("remote", "add", "origin", str(remote), cwd=work, env=env)
    return work


def test_pre_push_runs_for_a_version_tag_and_nothing_else(clone: Path, remote: Path, env: dict[str, str]) -> None:
    hooks.install(clone, "pre-push")

    proc = push(clone, "main", env=env)
    assert proc.returncode == 0, proc.stderr
    assert snapshots(clone) == [], "a branch push runs nothing"

    git("tag", "nightly", cwd=clone, env=env)
    assert push(clone, "nightly", env=env).returncode == 0
    assert snapshots(clone) == [], "a tag that is not a version runs nothing"

    git("tag", "-a", "v1.2.3", "-m", "release", cwd=clone, env=env)
    proc = push(clone, "v1.2.3", env=env)
    assert proc.returncode == 0, proc.stderr
    (snapshot,) = snapshots(clone)
    assert (snapshot / "VERSION.txt").read_text() == "1.2.3\n"
    assert "refs/tags/v1.2.3" in remote_refs(remote, env)


def test_pre_push_failure_refuses_the_push(clone: Path, remote: Path, env: dict[str, str]) -> None:
    hooks.install(clone, "pre-push")
    assert push(clone, "main", env=env).returncode == 0
    # A config relstep refuses: exit 2 before anything is written.
    (clone / "relstep.yml").write_text((clone / "relstep.yml").read_text() + "no_such_key: 1\n")
    git("tag", "v1.3.0", cwd=clone, env=env)
    proc = push(clone, "v1.3.0", env=env)
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr
    assert "failed to push" in proc.stderr
    assert "refs/tags/v1.3.0" not in remote_refs(remote, env)
    assert snapshots(clone) == []


def test_pre_push_tag_deletion_runs_nothing(clone: Path, remote: Path, env: dict[str, str]) -> None:
    git("tag", "v1.2.3", cwd=clone, env=env)
    assert push(clone, "main", "v1.2.3", env=env).returncode == 0  # before the hook exists
    hooks.install(clone, "pre-push")
    proc = push(clone, ":refs/tags/v1.2.3", env=env)
    assert proc.returncode == 0, proc.stderr
    assert snapshots(clone) == []


@pytest.fixture
def deploy_host(tmp_path: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """Push-to-deploy: a bare repository with a pre-receive hook, and the live app beside it."""
    bare = tmp_path / "deploy.git"
    bare.mkdir()
    git("init", "-q", "--bare", cwd=bare, env=env)
    app = make_app(tmp_path / "srv" / "app")
    return bare, app


def developer_push(tmp_path: Path, bare: Path, tag: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    dev = tmp_path / "dev"
    if not dev.exists():
        dev.mkdir()
        (dev / "README").write_text("app\n")
        git("init", "-q", "-b", "main", cwd=dev, env=env)
        git("add", "-A", cwd=dev, env=env)
        git("commit", "-q", "-m", "app", cwd=dev, env=env)
        git("remote", "add", "origin", str(bare), cwd=dev, env=env)
    git("tag", tag, cwd=dev, env=env)
    return push(dev, "main", tag, env=env)


def test_pre_receive_in_a_bare_repository(tmp_path: Path, deploy_host: tuple[Path, Path], env: dict[str, str]) -> None:
    bare, app = deploy_host
    hooks.install(bare, "pre-receive", config=app / "relstep.yml")
    proc = developer_push(tmp_path, bare, "v2.0.0", env)
    assert proc.returncode == 0, proc.stderr
    (snapshot,) = snapshots(app)
    assert (snapshot / "VERSION.txt").read_text() == "2.0.0\n"
    assert (snapshot / "DEPLOYMENT_TYPE.txt").read_text() == "release\n"
    assert "remote: relstep: pre-receive: tag v2.0.0" in proc.stderr  # relayed to the pusher


def test_pre_receive_failure_rejects_the_push(
    tmp_path: Path, deploy_host: tuple[Path, Path], env: dict[str, str]
) -> None:
    bare, app = deploy_host
    (app / "relstep.yml").write_text("retention: 0\n")  # invalid: at least 1
    hooks.install(bare, "pre-receive", config=app / "relstep.yml")
    proc = developer_push(tmp_path, bare, "v2.0.1", env)
    assert proc.returncode != 0
    assert "pre-receive hook declined" in proc.stderr
    assert "refs/tags/v2.0.1" not in remote_refs(bare, env)
    assert "refs/heads/main" not in remote_refs(bare, env), "pre-receive rejects the whole push"
    assert snapshots(app) == []


def test_uninstalled_hook_runs_nothing(clone: Path, env: dict[str, str]) -> None:
    hooks.install(clone, "pre-push")
    assert hooks.uninstall(clone, "pre-push")
    git("tag", "v1.2.3", cwd=clone, env=env)
    assert push(clone, "main", "v1.2.3", env=env).returncode == 0
    assert snapshots(clone) == []
