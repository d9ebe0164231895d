"""Alembic: ``alembic_version`` as written by the real ``alembic upgrade``, on SQLite and PostgreSQL.

Test-only dependencies: alembic.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from migrations.realtools import RealProject, run
from relstep.databases import create_engine
from relstep.migrations import alembic, detect, read_state
from relstep.migrations.base import Migration, text_checksum


def test_applied_rebuilds_the_chain_up_to_the_head(alembic_project: RealProject) -> None:
    state = alembic_project.read()
    assert state.tool == "alembic"
    assert [m.name for m in state.applied] == ["0001", "0002"]
    assert state.schema_revision == "0002"
    files = alembic_project.source
    assert [m.checksum for m in state.applied] == [text_checksum(files[r], "#") for r in ("0001", "0002")]
    assert all(m.applied_at is None for m in state.applied)   # Alembic records no time


def test_without_the_files_only_the_head_is_known(alembic_project: RealProject) -> None:
    engine = create_engine(alembic_project.url)
    with engine.connect() as conn:
        assert alembic.applied(conn, None) == [Migration("0002")]
        assert alembic.applied(conn, alembic_project.project_dir / "nowhere") == [Migration("0002")]
        assert detect(conn, None) is alembic
    engine.dispose()


def test_on_disk_accepts_the_script_dir_or_its_versions_dir(alembic_project: RealProject) -> None:
    script_dir = alembic_project.project_dir / "alembic"
    assert [m.name for m in alembic.on_disk(script_dir)] == ["0001", "0002", "0003"]
    assert alembic.on_disk(script_dir / "versions") == alembic.on_disk(script_dir)


def test_checksum_ignores_cosmetic_edits(tmp_path: Path, alembic_project: RealProject) -> None:
    original = alembic_project.source["0002"]
    copy = tmp_path / original.name
    text = original.read_text()
    # A CRLF checkout, a new comment line, blank lines and trailing blanks do not change the code.
    copy.write_bytes(("# reviewed\n\n" + text.replace("\n", "   \n")).replace("\n", "\r\n").encode())
    assert text_checksum(copy, "#") == text_checksum(original, "#")
    copy.write_text(text.replace("posts", "articles"))
    assert text_checksum(copy, "#") != text_checksum(original, "#")


def _revision_file(project: Path, rev: str) -> Path:
    return next((project / "alembic" / "versions").glob(f"{rev}_*.py"))


def test_branches_and_merges_come_parents_first(tmp_path: Path) -> None:
    """Two branches off one root, applied with `upgrade heads`, then merged by `alembic merge`."""
    def alembic_cli(*args: str) -> None:
        run([sys.executable, "-m", "alembic", "-c", str(tmp_path / "alembic.ini"), *args], tmp_path)

    run([sys.executable, "-m", "alembic", "init", "alembic"], tmp_path)
    ini = tmp_path / "alembic.ini"
    url = f"sqlite:///{tmp_path / 'app.db'}"
    ini.write_text(re.sub(r"^sqlalchemy\.url = .*$", f"sqlalchemy.url = {url}", ini.read_text(), flags=re.M))
    alembic_cli("revision", "--rev-id", "root", "-m", "root")
    alembic_cli("revision", "--rev-id", "left", "-m", "left", "--head", "root", "--splice")
    alembic_cli("revision", "--rev-id", "right", "-m", "right", "--head", "root", "--splice")
    alembic_cli("upgrade", "heads")

    engine = create_engine(url)
    with engine.connect() as conn:
        state = read_state(conn, "alembic", "alembic", tmp_path)
    assert [m.name for m in state.applied] == ["root", "left", "right"]   # two heads in alembic_version

    alembic_cli("merge", "heads", "--rev-id", "merged", "-m", "merge")
    alembic_cli("upgrade", "head")
    with engine.connect() as conn:
        state = read_state(conn, "auto", None, tmp_path)
    engine.dispose()
    assert [m.name for m in state.applied] == ["root", "left", "right", "merged"]
    assert state.schema_revision == "merged"
    assert [m.name for m in alembic.on_disk(tmp_path / "alembic")] == ["root", "left", "right", "merged"]


@pytest.mark.parametrize("down", ["None", '"0001"', '("a", "b")', "['a', 'b']"])
def test_revision_files_are_parsed_not_imported(tmp_path: Path, down: str) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "x.py").write_text(
        "import not_installed_anywhere\n"   # importing the file would fail
        f"revision: str = 'x'\ndown_revision: str | None = {down}\nraise SystemExit('never run')\n"
    )
    assert [m.name for m in alembic.on_disk(tmp_path)] == ["x"]
