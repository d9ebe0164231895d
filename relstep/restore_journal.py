"""The journal of an unfinished restore: what a kill -9 of relstep leaves, and the way back.

A killed relstep prints nothing, so before the engine's restore starts relstep writes
``<backup_root>/.restore-in-progress.json`` (relstep.journal: replaced whole, never half) and
rewrites it each time something new is at stake: the staged copy it is about to create, the
swap it is about to commit, the first change of the live database.  Every way a restore ends
inside Python (success, failure, SIGINT, SIGTERM) removes the file; only a kill, a crash or a
power cut leaves it, and ``relstep status`` then names what may be left and the exact
commands that clean it up or put the previous state back (and fails its health check).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import journal
from relstep.databases.restoring import RestoreReport

FILE = ".restore-in-progress.json"


def path(root: Path) -> Path:
    return root / FILE


def begin(root: Path, snapshot: Path, target: str, safety: Path | None) -> Callable[[RestoreReport], None]:
    """Write the journal; return the callback that rewrites it from the engine's report."""
    base: dict[str, Any] = {
        "pid": os.getpid(), "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "snapshot": str(snapshot), "target": target,
        "safety_snapshot": str(safety) if safety else None,
        "way_back": f"relstep restore {safety} --yes" if safety else None,
    }
    journal.replace_json(path(root), base)

    def save(report: RestoreReport) -> None:
        journal.replace_json(path(root), {
            **base, "staged": report.staged, "drop_staged": report.drop_staged,
            "live_changed": report.live_changed, "committing": report.committing,
            "swap_to": report.swap_to, "swap_undo": report.swap_undo,
        })

    return save


def finish(root: Path) -> None:
    path(root).unlink(missing_ok=True)


def unfinished(root: Path) -> dict[str, Any] | None:
    """The journal of a restore that did not end (None when there is none)."""
    return journal.read_json(path(root))


def _running(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(data: dict[str, Any]) -> list[str]:
    """What a person must know about the unfinished restore, one sentence each (first: what happened)."""
    target, pid = data.get("target", "?"), data.get("pid")
    if _running(pid):
        return [f"a restore of {data.get('snapshot')} into {target} is running (relstep pid {pid}, "
                f"started {data.get('started_at')})"]
    lines = [f"a restore of {data.get('snapshot')} into {target} did not finish (relstep pid {pid} was killed, "
             f"started {data.get('started_at')}); remove {FILE} beside the snapshots once this is dealt with"]
    if data.get("committing") and data.get("swap_to"):
        lines.append(f"if database {data['swap_to']} exists, the snapshot was swapped in whole; to put the "
                     f"previous database back: `{data.get('swap_undo')}`; otherwise {target} is unchanged")
    elif data.get("committing"):
        lines.append(f"if its last step (PostgreSQL's COMMIT, SQLite's copy) completed, {target} is entirely the "
                     f"snapshot (the safety snapshot below puts the previous state back); otherwise it is unchanged")
    elif data.get("live_changed"):
        lines.append(f"{target} may be half restored: put the safety snapshot back with `{data.get('way_back')}`")
    else:
        lines.append(f"{target} is unchanged (the restore stopped before it touched it)")
    if data.get("staged"):
        lines.append(f"the staged copy {data['staged']} may be left: remove it with `{data.get('drop_staged')}`")
    if data.get("safety_snapshot") and not data.get("live_changed"):
        # Not after a MariaDB live change: the line above already names it as the way back.
        lines.append(f"the safety snapshot {data['safety_snapshot']} holds {target} as it was: `{data['way_back']}`")
    return lines
