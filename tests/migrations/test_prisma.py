"""Prisma: ``_prisma_migrations`` as written by the real Prisma 6 ``migrate deploy`` on PostgreSQL.

Test-only dependencies: node and npm on PATH (Prisma is installed once into a cache).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text

from migrations.realtools import RealProject
from relstep.databases import create_engine
from relstep.migrations import detect, prisma


def _sha(project: RealProject, name: str) -> str:
    return hashlib.sha256((project.project_dir / "prisma/migrations" / name / "migration.sql").read_bytes()).hexdigest()


def test_applied_holds_finished_migrations_with_prismas_checksums(prisma_project: RealProject) -> None:
    state = prisma_project.read()
    assert state.tool == "prisma"
    assert [m.name for m in state.applied] == prisma_project.applied
    # Prisma's own checksum is the SHA-256 of migration.sql: relstep's on_disk agrees with what it wrote.
    assert [m.checksum for m in state.applied] == [_sha(prisma_project, n) for n in prisma_project.applied]
    assert all(m.applied_at and m.applied_at.endswith("+00:00") for m in state.applied)


def test_rolled_back_migration_is_not_the_schema_revision(prisma_project: RealProject) -> None:
    engine = create_engine(prisma_project.url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL FROM _prisma_migrations "
            "ORDER BY started_at"
        )).all()
    engine.dispose()
    # The failed attempt is really there, started last, and marked rolled back ...
    assert rows[-1] == (prisma_project.pending[0], False, True)
    # ... and neither counts as applied nor becomes the revision.
    state = prisma_project.read()
    assert state.schema_revision == "20260102000000_add_post"
    assert prisma_project.pending[0] not in [m.name for m in state.applied]


def test_on_disk_lists_every_folder_in_name_order(prisma_project: RealProject) -> None:
    found = prisma.on_disk(prisma_project.project_dir / "prisma/migrations")
    names = [*prisma_project.applied, *prisma_project.pending]
    assert [m.name for m in found] == names
    assert [m.checksum for m in found] == [_sha(prisma_project, n) for n in names]


def test_auto_detect_picks_prisma(prisma_project: RealProject) -> None:
    engine = create_engine(prisma_project.url)
    with engine.connect() as conn:
        assert detect(conn, prisma_project.project_dir) is prisma
        assert detect(conn, None) is prisma   # from the table alone
    engine.dispose()
