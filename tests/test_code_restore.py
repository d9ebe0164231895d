"""``restore --code-to DIR``: DIR becomes exactly the snapshot's code, swapped in whole, the old DIR kept.

A Capistrano-style release folder is the hard case: ``config/database.json`` is a
symlink to a shared secret outside it.  Before, the restore wrote the snapshot's
file through that symlink (the secret was overwritten and left 0644) and kept the
release's other files, mixing two releases.  These tests run the real CLI and check
the exact resulting tree with its modes, the untouched shared file, the kept tree
and the printed command that puts it back.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from relstep.capture import code_restore
from tests.helpers import relstep, sqlite_app

SECRET = b'{"password": "prod-only-secret-6262"}\n'


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root: folders and files with their exact modes, symlinks with their targets."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
    return found


def as_restored(source: Path) -> dict[str, tuple]:
    """What a restore of ``source`` must give: its bytes, links and folders; 0755/0644/0755 modes."""
    expected = {}
    for rel, entry in tree(source).items():
        if entry[0] == "file":
            expected[rel] = ("file", entry[1], 0o755 if entry[2] & stat.S_IXUSR else 0o644)
        elif entry[0] == "dir":
            expected[rel] = ("dir", 0o755)
        else:
            expected[rel] = entry
    return expected


@pytest.fixture
def deploy(tmp_path: Path) -> tuple[Path, Path]:
    """An app with a snapshot of release 1.0.0, and a live release folder of another release."""
    app = sqlite_app(tmp_path, with_git=False)
    config = app / "backend" / "config"
    config.mkdir()
    (config / "database.json").write_text('{"password": "dev"}\n')   # the repository's dev default
    (config / "secrets.json").symlink_to("../../../shared/config/database.json")   # in a release: the shared one
    (app / "backend" / "bin").mkdir()
    (app / "backend" / "bin" / "start").write_text("#!/bin/sh\nexec node src/index.js\n")
    (app / "backend" / "bin" / "start").chmod(0o755)
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err

    shared = tmp_path / "deploy" / "shared" / "config" / "database.json"
    shared.parent.mkdir(parents=True)
    shared.write_bytes(SECRET)
    shared.chmod(0o600)
    live = tmp_path / "deploy" / "release"
    (live / "backend" / "config").mkdir(parents=True)
    (live / "backend" / "config" / "database.json").symlink_to("../../../shared/config/database.json")
    (live / "backend" / "stale.js").write_text("from another release\n")
    (live / "backend" / "src").mkdir()
    (live / "backend" / "src" / "index.js").write_text("// release 0.9\n")
    (live / "frontend").mkdir()
    (live / "frontend" / "old.html").write_text("<p>0.9</p>\n")
    live.chmod(0o750)
    return app, live


def restore_code(app: Path, folder: Path, *extra: str):
    target = folder.parent.parent / "restored.db"   # outside deploy/, whose listing the tests compare
    return relstep("restore", "1.0.0", "--database-url", f"sqlite:///{target}", "--code-to", str(folder), *extra,
                   cwd=app)


def test_code_to_swaps_in_exactly_the_snapshot_and_keeps_the_old_tree(deploy: tuple[Path, Path]) -> None:
    app, live = deploy
    shared = live.parent / "shared" / "config" / "database.json"
    before, shared_before = tree(live), shared.stat()

    ran = restore_code(app, live, "--yes")

    assert ran.code == 0, ran.err
    # The shared secret was never written, nor its mode changed.
    assert shared.read_bytes() == SECRET
    assert (shared.stat().st_ino, stat.S_IMODE(shared.stat().st_mode), shared.stat().st_mtime_ns) == (
        shared_before.st_ino, 0o600, shared_before.st_mtime_ns)
    expected = {f"backend/{rel}": e for rel, e in as_restored(app / "backend").items()}
    expected |= {f"frontend/{rel}": e for rel, e in as_restored(app / "frontend").items()}
    expected |= {"backend": ("dir", 0o755), "frontend": ("dir", 0o755)}
    assert tree(live) == expected
    assert expected["backend/config/database.json"][0] == "file" and "backend/stale.js" not in expected
    assert stat.S_IMODE(live.stat().st_mode) == 0o750        # the folder keeps its permissions

    said = re.search(r"^the previous (\S+) is kept as (\S+); to put it back: (.+)$", ran.out, re.M)
    assert said is not None, ran.out
    assert said[1] == str(live)
    kept = Path(said[2])
    assert kept.parent == live.parent and kept.name.startswith("release.before-restore-")
    assert tree(kept) == before
    assert sorted(p.name for p in live.parent.iterdir()) == sorted(["release", kept.name, "shared"])
    assert f"once the app works, delete the previous code {kept} (until then, the command above puts it back)" \
        in ran.out

    subprocess.run(said[3], shell=True, check=True)  # noqa: S602 - the command relstep printed, as a person runs it
    assert tree(live) == before
    assert tree(live.with_name(kept.name.replace("before-restore", "restored"))) == expected
    assert shared.read_bytes() == SECRET


def test_a_release_symlink_as_code_to_is_moved_aside_never_written_through(deploy: tuple[Path, Path]) -> None:
    """``--code-to current`` where ``current -> release``: current becomes the restored folder."""
    app, live = deploy
    current = live.with_name("current")
    current.symlink_to("release")
    before = tree(live)

    refused = restore_code(app, current)
    assert refused.code == 2 and "is a symlink; pass --yes" in refused.last_err, refused.err
    ran = restore_code(app, current, "--yes")

    assert ran.code == 0, ran.err
    assert not current.is_symlink() and sorted(p.name for p in current.iterdir()) == ["backend", "frontend"]
    assert tree(live) == before
    [kept] = live.parent.glob("current.before-restore-*")
    assert os.readlink(kept) == "release"


def test_a_failure_while_building_leaves_code_to_unchanged(deploy: tuple[Path, Path]) -> None:
    """A snapshot whose code cannot be written out (a symlink in a folder it does not have): exit 9, DIR as it was."""
    app, live = deploy
    [snap] = [p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith(".")]
    data = json.loads((snap / "MANIFEST.json").read_text())
    data["code"]["frontend"]["symlinks"]["no/such/folder/link"] = "x"
    (snap / "MANIFEST.json").write_text(json.dumps(data))
    before = tree(live.parent)

    ran = restore_code(app, live, "--yes")

    assert ran.code == 9, ran.err
    assert f"the code could not be built beside {live} and swapped in" in ran.last_err
    assert f"{live} is unchanged" in ran.last_err
    assert tree(live.parent) == before       # nothing beside it either: the half-built folder is gone


def test_build_tree_refuses_an_existing_target(tmp_path: Path, deploy: tuple[Path, Path]) -> None:
    """The tree is always built new: an existing folder is never written into."""
    app, live = deploy
    [snap] = [p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith(".")]
    summary = json.loads((snap / "MANIFEST.json").read_text())["code"]["backend"]
    with pytest.raises(FileExistsError):
        code_restore.build_tree(snap, "backend", summary, live / "backend")
    assert (live / "backend" / "stale.js").read_text() == "from another release\n"


@pytest.mark.parametrize(("field", "value"), [
    ("raw_names", {"x": "Li4="}),                      # the original name would be ".."
    ("raw_names", {"x": "YS9i"}),                      # "a/b": two components
    ("raw_names", {"x": "not base64!"}),
    ("raw_names", {"../x": "eA=="}),
    ("symlinks", {"config/link": "a\0b"}),
    ("symlinks", {"../../outside": "x"}),
    ("raw_link_targets", {"l": "YQBi"}),              # a NUL byte in the target
    ("symlinks", {"dir": "/etc", "dir/inside": "x"}),  # a link created through another link
    ("executables", ["/usr/bin/x"]),
])
def test_unsafe_code_entries_are_found(field: str, value: object) -> None:
    summary = {"symlinks": {}, "executables": [], "raw_names": {}, "raw_link_targets": {}, field: value}
    assert code_restore.problems("backend", summary) is not None
    assert code_restore.problems("backend", {**summary, field: type(value)()}) is None


def test_an_unsafe_code_entry_is_refused_before_anything_changes(deploy: tuple[Path, Path]) -> None:
    app, live = deploy
    [snap] = [p for p in (app / "backups" / "releases").iterdir() if not p.name.startswith(".")]
    data = json.loads((snap / "MANIFEST.json").read_text())
    data["code"]["backend"]["raw_names"] = {"src": "Li4="}   # would restore src as ".."
    (snap / "MANIFEST.json").write_text(json.dumps(data))
    before = tree(live.parent)

    ran = restore_code(app, live, "--yes")

    assert ran.code == 8, ran.err
    assert ran.last_err.endswith("lists unsafe code paths for 'backend' (it lists a name that is not one path "
                                 "component); run `relstep verify`"), ran.err
    assert tree(live.parent) == before and not (live.parent.parent / "restored.db").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")
def test_run_as_root_the_new_tree_belongs_to_the_old_folders_owner(deploy: tuple[Path, Path]) -> None:
    app, live = deploy
    os.chown(live, 1234, 2345)
    shared = live.parent / "shared" / "config" / "database.json"

    ran = restore_code(app, live, "--yes")

    assert ran.code == 0, ran.err
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [live, *live.rglob("*")]}
    assert owners == {(1234, 2345)}
    assert (live / "backend" / "config" / "secrets.json").resolve() == shared.resolve()
    assert (shared.stat().st_uid, shared.stat().st_gid) == (0, 0)   # a link's target is never changed

