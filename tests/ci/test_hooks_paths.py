"""Where `relstep hook install` puts the hook: a global core.hooksPath is not taken over unless
asked, and husky's hooks get relstep's lines instead of losing their wrapper. Real `git push`es
to local bare repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relstep import hooks
from relstep.hooks_cli import hook_app

from .ci_support import git, isolated_env, make_app, snapshots

pytestmark = pytest.mark.usefixtures("hook_cli")

# husky 9's generated files, byte for byte as `npx husky init` (husky 9.1) writes them.
HUSKY_H = """#!/usr/bin/env sh
[ "$HUSKY" = "2" ] && set -x
n=$(basename "$0")
s=$(dirname "$(dirname "$0")")/$n

[ ! -f "$s" ] && exit 0

if [ -f "$HOME/.huskyrc" ]; then
\techo "husky - '~/.huskyrc' is DEPRECATED, please move your code to ~/.config/husky/init.sh"
fi
i="${XDG_CONFIG_HOME:-$HOME/.config}/husky/init.sh"
[ -f "$i" ] && . "$i"

[ "${HUSKY-}" = "0" ] && exit 0

export PATH="node_modules/.bin:$PATH"
sh -e "$s" "$@"
c=$?

[ $c != 0 ] && echo "husky - $n script failed (code $c)"
[ $c = 127 ] && echo "husky - command not found in PATH=$PATH"
exit $c"""
HUSKY_WRAPPER = '#!/usr/bin/env sh\n. "$(dirname "$0")/h"'


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environment = isolated_env(tmp_path / "home")
    # hooks.install runs git in this process: it must read the same private global config.
    for key in ("HOME", "XDG_CONFIG_HOME", "GIT_CONFIG_NOSYSTEM"):
        monkeypatch.setenv(key, environment.get(key, ""))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    return environment


def repository(path: Path, remote: Path, env: dict[str, str], app: bool = True) -> Path:
    if app:
        make_app(path)
        (path / ".gitignore").write_text("backups/\n")
    else:
        path.mkdir(parents=True)
        (path / "README").write_text("another project\n")
    git("init", "-q", "-b", "main", cwd=path, env=env)
    git("add", "-A", cwd=path, env=env)
    git("commit", "-q", "-m", "init", cwd=path, env=env)
    remote.mkdir()
    git("init", "-q", "--bare", cwd=remote, env=env)
    git("remote", "add", "origin", str(remote), cwd=path, env=env)
    return path


@pytest.fixture
def global_hooks(tmp_path: Path, env: dict[str, str]) -> Path:
    """A global core.hooksPath with a pre-push hook of its own (say, a company-wide check)."""
    folder = tmp_path / "global-hooks"
    folder.mkdir()
    check = folder / "pre-push"
    check.write_text(f"#!/bin/sh\necho global-check >> {tmp_path / 'global.log'}\n")
    check.chmod(0o755)
    git("config", "--global", "core.hooksPath", str(folder), cwd=tmp_path, env=env)
    return folder


def push(repo: Path, *refs: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return git("push", "origin", *refs, cwd=repo, env=env, check=False)


def local_hooks_path(repo: Path, env: dict[str, str]) -> str:
    return git("config", "--local", "--get", "core.hooksPath", cwd=repo, env=env, check=False).stdout.strip()


def test_a_global_hooks_path_is_not_taken_over(tmp_path: Path, env: dict[str, str], global_hooks: Path) -> None:
    app = repository(tmp_path / "app", tmp_path / "app.git", env)
    other = repository(tmp_path / "other", tmp_path / "other.git", env, app=False)

    result = CliRunner().invoke(hook_app, ["install", "--repo", str(app)])
    assert result.exit_code == 0, result.output
    own = app / ".git" / "hooks"
    lines = result.output.splitlines()
    assert lines[0] == f"installed pre-push hook at {own / 'pre-push'}"
    assert lines[1] == (
        f"note: core.hooksPath is set in your global git config ({global_hooks}), shared by all your repositories: "
        f"relstep installed into this repository's own hooks and set this repository's core.hooksPath to {own}; "
        "the global hooks there (pre-push) no longer run in this repository (`relstep hook uninstall` undoes it; "
        f"--global-hooks-path installs into {global_hooks} instead)"
    )
    assert local_hooks_path(app, env) == str(own)
    assert sorted(p.name for p in global_hooks.iterdir()) == ["pre-push"]
    assert not hooks.is_relstep_hook(global_hooks / "pre-push")

    # Another repository's version tag: its push is not refused and runs no relstep.
    git("tag", "v9.9.9", cwd=other, env=env)
    proc = push(other, "main", "v9.9.9", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "relstep" not in proc.stderr
    assert (tmp_path / "global.log").read_text() == "global-check\n"

    git("tag", "v1.2.3", cwd=app, env=env)
    proc = push(app, "main", "v1.2.3", env=env)
    assert proc.returncode == 0, proc.stderr
    (snapshot,) = snapshots(app)
    assert (snapshot / "VERSION.txt").read_text() == "1.2.3\n"

    # Uninstalling gives the repository back to the global hooks.
    assert CliRunner().invoke(hook_app, ["uninstall", "--repo", str(app)]).exit_code == 0
    assert local_hooks_path(app, env) == ""
    assert not (own / "pre-push").exists()
    git("tag", "v1.2.4", cwd=app, env=env)
    assert push(app, "v1.2.4", env=env).returncode == 0
    assert len(snapshots(app)) == 1
    assert (tmp_path / "global.log").read_text() == "global-check\nglobal-check\n"


def test_global_hooks_path_only_when_asked(tmp_path: Path, env: dict[str, str], global_hooks: Path) -> None:
    app = repository(tmp_path / "app", tmp_path / "app.git", env)
    (global_hooks / "pre-push").unlink()
    result = CliRunner().invoke(hook_app, ["install", "--repo", str(app), "--global-hooks-path"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"installed pre-push hook at {global_hooks / 'pre-push'}",
        f"note: relstep installed into the global core.hooksPath {global_hooks}: every repository using it runs "
        "relstep for its version tags",
    ]
    assert hooks.is_relstep_hook(global_hooks / "pre-push") and local_hooks_path(app, env) == ""


def test_global_hooks_path_flag_without_one(tmp_path: Path, env: dict[str, str]) -> None:
    app = repository(tmp_path / "app", tmp_path / "app.git", env)
    result = CliRunner().invoke(hook_app, ["install", "--repo", str(app), "--global-hooks-path"])
    assert result.exit_code == 2
    assert result.output.strip() == ("relstep: input failed: --global-hooks-path: no global core.hooksPath is set "
                                     "for this repository; install without --global-hooks-path")
    assert not (app / ".git" / "hooks" / "pre-push").exists()


def husky(app: Path, env: dict[str, str], user_hook: str | None) -> None:
    """husky 9's layout: core.hooksPath=.husky/_ with generated wrappers, the team's .husky/pre-push."""
    generated = app / ".husky" / "_"
    generated.mkdir(parents=True)
    (generated / "h").write_text(HUSKY_H)
    (generated / ".gitignore").write_text("*")
    for name in ("pre-commit", "pre-push"):
        (generated / name).write_text(HUSKY_WRAPPER)
        (generated / name).chmod(0o755)
    if user_hook is not None:
        (app / ".husky" / "pre-push").write_text(user_hook)
    git("config", "core.hooksPath", ".husky/_", cwd=app, env=env)


def test_husky_keeps_its_wrapper_and_runs_relstep_from_its_hook(tmp_path: Path, env: dict[str, str]) -> None:
    app = repository(tmp_path / "app", tmp_path / "app.git", env)
    user_hook = f"echo team-check >> {tmp_path / 'husky.log'}\n"
    husky(app, env, user_hook)
    result = CliRunner().invoke(hook_app, ["install", "--repo", str(app)])
    assert result.exit_code == 0, result.output
    target = app / ".husky" / "pre-push"
    assert result.output.splitlines() == [
        f"installed pre-push hook at {target}",
        f"note: husky manages this repository's hooks: relstep's lines were added at the end of {target}, which "
        "husky runs for pre-push; keep them last there",
    ]
    assert (app / ".husky" / "_" / "pre-push").read_text() == HUSKY_WRAPPER
    assert target.read_text() == user_hook + hooks.husky_block("pre-push", hooks.default_command())
    # Installing again updates relstep's block instead of adding a second one.
    hooks.install(app)
    assert target.read_text().count(hooks.BLOCK_START) == 1

    git("tag", "v2.0.0", cwd=app, env=env)
    proc = push(app, "main", "v2.0.0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "husky.log").read_text() == "team-check\n"
    (snapshot,) = snapshots(app)
    assert (snapshot / "VERSION.txt").read_text() == "2.0.0\n"

    # A failing relstep run refuses the push through husky too.
    (app / "relstep.yml").write_text((app / "relstep.yml").read_text() + "no_such_key: 1\n")
    git("tag", "v2.0.1", cwd=app, env=env)
    proc = push(app, "v2.0.1", env=env)
    assert proc.returncode != 0 and "no_such_key" in proc.stderr and "failed to push" in proc.stderr
    assert "husky - pre-push script failed (code 2)" in proc.stdout
    assert len(snapshots(app)) == 1

    assert hooks.uninstall(app, "pre-push")
    assert target.read_text() == user_hook


def test_husky_without_a_pre_push_of_its_own(tmp_path: Path, env: dict[str, str]) -> None:
    app = repository(tmp_path / "app", tmp_path / "app.git", env)
    husky(app, env, None)
    path = hooks.install(app)
    assert path == app / ".husky" / "pre-push"
    assert path.read_text() == hooks.husky_block("pre-push", hooks.default_command())
    git("tag", "v3.0.0", cwd=app, env=env)
    proc = push(app, "main", "v3.0.0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(snapshots(app)) == 1
    assert hooks.uninstall(app, "pre-push") and not path.exists()
    assert (app / ".husky" / "_" / "pre-push").read_text() == HUSKY_WRAPPER


def test_uninstall_leaves_a_repository_local_hooks_path_alone(tmp_path: Path, env: dict[str, str]) -> None:
    app = repository(tmp_path / "app", tmp_path / "app.git", env)
    git("config", "core.hooksPath", ".githooks", cwd=app, env=env)
    assert hooks.install(app) == app / ".githooks" / "pre-push"
    assert hooks.uninstall(app, "pre-push")
    assert local_hooks_path(app, env) == ".githooks"
