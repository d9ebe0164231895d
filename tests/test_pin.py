"""Pins: a pinned snapshot survives `prune --keep 1` and an off-site prune, on each engine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from relstep import pins
from tests.helpers import clean_env, relstep, sqlite_app, write_config
from tests.marker import Marker


def _backup(app: Path, version: str) -> Path:
    ran = relstep("backup", "--version", version, "--type", "release", cwd=app)
    assert ran.code == 0, ran.err
    return Path(ran.out.strip())


def test_a_pinned_snapshot_survives_local_and_offsite_prune_and_does_not_count(
        engine_app: tuple[Path, str], tmp_path: Path) -> None:
    app, url = engine_app
    remote = tmp_path / "remote"
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"},
                       "offsite": {"url": f"file://{remote}", "keep": 1}})
    first = _backup(app, "1.0.0")
    pinned = relstep("pin", "1.0.0", "--reason", "audit 2026", "--json", cwd=app)
    assert pinned.code == 0, pinned.err
    assert json.loads(pinned.out)["pinned"] == first.name
    second, third = _backup(app, "1.1.0"), _backup(app, "1.2.0")

    # Off-site, keep 1: each push prunes the remote; the pinned copy stays and is not the "one".
    for snap in (first, second, third):
        ran = relstep("offsite", "--snapshot", snap.name, cwd=app)
        assert ran.code == 0, ran.err
    assert sorted(p.name for p in remote.iterdir()) == sorted([first.name, third.name])

    listed = relstep("list", cwd=app)
    header, *rows = listed.out.splitlines()
    assert header.split()[-1] == "PINNED"
    assert [row.split()[0] for row in rows if row.endswith("audit 2026")] == [first.name]

    pruned = relstep("prune", "--keep", "1", "--json", cwd=app)
    assert pruned.code == 0, pruned.err
    data = json.loads(pruned.out)
    assert data["removed"] == [str(second)]
    assert sorted(data["kept"]) == sorted([str(first), str(third)])
    assert f"pinned, never pruned: {first.name}" in data["notes"]
    assert sorted(p.name for p in app.joinpath("backups/releases").iterdir() if not p.name.startswith(".")) == \
        sorted([first.name, third.name])

    # Unpinned, it counts again and the next prune removes it.
    assert relstep("unpin", first.name, cwd=app).out.strip() == f"unpinned {first.name}"
    again = relstep("prune", "--keep", "1", "--json", cwd=app)
    assert json.loads(again.out)["removed"] == [str(first)]
    not_pinned = relstep("unpin", first.name, cwd=app)
    assert not_pinned.code == 2


def test_pins_are_replaced_whole_so_a_crash_mid_write_leaves_the_old_pins(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    root.mkdir()
    pins.pin(root, "20260101T000000Z", "keep", "1.0.0")
    before = (root / pins.FILENAME).read_bytes()
    # A crash between writing the temporary file and the rename: the temporary is left, the pins are whole.
    (root / f"{pins.FILENAME}.abc.tmp").write_bytes(b'{"pins": {"20260101T0')
    assert (root / pins.FILENAME).read_bytes() == before
    assert pins.names(root) == {"20260101T000000Z"}
    pins.pin(root, "20260102T000000Z", None, "1.1.0")
    assert pins.names(root) == {"20260101T000000Z", "20260102T000000Z"}
    assert oct(os.stat(root / pins.FILENAME).st_mode & 0o777) == "0o600"
    assert pins.unpin(root, "20260101T000000Z") is not None
    assert pins.names(root) == {"20260102T000000Z"}


# --- kill -9 of the real `relstep pin` / `unpin` at each step of the pins file's write -----------

# Where journal.replace_json stops for the test (relstep.faults); the rename is the line
# between the old pins and the new.
BEFORE_RENAME = ("before-temp-write", "after-temp-write", "before-rename")
AFTER_RENAME = ("after-rename", "after-folder-fsync")


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def _killed_at(app: Path, stage: str, *args: str) -> None:
    """Run `relstep <args>`, SIGKILL it when it reaches ``stage`` of the pins file's write."""
    marker = Marker(app.parent / f"marker-{stage}-{args[0]}")
    env = clean_env(RELSTEP_TEST_FAULT=f"{pins.FILENAME}:{stage}:pause", RELSTEP_TEST_FAULT_FIFO=str(marker.path))
    proc = subprocess.Popen([sys.executable, "-m", "relstep", *args], cwd=app, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert marker.wait(proc) == f"{pins.FILENAME}:{stage}"
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        marker.close()


def _check_after_crash(app: Path, root: Path, expected: dict[str, str | None], newest: str) -> None:
    """The pins are exactly ``expected`` (name -> reason), every reader works, prune keeps them."""
    data = json.loads((root / pins.FILENAME).read_bytes())        # whole, parseable JSON
    assert {name: entry["reason"] for name, entry in data["pins"].items()} == expected
    listed = relstep("list", cwd=app)
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    column = header.index("PINNED")
    assert {row.split()[0]: row[column:].strip() for row in rows if row[column:].strip()} == \
        {name: reason or "yes" for name, reason in expected.items()}
    status = relstep("status", "--json", cwd=app)
    assert status.code == 0, status.err
    assert sorted(s["name"] for s in json.loads(status.out)["snapshots"] if s["pinned"]) == sorted(expected)
    pruned = relstep("prune", "--keep", "1", "--json", cwd=app)
    assert pruned.code == 0, pruned.err
    assert _names(root) == sorted({*expected, newest})


@dataclass(frozen=True)
class TrialTemplate:
    """An app with three snapshots, the first pinned ("audit"); each trial works on its own copy."""

    app: Path
    keep: str
    target: str
    newest: str

    def copy(self, tmp_path: Path) -> tuple[Path, Path, Path, Path, Path]:
        """(app, backup root, keep, target, newest) of a fresh copy of the template."""
        app = tmp_path / "app"
        shutil.copytree(self.app, app, symlinks=True)
        root = app / "backups" / "releases"
        return app, root, root / self.keep, root / self.target, root / self.newest


@pytest.fixture(scope="module")
def trial_template(tmp_path_factory: pytest.TempPathFactory) -> TrialTemplate:
    # Built once: the three backups are the slow part of a trial and the same in every one.
    app = sqlite_app(tmp_path_factory.mktemp("pin-template"))
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "prisma"}})
    keep = _backup(app, "1.0.0")
    assert relstep("pin", keep.name, "--reason", "audit", cwd=app).code == 0
    target, newest = _backup(app, "1.1.0"), _backup(app, "1.2.0")
    return TrialTemplate(app, keep.name, target.name, newest.name)


