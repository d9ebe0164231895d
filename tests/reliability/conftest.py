"""Fixtures for the reliability tests: a fast scratch filesystem and a private PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.reliability.support import PrivatePostgres, try_mount_tmpfs, unmount


@pytest.fixture(autouse=True)
def this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m relstep` in a subprocess runs this checkout's code, whatever the venv's editable
    install points at (pytest's own `pythonpath` setting does not reach subprocesses)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own where mount is allowed (the fault trials then spend their time on relstep,
    not on creating files); a plain folder of tmp_path otherwise.  kill -9 keeps everything a
    process already wrote in either case, so the trials prove the same things on both."""
    path = tmp_path / "fast"
    mounted = try_mount_tmpfs(path, "2g") is None
    try:
        yield path
    finally:
        if mounted:
            unmount(path)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster only these tests use, so they may stop and start it at will."""
    cluster = PrivatePostgres()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def running_pg(private_pg: PrivatePostgres) -> PrivatePostgres:
    """The private cluster, started again if an earlier test stopped it."""
    private_pg.start()
    return private_pg
