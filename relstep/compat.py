"""Schema compatibility: may a snapshot's data be restored under the app's migrations?

The snapshot's applied migrations are compared with the migrations the target
app has on disk (the code being restored for):

- ``identical``: the same migrations;
- ``compatible``: every snapshot migration is known to the app; the app's others
  are ``pending`` and must be run after the restore;
- ``incompatible``: the snapshot has migrations the app does not know (the data is
  newer than the code), or a migration's checksum differs.

Migrations are matched by name, not position: a subset is enough, because tools
that allow branches (Alembic, Django) or out-of-order merges have no single line.
A ``None`` checksum means "unknown" and is never compared.  The target database's
own migration table, when given, is reported for information only: the restore
replaces it.  So is ``drift``: the target's live schema against the fingerprint of a snapshot
taken at the same migrations (someone ran an ALTER by hand), which the restore also replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relstep.migrations import MigrationState, app_migrations, resolve_tool
from relstep.migrations.base import Migration

IDENTICAL = "identical"
COMPATIBLE = "compatible"
INCOMPATIBLE = "incompatible"


@dataclass
class DatabaseDiff:
    """How the target database's migration table differs from the snapshot's."""

    only_in_database: list[str] = field(default_factory=list)   # applied there, not in the snapshot
    only_in_snapshot: list[str] = field(default_factory=list)
    checksum_mismatch: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.only_in_database or self.only_in_snapshot or self.checksum_mismatch)


@dataclass
class Verdict:
    verdict: str
    pending: list[str] = field(default_factory=list)            # app migrations not in the snapshot, app order
    unknown: list[str] = field(default_factory=list)            # snapshot migrations the app lacks, snapshot order
    checksum_mismatch: list[str] = field(default_factory=list)  # in both, checksums differ
    database_differs: DatabaseDiff | None = None                # None: target database not checked
    drift: list[str] = field(default_factory=list)              # target schema objects that drifted
    drift_reference: str | None = None                          # the snapshot its schema was compared with

    @property
    def ok(self) -> bool:
        return self.verdict != INCOMPATIBLE

    def rows(self) -> list[tuple[str, str]]:
        """(status, migration) for every migration that differs, for a short table."""
        table = [("pending", n) for n in self.pending]
        table += [("unknown to app", n) for n in self.unknown]
        table += [("checksum differs", n) for n in self.checksum_mismatch]
        if self.database_differs is not None:
            table += [("only in target database", n) for n in self.database_differs.only_in_database]
            table += [("not in target database", n) for n in self.database_differs.only_in_snapshot]
            table += [("target database checksum differs", n) for n in self.database_differs.checksum_mismatch]
        table += [("drifted", difference) for difference in self.drift]
        return table

    def summary(self) -> str:
        """One sentence: the verdict and why (and that the target drifted, when it did)."""
        if not self.drift:
            return self._migrations_summary()
        return (f"{self._migrations_summary()}; the target database has drifted from its migrations "
                f"({len(self.drift)} schema difference(s) from snapshot {self.drift_reference}, lost by the restore)")

    def _migrations_summary(self) -> str:
        if self.verdict == IDENTICAL:
            return "identical: the snapshot and the app have the same migrations"
        if self.verdict == COMPATIBLE and not self.pending:
            return "compatible: no migrations to compare"
        if self.verdict == COMPATIBLE:
            return f"compatible: run {len(self.pending)} pending migration(s) after the restore"
        reasons = []
        if self.unknown:
            reasons.append(f"the snapshot has {len(self.unknown)} migration(s) the app does not know")
        if self.checksum_mismatch:
            reasons.append(f"{len(self.checksum_mismatch)} migration(s) changed since the snapshot")
        return "incompatible: " + " and ".join(reasons)

    def to_json(self) -> dict[str, Any]:
        diff = self.database_differs
        return {
            "verdict": self.verdict,
            "pending": self.pending,
            "unknown": self.unknown,
            "checksum_mismatch": self.checksum_mismatch,
            "database_differs": None if diff is None else {**vars(diff), "differs": diff.differs},
            "drift": self.drift,
            "drift_reference": self.drift_reference,
        }


def _mismatched(left: list[Migration], right: list[Migration]) -> list[str]:
    """Names in both lists whose checksums are both known and differ, in ``left`` order."""
    theirs = {m.name: m.checksum for m in right}
    return [
        m.name
        for m in left
        if m.checksum is not None and theirs.get(m.name) is not None and theirs[m.name] != m.checksum
    ]


def check(snapshot: list[Migration], app: list[Migration], database: list[Migration] | None = None) -> Verdict:
    """Compare a snapshot's applied migrations with the app's (and the target database's)."""
    snapshot_names = {m.name for m in snapshot}
    app_names = {m.name for m in app}
    result = Verdict(
        verdict=IDENTICAL,
        pending=[m.name for m in app if m.name not in snapshot_names],
        unknown=[m.name for m in snapshot if m.name not in app_names],
        checksum_mismatch=_mismatched(snapshot, app),
    )
    if result.unknown or result.checksum_mismatch:
        result.verdict = INCOMPATIBLE
    elif result.pending:
        result.verdict = COMPATIBLE
    if database is not None:
        database_names = {m.name for m in database}
        result.database_differs = DatabaseDiff(
            only_in_database=[m.name for m in database if m.name not in snapshot_names],
            only_in_snapshot=[m.name for m in snapshot if m.name not in database_names],
            checksum_mismatch=_mismatched(snapshot, database),
        )
    return result


def check_project(
    state: MigrationState,
    migrations_path: Path | str | None,
    project_dir: Path | None,
    database: MigrationState | None = None,
) -> Verdict:
    """``check`` a snapshot's ``migrations.json`` against the app in ``project_dir``.

    Uses the snapshot's tool to read the app's files, and lets the tool narrow the
    comparison to what its files can speak about (Django's installed apps).
    A snapshot taken without a migration tool has nothing to compare: compatible.
    """
    module = resolve_tool(None, state.tool, project_dir)
    if module is None:
        return Verdict(verdict=COMPATIBLE)
    app = app_migrations(module, migrations_path, project_dir)
    snapshot = module.comparable(state.applied, app)
    db = None if database is None else module.comparable(database.applied, app)
    return check(snapshot, app, db)
