"""`relstep doctor` through the real CLI: each check passing and failing for real reasons."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from relstep.doctor import major_version
from tests.helpers import clean_env, relstep, sqlite_app, write_config


def lines(out: str) -> dict[str, str]:
    """{check name: whole line}; names are the second column, up to the detail."""
    found = {}
    for line in out.splitlines():
        status, rest = line.split(None, 1)
        name = rest[:24].strip()
        found[name] = line
        assert status in ("ok", "FAIL"), line
    return found


def test_all_checks_pass_on_the_example(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    ran = relstep("doctor", cwd=app)
    assert ran.code == 0, ran.out + ran.err
    found = lines(ran.out)
    assert list(found) == ["config", "database main", "dump tool main", "backup_root", "retention"]
    assert all(line.startswith("ok ") for line in found.values())
    assert "last snapshot" in found["backup_root"] and "(needs" in found["backup_root"]
    assert found["retention"].endswith("keep 30 (from " + str(app / "relstep.yml") + "); 1 snapshot(s) of project "
                                       "'app' now")


def test_postgres_reachable_with_its_dump_tool(tmp_path: Path, pg_url: str) -> None:
    write_config(tmp_path, {"database": {"url": pg_url}, "code": {}})
    ran = relstep("doctor", cwd=tmp_path, env=clean_env(RELEASE_BACKUP_RETENTION_COUNT="4"))
    assert ran.code == 0, ran.out
    found = lines(ran.out)
    assert "answers (server " in found["database main"]
    assert found["dump tool main"].startswith("ok    dump tool main           pg_dump (PostgreSQL) ")
    assert "keep 4 (from RELEASE_BACKUP_RETENTION_COUNT)" in found["retention"]
    assert "Pw-7f3c9e-never-leak" not in ran.out      # URLs are shown without their password


def test_missing_dump_tool(tmp_path: Path, pg_url: str) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    write_config(tmp_path, {"database": {"url": pg_url}, "code": {}})
    ran = relstep("doctor", cwd=tmp_path, env=clean_env(PATH=str(empty)))
    assert ran.code == 1
    found = lines(ran.out)
    assert found["database main"].startswith("ok ")
    assert found["dump tool main"].startswith("FAIL")
    assert found["dump tool main"].endswith("pg_dump not found on PATH; install the PostgreSQL client")


def test_dump_tool_older_than_the_server(tmp_path: Path, pg_url: str) -> None:
    bin_dir = tmp_path / "old-bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    write_config(tmp_path, {"database": {"url": pg_url}, "code": {}})
    ran = relstep("doctor", cwd=tmp_path, env=clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}"))
    assert ran.code == 1
    line = lines(ran.out)["dump tool main"]
    assert line.startswith("FAIL") and "pg_dump 9 is older than the server (" in line


def test_unreachable_database(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_config(tmp_path, {"databases": [
        {"name": "app", "url": f"postgresql://u:pw-secret-1@127.0.0.1:{port}/app"},
        {"name": "gone", "url": "sqlite:///gone.db"}], "code": {}})
    ran = relstep("doctor", cwd=tmp_path)
    assert ran.code == 1
    found = lines(ran.out)
    assert found["database app"].startswith("FAIL") and "cannot connect to postgresql://u:***@127.0.0.1" in \
        found["database app"]
    assert "pw-secret-1" not in ran.out
    assert found["database gone"].startswith("FAIL") and "does not exist" in found["database gone"]
    assert found["backup_root"].startswith("ok ")


def test_unwritable_backup_root(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    (tmp_path / "a-file").write_text("x")
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "backup_root": str(tmp_path / "a-file" / "bk")})
    ran = relstep("doctor", cwd=app)
    assert ran.code == 1
    assert lines(ran.out)["backup_root"].startswith("FAIL")
    if os.geteuid() != 0:   # root writes through directory permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        write_config(app, {"database": {"url": "sqlite:///app.db"}, "backup_root": str(ro / "bk")})
        ran = relstep("doctor", cwd=app)
        assert ran.code == 1 and "is not writable" in lines(ran.out)["backup_root"]


def test_not_enough_room_for_twice_the_last_snapshot(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    assert relstep("backup", "--version", "1.0.0", cwd=app).code == 0
    (snap,) = [p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith(".")]
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    manifest["files"]["huge.bin"] = {"size": shutil.disk_usage(app).free, "sha256": "0" * 64}
    (snap / "MANIFEST.json").write_text(json.dumps(manifest))
    ran = relstep("doctor", cwd=app)
    assert ran.code == 1
    assert lines(ran.out)["backup_root"].startswith("FAIL  backup_root              not enough room:")


def test_bad_config_is_one_failing_line(tmp_path: Path) -> None:
    (tmp_path / "relstep.yml").write_text("retention: 0\n")
    ran = relstep("doctor", cwd=tmp_path)
    assert ran.code == 1
    assert ran.out.splitlines() == [
        f"FAIL  config                   {tmp_path / 'relstep.yml'}: retention must be a whole number from 1 to "
        "100000, got 0; nothing was deleted"]


def test_offsite_and_notify_lines(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    write_config(app, {"database": {"url": "sqlite:///app.db"},
                       "offsite": {"url": f"file://{tmp_path / 'remote'}", "keep": 3},
                       "notify": {"webhook": "https://hooks.example.com/services/T/B/secret-token"}})
    ran = relstep("doctor", cwd=app)
    assert ran.code == 0, ran.out
    found = lines(ran.out)
    assert "answers (optional); 0 snapshot(s) there" in found["offsite"]
    assert found["notify"].endswith("slack webhook on hooks.example.com, on failure (not sent)")
    assert "secret-token" not in ran.out
    assert "off-site keep 3" in found["retention"]


@pytest.mark.parametrize(("text", "major"), [
    ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", 15),
    ("15.20 (Debian 15.20-0+deb12u1)", 15),
    ("mariadb-dump Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)", 10),
    ("mariadb-dump from 11.4.2-MariaDB, client 10.19 for Linux (x86_64)", 11),
    ("10.11.19-MariaDB-0+deb12u1", 10),
    ("mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)", 8),
])
def test_major_version(text: str, major: int) -> None:
    assert major_version(text) == major
    assert sys.version_info >= (3, 10)


def test_retention_counts_only_this_projects_unpinned_snapshots_and_names_the_others(tmp_path: Path) -> None:
    """A shared backup_root: the line counts this app's snapshots (pins apart) and names the skipped ones."""
    from tests.test_shared_root import BLOG, SHOP, app_sharing, backup

    root = tmp_path / "shared" / "releases"
    shop = app_sharing(tmp_path, "one", root, f"https://{SHOP}.git")
    blog = app_sharing(tmp_path, "two", root, f"https://{BLOG}.git")
    kept, _newer = backup(shop, "1.0.0"), backup(shop, "1.1.0")
    assert relstep("pin", kept.name, cwd=shop).code == 0
    theirs = [backup(blog, "7.0.0"), backup(blog, "7.1.0"), backup(blog, "7.2.0")]
    ran = relstep("doctor", cwd=shop)
    assert ran.code == 0, ran.out + ran.err
    others = ", ".join(f"{snap.name} ({BLOG})" for snap in reversed(theirs))
    assert lines(ran.out)["retention"] == (
        f"ok    retention                keep 30 (from {shop / 'relstep.yml'}); 1 snapshot(s) of project {SHOP!r} "
        f"now, plus 1 pinned; skipped 3 snapshot(s) of other projects: {others}")
