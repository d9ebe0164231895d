"""Session fixtures for the CI-integration tests; the helpers live in ci_support.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .ci_support import REPO_ROOT, SOURCE_PARTS, need


@pytest.fixture(scope="session")
def relstep_cli() -> None:
    """The core CLI (``python -m relstep run``) must be importable in this interpreter."""
    proc = subprocess.run([sys.executable, "-m", "relstep", "run", "--help"], capture_output=True, text=True)
    need(proc.returncode == 0, f"`relstep run` is not available yet: {proc.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def hook_cli(relstep_cli: None) -> None:
    """`relstep hook ...` must be wired into the main CLI (cli.py adds hooks_cli.hook_app)."""
    proc = subprocess.run([sys.executable, "-m", "relstep", "hook", "run", "--help"], capture_output=True, text=True)
    need(proc.returncode == 0, f"`relstep hook` is not wired into the CLI yet: {proc.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def source_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of relstep as a runner would check it out: package, pyproject, the CI files."""
    dest = tmp_path_factory.mktemp("relstep-src")
    for part in SOURCE_PARTS:
        src = REPO_ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        elif src.is_file():
            shutil.copy2(src, dest / part)
    if not (dest / "README.md").exists():  # pyproject names it; the core's README may not have landed
        (dest / "README.md").write_text("relstep\n")
    return dest


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, source_tree: Path) -> Path:
    """relstep's wheel, its dependencies and the build backend, built once per session.

    Runners then install with PIP_NO_INDEX=1 and PIP_FIND_LINKS=<this dir>: offline and fast.
    """
    dest = tmp_path_factory.mktemp("wheelhouse")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(dest),
            str(source_tree),
            "setuptools>=68",
            "wheel",
        ],
        capture_output=True,
        text=True,
    )
    need(proc.returncode == 0, f"could not build the relstep wheelhouse: {proc.stderr.strip()[-500:]}")
    return dest
