"""kill -9 of `relstep run` at seeded random points (and at exact syscalls through strace).

Each trial starts a real `relstep run` on a real workload (a ~20 MB table, ~1500 code files),
kills it with SIGKILL at a chosen moment, and then checks what a person would find:

* every visible entry of backup_root is a complete snapshot: exactly its manifest's files, each
  with the right size and SHA-256 (an interrupted one is only ever a dot-named leftover);
* every snapshot that existed before the trial is still there and still verifies, unless the
  killed run had reached its prune phase and the snapshot was beyond the retention;
* no ReleaseRecord row was lost or changed; a new row only ever points at the killed run's own,
  complete snapshot; the last recorded snapshot always exists;
* the very next `relstep run` (started at once, with a short --lock-timeout: the kernel released
  the dead run's flock) succeeds, removes the leftovers and records exactly one row.

The seed is fixed (RELSTEP_KILL_SEED overrides it), so a failing trial can be replayed.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PLANTED_DB_PASSWORD

from relstep.snapshot import list_snapshots
from tests.apps import create_schema
from tests.helpers import clean_env, init_repo, relstep, sqlite_app, write_config
from tests.reliability.support import (
    descendants,
    fill_postgres,
    fill_sqlite,
    is_alive,
    lock_holders,
    need,
    partials,
    record_rows,
    start_relstep,
    verify_root,
    visible,
    write_code_tree,
)

SEED = int(os.environ.get("RELSTEP_KILL_SEED", "20261124"))
RANDOM_KILLS = 12            # per engine; with 3 strace kills each, 30 kills in all
KEEP = 2
ROWS = 150_000               # ~20 MB of table data on either engine
CODE_FILES = 1200
# Where to aim (then a seeded random delay): the dump and the code copy are the long phases.
STAGES = ("dump", "code", "dump", "code", "manifest", "published", "anytime")


@dataclass
class World:
    app: Path
    url: str
    env: dict[str, str]
    engine: str
    versions: int = 0
    full_seconds: float = 1.0
    pruned: set[str] = field(default_factory=set)
    outcomes: Counter = field(default_factory=Counter)
    orphan_seconds: list[float] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.app / "backups" / "releases"

    def next_version(self) -> str:
        self.versions += 1
        return f"1.{self.versions // 100}.{self.versions % 100}"


def build_world(engine: str, base: Path, request: pytest.FixtureRequest) -> World:
    if engine == "sqlite":
        app = sqlite_app(base)
        fill_sqlite(app / "app.db", ROWS)
        url = f"sqlite:///{app / 'app.db'}"
    else:
        url = request.getfixturevalue("pg_url")
        create_schema(url)
        fill_postgres(url, ROWS)
        app = base / "app"
        (app / "frontend").mkdir(parents=True)
        (app / "frontend" / "index.html").write_text("<h1>app</h1>\n")
        (app / ".gitignore").write_text("backups/\n")
        init_repo(app)
    write_code_tree(app / "backend" / "lib", CODE_FILES)
    write_config(app, {"database": {"url": url}, "code": {"backend": "backend", "frontend": "frontend"},
                       "environment": {"python": "python3 --version"}, "migrations": {"tool": "auto"}})
    # No .pyc writes: the strace trials count rename(2) calls and must see only relstep's own.
    return World(app, url, clean_env(PYTHONDONTWRITEBYTECODE="1"), engine)


def successful_run(world: World) -> None:
    """The next run after a kill: starts at once, succeeds, cleans up, records exactly one row."""
    rows_before = record_rows(world.url)
    names_before = {p.name for p in visible(world.root)}
    version = world.next_version()
    started = time.monotonic()
    ran = relstep("run", "--version", version, "--keep", str(KEEP), "--lock-timeout", "10", cwd=world.app,
                  env=world.env)
    world.full_seconds = time.monotonic() - started
    assert ran.code == 0, ran.err
    assert partials(world.root) == [], "the run after a kill must remove the killed run's leftovers"
    snapshots = verify_root(world.root)
    new = set(snapshots) - names_before
    assert len(new) == 1 and snapshots[new.pop()]["version"] == version
    rows = record_rows(world.url)
    assert rows[:len(rows_before)] == rows_before and len(rows) == len(rows_before) + 1
    assert rows[-1].version == version and Path(rows[-1].backup_path).parent == world.root
    assert Path(rows[-1].backup_path).name in snapshots
    world.pruned |= names_before - set(snapshots)
    assert lock_holders(world.root / ".relstep.lock") == []


def _stage_reached(world: World, stage: str, names_before: set[str]):
    root = world.root

    def reached() -> bool:
        found = partials(root)
        if stage == "dump":
            return any(any((p / "databases" / "main").glob("*")) for p in found)
        if stage == "code":
            return any((p / "code" / "backend" / "lib").is_dir() for p in found)
        if stage == "manifest":
            return any((p / "MANIFEST.json").exists() for p in found)
        if stage == "published":
            return bool({p.name for p in visible(root)} - names_before)
        raise AssertionError(stage)

    return reached


def classify(world: World, names_before: set[str], rows_before: int, finished: bool) -> str:
    """Where the run was when it died, from what it left behind."""
    if finished:
        return "finished before the kill"
    if len(record_rows(world.url)) > rows_before:
        return "recorded (record/prune)"
    if {p.name for p in visible(world.root)} - names_before:
        return "published (after rename)"
    found = partials(world.root)
    if not found:
        return "startup (before the partial)"
    if any((p / "MANIFEST.json").exists() for p in found):
        return "manifest written (before rename)"
    return "dump/code (partial)"


def check_after_kill(world: World, version: str, order_before: list[str], manifests_before: dict,
                     rows_before: list) -> None:
    snapshots = verify_root(world.root)  # every visible entry is a complete snapshot
    names_before = set(order_before)
    new = set(snapshots) - names_before
    assert len(new) <= 1
    for name in new:
        assert snapshots[name]["version"] == version
    rows = record_rows(world.url)
    assert rows[:len(rows_before)] == rows_before, "a ReleaseRecord row was lost or changed"
    assert len(rows) <= len(rows_before) + 1
    if len(rows) > len(rows_before):
        row = rows[-1]
        assert row.version == version and Path(row.backup_path).name in new
    gone = names_before - set(snapshots)
    if gone:
        # Only a prune removes snapshots, only after the record, and only those beyond the newest KEEP
        # (the killed run's own snapshot being the newest).
        assert len(rows) == len(rows_before) + 1, f"{gone} vanished before the run recorded its release"
        assert gone <= set(order_before[KEEP - 1:]), (gone, order_before)
        world.pruned |= gone
    for name in names_before & set(snapshots):
        assert snapshots[name] == manifests_before[name], f"earlier snapshot {name} changed"
    for row in rows:
        assert Path(row.backup_path).name in set(snapshots) | world.pruned, f"{row} points at nothing"
    if rows:
        assert Path(rows[-1].backup_path).name in snapshots, "the last recorded snapshot must never go"


def wait_for_orphans(world: World, pids: list[int]) -> None:
    """Children of the killed run (pg_dump and its workers) must end on their own, quickly."""
    started = time.monotonic()
    deadline = started + 30
    while any(is_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(is_alive(p) for p in pids), "a child of the killed run was still running after 30 s"
    world.orphan_seconds.append(time.monotonic() - started)


def kill_trial(world: World, rng: random.Random, stage: str) -> bool:
    """One kill; False if the run had already finished when the signal was sent."""
    order_before = [s.name for s in list_snapshots(world.root)]
    manifests_before = verify_root(world.root)
    rows_before = record_rows(world.url)
    version = world.next_version()
    proc = start_relstep("run", "--version", version, "--keep", str(KEEP), "--lock-timeout", "10", cwd=world.app,
                         env=world.env)
    try:
        if stage == "anytime":
            time.sleep(rng.uniform(0, world.full_seconds))
        else:
            reached = _stage_reached(world, stage, set(order_before))
            deadline = time.monotonic() + 60
            while not reached() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            assert time.monotonic() < deadline, f"stage {stage} never came"
            if stage in ("dump", "code"):
                time.sleep(rng.uniform(0, 0.3))
            elif stage == "published":
                time.sleep(rng.uniform(0, 0.005))
        children = descendants(proc.pid)
        finished = proc.poll() is not None
    finally:
        proc.kill()
        proc.communicate()
    world.outcomes[classify(world, set(order_before), len(rows_before), finished)] += 1
    check_after_kill(world, version, order_before, manifests_before, rows_before)
    # At once, as a CI retry would: an orphaned pg_dump may still be finishing into the leftover.
    successful_run(world)
    wait_for_orphans(world, children)
    return not finished


def strace_trial(world: World, syscalls: str, label: str) -> str:
    """SIGKILL relstep exactly when its main thread makes the first of ``syscalls`` (not executed)."""
    order_before = [s.name for s in list_snapshots(world.root)]
    manifests_before = verify_root(world.root)
    rows_before = record_rows(world.url)
    version = world.next_version()
    argv = ["strace", "-qq", "-o", "/dev/null", "-e", f"trace={syscalls}",
            "-e", f"inject={syscalls}:error=EIO:signal=KILL:when=1",
            sys.executable, "-m", "relstep", "run", "--version", version, "--keep", str(KEEP)]
    proc = subprocess.Popen(argv, cwd=world.app, env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watched: set[int] = set()
    while proc.poll() is None:
        watched.update(descendants(proc.pid))
        time.sleep(0.005)
    proc.communicate()
    assert proc.returncode == 137 or proc.returncode == -9, f"strace exited {proc.returncode}"
    outcome = classify(world, set(order_before), len(rows_before), finished=False)
    world.outcomes[f"{outcome} [strace {label}]"] += 1
    wait_for_orphans(world, sorted(watched))
    check_after_kill(world, version, order_before, manifests_before, rows_before)
    successful_run(world)
    return outcome


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_kill_9_at_random_points_never_leaves_a_half_snapshot(
    engine: str, fast_dir: Path, request: pytest.FixtureRequest
) -> None:
    world = build_world(engine, fast_dir, request)
    successful_run(world)
    successful_run(world)  # two earlier snapshots, so the killed runs' prunes have work to do
    rng = random.Random(f"{SEED}-{engine}")
    kills = attempts = 0
    while kills < RANDOM_KILLS and attempts < 2 * RANDOM_KILLS:
        kills += kill_trial(world, rng, STAGES[attempts % len(STAGES)])
        attempts += 1
    assert kills == RANDOM_KILLS

    need(shutil.which("strace") is not None, "strace is not installed (apt-get install strace), so the exact "
         "kills at the rename did not run")
    # The window between MANIFEST.json and the rename is microseconds on a tmpfs: hit it exactly.
    assert strace_trial(world, "syncfs", "syncfs") == "manifest written (before rename)"
    assert strace_trial(world, "rename,renameat,renameat2", "rename") == "manifest written (before rename)"
    # Killed right after the rename, before the snapshot's mtime is set: published, unrecorded.
    assert strace_trial(world, "utimensat", "utime") == "published (after rename)"

    killed = sum(n for outcome, n in world.outcomes.items() if not outcome.startswith("finished"))
    print(f"\n{engine}: seed {SEED}, {killed} kills: {dict(world.outcomes)}; "
          f"children ended {max(world.orphan_seconds):.2f} s after the kill at most")
    assert world.outcomes["dump/code (partial)"] >= 4


def test_kill_9_during_a_mariadb_dump_leaves_no_password_on_disk(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import glob

    from tests.reliability.test_disk_full import _fill_mysql

    url = request.getfixturevalue("mysql_password_url")
    _fill_mysql(url, 200_000)
    app = tmp_path / "app"
    (app / "backend").mkdir(parents=True)
    (app / "backend" / "server.js").write_text("// backend\n")
    init_repo(app)
    write_config(app, {"database": {"url": url}, "environment": {}, "migrations": {"tool": "none"}})
    root = app / "backups" / "releases"
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "relstep-mysql-*")))
    proc = start_relstep("backup", "--version", "1.0.0", cwd=app)
    try:
        deadline = time.monotonic() + 60
        while not any((p / "databases" / "main" / "dump.sql.zst").exists() for p in partials(root)):
            assert proc.poll() is None and time.monotonic() < deadline, "the dump never started"
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.communicate()
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "relstep-mysql-*"))) - before
    holding = [d for d in left if PLANTED_DB_PASSWORD in Path(d, "client.cnf").read_text()]
    for folder in left:
        shutil.rmtree(folder)
    assert holding == []
