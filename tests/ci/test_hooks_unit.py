"""relstep.hooks: which pushed refs trigger a run, and install/uninstall semantics."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relstep import hooks
from relstep.errors import InputError
from relstep.hooks_cli import hook_app

from .ci_support import git, isolated_env

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`

A = "a" * 40
B = "b" * 40
Z = "0" * 40


def push_line(ref: str, new: str = A, old: str = Z, local: str | None = None) -> str:
    return f"{local or ref} {new} {ref} {old}"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([push_line("refs/tags/v1.2.3")], ["v1.2.3"]),
        ([push_line("refs/heads/main")], []),
        ([push_line("refs/heads/main"), push_line("refs/tags/v2.0.0")], ["v2.0.0"]),
        ([push_line("refs/tags/v1.2.3", new=Z, local="(delete)")], []),  # tag deletion
        ([push_line("refs/tags/v1.2.3", new="0" * 64, local="(delete)")], []),  # SHA-256 repository
        ([push_line("refs/tags/v1.2.3", new=A, old=A)], []),  # already there
        ([push_line("refs/tags/v1.2.3", new=B, old=A)], ["v1.2.3"]),  # moved tag
        ([push_line("refs/tags/nightly")], []),
        ([push_line("refs/tags/1.2.3")], []),  # prefix missing
        ([push_line("refs/tags/v1.2")], []),
        ([push_line("refs/tags/v01.2.3")], []),
        ([push_line("refs/tags/v1.2.3-rc.1+build.5")], ["v1.2.3-rc.1+build.5"]),
        ([push_line("refs/heads/v1.2.3")], []),  # a branch named like a version
        ([push_line("refs/tags/v1.0.0"), push_line("refs/tags/v1.0.1")], ["v1.0.0", "v1.0.1"]),
        ([push_line("refs/tags/v1.0.0", local="refs/tags/other"), push_line("refs/tags/v1.0.0")], ["v1.0.0"]),
        (["", "   "], []),
    ],
)
def test_pre_push_tags(lines: list[str], expected: list[str]) -> None:
    assert hooks.tags_to_run("pre-push", lines, "v") == expected


def test_pre_push_uses_the_remote_ref_name() -> None:
    # `git push origin local-tag:refs/tags/v3.0.0` creates v3.0.0 on the remote.
    assert hooks.tags_to_run("pre-push", [push_line("refs/tags/v3.0.0", local="refs/tags/x")], "v") == ["v3.0.0"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([f"{Z} {A} refs/tags/v1.2.3"], ["v1.2.3"]),
        ([f"{A} {Z} refs/tags/v1.2.3"], []),  # deletion
        ([f"{A} {B} refs/heads/main"], []),
        ([f"{A} {B} refs/heads/main", f"{Z} {A} refs/tags/v4.0.84"], ["v4.0.84"]),
    ],
)
def test_pre_receive_tags(lines: list[str], expected: list[str]) -> None:
    assert hooks.tags_to_run("pre-receive", lines, "v") == expected


def test_custom_and_empty_tag_prefix() -> None:
    lines = [push_line("refs/tags/release-2.1.0"), push_line("refs/tags/3.0.0"), push_line("refs/tags/v1.0.0")]
    assert hooks.tags_to_run("pre-push", lines, "release-") == ["release-2.1.0"]
    assert hooks.tags_to_run("pre-push", lines, "") == ["3.0.0"]


def test_malformed_input_and_unknown_hooks_are_input_errors() -> None:
    with pytest.raises(InputError, match="unexpected pre-push input line"):
        hooks.tags_to_run("pre-push", ["refs/tags/v1.2.3 abc"], "v")
    with pytest.raises(InputError, match="unknown hook"):
        hooks.tags_to_run("post-merge", [], "v")


def test_pre_commit_variables_become_a_pre_push_line() -> None:
    env = {
        "PRE_COMMIT_REMOTE_BRANCH": "refs/tags/v1.2.3",
        "PRE_COMMIT_LOCAL_BRANCH": "refs/tags/v1.2.3",
        "PRE_COMMIT_FROM_REF": A,
        "PRE_COMMIT_TO_REF": B,
    }
    assert hooks.tags_to_run("pre-push", hooks.pre_commit_lines(env), "v") == ["v1.2.3"]
    # Root commit pushed: pre-commit sets no FROM/TO refs, only the branches.
    root = {"PRE_COMMIT_REMOTE_BRANCH": "refs/tags/v1.0.0", "PRE_COMMIT_LOCAL_BRANCH": "refs/tags/v1.0.0"}
    assert hooks.tags_to_run("pre-push", hooks.pre_commit_lines(root), "v") == ["v1.0.0"]
    assert hooks.pre_commit_lines({}) == []


# --- install / uninstall -------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git("init", "-q", cwd=path)
    return path


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    path = tmp_path / "deploy.git"
    path.mkdir()
    git("init", "-q", "--bare", cwd=path)
    return path


def test_install_writes_an_executable_marked_script(repo: Path) -> None:
    path = hooks.install(repo)
    assert path == repo / ".git" / "hooks" / "pre-push"
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert hooks.MARKER in text
    assert str(Path(sys.executable).absolute()) in text
    assert text.rstrip().endswith('-m relstep hook run pre-push "$@"')
    assert path.stat().st_mode & stat.S_IXUSR


def test_install_in_a_bare_repository_records_the_config(bare: Path, tmp_path: Path) -> None:
    config = tmp_path / "srv app" / "relstep.yml"  # a space, to check the quoting
    config.parent.mkdir()
    config.write_text("tag_prefix: v\n")
    path = hooks.install(bare, "pre-receive", config=config)
    assert path == bare / "hooks" / "pre-receive"
    assert f"--config '{config}'" in path.read_text()


def test_install_missing_config_is_an_input_error(bare: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        hooks.install(bare, "pre-receive", config=tmp_path / "nope.yml")


def test_install_honours_core_hooks_path(repo: Path) -> None:
    git("config", "core.hooksPath", ".githooks", cwd=repo)
    assert hooks.install(repo) == repo / ".githooks" / "pre-push"


def test_a_foreign_hook_is_never_overwritten_without_force(repo: Path) -> None:
    foreign = repo / ".git" / "hooks" / "pre-push"
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(InputError) as info:
        hooks.install(repo)
    assert "--force" in str(info.value) and "\n" not in str(info.value)
    assert foreign.read_text() == "#!/bin/sh\necho mine\n"

    hooks.install(repo, force=True)
    assert hooks.is_relstep_hook(foreign)
    assert (foreign.parent / "pre-push.relstep-replaced").read_text() == "#!/bin/sh\necho mine\n"


def test_reinstall_replaces_relstep_own_hook(repo: Path) -> None:
    hooks.install(repo, command=["/old/python", "-m", "relstep"])
    path = hooks.install(repo)
    assert "/old/python" not in path.read_text()


def test_uninstall_removes_only_relstep_hooks(repo: Path) -> None:
    hooks_dir = repo / ".git" / "hooks"
    assert hooks.uninstall(repo, "pre-push") is False  # nothing there
    hooks.install(repo)
    assert hooks.uninstall(repo, "pre-push") is True
    assert not (hooks_dir / "pre-push").exists()
    (hooks_dir / "pre-push").write_text("#!/bin/sh\necho mine\n")
    assert hooks.uninstall(repo, "pre-push") is False
    assert (hooks_dir / "pre-push").exists()


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a git repository"):
        hooks.install(tmp_path)


# --- run_hook, with a stand-in for relstep that records its arguments ------------------------

STUB = """\
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                         "git_dir": os.environ.get("GIT_DIR")}) + "\\n")
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


