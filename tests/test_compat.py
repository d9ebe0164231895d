"""The compatibility verdicts: the rules on small lists, then every verdict on real tools' data.

Test-only dependencies: alembic, django (and node + npm on PATH for Prisma): the real
projects come from ``tests/migrations/realtools.py``, where the real Prisma 6
``migrate deploy``, ``alembic upgrade`` and Django ``migrate`` write the tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from migrations.realtools import RealProject, real_project  # noqa: F401  (a fixture)

from relstep.compat import check, check_project
from relstep.migrations import MigrationState
from relstep.migrations.base import Migration


def ms(*names: str, checksum: str | None = None) -> list[Migration]:
    return [Migration(n, checksum) for n in names]


def test_identical() -> None:
    verdict = check(ms("1", "2"), ms("1", "2"))
    assert (verdict.verdict, verdict.pending, verdict.unknown, verdict.checksum_mismatch) == ("identical", [], [], [])
    assert verdict.ok and verdict.rows() == []


def test_compatible_lists_pending_in_app_order() -> None:
    verdict = check(ms("1", "2"), ms("1", "2", "4", "3"))
    assert (verdict.verdict, verdict.pending) == ("compatible", ["4", "3"])
    assert verdict.rows() == [("pending", "4"), ("pending", "3")]
    assert verdict.summary() == "compatible: run 2 pending migration(s) after the restore"


def test_a_subset_that_is_not_a_prefix_is_still_compatible() -> None:
    # A branch merged later with an older name: the app can still apply it after the restore.
    assert check(ms("1", "3"), ms("1", "2", "3")).pending == ["2"]


def test_unknown_migration_is_incompatible() -> None:
    verdict = check(ms("1", "2", "3"), ms("1", "2"))
    assert (verdict.verdict, verdict.unknown, verdict.ok) == ("incompatible", ["3"], False)
    assert verdict.rows() == [("unknown to app", "3")]
    assert "1 migration(s) the app does not know" in verdict.summary()


def test_checksum_difference_is_incompatible_but_unknown_checksums_are_not_compared() -> None:
    verdict = check([Migration("1", "a"), Migration("2", "b")], [Migration("1", "a"), Migration("2", "c")])
    assert (verdict.verdict, verdict.checksum_mismatch) == ("incompatible", ["2"])
    assert verdict.rows() == [("checksum differs", "2")]
    assert check([Migration("1", None)], [Migration("1", "x")]).verdict == "identical"
    assert check([Migration("1", "x")], [Migration("1", None)]).verdict == "identical"


def test_database_differences_are_reported_not_judged() -> None:
    verdict = check(ms("1", "2"), ms("1", "2"), database=[Migration("1"), Migration("5")])
    assert verdict.verdict == "identical"
    assert verdict.database_differs is not None and verdict.database_differs.differs
    assert verdict.rows() == [("only in target database", "5"), ("not in target database", "2")]
    assert verdict.to_json()["database_differs"] == {
        "only_in_database": ["5"], "only_in_snapshot": ["2"], "checksum_mismatch": [], "differs": True,
    }
    assert check(ms("1"), ms("1")).to_json()["database_differs"] is None


def test_a_snapshot_without_a_tool_has_nothing_to_compare(tmp_path: Path) -> None:
    verdict = check_project(MigrationState("none"), None, tmp_path)
    assert verdict.verdict == "compatible" and verdict.summary() == "compatible: no migrations to compare"


# ------------------------------------------------------------ real tools' data


EXPECTED = {
    "identical": lambda p: ("identical", [], [], []),
    "compatible": lambda p: ("compatible", p.pending, [], []),
    "unknown": lambda p: ("incompatible", [], [p.applied[-1]], []),
    "checksum": lambda p: ("incompatible", [], [], [p.applied[-1]]),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_verdicts_on_real_migration_tables(real_project: RealProject, kind: str, tmp_path: Path) -> None:  # noqa: F811
    """The snapshot is what the real tool wrote; the app is the project's code, changed for each verdict."""
    snapshot = real_project.read()
    app = real_project.variant(tmp_path / "app", kind)
    verdict = check_project(snapshot, real_project.migrations_path, app)
    assert (verdict.verdict, verdict.pending, verdict.unknown, verdict.checksum_mismatch) == EXPECTED[kind](
        real_project
    )


def test_target_database_is_compared_too(real_project: RealProject, tmp_path: Path) -> None:  # noqa: F811
    snapshot = real_project.read()
    # The target database has moved on: its last migration is unknown to the snapshot.
    target = MigrationState(snapshot.tool, [*snapshot.applied, Migration(real_project.pending[0])])
    verdict = check_project(snapshot, real_project.migrations_path, real_project.project_dir, database=target)
    assert verdict.verdict == "compatible"
    assert verdict.database_differs is not None
    assert verdict.database_differs.only_in_database == real_project.pending
