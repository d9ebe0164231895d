"""Pinned snapshots: never pruned (locally or off-site) and not counted against the retention.

The pins live in ``<backup_root>/.relstep-pins.json``, beside the snapshots and outside
them (a snapshot folder is never changed once finished), keyed by snapshot name, which is
also the name of its off-site copy.  The file is replaced whole (relstep.journal), so a
crash while pinning leaves the pins as they were before or after, never lost; the next pin or
unpin removes the temporary file such a crash leaves (tests/test_pin.py kills `relstep pin` with
SIGKILL at each step of the write).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import journal
from relstep.errors import PinsDamaged

FILENAME = ".relstep-pins.json"


@dataclass(frozen=True)
class Pin:
    name: str
    reason: str | None
    pinned_at: str
    version: str | None = None


def _path(root: Path) -> Path:
    return root / FILENAME


def _read(path: Path) -> dict[str, Any]:
    """The pins file's ``pins`` object; {} when there is no file.

    A file that is there but unreadable is refused rather than taken for "no pins": prune would
    then remove every pinned snapshot.  relstep never leaves such a file (it replaces it whole),
    but a disk or a hand can.
    """
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):   # no pins yet, or no backup_root (doctor says so)
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("pins", {}), dict):
        raise PinsDamaged(f"{path} is damaged (not relstep's JSON object of pins), so which snapshots are pinned "
                          "is unknown and nothing is pruned; put back a copy of it, or remove it and pin again")
    pins: dict[str, Any] = data.get("pins", {})
    return pins


def load(root: Path) -> dict[str, Pin]:
    """The pins of backup_root ``root``, by snapshot name; PinsDamaged for an unreadable pins file."""
    found = {}
    for name, entry in _read(_path(root)).items():
        if isinstance(entry, dict):
            found[name] = Pin(name=name, reason=entry.get("reason"), pinned_at=str(entry.get("pinned_at", "")),
                              version=entry.get("version"))
    return found


def names(root: Path) -> set[str]:
    return set(load(root))


def _save(root: Path, pins: dict[str, Pin]) -> None:
    # Every writer holds the root lock, so a temporary pins file seen now is a crashed write's.
    journal.remove_leftovers(_path(root))
    journal.replace_json(_path(root), {"format": 1, "pins": {
        name: {"reason": pin.reason, "pinned_at": pin.pinned_at, "version": pin.version}
        for name, pin in sorted(pins.items())}})


def pin(root: Path, name: str, reason: str | None, version: str | None) -> Pin:
    """Pin snapshot ``name`` (again: the reason is replaced).  The caller holds the root lock."""
    pins = load(root)
    pins[name] = Pin(name=name, reason=reason, version=version,
                     pinned_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _save(root, pins)
    return pins[name]


def unpin(root: Path, name: str) -> Pin | None:
    """Remove the pin of ``name``; the pin that was removed, or None when it was not pinned."""
    pins = load(root)
    removed = pins.pop(name, None)
    if removed is not None:
        _save(root, pins)
    return removed
