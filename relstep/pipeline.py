"""The phases in order (backup -> deploy -> record -> prune -> offsite), each timed and reported.

Every function returns a ``RunResult``; failures are data here, so the CLI and
the CI writers can report the phases that did run.  Nothing in this module prints.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relstep import children, lookup, records, snapshot
from relstep.config import Config
from relstep.defaults import DEFAULT_LOCK_TIMEOUT
from relstep.errors import DeployError, InputError, OffsiteError, PruneError, RecordError, RelstepError
from relstep.manifest import Manifest
from relstep.masking import mask_text
from relstep.result import PhaseResult, RunResult
from relstep.version import Release

CREATED_TABLE_HINT = (
    "relstep created the {table} table; the app should own it in its migrations (`relstep init --prisma` writes one)"
)


@dataclass(frozen=True)
class PruneOutcome:
    removed: list[Path]
    kept: list[Path]                    # this app's snapshots that stay
    partials_removed: list[Path]
    protected: Path | None
    # Leftover .partial folders that could not be removed, with the reason (they stay, harmless).
    partials_left: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # other projects' snapshots skipped, unowned ones kept

    def summary(self) -> str:
        return "; ".join([f"kept {len(self.kept)}, removed {len(self.removed)}", *self.notes])


class _Phases:
    """Runs phases into a RunResult, stopping at the first failure."""

    def __init__(self, result: RunResult) -> None:
        self.result = result

    def run(self, name: str, action: Callable[[], str], optional: bool = False) -> bool:
        """Run one phase; False stops the pipeline.  An optional phase's failure is a warning."""
        started = time.monotonic()
        try:
            detail = action()
        except RelstepError as exc:
            message = mask_text(exc.message)
            if optional and not isinstance(exc, InputError):
                self.result.phases.append(PhaseResult(name, False, time.monotonic() - started, message, 0))
                self.result.warnings.append(f"{name} failed: {message}")
                return True
            phase = name if not isinstance(exc, InputError) else exc.phase
            self.result.phases.append(PhaseResult(name, False, time.monotonic() - started, message, exc.exit_code))
            self.result.failed_phase, self.result.error, self.result.exit_code = phase, message, exc.exit_code
            self.result.traceback = mask_text(traceback.format_exc())
            return False
        self.result.phases.append(PhaseResult(name, True, time.monotonic() - started, mask_text(detail)))
        return True


def _last_recorded_name(config: Config) -> str | None:
    """The snapshot recorded last, which no pruning (local or off-site) removes.

    Raises RecordError when the record database cannot be read.
    """
    recorded = _recorded_paths(config)
    return Path(recorded[-1]).name if recorded else None


def newest_snapshot(config: Config) -> Path:
    """This app's newest snapshot."""
    view = lookup.of_config(config)
    if not view.own:
        raise InputError(f"there is no snapshot of project {view.project!r} in {config.backup_root}; "
                         "run `relstep backup` first")
    return view.own[0].path


def offsite_copy(config: Config, path: Path) -> Any:
    """Copy one snapshot off-site, verify it, prune remote copies (-> offsite.PushOutcome).  Holds no lock."""
    from relstep import offsite

    try:
        protect, known = _last_recorded_name(config), True
    except RecordError:
        # As locally: without knowing the last recorded release, no copy may be pruned.
        protect, known = None, False
    try:
        return offsite.push(config, path, protect=protect, prune=known)
    except OSError as exc:   # reading the local snapshot
        raise OffsiteError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _recorded_paths(config: Config) -> list[str]:
    if not config.record.url:
        return []
    return [row.backup_path for row in records.read_all(config.record.url, config.record.table)]


