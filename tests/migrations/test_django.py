"""Django: ``django_migrations`` as written by the real ``manage.py migrate``, on SQLite and PostgreSQL.

Test-only dependencies: django.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from migrations.realtools import RealProject
from relstep.databases import create_engine
from relstep.migrations import detect, django
from relstep.migrations.base import Migration, text_checksum


def test_applied_in_id_order_with_checksums_for_project_apps(django_project: RealProject) -> None:
    state = django_project.read()
    assert state.tool == "django"
    names = [m.name for m in state.applied]
    blog = [n for n in names if n.startswith("blog.")]
    assert blog == django_project.applied
    assert names[:2] == ["contenttypes.0001_initial", "contenttypes.0002_remove_content_type_name"]
    assert state.schema_revision == "blog.0002_post_body"
    by_name = {m.name: m for m in state.applied}
    # Project apps get a file checksum; installed apps' files are not in the project.
    assert by_name["blog.0002_post_body"].checksum == text_checksum(django_project.source["blog.0002_post_body"], "#")
    assert by_name["contenttypes.0001_initial"].checksum is None
    # ISO 8601; SQLite's column has no zone (Django writes UTC there), PostgreSQL's timestamptz does.
    stamps = [datetime.fromisoformat(m.applied_at or "") for m in state.applied]
    assert all((s.tzinfo is None) == django_project.url.startswith("sqlite") for s in stamps)


def test_on_disk_and_auto_detect(django_project: RealProject) -> None:
    assert [m.name for m in django.on_disk(django_project.project_dir)] == [
        *django_project.applied, *django_project.pending
    ]
    engine = create_engine(django_project.url)
    with engine.connect() as conn:
        assert detect(conn, django_project.project_dir) is django
    engine.dispose()


def test_installed_apps_are_left_out_of_the_comparison(django_project: RealProject) -> None:
    state = django_project.read()
    app = django.on_disk(django_project.project_dir)
    assert [m.name for m in django.comparable(state.applied, app)] == django_project.applied
    # With no migrations found at all (a wrong path), nothing is left out: the check must fail loudly.
    assert django.comparable(state.applied, []) == state.applied


def _write(path: Path, deps: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "__init__.py").touch()
    path.write_text(
        "from django.conf import settings\nfrom django.db import migrations\n\n\n"
        f"class Migration(migrations.Migration):\n    dependencies = {deps}\n    operations = []\n"
    )


def test_dependencies_order_migrations_across_apps(tmp_path: Path) -> None:
    _write(tmp_path / "accounts/migrations/0001_initial.py",
           "[('shop', '0002_price'), migrations.swappable_dependency(settings.AUTH_USER_MODEL)]")
    _write(tmp_path / "shop/migrations/0001_initial.py", "[]")
    _write(tmp_path / "shop/migrations/0002_price.py", "[('shop', '0001_initial')]")
    _write(tmp_path / "shop/migrations/0003_stock.py", "[('accounts', '__first__'), ('shop', '0002_price')]")
    _write(tmp_path / ".venv/lib/site-packages/other/migrations/0001_initial.py", "[]")   # not the project's
    names = [m.name for m in django.on_disk(tmp_path)]
    assert names == ["shop.0001_initial", "shop.0002_price", "accounts.0001_initial", "shop.0003_stock"]


def test_django_rows_get_checksums_only_when_files_exist(tmp_path: Path) -> None:
    _write(tmp_path / "shop/migrations/0001_initial.py", "[]")
    found = [Migration("shop.0001_initial"), Migration("shop.0009_gone")]
    disk = django.on_disk(tmp_path)
    from relstep.migrations.base import with_disk_checksums

    assert [m.checksum is not None for m in with_disk_checksums(found, disk)] == [True, False]
