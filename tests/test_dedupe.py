"""Sharing code files between snapshots (hard links) must never change what a snapshot restores.

The shortcut: a code file whose content is already in the previous snapshot becomes a
second name for that snapshot's copy.  These tests hold it to the promise that every
snapshot is still complete on its own: after its predecessors are pruned, a snapshot
restores a tree identical to the source (bytes, executable bits, symlinks, folders),
and a predecessor copy that no longer holds its recorded bytes is never shared.
"""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest

from relstep.capture import code as code_capture
from relstep.capture import code_restore
from relstep.fsutil import CHUNK, sha256_file
from tests.helpers import relstep, sqlite_app

EXCLUDE = ("node_modules", "*.log", ".env", ".env.*")


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return sqlite_app(tmp_path)


def write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def populate(backend: Path) -> None:
    """Every kind of entry capture handles, including the multi-chunk read path."""
    rng = random.Random(6)
    write(backend / "src" / "a.js", b"export const a = 1;\n" * 50)
    write(backend / "src" / "copy-of-a.js", b"export const a = 1;\n" * 50)  # same content, other name
    write(backend / "src" / "empty.txt", b"")
    write(backend / "bin" / "start", b"#!/bin/sh\nexec node server.js\n", 0o755)
    write(backend / "assets" / "big.bin", rng.randbytes(CHUNK + CHUNK // 2))  # two chunks
    write(backend / "deep" / "er" / "still" / "file.txt", b"deep\n")
    (backend / "empty-folder").mkdir()
    (backend / "link.js").symlink_to("src/a.js")
    (backend / "current").symlink_to("src")             # a symlink to a folder
    (backend / "dangling").symlink_to("nowhere/at/all")
    write(backend / "node_modules" / "dep" / "index.js", b"excluded\n")
    write(backend / "debug.log", b"excluded\n")


def tree_state(root: Path) -> dict[str, tuple]:
    """What a restore must reproduce: bytes and executable bit, symlink targets, folders."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):  # never walks into a symlinked folder
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not code_capture.is_excluded(rel_dir + d, EXCLUDE)]
        for name in [*dirnames, *filenames]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if code_capture.is_excluded(rel, EXCLUDE):
                continue
            if path.is_symlink():
                state[rel] = ("symlink", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir",)
            else:
                state[rel] = ("file", path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return state


def snapshots(app: Path) -> list[Path]:
    root = app / "backups" / "releases"
    return sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)


def backup(app: Path, version: str) -> Path:
    ran = relstep("backup", "--version", version, cwd=app)
    assert ran.code == 0, ran.err
    return Path(ran.out.strip())


def restored(snap: Path, name: str, target: Path) -> dict[str, tuple]:
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    code_restore.build_tree(snap, name, manifest["code"][name], target)
    return tree_state(target)


def test_restore_after_predecessors_are_pruned_is_identical_to_the_source(app: Path, tmp_path: Path) -> None:
    backend = app / "backend"
    populate(backend)
    first = backup(app, "1.0.0")

    # Release 2: same-size content change (only the hash tells), a changed second chunk,
    # an executable bit flipped on unchanged content, a file removed and one added.
    (backend / "src" / "a.js").write_bytes(b"export const b = 1;\n" * 50)
    big = bytearray((backend / "assets" / "big.bin").read_bytes())
    big[CHUNK + 10] ^= 0xFF
    (backend / "assets" / "big.bin").write_bytes(bytes(big))
    (backend / "bin" / "start").chmod(0o644)
    (backend / "deep" / "er" / "still" / "file.txt").unlink()
    write(backend / "src" / "new.js", b"new\n", 0o755)
    second = backup(app, "1.0.1")

    # Release 3: a.js goes back to its release-1 bytes (in the first snapshot only).
    (backend / "src" / "a.js").write_bytes(b"export const a = 1;\n" * 50)
    third = backup(app, "1.0.2")
    assert snapshots(app) == [first, second, third]

    manifest = json.loads((third / "MANIFEST.json").read_text())
    assert manifest["code"]["backend"]["linked"] >= 5  # the shortcut was really taken
    shared = third / "code" / "backend" / "src" / "empty.txt"
    assert shared.stat().st_ino == (first / "code" / "backend" / "src" / "empty.txt").stat().st_ino
    assert shared.stat().st_nlink == 3

    ran = relstep("prune", "--keep", "1", cwd=app)
    assert ran.code == 0, ran.err
    assert snapshots(app) == [third]
    assert shared.stat().st_nlink == 1  # the other names are gone; the content is not

    for rel, meta in manifest["files"].items():
        assert (meta["size"], meta["sha256"]) == sha256_file(third / rel), rel
    for name in ("backend", "frontend"):
        assert restored(third, name, tmp_path / "restore" / name) == tree_state(app / name), name
    assert tree_state(app / "backend")["bin/start"][2] is False
    assert tree_state(app / "backend")["src/new.js"][2] is True


def capture(source: Path, snap: Path, reuse: dict[str, code_capture.Shared] | None = None) -> tuple[dict, dict]:
    hashes: dict[str, dict] = {}
    summary = code_capture.capture_tree("app", source, snap, EXCLUDE, {}, reuse or {}, hashes)
    return summary.to_json(), hashes


def reuse_index(snap: Path, hashes: dict[str, dict]) -> dict[str, code_capture.Shared]:
    return code_capture.previous_by_hash(snap, hashes)


@pytest.mark.parametrize("damage", ["same-size-bytes", "readable-by-others", "replaced-by-symlink", "removed"])
def test_a_predecessor_copy_that_changed_is_never_shared(tmp_path: Path, damage: str) -> None:
    source = tmp_path / "src"
    populate(source)
    first, second = tmp_path / "s1", tmp_path / "s2"
    first.mkdir()
    second.mkdir()
    _, hashes = capture(source, first)
    for rel in ("code/app/src/a.js", "code/app/assets/big.bin"):
        old = first / rel
        if damage == "same-size-bytes":
            data = bytearray(old.read_bytes())
            data[-1] ^= 0x01
            old.write_bytes(bytes(data))
        elif damage == "readable-by-others":
            old.chmod(0o644)
        elif damage == "replaced-by-symlink":
            old.unlink()
            old.symlink_to(source / rel.removeprefix("code/app/"))
        else:
            old.unlink()

    summary, new_hashes = capture(source, second, reuse_index(first, hashes))

    for rel in ("code/app/src/a.js", "code/app/assets/big.bin"):
        copy = second / rel
        assert copy.read_bytes() == (source / rel.removeprefix("code/app/")).read_bytes()
        assert not copy.is_symlink() and copy.stat().st_nlink == 1, rel
        assert new_hashes[rel] == hashes[rel]
    # copy-of-a.js has a.js's content, and the index offers the damaged a.js for it: copied too.
    assert summary["linked"] == summary["files"] - 3
    assert (second / "code/app/src/copy-of-a.js").read_bytes() == (source / "src/copy-of-a.js").read_bytes()


def test_capture_writes_private_files_whatever_the_umask(tmp_path: Path) -> None:
    source = tmp_path / "src"
    populate(source)
    snap = tmp_path / "snap"
    snap.mkdir()
    previous = os.umask(0o022)
    try:
        _, hashes = capture(source, snap)
    finally:
        os.umask(previous)
    for path in [snap / "code", *(snap / "code").rglob("*")]:
        if path.is_symlink():
            continue
        assert stat.S_IMODE(path.lstat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    for rel, meta in hashes.items():
        assert (meta["size"], meta["sha256"]) == sha256_file(snap / rel), rel


@pytest.mark.parametrize("patterns", [
    ("node_modules", "*.log", ".env", ".env.*"),
    ("build/out", "docs/*.tmp", "*.pyc", "[Tt]mp"),
    ("src", "a*"),
    (),
])
def test_walk_excludes_exactly_what_is_excluded_says(tmp_path: Path, patterns: tuple[str, ...]) -> None:
    """The walk checks only an entry's own name (its folders were checked on the way
    down); it must agree with ``is_excluded`` applied to every full path."""
    source = tmp_path / "src"
    names = ["a.js", "b.log", ".env", ".env.prod", "x.pyc", "Tmp", "tmp", "keep.txt"]
    for folder in ["", "src/", "build/", "build/out/", "docs/", "docs/sub/", "node_modules/", "src/tmp/", "lib/a/"]:
        for name in names:
            if name in ("Tmp", "tmp") and folder == "src/":
                continue  # src/tmp is a folder here
            write(source / f"{folder}{name}", f"{folder}{name}\n".encode())
    expected = set()
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not code_capture.is_excluded(rel_dir + d, patterns)]
        expected |= {rel_dir + f for f in filenames if not code_capture.is_excluded(rel_dir + f, patterns)}

    snap = tmp_path / "snap"
    snap.mkdir()
    hashes: dict[str, dict] = {}
    code_capture.capture_tree("app", source, snap, patterns, {}, {}, hashes)

    assert {rel.removeprefix("code/app/") for rel in hashes} == expected
    assert expected  # the patterns never exclude everything here