def prune(config: Config, keep: int, dry_run: bool = False, protect_last_recorded: bool = True) -> PruneOutcome:
    """Remove this app's snapshots beyond its newest ``keep``; never the one recorded last.

    Other projects' snapshots, and those that record no project, are never removed
    (see relstep.lookup); the outcome's notes name them.  The caller holds the root lock.
    """
    from relstep import journal, pins

    protected = None
    view = lookup.of_config(config)
    notes = [note for note in (view.skipped_note(), view.unowned_note()) if note]
    # Pinned snapshots are never removed and do not count against `keep`.
    pinned = pins.names(config.backup_root)
    candidates = [s for s in view.own if s.name not in pinned]
    if kept_pins := [s.name for s in view.own if s.name in pinned]:
        notes.append(f"pinned, never pruned: {', '.join(kept_pins)}")
    doomed = snapshot.to_prune(candidates, keep)
    # Only ask the record database when something would go: prune must not depend on it otherwise.
    if protect_last_recorded and doomed:
        try:
            recorded = _recorded_paths(config)
        except RecordError as exc:
            # Unknown last release: deleting could remove the one snapshot it points at.
            raise PruneError(
                f"{exc.message}; cannot tell which snapshot the last recorded release uses, so nothing was "
                "deleted (retry when the record database is back)"
            ) from exc
        if recorded:
            protected = Path(recorded[-1])
            doomed = snapshot.to_prune(candidates, keep, {protected})
    # A set: `s not in doomed` on a list compared 1,000 x 970 dataclasses (0.5 s of a 1,000-snapshot prune).
    doomed_paths = {s.path for s in doomed}
    kept = [s.path for s in view.own if s.path not in doomed_paths]
    if dry_run:
        return PruneOutcome([s.path for s in doomed], kept, snapshot.leftover_partials(config.backup_root), protected,
                            notes=notes)
    removed = []
    for snap in doomed:
        try:
            # Logged first: status must never take a removal of ours for a snapshot deleted by hand.
            journal.log_pruned(config.backup_root, snap.name, snap.loaded.version if snap.loaded else None,
                               snap.project)
            snapshot.remove_snapshot(snap)
        except OSError as exc:
            raise PruneError(f"cannot remove {snap.path}: {exc.strerror or exc}") from exc
        removed.append(snap.path)
    partials, left = _remove_leftovers(config.backup_root)
    return PruneOutcome(removed, kept, partials, protected, left, notes)


