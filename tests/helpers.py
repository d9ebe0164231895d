"""Test helpers: run the real CLI in a subprocess, build throwaway app repos, scan bytes."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import yaml
import zstandard

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "sqlite-app"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def last_err(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus every variable relstep reads, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RELSTEP_", "GITHUB_", "CI_", "GITLAB_")) and k not in (
               "DATABASE_URL", "RELEASE_BACKUP_RETENTION_COUNT", "CI")}
    # The subprocesses run this checkout's code whatever relstep the venv has installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def relstep(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300,
            input: str | None = None) -> Ran:
    proc = subprocess.run(
        [sys.executable, "-m", "relstep", *args], cwd=cwd, env=env if env is not None else clean_env(),
        capture_output=True, text=True, timeout=timeout, input=input,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=clean_env(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                                        GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")).stdout


def init_repo(path: Path, tag: str | None = None) -> None:
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "app", "--allow-empty", cwd=path)
    if tag:
        git("tag", tag, cwd=path)


def sqlite_app(tmp: Path, config: dict | None = None, with_git: bool = True) -> Path:
    """A copy of the bundled example app with its database built, as a git repo."""
    app = tmp / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("app.db", "backups"))
    subprocess.run([sys.executable, str(app / "make_db.py")], check=True, capture_output=True)
    if config is not None:
        (app / "relstep.yml").write_text(yaml.safe_dump(config))
    if with_git:
        (app / ".gitignore").write_text("backups/\napp.db\n")
        init_repo(app)
    return app


def write_config(app: Path, config: dict) -> None:
    (app / "relstep.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def all_bytes(root: Path) -> bytes:
    """Every file under root, with zstd streams, gzip files and tar archives opened too."""
    import gzip

    chunks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        chunks.append(data)
        if path.suffix == ".zst":
            chunks.append(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read())
        elif path.suffix == ".gz":
            chunks.append(gzip.decompress(data))
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    f = tar.extractfile(member)
                    if f is not None:
                        chunks.append(f.read())
    return b"\n".join(chunks)


def sqlite_rows(path: Path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
