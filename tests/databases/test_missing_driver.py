"""Without its Python driver (``pip install relstep`` lacking ``[postgres]``/``[mysql]``), every command
that needs the database says which extra to install, in one line, with its documented exit code.

The driver is really absent for the relstep subprocess: a ``sitecustomize`` on its PYTHONPATH puts
a meta-path finder first that refuses to import the named modules.  ``import psycopg`` then raises
the same ``ModuleNotFoundError`` that a missing install raises; nothing in relstep is patched.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps import make_app
from tests.helpers import clean_env, relstep, write_config

REFUSER = '''
import importlib.abc
import os
import sys

REFUSED = set(os.environ.get("TEST_REFUSE_MODULES", "").split(","))


class Refuse(importlib.abc.MetaPathFinder):
    """What a missing install looks like to Python: no finder knows the module."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Refuse())
'''

PG_LINE = ("PostgreSQL support is not installed; pip install 'relstep[postgres]' "
           "(the Action: extras: postgres)")
MY_LINE = "MariaDB/MySQL support is not installed; pip install 'relstep[mysql]' (the Action: extras: mysql)"


def _without(tmp_path: Path, module: str) -> dict[str, str]:
    site = tmp_path / "no-driver-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(REFUSER)
    env = clean_env(TEST_REFUSE_MODULES=module, RELSTEP_VERSION="1.0.0")
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    return env


def _snapshots(app: Path) -> list[str]:
    root = app / "backups" / "releases"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _one_line(ran_err: str) -> str:
    assert "Traceback" not in ran_err, ran_err
    lines = [line for line in ran_err.splitlines() if line.strip()]
    return lines[-1]


def test_the_refuser_really_hides_the_driver(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import psycopg"], env=_without(tmp_path, "psycopg"),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "ModuleNotFoundError: No module named 'psycopg'" in done.stderr


@pytest.mark.parametrize("engine,module,line", [("postgres", "psycopg", PG_LINE), ("mysql", "pymysql", MY_LINE)])
def test_backup_and_run_name_the_extra_and_write_nothing(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str, module: str, line: str
) -> None:
    app, _url = make_app(tmp_path, request, engine)
    env = _without(tmp_path, module)
    ran = relstep("backup", cwd=app, env=env)
    assert (ran.code, _one_line(ran.err)) == (2, f"relstep: backup failed: {line}")
    marker = app / "deployed"
    ran = relstep("run", "--", "touch", str(marker), cwd=app, env=env)
    assert (ran.code, _one_line(ran.err)) == (2, f"relstep: backup failed: {line}")
    assert _snapshots(app) == [] and not marker.exists()


def test_restore_verify_record_and_doctor_name_the_extra(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _url = make_app(tmp_path, request, "postgres")
    taken = relstep("backup", cwd=app, env=clean_env(RELSTEP_VERSION="1.0.0"))  # with the driver
    assert taken.code == 0, taken.err
    (snapshot,) = _snapshots(app)
    env = _without(tmp_path, "psycopg")

    for args in (("restore", "1.0.0", "--check-only"), ("restore", "1.0.0", "--yes")):
        ran = relstep(*args, cwd=app, env=env)
        assert (ran.code, _one_line(ran.err)) == (2, f"relstep: restore failed: {PG_LINE}"), args
    ran = relstep("verify", "--restore-test", cwd=app, env=env)
    assert (ran.code, _one_line(ran.err)) == (2, f"relstep: verify failed: {PG_LINE}")
    # Reading the dump's files needs no driver: a plain verify still passes.
    assert relstep("verify", cwd=app, env=env).code == 0
    # record comes after the deploy: the snapshot is kept, so its own exit code (5, re-run record).
    ran = relstep("record", cwd=app, env=env)
    assert (ran.code, _one_line(ran.err)) == (5, f"relstep: record failed: {PG_LINE}")
    ran = relstep("doctor", cwd=app, env=env)
    assert ran.code == 1 and "Traceback" not in ran.out + ran.err
    (database_line,) = [row for row in ran.out.splitlines() if row.startswith("FAIL  database main")]
    assert database_line == f"FAIL  database main            {PG_LINE}"
    assert _snapshots(app) == [snapshot]


def test_sqlite_needs_no_driver(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Refusing both server drivers leaves SQLite, which is in the standard library, working."""
    app, url = make_app(tmp_path, request, "sqlite")
    write_config(app, {"database": {"url": url}})
    ran = relstep("backup", cwd=app, env=_without(tmp_path, "psycopg,pymysql"))
    assert ran.code == 0, ran.err
    assert len(_snapshots(app)) == 1


def test_the_action_learns_the_extras_from_the_config(tmp_path: Path) -> None:
    """What action.yml runs when its `extras` input is empty: the extras the configured URLs need."""
    import subprocess
    import sys

    write_config(tmp_path, {"databases": [{"name": "app", "url": "postgresql://u@db/app"},
                                          {"name": "files", "url": "sqlite:///files.db"}],
                            "record": {"url": "mysql://u@db/records"}})

    def extras(**env: str) -> str:
        done = subprocess.run([sys.executable, "-m", "relstep.databases.extras"], cwd=tmp_path,
                              env=clean_env(**env), capture_output=True, text=True, check=True)
        return done.stdout

    assert extras() == "mysql,postgres\n"
    (tmp_path / "sqlite-only.yml").write_text("database:\n  url: sqlite:///app.db\n")
    assert extras(RELSTEP_CONFIG="sqlite-only.yml") == "\n"
    assert extras(RELSTEP_CONFIG="missing.yml") == ""  # relstep's next command reports the config error
