"""`relstep status`: one screen for the person on call, and a health check for a scheduled job.

It reads only what is beside and inside backup_root (the manifests, the pins, prune's and
verify's logs, relstep.journal) and the record table.  :func:`gather` returns a
:class:`Status`; :func:`problems` applies the thresholds; the CLI prints and decides the exit
code (``HealthError``, exit 11) and the runner sends the alert and the heartbeat.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import journal, lookup, pins, restore_journal
from relstep.config import Config
from relstep.errors import InputError, RecordError
from relstep.fsutil import human_bytes

_NUMBER = r"\d+(?:\.\d+)?"
_BARE = re.compile(_NUMBER)
_PARTS = re.compile(rf"(?:{_NUMBER}[smhdw])+")
_PART = re.compile(rf"({_NUMBER})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A century: anything longer is a typo, and an infinite one (a float overflowing) would disable the check.
MAX_AGE_LIMIT = 100 * 365 * 86400


def parse_duration(value: str) -> float:
    """``90`` (seconds), ``90s``, ``30m``, ``26h``, ``2d``, ``1w``, ``1h30m``, ``1d 12h`` -> seconds.

    0 is allowed: every snapshot is older, so ``--max-age 0`` fails at once (a way to try the alert).
    """
    text = re.sub(r"\s+", "", value.lower())
    if _BARE.fullmatch(text):
        seconds = float(text)
    elif _PARTS.fullmatch(text):
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    else:
        raise InputError(f"--max-age {value!r} is not a duration; give e.g. 26h, 2d, 90m or 1h30m")
    if not seconds <= MAX_AGE_LIMIT:
        raise InputError(f"--max-age {value!r} is longer than 100 years; give e.g. 26h, 2d or 90m")
    return seconds


def parse_ratio(value: str) -> float:
    """``--min-size-ratio``: a number more than 0 and at most 1."""
    try:
        ratio = float(value)
    except ValueError:
        ratio = math.nan
    # nan fails both comparisons, so `not (...)` refuses it with the rest.
    if not 0 < ratio <= 1:
        raise InputError(f"--min-size-ratio {value!r} is not a ratio more than 0 and at most 1; give e.g. 0.5")
    return ratio


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@dataclass
class SnapshotStatus:
    name: str
    version: str | None
    created_at: str | None
    size: int
    recorded: bool | None                  # None: the record table could not be read (or none is set)
    pinned: bool = False
    pin_reason: str | None = None
    verified: dict[str, Any] | None = None  # the last verify result: {ok, at, problem}


@dataclass
class Status:
    project: str
    retention: int
    snapshots: list[SnapshotStatus]
    now: float
    records_readable: bool = True
    # Recorded releases whose snapshot is gone from backup_root, although prune did not remove it.
    vanished: list[dict[str, Any]] = field(default_factory=list)
    # The journal of a restore that did not end (relstep was killed): what it may have left.
    unfinished_restore: dict[str, Any] | None = None

    @property
    def newest(self) -> SnapshotStatus | None:
        return self.snapshots[0] if self.snapshots else None

    @property
    def previous(self) -> SnapshotStatus | None:
        return self.snapshots[1] if len(self.snapshots) > 1 else None

    @property
    def counted(self) -> int:
        """Snapshots that count against the retention (pinned ones do not)."""
        return sum(1 for s in self.snapshots if not s.pinned)

    def age_seconds(self) -> float | None:
        newest = self.newest
        if newest is None or newest.created_at is None:
            return None
        return self.now - datetime.fromisoformat(newest.created_at).timestamp()

    def size_ratio(self) -> float | None:
        if self.newest is None or self.previous is None or not self.previous.size:
            return None
        return self.newest.size / self.previous.size


def _recorded_paths(config: Config) -> list[tuple[str, str]] | None:
    """(backup_path, version) of every recorded release, oldest first; None when unreadable or unset."""
    if not config.record.url:
        return None
    from relstep import records

    try:
        return [(row.backup_path, row.version) for row in records.read_all(config.record.url, config.record.table)]
    except RecordError:
        return None


def gather(config: Config, now: float | None = None) -> Status:
    root = config.backup_root
    view = lookup.of_config(config)
    recorded = _recorded_paths(config)
    recorded_set = {path for path, _ in recorded} if recorded is not None else None
    pinned = pins.load(root)
    verified = journal.last_verified(root)
    snapshots = []
    for snap in view.own:
        manifest = snap.loaded
        pin = pinned.get(snap.name)
        snapshots.append(SnapshotStatus(
            name=snap.name, version=manifest.version if manifest else None,
            created_at=manifest.created_at if manifest else None, size=manifest.size if manifest else 0,
            recorded=None if recorded_set is None else str(snap.path) in recorded_set,
            pinned=pin is not None, pin_reason=pin.reason if pin else None, verified=verified.get(snap.name),
        ))
    status = Status(project=view.project, retention=config.retention, snapshots=snapshots,
                    now=datetime.now(timezone.utc).timestamp() if now is None else now,
                    records_readable=recorded is not None or not config.record.url)
    status.unfinished_restore = restore_journal.unfinished(root)
    pruned = journal.pruned(root)
    resolved_root = root.resolve()
    for path, version in recorded or []:
        where = Path(path)
        if where.parent == resolved_root and where.name not in pruned and not where.exists():
            status.vanished.append({"name": where.name, "version": version, "path": path})
    return status


def problems(status: Status, max_age: float | None, min_size_ratio: float | None) -> list[str]:
    """What the health check fails on, one sentence each; [] when healthy."""
    restore = [] if status.unfinished_restore is None else ["; ".join(restore_journal.describe(
        status.unfinished_restore))]
    newest = status.newest
    if newest is None:
        return [*restore, f"there is no snapshot of project {status.project!r}; run `relstep backup`"]
    found = restore
    age = status.age_seconds()
    if max_age is not None and age is not None and age > max_age:
        found.append(f"the newest snapshot {newest.name} is {_age(age)} old, older than --max-age {_age(max_age)}")
    ratio = status.size_ratio()
    if min_size_ratio is not None and ratio is not None and ratio < min_size_ratio:
        assert status.previous is not None
        found.append(f"the newest snapshot {newest.name} ({human_bytes(newest.size)}) is {ratio:.2f} times the "
                     f"previous one ({human_bytes(status.previous.size)}), less than --min-size-ratio "
                     f"{min_size_ratio:g}")
    if newest.recorded is False:
        found.append(f"the newest snapshot {newest.name} is not recorded; run `relstep record --snapshot "
                     f"{newest.name}` if its deploy went out")
    if newest.verified is not None and not newest.verified.get("ok"):
        found.append(f"the newest snapshot {newest.name} failed its last verify ({newest.verified.get('at')}: "
                     f"{newest.verified.get('problem')}); run `relstep verify {newest.name}`")
    for gone in status.vanished:
        found.append(f"recorded release {gone['version']} points at {gone['name']}, which is gone from "
                     "backup_root although relstep did not prune it (deleted by hand?)")
    return found


def to_json(status: Status, found: list[str]) -> dict[str, Any]:
    newest = status.newest
    return {
        "project": status.project, "healthy": not found, "problems": found,
        "newest": None if newest is None else {**vars(newest), "age_seconds": status.age_seconds()},
        "previous_size": status.previous.size if status.previous else None, "size_ratio": status.size_ratio(),
        "kept": status.counted, "pinned": len(status.snapshots) - status.counted, "retention": status.retention,
        "records_readable": status.records_readable,
        "snapshots": [vars(s) for s in status.snapshots], "vanished": status.vanished,
        "unfinished_restore": status.unfinished_restore,
    }


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


def _verify_word(result: dict[str, Any] | None) -> str:
    if result is None:
        return "never verified"
    return f"verify {'ok' if result.get('ok') else 'FAILED'} {result.get('at')}"


def text(status: Status, found: list[str]) -> str:
    newest = status.newest
    if newest is None:
        lines = [f"no snapshot of project {status.project!r} yet"]
    else:
        age = status.age_seconds()
        ratio = status.size_ratio()
        lines = [
            f"newest:   {newest.name} ({newest.version}), {_age(age) + ' old' if age is not None else 'age unknown'}, "
            f"recorded: {_yes(newest.recorded)}",
            f"size:     {human_bytes(newest.size)}" + (
                f" ({ratio:.2f} x the previous {human_bytes(status.previous.size)})"
                if ratio is not None and status.previous else ""),
            f"kept:     {status.counted} of retention {status.retention}"
            + (f", plus {len(status.snapshots) - status.counted} pinned" if status.counted < len(status.snapshots)
               else ""),
        ]
        for snap in status.snapshots:
            pin = f", pinned: {snap.pin_reason or '(no reason)'}" if snap.pinned else ""
            lines.append(f"  {snap.name}  {snap.version or '?'}  {_verify_word(snap.verified)}{pin}")
    if not status.records_readable:
        lines.append("the record table could not be read: recorded is unknown")
    lines += [f"PROBLEM: {line}" for line in found]
    if not found:
        lines.append("healthy")
    return "\n".join(lines)
