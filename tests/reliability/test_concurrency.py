"""Concurrent `relstep run`s on one backup_root: one at a time, nothing interleaved, retention holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from relstep.snapshot import list_snapshots
from tests.apps import make_app
from tests.helpers import clean_env
from tests.reliability.support import (
    fill_sqlite,
    lock_holders,
    partials,
    record_rows,
    start_relstep,
    verify_root,
    wait_for,
)


class PartialWatcher:
    """Counts the partial snapshots present at once, polling every millisecond."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            found = len([p for p in partials(self.root) if not p.name.endswith(".deleting.partial")])
            self.most = max(self.most, found)
            self.samples += found > 0
            time.sleep(0.001)

    def __enter__(self) -> PartialWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _round(app: Path, versions: list[str], env: dict[str, str]) -> list[dict]:
    root = app / "backups" / "releases"
    with PartialWatcher(root) as watcher:
        procs = [start_relstep("run", "--version", v, "--json", cwd=app, env=env) for v in versions]
        outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(versions), [err for _out, err in outputs]
    # One backup at a time: never two partial snapshots side by side (the flock serialises them).
    assert watcher.most == 1 and watcher.samples > 0
    return [json.loads(out) for out, _err in outputs]


@pytest.mark.slow
def test_two_then_four_concurrent_runs_succeed_one_after_another(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, url = make_app(tmp_path, request, "sqlite", environment={})
    fill_sqlite(app / "app.db", 60_000)  # a backup long enough for the runs to overlap
    root = app / "backups" / "releases"
    env = clean_env(RELEASE_BACKUP_RETENTION_COUNT="3")
    results = _round(app, ["1.0.0", "1.0.1"], env)
    results += _round(app, ["1.1.0", "1.1.1", "1.1.2", "1.1.3"], env)

    rows = record_rows(url)
    by_version = {r["version"]: r for r in results}
    assert sorted(row.version for row in rows) == sorted(by_version)
    for row in rows:  # each run recorded its own snapshot, with its own id
        assert (row.id, row.backup_path) == (by_version[row.version]["record_id"], by_version[row.version]["snapshot"])
    # The runs took turns: record ids follow the order in which the snapshots were created.
    created = sorted(results, key=lambda r: Path(r["snapshot"]).name)
    assert [r["record_id"] for r in created] == sorted(r["record_id"] for r in results)
    # Retention holds: the three newest snapshots, each complete and holding its own version only.
    snapshots = verify_root(root)
    newest = [Path(r["snapshot"]).name for r in created[-3:]]
    assert sorted(snapshots) == newest
    assert [s.name for s in list_snapshots(root)] == newest[::-1]
    for r in created[-3:]:
        name = Path(r["snapshot"]).name
        assert snapshots[name]["version"] == r["version"]
        assert (root / name / "VERSION.txt").read_text() == r["version"] + "\n"
    assert partials(root) == []
    assert sum(len(r["pruned"]) for r in results) == 3


@pytest.mark.slow
def test_the_lock_dies_with_its_holder_and_the_waiting_runs_go_on(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, url = make_app(tmp_path, request, "sqlite", environment={})
    root = app / "backups" / "releases"
    lock = root / ".relstep.lock"
    # The holder parks in its deploy phase (lock held, snapshot published, nothing recorded) until
    # it is killed: a deterministic moment, where racing a fast backup was not.
    parked = tmp_path / "deploying"
    holder = start_relstep("run", "--version", "1.0.0", "--", sys.executable, "-c",
                           f"import os, pathlib, time; pathlib.Path({str(parked)!r}).write_text(str(os.getpid())); "
                           "time.sleep(120)", cwd=app)
    wait_for(parked.exists, 60, "the first run to reach its deploy phase", proc=holder)
    assert lock_holders(lock) == [holder.pid]
    waiters = [start_relstep("run", "--version", v, "--lock-timeout", "60", cwd=app) for v in ("1.0.1", "1.0.2")]
    time.sleep(0.3)
    assert all(w.poll() is None for w in waiters) and lock_holders(lock) == [holder.pid]
    holder.kill()  # SIGKILL: no cleanup code runs, only the kernel releases the flock
    holder.wait()  # not communicate(): the orphaned deploy command still holds the pipes
    # The deploy command outlives its parent but never inherited the lock: a waiter gets it now.
    new_holder = wait_for(lambda: [p for p in lock_holders(lock) if p != holder.pid], 30, "a waiter to get the lock")
    os.kill(int(parked.read_text()), signal.SIGKILL)
    assert new_holder[0] in {w.pid for w in waiters}
    for w in waiters:
        _out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    snapshots = verify_root(root)  # every visible snapshot, the killed run's included, matches its manifest
    assert sorted(m["version"] for m in snapshots.values()) == ["1.0.0", "1.0.1", "1.0.2"]
    assert sorted(r.version for r in record_rows(url)) == ["1.0.1", "1.0.2"]  # the killed run recorded nothing
    assert partials(root) == []  # the killed run's partial was removed by the next run
    assert lock_holders(lock) == []
    assert subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0
