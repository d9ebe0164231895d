"""environment.json: runtime versions, host facts, git state and configured commands' output.

Everything passes through ``relstep.masking.mask_data`` before it is returned: values
under secret-looking names (``DB_PASS``, ``SENTRY_DSN`` in ``pm2 jlist``), URL passwords
and credential parameters, values shaped like credentials (``sk_live_...``, JWTs) and
long high-entropy tokens are masked there.  The process environment is *not* captured
wholesale all the same: only an allow-list of variables that describe the deploy is kept.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import __version__, children
from relstep.masking import mask_data

COMMAND_TIMEOUT = 30
MAX_OUTPUT = 256 * 1024
DESCRIPTIVE_VARIABLES = (
    "CI", "NODE_ENV", "RAILS_ENV", "DJANGO_SETTINGS_MODULE", "FLASK_ENV", "APP_ENV", "TZ", "LANG",
    "GITHUB_REPOSITORY", "GITHUB_REF", "GITHUB_REF_NAME", "GITHUB_SHA", "GITHUB_RUN_ID", "GITHUB_WORKFLOW",
    "GITHUB_ACTOR", "CI_PROJECT_PATH", "CI_COMMIT_SHA", "CI_COMMIT_TAG", "CI_PIPELINE_ID", "CI_JOB_ID",
    "RELSTEP_VERSION", "RELSTEP_DEPLOYMENT_TYPE", "RELEASE_BACKUP_RETENTION_COUNT",
)


def git_facts(repo_dir: Path) -> dict[str, Any]:
    import git

    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
        head = repo.head.commit.hexsha
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return {"repository": False}
    facts: dict[str, Any] = {"repository": True, "commit": head}
    try:
        facts["branch"] = repo.active_branch.name
    except TypeError:
        facts["branch"] = None  # detached HEAD, as in most CI checkouts
    facts["tags"] = repo.git.tag("--points-at", "HEAD").split()
    facts["dirty"] = repo.is_dirty(untracked_files=False)
    return facts


def run_command(command: str, cwd: Path) -> dict[str, Any]:
    """Run one configured command; its failure is recorded, never raised."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return {"command": command, "status": "invalid", "error": str(exc)}
    if not argv or shutil.which(argv[0]) is None:
        return {"command": command, "status": "missing"}
    try:
        proc = children.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=COMMAND_TIMEOUT,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"command": command, "status": "timeout", "timeout_seconds": COMMAND_TIMEOUT}
    except OSError as exc:
        return {"command": command, "status": "failed", "error": exc.strerror}
    stdout = proc.stdout[:MAX_OUTPUT].decode("utf-8", "replace").strip()
    result: dict[str, Any] = {"command": command, "status": "ok" if proc.returncode == 0 else "failed",
                              "exit_code": proc.returncode}
    # Structured output (pm2 jlist) is kept structured so secret-looking keys inside it are masked by name.
    try:
        result["json"] = json.loads(stdout) if stdout[:1] in ("{", "[") else None
    except ValueError:
        result["json"] = None
    if result["json"] is None:
        del result["json"]
        result["output"] = stdout
    if proc.returncode != 0:
        result["stderr"] = proc.stderr[:4096].decode("utf-8", "replace").strip()
    return result


def capture_environment(
    commands: Mapping[str, str],
    cwd: Path,
    tools: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    facts: dict[str, Any] = {
        "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "relstep": __version__,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "os": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
               "platform": platform.platform()},
        "host": {"hostname": socket.gethostname(), "cpus": os.cpu_count()},
        "git": git_facts(cwd),
        "tools": dict(tools),
        "variables": {k: environ[k] for k in DESCRIPTIVE_VARIABLES if k in environ},
        "commands": {name: run_command(cmd, cwd) for name, cmd in commands.items()},
    }
    return mask_data(facts)
