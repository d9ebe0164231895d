"""Prune, as properties: for any backup_root, only finished relstep snapshots beyond the newest N go.

Hypothesis builds backup roots from a mix of snapshots (with ties in mtime, some holding a symlink
to a folder outside), folders that only look like snapshots (no manifest, a manifest that is a
symlink or a folder, a manifest but not a snapshot's name), files, symlinks (to snapshots, to a
snapshot-like folder outside the root, dangling), leftover `.partial` folders and other dot-names,
plus ReleaseRecord rows.  `pipeline.prune` must remove exactly what the rule says, touch nothing
else (inside the root or out), never follow a link, and never remove the snapshot recorded last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relstep import pipeline, records
from relstep.config import load_config
from tests.reliability.support import fingerprint

PROJECT = "example.com/props"
KINDS = ("snapshot", "snapshot", "snapshot", "no-manifest", "manifest-link", "manifest-folder", "foreign-manifest",
         "file", "link-to-snapshot", "link-outside", "dangling-link", "partial", "partial-link", "dot-folder")


@dataclass(frozen=True)
class Entry:
    kind: str
    stamp_name: bool        # named like a snapshot (20260101T000007Z) or not
    mtime_slot: int         # few slots: many ties, broken by name
    inner_link: bool        # a snapshot holding a symlink to the outside folder
    target: int             # which snapshot a link points at


entries = st.lists(
    st.builds(Entry, st.sampled_from(KINDS), st.booleans(), st.integers(0, 3), st.booleans(), st.integers(0, 20)),
    max_size=14,
)


def _name(i: int, entry: Entry) -> str:
    if entry.kind in ("partial", "partial-link"):
        return f".20260101T{i:06d}Z.partial" if entry.stamp_name else f".x{i}.deleting.partial"
    if entry.kind == "dot-folder":
        return f".keep-{i}"
    if entry.kind == "snapshot" or entry.stamp_name:
        return f"20260101T{i:06d}Z" if i % 3 else f"20260101T{i:06d}Z-2"
    return "MANIFEST.json" if entry.kind == "file" and i == 0 else f"notes-{i}"


def _manifest(name: str, stamp: int = 1_700_000_000) -> str:
    """A snapshot of the configured project, recorded as made at ``stamp`` (relstep also sets it as mtime)."""
    created = datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
    return json.dumps({"format": 1, "name": name, "version": "1.0.0", "deployment_type": "release",
                       "created_at": created, "project": PROJECT, "files": {}})


def build(base: Path, spec: list[Entry]) -> tuple[Path, Path, list[Path]]:
    root, outside = base / "releases", base / "outside"
    root.mkdir()
    (outside / "20260101T999999Z").mkdir(parents=True)  # a snapshot-like folder outside the root
    (outside / "20260101T999999Z" / "MANIFEST.json").write_text(_manifest("20260101T999999Z"))
    (outside / "precious.txt").write_text("never delete me\n")
    snapshots = []
    for i, entry in enumerate(spec):
        path = root / _name(i, entry)
        if entry.kind == "snapshot":
            path.mkdir()
            stamp = 1_700_000_000 + 100 * entry.mtime_slot
            (path / "MANIFEST.json").write_text(_manifest(path.name, stamp))
            (path / "VERSION.txt").write_text("1.0.0\n")
            if entry.inner_link:
                (path / "escape").symlink_to(outside)
            os.utime(path, (stamp, stamp))
            snapshots.append(path)
    for i, entry in enumerate(spec):
        path = root / _name(i, entry)
        if entry.kind in ("no-manifest", "manifest-link", "manifest-folder", "foreign-manifest", "partial",
                          "dot-folder"):
            path.mkdir()
            stamp = 1_700_000_000 + 100 * entry.mtime_slot + 50  # among the snapshots, in age
            (path / "data.bin").write_bytes(b"someone's data")
            if entry.kind == "manifest-link":
                (path / "MANIFEST.json").symlink_to(outside / "20260101T999999Z" / "MANIFEST.json")
            elif entry.kind == "manifest-folder":
                (path / "MANIFEST.json").mkdir()
            elif entry.kind == "foreign-manifest" and not entry.stamp_name:
                (path / "MANIFEST.json").write_text('{"tool": "someone else\'s backup tool"}')
            elif entry.kind == "foreign-manifest":
                (path / "MANIFEST.json").write_text(_manifest(path.name, stamp))  # a snapshot after all
                snapshots.append(path)
            os.utime(path, (stamp, stamp))
        elif entry.kind == "file":
            path.write_text("notes\n")
        elif entry.kind == "link-to-snapshot" and snapshots:
            path.symlink_to(snapshots[entry.target % len(snapshots)])
        elif entry.kind in ("link-outside", "partial-link") or (entry.kind == "link-to-snapshot" and not snapshots):
            path.symlink_to(outside / "20260101T999999Z" if entry.kind != "partial-link" else outside)
        elif entry.kind == "dangling-link":
            path.symlink_to(base / "nowhere")
    return root, outside, snapshots


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(spec=entries, keep=st.integers(1, 5), recorded=st.lists(st.integers(0, 30), max_size=4),
       dead_record=st.booleans())
# Someone's folder with a MANIFEST.json of its own is not a snapshot: neither when it is newer than
# every snapshot (it must not count towards N), nor when it is older (it must not be removed).
@example(spec=[Entry("snapshot", True, 0, False, 0), Entry("snapshot", True, 1, True, 0),
               Entry("foreign-manifest", False, 3, False, 0)], keep=1, recorded=[], dead_record=False)
@example(spec=[Entry("snapshot", True, 2, False, 0), Entry("snapshot", True, 3, False, 0),
               Entry("foreign-manifest", False, 0, False, 0)], keep=1, recorded=[], dead_record=False)
def test_prune_removes_exactly_the_finished_snapshots_beyond_the_newest_n(
    spec: list[Entry], keep: int, recorded: list[int], dead_record: bool
) -> None:
    with tempfile.TemporaryDirectory(prefix="relstep-prune-") as tmp:
        base = Path(tmp)
        root, outside, snapshots = build(base, spec)
        (base / "relstep.yml").write_text(f"project: {PROJECT}\nbackup_root: releases\n"
                                          f"record:\n  url: sqlite:///{base / 'rec.db'}\n")
        config = load_config(str(base / "relstep.yml"), environ={}, cwd=base)
        links = sorted(p for p in root.iterdir() if p.is_symlink())
        # ReleaseRecord rows: snapshots, links to them, or paths that are gone.
        candidates = [*snapshots, *links, root / "20200101T000000Z"]
        rows = []
        for pick in recorded:
            path = candidates[pick % len(candidates)]
            records.record(config.record.url, "ReleaseRecord", version="1.0.0", deployment_type="release",
                           backup_path=path, schema_revision=None)
            rows.append(path)
        if dead_record:  # an extra row whose snapshot vanished by hand: protects nothing
            records.record(config.record.url, "ReleaseRecord", version="0.9.0", deployment_type="release",
                           backup_path=root / "19990101T000000Z", schema_revision=None)
        last = records.read_all(config.record.url, "ReleaseRecord")
        protected = os.path.realpath(last[-1].backup_path) if last else None

        # The rule, written out independently of relstep's code: the recorded creation time (written
        # as the mtime too), then the name.
        ordered = sorted(snapshots, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
        doomed = [p for p in ordered[keep:] if os.path.realpath(p) != protected]
        leftovers = [p for p in root.iterdir() if p.name.endswith(".partial") and p.is_dir() and not p.is_symlink()]
        gone = {p.name for p in [*doomed, *leftovers]}
        before = fingerprint(root)
        outside_before = fingerprint(outside)

        outcome = pipeline.prune(config, keep)

        assert outcome.removed == doomed
        assert sorted(outcome.partials_removed) == sorted(leftovers)
        after = fingerprint(root)
        expected = {rel: state for rel, state in before.items() if rel.split("/", 1)[0] not in gone}
        assert after == expected  # everything else is byte-for-byte what it was
        assert fingerprint(outside) == outside_before  # links were never followed
        if protected and Path(protected).parent == root and Path(protected).name in {p.name for p in snapshots}:
            assert Path(protected).is_dir()
        survivors = [p for p in ordered if p.exists()]
        assert survivors[:keep] == ordered[:keep]
        shutil.rmtree(base, ignore_errors=True)
