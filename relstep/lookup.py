"""Finding snapshots: the current app's among everything in backup_root, and one by name, path or version.

Shared by list, show, record, prune, restore, verify and offsite, so that all of
them draw the same line between this app's snapshots and the others:

* **own**: the manifest records the current project (relstep.identity);
* **foreign**: it records another project.  Never listed, pruned, restored, verified
  or copied off-site; the commands name the ones they skip;
* **unowned**: it records no project (written before relstep recorded one, or a
  damaged manifest).  Listed and verified, restorable by name, never found by
  version and never pruned automatically: whose it is cannot be told, and
  deleting another app's snapshot cannot be undone.  Remove them by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from relstep import snapshot
from relstep.config import Config
from relstep.errors import InputError
from relstep.identity import project_of
from relstep.snapshot import Snapshot

PRE_RESTORE_DIR = "pre-restore"


@dataclass(frozen=True)
class Scoped:
    """One backup_root's finished snapshots from one project's point of view, each newest first."""

    project: str
    own: list[Snapshot] = field(default_factory=list)
    unowned: list[Snapshot] = field(default_factory=list)
    foreign: list[Snapshot] = field(default_factory=list)

    @property
    def visible(self) -> list[Snapshot]:
        """What list and verify --all show: own and unowned, newest first."""
        return snapshot.newest_first([*self.own, *self.unowned])

    def skipped_note(self) -> str | None:
        """One line naming the other projects' snapshots that were left alone, or None."""
        if not self.foreign:
            return None
        shown = ", ".join(f"{s.name} ({s.project})" for s in self.foreign[:5])
        more = f" and {len(self.foreign) - 5} more" if len(self.foreign) > 5 else ""
        return f"skipped {len(self.foreign)} snapshot(s) of other projects: {shown}{more}"

    def unowned_note(self) -> str | None:
        if not self.unowned:
            return None
        shown = ", ".join(s.name for s in self.unowned[:5])
        more = f" and {len(self.unowned) - 5} more" if len(self.unowned) > 5 else ""
        return (f"never pruned automatically: {len(self.unowned)} snapshot(s) that record no project "
                f"(made before relstep recorded one, or damaged): {shown}{more}; remove them by hand when "
                "no app needs them")


def scoped(root: Path, project: str) -> Scoped:
    result = Scoped(project)
    for snap in snapshot.list_snapshots(root):
        if snap.project is None:
            result.unowned.append(snap)
        elif snap.project == project:
            result.own.append(snap)
        else:
            result.foreign.append(snap)
    return result


def of_config(config: Config, root: Path | None = None) -> Scoped:
    """``backup_root`` (or ``root``) as the configured app sees it."""
    return scoped(config.backup_root if root is None else root, project_of(config))


def pre_restore_root(config: Config) -> Path:
    """``backups/releases`` -> ``backups/pre-restore``: a sibling, so release retention never sees it."""
    return config.backup_root.parent / PRE_RESTORE_DIR


def refuse_foreign(config: Config, path: Path) -> Path:
    """``path`` if it is not another project's snapshot; InputError naming its project otherwise."""
    snap = snapshot.read(path)
    project = project_of(config)
    if snap.project is not None and snap.project != project:
        raise InputError(
            f"{path.name} belongs to project {snap.project!r}, not to this app ({project!r}); nothing was done "
            f"(if both are the same app, set project: {snap.project} in {config.where})"
        )
    return path


def _is_path(ref: str) -> bool:
    return "/" in ref or os.sep in ref


def find(config: Config, ref: str, *, foreign_by_name: bool = False) -> Path:
    """A snapshot by name or path inside backup_root, or this app's newest one of a version.

    Another project's snapshot is refused unless ``foreign_by_name`` (``show``, which only reads).
    """
    root = config.backup_root
    if (root / ref).exists() or _is_path(ref):
        found = snapshot.resolve_snapshot(root, ref)
        return found if foreign_by_name else refuse_foreign(config, found)
    wanted = ref[len(config.tag_prefix):] if config.tag_prefix and ref.startswith(config.tag_prefix) else ref
    view = of_config(config)
    for snap in view.own:
        if snap.loaded is not None and snap.loaded.version == wanted:
            return snap.path
    others = [s for s in (*view.foreign, *view.unowned) if s.loaded is not None and s.loaded.version == wanted]
    hint = "; left alone: " + ", ".join(f"{s.name} ({_owner(s)})" for s in others[:5]) if others else ""
    raise InputError(f"no snapshot named or versioned {ref!r} of project {view.project!r} in {root}{hint}; "
                     "run `relstep list` to see the snapshots")


def _owner(snap: Snapshot) -> str:
    if snap.project:
        return f"project {snap.project!r}"
    return "no project recorded; use its name if it is this app's"


def find_for_restore(config: Config, ref: str) -> Path:
    """:func:`find`, or a path inside the pre-restore folder (to undo a restore with its safety snapshot)."""
    try:
        return find(config, ref)
    except InputError:
        pre_root = pre_restore_root(config)
        if _is_path(ref) and pre_root.is_dir():
            try:
                return refuse_foreign(config, snapshot.resolve_snapshot(pre_root, ref))
            except InputError:
                pass
        raise
