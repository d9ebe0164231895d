"""Two apps with one backup_root: each acts only on its own snapshots, and says which it left alone.

The apps are the bundled SQLite example, twice, each a git repository whose
``origin`` gives its project identity; the commands run through the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from relstep.identity import remote_identity
from tests.helpers import Ran, git, relstep, sqlite_app

SHOP, BLOG = "github.com/acme/shop", "gitlab.example.com/acme/blog"


def run(app: Path, *args: str) -> Ran:
    return relstep(*args, cwd=app, input="")


def backup(app: Path, version: str) -> Path:
    ran = run(app, "backup", "--version", version)
    assert ran.code == 0, ran.err
    return Path(ran.out.strip())


def app_sharing(tmp_path: Path, folder: str, root: Path, origin: str) -> Path:
    app = sqlite_app(tmp_path / folder)
    config = yaml.safe_load((app / "relstep.yml").read_text())
    config["backup_root"] = str(root)
    (app / "relstep.yml").write_text(yaml.safe_dump(config))
    git("remote", "add", "origin", origin, cwd=app)
    return app


def manifest(snap: Path) -> dict:
    return json.loads((snap / "MANIFEST.json").read_text())


def rewrite(snap: Path, data: dict) -> None:
    (snap / "MANIFEST.json").write_text(json.dumps(data, indent=2))


@pytest.fixture
def apps(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "shared" / "releases"
    # Both folders are named "app": the identity must come from the remote, credentials left out.
    shop = app_sharing(tmp_path, "one", root, "https://deploy:glpat-Secret123@github.com/acme/shop.git")
    blog = app_sharing(tmp_path, "two", root, "git@gitlab.example.com:acme/blog.git")
    return shop, blog, root


def test_each_app_acts_only_on_its_own_snapshots(apps: tuple[Path, Path, Path]) -> None:
    shop, blog, root = apps
    a1 = backup(shop, "2.0.3")
    b1 = backup(blog, "2.0.3")
    b2 = backup(blog, "2.0.4")
    assert [manifest(p)["project"] for p in (a1, b1, b2)] == [SHOP, BLOG, BLOG]
    assert "glpat-Secret123" not in (a1 / "MANIFEST.json").read_text()

    # restore 2.0.3 in the shop finds the shop's snapshot, though the blog's 2.0.3 is newer.
    check = run(shop, "restore", "2.0.3", "--check-only")
    assert check.code == 0, check.err
    assert check.out.splitlines()[0].startswith(f"snapshot:   {a1} (2.0.3, patch, ")
    # ... and refuses the blog's by name, changing nothing.
    refused = run(shop, "restore", b1.name, "--yes")
    assert (refused.code, refused.last_err) == (2, (
        f"relstep: input failed: {b1.name} belongs to project {BLOG!r}, not to this app ({SHOP!r}); nothing was "
        f"done (if both are the same app, set project: {BLOG} in {shop / 'relstep.yml'})"))
    assert not (root.parent / "pre-restore").exists()

    listed = run(shop, "list", "--json")
    assert [(r["name"], r["project"]) for r in json.loads(listed.out)] == [(a1.name, SHOP)]
    table = run(shop, "list").out.splitlines()
    assert table[-1] == f"skipped 2 snapshot(s) of other projects: {b2.name} ({BLOG}), {b1.name} ({BLOG})"

    verified = run(shop, "verify", "--all", "--json")
    assert verified.code == 0, verified.err
    report = json.loads(verified.out)
    assert [s["name"] for s in report["snapshots"]] == [a1.name]
    assert report["notes"] == [f"skipped 2 snapshot(s) of other projects: {b2.name} ({BLOG}), {b1.name} ({BLOG})"]

    # Someone touches the blog's older snapshot: retention goes by the recorded creation time.
    later = time.time() + 3600
    os.utime(b1, (later, later))
    pruned = run(blog, "prune", "--keep", "1")
    assert pruned.code == 0, pruned.err
    assert pruned.out.splitlines() == [
        f"removed {b1}", "kept 1 snapshot(s) (retention 1)",
        f"skipped 1 snapshot(s) of other projects: {a1.name} ({SHOP})"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted([a1.name, b2.name])

    # The shop's own prune leaves the blog's snapshot alone too.
    a2 = backup(shop, "2.0.4")
    pruned = run(shop, "prune", "--keep", "1")
    assert pruned.code == 0, pruned.err
    assert pruned.out.splitlines() == [
        f"removed {a1}", "kept 1 snapshot(s) (retention 1)",
        f"skipped 1 snapshot(s) of other projects: {b2.name} ({BLOG})"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted([a2.name, b2.name])


def test_a_snapshot_that_records_no_project_is_never_pruned_automatically(apps: tuple[Path, Path, Path]) -> None:
    shop, _blog, _root = apps
    old = backup(shop, "1.0.0")
    data = manifest(old)
    del data["project"]        # as written before snapshots recorded their project
    rewrite(old, data)
    backup(shop, "1.0.1")
    newest = backup(shop, "1.0.2")

    pruned = run(shop, "prune", "--keep", "1")
    assert pruned.code == 0, pruned.err
    assert pruned.out.splitlines()[-1] == (
        f"never pruned automatically: 1 snapshot(s) that record no project (made before relstep recorded one, "
        f"or damaged): {old.name}; remove them by hand when no app needs them")
    assert old.is_dir() and newest.is_dir()
    # By version it is not found (it may be another app's); by name it is this app's to restore.
    by_version = run(shop, "restore", "1.0.0", "--check-only")
    assert by_version.code == 2 and f"left alone: {old.name} (no project recorded; " in by_version.last_err
    assert run(shop, "restore", old.name, "--check-only").code == 0


def test_doctor_reports_a_snapshot_dated_in_the_future(apps: tuple[Path, Path, Path]) -> None:
    shop, _blog, root = apps
    snap = backup(shop, "1.0.0")
    future = root / "20991231T000000Z"
    shutil.copytree(snap, future)
    data = manifest(future)
    data["created_at"] = "2099-12-31T00:00:00+00:00"
    rewrite(future, data)
    ran = run(shop, "doctor")
    assert ran.code == 1
    assert [line for line in ran.out.splitlines() if "snapshot times" in line] == [
        f"FAIL  snapshot times           1 snapshot(s) in {root} are dated in the future ({future.name}): the clock "
        "was wrong when they were made; retention keeps them ahead of every new snapshot until that time, so check "
        "the clock and remove them by hand if they are not needed"]


@pytest.mark.parametrize(("url", "identity"), [
    ("https://deploy:tok@github.com/acme/shop.git", "github.com/acme/shop"),
    ("git@github.com:acme/shop.git", "github.com/acme/shop"),
    ("ssh://git@GitHub.com:22/acme/shop/", "github.com/acme/shop"),
    ("/srv/git/shop.git", "srv/git/shop"),
    ("", None),
])
def test_a_remote_becomes_host_and_path_without_credentials(url: str, identity: str | None) -> None:
    assert remote_identity(url) == identity


def test_off_site_pruning_leaves_the_other_apps_copies_alone(tmp_path: Path) -> None:
    root, remote = tmp_path / "shared" / "releases", tmp_path / "remote"
    shop = app_sharing(tmp_path, "one", root, "git@github.com:acme/shop.git")
    blog = app_sharing(tmp_path, "two", root, "git@gitlab.example.com:acme/blog.git")
    for app in (shop, blog):
        config = yaml.safe_load((app / "relstep.yml").read_text())
        config["offsite"] = {"url": f"file://{remote}", "keep": 1}
        (app / "relstep.yml").write_text(yaml.safe_dump(config))
    a1 = backup(shop, "2.0.3")
    assert run(shop, "offsite").code == 0
    b1 = backup(blog, "2.0.3")
    assert run(blog, "offsite").code == 0
    b2 = backup(blog, "2.0.4")
    ran = run(blog, "offsite")
    assert ran.code == 0, ran.err
    summary, removed = ran.out.splitlines()
    assert re.fullmatch(rf"{b2.name} uploaded 10 files \([0-9.]+ KiB\), verified at file://{re.escape(str(remote))}; "
                        r"kept 1, removed 1; left 1 of other projects alone", summary), summary
    assert removed == f"removed off-site {b1.name}"
    assert sorted(p.name for p in remote.iterdir()) == sorted([a1.name, b2.name])
    assert b1.is_dir()                                  # the local copy is local retention's business
    # The shop's off-site lookup by version finds its own copy, never the blog's newer 2.0.3.
    shutil.rmtree(a1)
    ran = run(shop, "verify", "--from-offsite", "2.0.3")
    assert ran.code == 0, ran.err
    assert a1.is_dir() and ran.out.startswith(f"{a1.name}  2.0.3 ")


def test_the_project_key_wins_and_must_be_plain_text(tmp_path: Path) -> None:
    from relstep.config import load_config
    from relstep.errors import ConfigError
    from relstep.identity import project_of

    (tmp_path / "relstep.yml").write_text("project: acme/shop\n")
    assert project_of(load_config(None, environ={}, cwd=tmp_path)) == "acme/shop"
    for bad in ('""', '"a\\nb"', "12"):
        (tmp_path / "relstep.yml").write_text(f"project: {bad}\n")
        with pytest.raises(ConfigError, match=r"relstep\.yml: project: "):
            load_config(None, environ={}, cwd=tmp_path)
    (tmp_path / "relstep.yml").write_text("retention: 3\n")   # no key, no git: the folder's name
    assert project_of(load_config(None, environ={}, cwd=tmp_path)) == tmp_path.name
