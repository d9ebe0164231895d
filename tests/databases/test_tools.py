"""The shared plumbing engines run their client programs through (relstep/databases/tools.py)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from relstep.databases import registry, tools
from relstep.databases.base import DatabaseError


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_failing_caller_kills_the_tools_whole_process_group(tmp_path: Path) -> None:
    """Like pg_dump -j's workers: a child of the tool must die with it, not keep writing."""
    script = "sleep 600 & echo $!; wait"
    with pytest.raises(KeyboardInterrupt):  # the tool must be running when the caller fails
        with tools.owned(tools.popen(["sh", "-c", script], text=True)) as proc:
            assert proc.stdout is not None
            worker = int(proc.stdout.readline())  # the worker exists once its pid is printed
            assert _alive(worker)
            raise KeyboardInterrupt
    assert proc.returncode is not None and not _alive(proc.pid)
    assert not _alive(worker)


def test_tools_run_under_umask_077_and_in_their_own_session(tmp_path: Path) -> None:
    out = tmp_path / "made-by-the-tool"
    done = tools.run(["sh", "-c", f"touch {out}; ps -o sid= -p $$"])
    assert done.returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert int(done.stdout) != os.getsid(0)


def test_a_missing_tool_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (pg_dump,) = registry.ENGINES["postgres"].dump_tools
    (mysql_dump,) = registry.ENGINES["mysql"].dump_tools
    with pytest.raises(DatabaseError, match=r"^pg_dump not found on PATH; install the PostgreSQL client$"):
        pg_dump.require()
    with pytest.raises(DatabaseError, match=r"^mariadb-dump not found on PATH; install the MariaDB client"):
        mysql_dump.require()
    assert tools.versions([pg_dump, mysql_dump]) == {"pg_dump": "missing", "mariadb-dump": "missing"}
    with pytest.raises(DatabaseError, match=r"^cannot start nowhere-to-be-found: No such file or directory$"):
        tools.popen(["nowhere-to-be-found"])


def test_a_tool_name_found_second_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stand_in = tmp_path / "mysqldump"
    stand_in.write_text("#!/bin/sh\necho 'mysqldump  Ver 10.19 Distrib 10.11.6-MariaDB'\n")
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    (mysql_dump,) = registry.ENGINES["mysql"].dump_tools
    assert mysql_dump.require() == str(stand_in)
    assert tools.versions([mysql_dump]) == {"mysqldump": "mysqldump Ver 10.19 Distrib 10.11.6-MariaDB"}


def test_the_reason_is_the_tools_last_error_line() -> None:
    stderr = ("pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\n"
              "Command was: CREATE TABLE t (id int);\n"
              "pg_restore: error: a worker process died unexpectedly\n")
    line = tools.error_line(stderr, errors=re.compile(r"\berror:"), noise=re.compile("worker process died"),
                            prefix=re.compile(r"^pg_\w+: (error: )?"))
    assert line == 'could not execute query: ERROR: relation "t" already exists'
    assert tools.error_line("") == "exited without a message"
    assert tools.error_line("first\n  last   words \n") == "last words"


def test_version_has_one_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    wedged = tmp_path / "wedged"
    wedged.write_text("#!/bin/sh\nexec sleep 600\n")
    wedged.chmod(0o755)
    monkeypatch.setattr(tools, "VERSION_TIMEOUT", 0.5)
    assert tools.tool_version(str(wedged)).startswith("unknown (Command ")