@pytest.mark.parametrize("stage", [*BEFORE_RENAME, *AFTER_RENAME])
def test_pin_killed_at_each_step_of_its_write_leaves_the_old_or_the_new_pins(
        tmp_path: Path, trial_template: TrialTemplate, stage: str) -> None:
    app, root, keep, target, newest = trial_template.copy(tmp_path)
    before = (root / pins.FILENAME).read_bytes()

    _killed_at(app, stage, "pin", target.name, "--reason", "release notes")

    if stage in BEFORE_RENAME:
        assert (root / pins.FILENAME).read_bytes() == before
        assert [p.name for p in root.glob(f"{pins.FILENAME}.*.tmp")] != []   # the crash's leftover
        expected: dict[str, str | None] = {keep.name: "audit"}
    else:
        assert list(root.glob(f"{pins.FILENAME}.*.tmp")) == []
        expected = {keep.name: "audit", target.name: "release notes"}
    _check_after_crash(app, root, expected, newest.name)

    # The next pin removes the leftover and pins as asked.
    assert relstep("pin", newest.name, cwd=app).code == 0
    assert list(root.glob(f"{pins.FILENAME}.*.tmp")) == []
    assert pins.names(root) == {*expected, newest.name}


@pytest.mark.parametrize("stage", [*BEFORE_RENAME, *AFTER_RENAME])
def test_unpin_killed_at_each_step_of_its_write_leaves_the_old_or_the_new_pins(
        tmp_path: Path, trial_template: TrialTemplate, stage: str) -> None:
    app, root, keep, target, newest = trial_template.copy(tmp_path)
    assert relstep("pin", target.name, "--reason", "going", cwd=app).code == 0

    _killed_at(app, stage, "unpin", target.name)

    gone = stage in AFTER_RENAME
    expected: dict[str, str | None] = {keep.name: "audit"} if gone else {keep.name: "audit", target.name: "going"}
    _check_after_crash(app, root, expected, newest.name)


def test_a_damaged_pins_file_stops_prune_instead_of_pruning_the_pinned(
        tmp_path: Path, trial_template: TrialTemplate) -> None:
    """Not a crash (relstep replaces the file whole) but a disk or a hand: unknown pins prune nothing."""
    app, root, keep, _, _ = trial_template.copy(tmp_path)
    before = _names(root)
    (root / pins.FILENAME).write_bytes(b'{"format": 1, "pins": {"2026')
    damaged = (f"relstep: pins failed: {root / pins.FILENAME} is damaged (not relstep's JSON object of pins), so "
               "which snapshots are pinned is unknown and nothing is pruned; put back a copy of it, or remove it "
               "and pin again")
    for args in (("prune", "--keep", "1"), ("run", "--version", "1.3.0", "--keep", "1"), ("status",), ("list",),
                 ("pin", keep.name)):
        ran = relstep(*args, cwd=app)
        assert (ran.code, ran.last_err) == (6, damaged.replace("pins failed", "prune failed")
                                            if args[0] == "run" else damaged), (args, ran.err)
    assert set(before) <= set(_names(root)) and keep.exists()
    (root / pins.FILENAME).unlink()
    assert relstep("pin", keep.name, cwd=app).code == 0
    assert relstep("prune", "--keep", "1", cwd=app).code == 0
    assert keep.exists()