@pytest.fixture
def stub(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "stub_relstep.py"
    script.write_text(STUB)
    return [sys.executable, str(script)], tmp_path / "stub.log"


def read_log(log: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_run_hook_runs_relstep_per_version_tag(stub: tuple[list[str], Path], tmp_path: Path) -> None:
    command, log = stub
    env = {**os.environ, "STUB_LOG": str(log), "GIT_DIR": "/somewhere/bare.git"}
    lines = [push_line("refs/heads/main"), push_line("refs/tags/v1.2.3"), push_line("refs/tags/v1.2.4")]
    assert hooks.run_hook("pre-push", lines, command=command, environ=env) == 0
    calls = read_log(log)
    assert [c["argv"] for c in calls] == [["run", "--version", "1.2.3"], ["run", "--version", "1.2.4"]]
    assert all(c["git_dir"] is None for c in calls), "the hook's GIT_DIR must not leak into relstep"


def test_run_hook_returns_the_failing_exit_code_and_stops(stub: tuple[list[str], Path], tmp_path: Path) -> None:
    command, log = stub
    env = {**os.environ, "STUB_LOG": str(log), "STUB_EXIT": "3"}
    lines = [push_line("refs/tags/v1.2.3"), push_line("refs/tags/v1.2.4")]
    messages: list[str] = []
    assert hooks.run_hook("pre-push", lines, command=command, environ=env, log=messages.append) == 3
    assert len(read_log(log)) == 1
    assert "refusing the push" in messages[-1]


def test_run_hook_with_config_runs_in_the_config_folder(stub: tuple[list[str], Path], tmp_path: Path) -> None:
    command, log = stub
    app = tmp_path / "app"
    app.mkdir()
    (app / "relstep.yml").write_text("{}\n")
    env = {**os.environ, "STUB_LOG": str(log)}
    lines = [f"{Z} {A} refs/tags/v2.0.0"]
    assert hooks.run_hook("pre-receive", lines, command=command, config=app / "relstep.yml", environ=env) == 0
    (call,) = read_log(log)
    assert call["argv"] == ["--config", str(app / "relstep.yml"), "run", "--version", "2.0.0"]
    assert Path(call["cwd"]) == app


def test_run_hook_nothing_to_do_runs_nothing(stub: tuple[list[str], Path]) -> None:
    command, log = stub
    assert hooks.run_hook("pre-push", [push_line("refs/heads/main")], command=command) == 0
    assert not log.exists()


# --- the Typer sub-app -------------------------------------------------------------------------


def test_cli_install_uninstall_and_the_foreign_hook_error(repo: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(hook_app, ["install", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    assert "installed pre-push hook" in result.output
    result = runner.invoke(hook_app, ["uninstall", "--repo", str(repo)])
    assert result.exit_code == 0 and "removed" in result.output

    (repo / ".git" / "hooks" / "pre-push").write_text("#!/bin/sh\n")
    result = runner.invoke(hook_app, ["install", "--repo", str(repo)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("relstep: input failed: ")
    result = runner.invoke(hook_app, ["uninstall", "--repo", str(repo)])
    assert result.exit_code == 0 and "nothing removed" in result.output


def test_cli_rejects_an_unknown_hook(repo: Path) -> None:
    result = CliRunner().invoke(hook_app, ["install", "--hook", "post-merge", "--repo", str(repo)])
    assert result.exit_code == 2


def test_cli_run_reads_the_tag_prefix_from_the_config(tmp_path: Path, stub: tuple[list[str], Path]) -> None:
    config = tmp_path / "relstep.yml"
    config.write_text("tag_prefix: release-\n")
    _, log = stub
    # Through a real subprocess, the way git runs it: refs on stdin, `<remote> <url>` as arguments.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from relstep.hooks_cli import hook_app; sys.exit(hook_app())",
            "run",
            "pre-push",
            "--config",
            str(config),
            "origin",
            "/tmp/remote.git",
        ],
        input=f"{push_line('refs/tags/v1.0.0')}\n{push_line('refs/heads/main')}\n",
        env={**isolated_env(tmp_path / "home"), "STUB_LOG": str(log)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), "v1.0.0 is not a release- tag"


def test_cli_run_reads_tag_prefix_strictly(tmp_path: Path) -> None:
    # The hook reads tag_prefix before relstep run: an alias bomb or a duplicate key must not hang
    # or slip through there either; a branch push is then refused with one line.
    config = tmp_path / "relstep.yml"
    config.write_text("tag_prefix: v\ntag_prefix: release-\n")
    result = CliRunner().invoke(hook_app, ["run", "pre-push", "--config", str(config)], input="")
    assert result.exit_code == 2
    assert result.output.strip() == (f"relstep: input failed: cannot read tag_prefix from {config}: line 2: key "
                                     "'tag_prefix' is given twice (first on line 1); keep one")
