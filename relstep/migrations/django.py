"""Django: ``django_migrations(id, app, name, applied)`` and ``<app>/migrations/[0-9]*.py``.

A migration is named ``app.name`` (``blog.0001_initial``).  Files are ordered by
their ``dependencies`` (read with ``ast``, never imported).  The app label is the
folder holding ``migrations/``, which is Django's default label.  Django keeps no
checksum; see ``base`` for the file checksum relstep records instead.

Apps installed as packages (``django.contrib.auth``...) have their migrations
outside the project, so ``comparable`` leaves them out of the compatibility check
rather than calling them unknown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from relstep.migrations import base
from relstep.migrations.base import Migration

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAME = "django"
TABLE = "django_migrations"
DEFAULT_PATH = "."   # the project directory: every app under it is scanned
MARKERS = ("manage.py",)
APPLY_COMMAND = "python manage.py migrate"  # what applies pending migrations (restore's advice)

detect = base.default_detect(TABLE, ["app", "name", "applied"])
schema_revision = base.last_name

# Folders that hold other people's code, or none at all; scanning them would be
# slow (node_modules) or would pick up packages' migrations (virtualenvs).
SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", ".tox", ".nox", "node_modules", "site-packages", "__pycache__"}


def applied(conn: Connection, migrations_path: Path | None) -> list[Migration]:
    rows = base.select_rows(conn, TABLE, ["app", "name", "applied"], order_by=["id"])
    found = [Migration(f"{r['app']}.{r['name']}", None, base.iso(r["applied"])) for r in rows]
    return base.with_disk_checksums(found, on_disk(migrations_path)) if migrations_path else found


def _migration_files(project: Path) -> dict[str, Path]:
    """``app.name`` -> file, for every migrations package under the project."""
    found: dict[str, Path] = {}
    for folder, dirs, _ in os.walk(project):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        here = Path(folder)
        if here.name == "migrations" and (here / "__init__.py").is_file():
            app = here.parent.name
            for file in base.files(here, [".py"]):
                if file.name[0].isdigit():
                    found[f"{app}.{file.stem}"] = file
    return found


def on_disk(path: Path) -> list[Migration]:
    file_of = _migration_files(path)
    by_app: dict[str, list[str]] = {}
    for key in sorted(file_of):
        by_app.setdefault(key.split(".", 1)[0], []).append(key)
    parents: dict[str, list[str]] = {}
    for key, file in file_of.items():
        deps = base.python_assignments(file, {"dependencies"}, in_class="Migration").get("dependencies") or []
        parents[key] = [p for p in (_dependency(d, by_app) for d in deps) if p]
    order = base.topological(parents, sorted(file_of))
    return [Migration(key, base.text_checksum(file_of[key], "#")) for key in order]


def _dependency(dep: object, by_app: dict[str, list[str]]) -> str | None:
    if not (isinstance(dep, (list, tuple)) and len(dep) == 2 and all(isinstance(x, str) for x in dep)):
        return None
    app, name = dep
    if name in ("__first__", "__latest__"):
        keys = by_app.get(app)
        # Approximation: name order stands in for Django's graph for these markers.
        return (keys[0] if name == "__first__" else keys[-1]) if keys else None
    return f"{app}.{name}"


def comparable(snapshot: list[Migration], app: list[Migration]) -> list[Migration]:
    """The snapshot's migrations of apps that have migrations in the project.

    With no migrations on disk at all the path is probably wrong: keep everything
    so the check fails loudly instead of passing vacuously.
    """
    labels = {m.name.split(".", 1)[0] for m in app}
    if not labels:
        return snapshot
    return [m for m in snapshot if m.name.split(".", 1)[0] in labels]
