"""The pitfall every CI user meets first: a shallow checkout without tags.

actions/checkout fetches one commit and no tags by default; on a non-tag event relstep then
finds no version.  The error must say how to fix it (fetch-depth: 0, or pass a version).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .ci_support import git, isolated_env, make_app, snapshots

pytestmark = pytest.mark.usefixtures("relstep_cli")


def test_shallow_clone_without_tags_names_fetch_depth(tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home")
    upstream = make_app(tmp_path / "upstream")
    git("init", "-q", "-b", "main", cwd=upstream, env=env)
    git("add", "-A", cwd=upstream, env=env)
    git("commit", "-q", "-m", "app", cwd=upstream, env=env)
    git("tag", "-a", "v1.2.3", "-m", "release", cwd=upstream, env=env)
    work = tmp_path / "checkout"
    git("clone", "-q", "--depth", "1", "--no-tags", f"file://{upstream}", str(work), cwd=tmp_path, env=env)

    proc = subprocess.run(
        [sys.executable, "-m", "relstep", "backup"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("relstep: version failed: ")
    assert "shallow" in last and "fetch-depth: 0" in last
    assert snapshots(work) == []

    # The documented fix: fetch the tags (what fetch-depth: 0 does), then it works.
    git("fetch", "-q", "--unshallow", "--tags", "origin", cwd=work, env=env)
    proc = subprocess.run(
        [sys.executable, "-m", "relstep", "backup"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    (snapshot,) = snapshots(work)
    assert (snapshot / "VERSION.txt").read_text() == "1.2.3\n"