def _remove_leftovers(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Remove killed runs' .partial folders; (removed, [(left, why)]), so prune reports what really happened."""
    removed, left = [], []
    for path in snapshot.leftover_partials(root):
        try:
            shutil.rmtree(path)
        except OSError as exc:
            left.append((path, exc.strerror or str(exc)))
        else:
            removed.append(path)
    return removed, left


def newest_unrecorded(config: Config) -> Path:
    recorded = set(_recorded_paths(config))
    for snap in lookup.of_config(config).own:
        if str(snap.path) not in recorded:
            return snap.path
    raise InputError(f"every snapshot in {config.backup_root} is already recorded; pass --snapshot to choose one")


def record_snapshot(config: Config, path: Path) -> tuple[records.RecordOutcome, Manifest]:
    if not config.record.url:
        raise InputError("no record database; set record.url or database.url in relstep.yml, or DATABASE_URL")
    manifest = Manifest.load(lookup.refuse_foreign(config, path))
    outcome = records.record(
        config.record.url, config.record.table,
        version=manifest.version, deployment_type=manifest.deployment_type,
        backup_path=path.resolve(), schema_revision=manifest.schema_revision,
    )
    return outcome, manifest


def _changes_since_previous(config: Config, new: Path, result: RunResult) -> None:
    """Put what changed since this app's previous snapshot into ``result`` (for the CI summaries).

    Computed right after the backup, before prune could remove the previous snapshot.  Only
    manifests and small files are read; a problem is a note, never a failed run.
    """
    from relstep import diff

    older = [s for s in lookup.of_config(config).own if s.path != new]
    if not older:
        return
    try:
        found = diff.compare(older[0].path, new)
    except (RelstepError, OSError) as exc:
        result.notes.append(f"could not compare with the previous snapshot {older[0].name}: {exc}")
        return
    result.changes = found.to_json()
    result.changes_text = diff.text(found)
    result.changes_markdown = diff.markdown(found)


def _deploy(command: Sequence[str], release: Release, snapshot_path: Path) -> str:
    env = dict(os.environ, RELSTEP_VERSION=release.version, RELSTEP_DEPLOYMENT_TYPE=release.deployment_type,
               RELSTEP_SNAPSHOT=str(snapshot_path))
    try:
        # The deploy command's output goes to stderr so `--json` keeps stdout to itself.
        proc = children.run(command, env=env, stdout=2)
    except FileNotFoundError:
        raise DeployError(f"deploy command {command[0]!r} not found; the snapshot is kept") from None
    except OSError as exc:
        raise DeployError(f"cannot start deploy command {command[0]!r}: {exc.strerror}; the snapshot is kept") from exc
    if proc.returncode != 0:
        raise DeployError(
            f"deploy command exited with {proc.returncode}; the snapshot is kept and nothing was recorded"
        )
    return f"{Path(command[0]).name} exited 0"


def run(
    config: Config,
    release: Release,
    *,
    deploy: Sequence[str] = (),
    keep: int | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    phases: Sequence[str] = ("backup", "deploy", "record", "prune", "offsite"),
) -> RunResult:
    from relstep.backup import check_inputs, create_snapshot

    result = RunResult(version=release.version, deployment_type=release.deployment_type)
    steps = _Phases(result)
    keep = config.retention if keep is None else keep
    try:
        check_inputs(config)
        snapshot.ensure_root(config.backup_root)
    except RelstepError as exc:
        result.failed_phase, result.error, result.exit_code = exc.phase, mask_text(exc.message), exc.exit_code
        return result

    state: dict[str, Any] = {}

    def do_backup() -> str:
        outcome = create_snapshot(config, release)
        state["path"] = outcome.path
        result.snapshot, result.schema_revision = str(outcome.path), outcome.schema_revision
        _changes_since_previous(config, outcome.path, result)
        return str(outcome.path)

    def do_record() -> str:
        outcome, _ = record_snapshot(config, state["path"])
        result.record_id = outcome.id
        if outcome.created_table:
            result.notes.append(CREATED_TABLE_HINT.format(table=config.record.table))
        return f"ReleaseRecord id {outcome.id}" + (" (table created)" if outcome.created_table else "")

    def do_prune() -> str:
        outcome = prune(config, keep)
        result.pruned = [str(p) for p in outcome.removed]
        result.warnings += [f"could not remove leftover {path}: {reason}; remove it by hand"
                            for path, reason in outcome.partials_left]
        return outcome.summary()

    def do_offsite() -> str:
        path = state.get("path") or newest_snapshot(config)
        try:
            outcome = offsite_copy(config, path)
        except OffsiteError as exc:
            raise OffsiteError(f"{exc.message}; the local snapshot {path.name} is kept") from exc
        return outcome.summary()

    try:
        with snapshot.root_lock(config.backup_root, lock_timeout):
            if "backup" in phases and not steps.run("backup", do_backup):
                return result
            if deploy and not steps.run("deploy", lambda: _deploy(deploy, release, state["path"])):
                return result
            if "record" in phases and not steps.run("record", do_record):
                return result
            if "prune" in phases and not steps.run("prune", do_prune):
                return result
            if "offsite" in phases and config.offsite is not None:
                # Last, because it is the slowest and the release is already safe locally.  A failure
                # with required: false is a warning (the step passes); with required: true, exit 6.
                steps.run("offsite", do_offsite, optional=not config.offsite.required)
    except RelstepError as exc:  # the lock timed out
        result.failed_phase, result.error, result.exit_code = exc.phase, mask_text(exc.message), exc.exit_code
    return result
