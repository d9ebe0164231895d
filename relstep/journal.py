"""Small bookkeeping files beside the snapshots in backup_root: replaced whole, or appended to.

Both kinds survive a crash at any point:

* :func:`replace_json` writes a temporary file in the same folder, fsyncs it, renames it over
  the old one and fsyncs the folder: a reader sees the old content or the new, never half;
* :func:`append_line` appends one JSON object per line with a single ``write`` on an
  ``O_APPEND`` descriptor and fsyncs it; :func:`read_lines` skips a torn last line (a crash
  mid-write), so one lost entry is the worst a crash can do.

Their names start with a dot, so listing never takes them for snapshots.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from relstep import faults, fsutil

TEMP_SUFFIX = ".tmp"


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``; None when there is none (or it is not a JSON object)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def replace_json(path: Path, data: dict[str, Any]) -> None:
    # The fault points are where tests/test_pin.py kills `relstep pin` with SIGKILL.
    fd, temp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            faults.point(f"{path.name}:before-temp-write")
            out.write((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
            out.flush()
            faults.point(f"{path.name}:after-temp-write")
            os.fsync(out.fileno())
        os.chmod(temp, fsutil.PRIVATE_FILE)
        faults.point(f"{path.name}:before-rename")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    faults.point(f"{path.name}:after-rename")
    fsutil.fsync_dir(path.parent)
    faults.point(f"{path.name}:after-folder-fsync")


def remove_leftovers(path: Path) -> list[str]:
    """Remove the temporary files a crashed :func:`replace_json` of ``path`` left; their names.

    Only for a caller that holds the lock every writer of ``path`` takes: then no temporary
    file of ``path`` can belong to a write still in progress.
    """
    removed = []
    for leftover in path.parent.glob(f"{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover.name)
    return sorted(removed)


def append_line(path: Path, record: dict[str, Any]) -> None:
    line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, fsutil.PRIVATE_FILE)
    try:
        fsutil.write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every whole entry of an append-only file, oldest first; a torn or foreign line is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in raw.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


# --- the two logs status reads --------------------------------------------------------------------

PRUNED_LOG = ".relstep-pruned.log"
VERIFIED_LOG = ".relstep-verify.log"


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def log_pruned(root: Path, name: str, version: str | None, project: str | None) -> None:
    """Written by prune just before it removes a snapshot: status tells its removals from a hand's."""
    append_line(root / PRUNED_LOG, {"name": name, "version": version, "project": project, "removed_at": _now()})


def pruned(root: Path) -> dict[str, dict[str, Any]]:
    return {str(e.get("name")): e for e in read_lines(root / PRUNED_LOG)}


def log_verified(root: Path, name: str, ok: bool, problem: str | None) -> None:
    append_line(root / VERIFIED_LOG, {"name": name, "ok": ok, "problem": problem, "at": _now()})


def last_verified(root: Path) -> dict[str, dict[str, Any]]:
    """The last verify result of each snapshot, by name."""
    return {str(e.get("name")): e for e in read_lines(root / VERIFIED_LOG)}
