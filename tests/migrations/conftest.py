"""Real-tool projects for the migration tests; see ``realtools``.

Test-only dependencies: alembic, django (and node + npm on PATH for Prisma).
"""

from migrations.realtools import alembic_project, django_project, prisma_project, real_project  # noqa: F401
