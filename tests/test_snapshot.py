from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from relstep import snapshot
from relstep.errors import InputError, LockTimeout
from relstep.manifest import Manifest

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`


def finished(root: Path, name: str, created: float, version: str = "1.0.0") -> Path:
    """A snapshot recorded as made at ``created`` (manifest and mtime, as relstep writes them)."""
    path = root / name
    path.mkdir(parents=True)
    stamp = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds")
    (path / snapshot.MANIFEST).write_text(json.dumps(
        {"version": version, "deployment_type": "release", "created_at": stamp, "files": {}}))
    os.utime(path, (created, created))
    return path


def manifest(version: str = "1.2.3") -> Manifest:
    return Manifest(version=version, deployment_type="release", files={})


def test_building_publishes_atomically_with_creation_mtime(tmp_path: Path) -> None:
    created = datetime(2026, 11, 24, 1, 4, 23, tzinfo=timezone.utc)
    with snapshot.building(tmp_path, created) as build:
        assert build.path.name == ".20261124T010423Z.partial"
        build.write_text("VERSION.txt", "1.2.3\n")
        assert snapshot.list_snapshots(tmp_path) == []
        path = build.finish(manifest())
    assert path == tmp_path / "20261124T010423Z"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261124T010423Z"]
    assert path.stat().st_mtime == created.timestamp()
    assert oct(path.stat().st_mode & 0o777) == "0o700"
    assert oct((path / "VERSION.txt").stat().st_mode & 0o777) == "0o600"
    assert [s.path for s in snapshot.list_snapshots(tmp_path)] == [path]


def test_failure_inside_building_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), snapshot.building(tmp_path) as build:
        build.write_text("VERSION.txt", "1.2.3\n")
        raise RuntimeError("dump failed")
    assert list(tmp_path.iterdir()) == []


def test_two_snapshots_in_one_second_get_suffixes(tmp_path: Path) -> None:
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    names = []
    for _ in range(3):
        with snapshot.building(tmp_path, created) as build:
            names.append(build.finish(manifest()).name)
    assert names == ["20260101T000000Z", "20260101T000000Z-2", "20260101T000000Z-3"]


def test_listing_ignores_everything_but_finished_snapshots(tmp_path: Path) -> None:
    a = finished(tmp_path, "20260101T000000Z", 1000)
    b = finished(tmp_path, "20260102T000000Z", 2000)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other-folder").mkdir()
    (tmp_path / ".20260103T000000Z.partial").mkdir()
    (tmp_path / "link-to-b").symlink_to(b)
    no_manifest = tmp_path / "20260104T000000Z"
    no_manifest.mkdir()
    (no_manifest / "MANIFEST.json").symlink_to(b / "MANIFEST.json")
    assert [s.path for s in snapshot.list_snapshots(tmp_path)] == [b, a]


def test_ties_in_creation_time_are_broken_by_name(tmp_path: Path) -> None:
    a = finished(tmp_path, "20260101T000000Z", 1000)
    b = finished(tmp_path, "20260101T000000Z-2", 1000)
    assert [s.path for s in snapshot.list_snapshots(tmp_path)] == [b, a]


def test_to_prune_and_remove(tmp_path: Path) -> None:
    paths = [finished(tmp_path, f"2026010{i}T000000Z", 1000 + i) for i in range(1, 6)]
    doomed = snapshot.to_prune(snapshot.list_snapshots(tmp_path), 2, protect={paths[0]})
    assert [s.path for s in doomed] == [paths[2], paths[1]]
    for s in doomed:
        snapshot.remove_snapshot(s)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (paths[0], paths[3], paths[4]))
    with pytest.raises(InputError):
        snapshot.to_prune(snapshot.list_snapshots(tmp_path), 0)


def test_resolve_snapshot_refuses_outside_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    a = finished(root, "20260101T000000Z", 1000)
    outside = finished(tmp_path, "20260109T000000Z", 1000)
    assert snapshot.resolve_snapshot(root, "20260101T000000Z") == a
    assert snapshot.resolve_snapshot(root, str(a)) == a
    for ref in ("../20260109T000000Z", str(outside), "../../etc", "/etc", "nope", ".."):
        with pytest.raises(InputError, match="run `relstep list` to see the snapshots"):
            snapshot.resolve_snapshot(root, ref)


def test_remove_partials_only_removes_dot_partials(tmp_path: Path) -> None:
    (tmp_path / ".20260101T000000Z.partial").mkdir()
    (tmp_path / ".x.deleting.partial").mkdir()
    (tmp_path / ".keep").mkdir()
    (tmp_path / "user.partial").mkdir()
    snapshot.remove_partials(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "user.partial"]


def test_lock_times_out_while_held_and_is_reentrant_after_release(tmp_path: Path) -> None:
    with snapshot.root_lock(tmp_path, 1):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="another relstep run has held the lock"), \
                snapshot.root_lock(tmp_path, 0.3):
            pass
        assert time.monotonic() - started >= 0.3
    with snapshot.root_lock(tmp_path, 0.1):
        pass


def test_backup_root_that_is_a_file_or_symlink(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to("/")
    for name in ("file", "link"):
        with pytest.raises(InputError, match=f"backup_root {tmp_path / name} is a"):
            snapshot.ensure_root(tmp_path / name)


def test_order_is_the_recorded_creation_time_not_the_mtime(tmp_path: Path) -> None:
    old = finished(tmp_path, "20260101T000000Z", 1000)
    new = finished(tmp_path, "20260102T000000Z", 2000)
    os.utime(old, (9000, 9000))     # someone touched it
    assert [s.path for s in snapshot.list_snapshots(tmp_path)] == [new, old]
    assert [s.path for s in snapshot.to_prune(snapshot.list_snapshots(tmp_path), 1)] == [old]


def test_a_manifest_without_created_at_is_ordered_by_its_name(tmp_path: Path) -> None:
    older, newer = tmp_path / "20260101T000000Z", tmp_path / "20260101T000000Z-2"
    for path, mtime in ((older, 5000), (newer, 10)):
        path.mkdir()
        (path / snapshot.MANIFEST).write_text('{"version": "1", "deployment_type": "release", "files": {}}')
        os.utime(path, (mtime, mtime))
    listed = snapshot.list_snapshots(tmp_path)
    assert [s.path for s in listed] == [newer, older]
    assert listed[0].created == datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
