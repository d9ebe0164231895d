"""Snapshot lifecycle: create atomically, read, list, prune; and the per-root lock.

A snapshot is a directory ``<backup_root>/<UTC timestamp>`` (``20261124T010423Z``,
with ``-2``, ``-3``... when two are made in one second) holding ``MANIFEST.json``.
It is built under ``<backup_root>/.<name>.partial`` and renamed into place only
when complete and flushed, so a crash leaves no directory that looks finished.
Its mtime is set to its creation time, which its manifest records too
(``created_at``); retention orders by the manifest's, so a ``touch`` changes nothing.  Everything whose name starts with
a dot is relstep's bookkeeping (partials, the lock) and is never listed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import codec, fsutil
from relstep.errors import BackupError, ConfigError, InputError, LockTimeout, ManifestError
from relstep.manifest import FILENAME as MANIFEST
from relstep.manifest import FileEntry, Manifest

NAME_FORMAT = "%Y%m%dT%H%M%SZ"
SNAPSHOT_NAME = re.compile(r"^\d{8}T\d{6}Z(?:-\d+)?$")
PARTIAL_SUFFIX = ".partial"
LOCK_NAME = ".relstep.lock"


@dataclass(frozen=True)
class Snapshot:
    """A finished snapshot as listed: its manifest read once, or why it could not be."""

    path: Path
    created: float                      # the creation time relstep recorded (see created_time)
    loaded: Manifest | None = None
    problem: ManifestError | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def project(self) -> str | None:
        return self.loaded.project if self.loaded else None

    def manifest(self) -> Manifest:
        if self.loaded is None:
            raise self.problem or ManifestError(f"{self.path / MANIFEST} was not read")
        return self.loaded


def name_time(name: str) -> float | None:
    """The creation time a snapshot's name spells (``20261124T010423Z-2``), or None."""
    try:
        stamp = datetime.strptime(name.split("-", 1)[0], NAME_FORMAT)
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def created_time(name: str, manifest: Manifest | None) -> float:
    """What retention orders by: the manifest's ``created_at``, else the name's timestamp.

    Both are written by relstep when the snapshot is made; the folder's mtime (set to the
    same instant) is not used, so a ``touch`` cannot change what is pruned.
    """
    created = manifest.created if manifest is not None else None
    if created is not None:
        return created.timestamp()
    return name_time(name) or 0.0


def read(path: Path) -> Snapshot:
    """A finished snapshot folder with its manifest read (or the reason it cannot be)."""
    try:
        loaded: Manifest | None = Manifest.load(path)
        problem = None
    except ManifestError as exc:
        loaded, problem = None, exc
    except InputError as exc:   # the manifest vanished meanwhile (a concurrent prune)
        loaded, problem = None, ManifestError(exc.message)
    return Snapshot(path, created_time(path.name, loaded), loaded, problem)


def ensure_root(root: Path) -> None:
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        kind = "a symlink" if root.is_symlink() else "a file"
        raise ConfigError(f"backup_root {root} is {kind}, not a directory; point backup_root at a directory")
    # mkdir -p gives missing parents the caller's umask: 0777 under umask 000, where anyone could
    # move backup_root aside and put a folder of their own in its place.  They are private too.
    previous_umask = os.umask(0o077)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=fsutil.PRIVATE_DIR)
    except OSError as exc:
        raise ConfigError(f"cannot create backup_root {root}: {exc.strerror}") from exc
    finally:
        os.umask(previous_umask)


def is_finished_snapshot(entry: os.DirEntry[str] | Path) -> bool:
    """A real (not symlinked) directory named like a snapshot, holding a regular MANIFEST.json.

    The name matters: someone's own folder that happens to hold a MANIFEST.json (another tool's)
    would otherwise count towards retention, or be pruned.
    """
    path = Path(entry)
    if not SNAPSHOT_NAME.match(path.name) or path.is_symlink() or not path.is_dir():
        return False
    manifest = path / MANIFEST
    return manifest.is_file() and not manifest.is_symlink()


def list_snapshots(root: Path) -> list[Snapshot]:
    """Finished snapshots of every project, newest first (recorded creation time, then name)."""
    if not root.is_dir():
        return []
    found = []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            if is_finished_snapshot(Path(entry.path)):
                found.append(read(Path(entry.path)))
    return newest_first(found)


def newest_first(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    """The order retention counts in: recorded creation time, then name."""
    return sorted(snapshots, key=lambda s: (s.created, s.name), reverse=True)


def resolve_snapshot(root: Path, ref: str) -> Path:
    """A snapshot name, or a path that must lie directly inside ``root``; anything else is refused."""
    candidate = Path(ref) if ("/" in ref or os.sep in ref) else root / ref
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InputError(f"no snapshot {ref!r} in {root}; run `relstep list` to see the snapshots") from None
    if resolved.parent != root.resolve() or not is_finished_snapshot(resolved):
        raise InputError(f"{ref!r} is not a finished snapshot inside {root}; run `relstep list` to see the snapshots")
    return resolved


# --- creation -----------------------------------------------------------------------------------


def _free_name(root: Path, now: datetime) -> str:
    base = now.astimezone(timezone.utc).strftime(NAME_FORMAT)
    name, n = base, 1
    while (root / name).exists() or (root / f".{name}{PARTIAL_SUFFIX}").exists():
        n += 1
        name = f"{base}-{n}"
    return name


class Building:
    """A snapshot under construction: write into ``.path``; ``finish`` publishes it."""

    def __init__(self, root: Path, name: str, created: datetime) -> None:
        self.root = root
        self.name = name
        self.created = created
        self.path = root / f".{name}{PARTIAL_SUFFIX}"
        self.final_path = root / name
        # {relative path: manifest entry} of the files written through write_text (the codec's hashes)
        self.hashes: dict[str, dict[str, Any]] = {}

    def write_text(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=fsutil.PRIVATE_DIR)
        self.hashes[relative] = codec.write_bytes(target, text.encode("utf-8")).entry()
        return target

    def write_json(self, relative: str, data: Any) -> Path:
        return self.write_text(relative, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")

    def finish(self, manifest: Manifest, private: tuple[str, ...] = ()) -> Path:
        """Publish the snapshot.  ``private``: top-level folders whose writer already made
        every entry 0700/0600 (code capture does), so their thousands of inodes are not
        chmod-ed, and dirtied for the flush below, a second time."""
        fsutil.privatize_tree(self.path, skip=private)
        self.write_text(MANIFEST, manifest.to_json())
        fsutil.sync_filesystem_of(self.path)
        fsutil.fsync_dir(self.path)
        os.replace(self.path, self.final_path)
        stamp = self.created.timestamp()
        os.utime(self.final_path, (stamp, stamp))
        fsutil.fsync_dir(self.root)
        return self.final_path


@contextmanager
def building(root: Path, now: datetime | None = None) -> Iterator[Building]:
    """Create a partial snapshot; remove it on any failure (including KeyboardInterrupt)."""
    created = now or datetime.now(timezone.utc)
    name = _free_name(root, created)
    build = Building(root, name, created)
    fsutil.make_private_dir(build.path)
    try:
        yield build
    except BaseException:
        shutil.rmtree(build.path, ignore_errors=True)
        raise
    if build.path.exists():
        shutil.rmtree(build.path, ignore_errors=True)
        raise BackupError("internal error: the snapshot was built but never finished")


def manifest_files(snapshot_dir: Path, known: dict[str, FileEntry] | None = None) -> dict[str, FileEntry]:
    """``{relative path: {"size", "sha256"}}`` for every file except the manifest, sorted by path.

    ``known`` carries hashes computed while the file was written (code capture),
    so they are not read twice.  The others (the dump's files) are hashed two at a
    time: hashlib releases the GIL on large buffers, so two threads use two cores.
    """
    known = known or {}
    root = str(snapshot_dir)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = dirpath[len(root) + 1:]
        found += [f"{base}/{name}" if base else name for name in sorted(filenames)]
    unknown = [rel for rel in found if rel not in known and rel != MANIFEST]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="relstep-hash") as pool:
        digests = dict(zip(unknown, pool.map(lambda rel: fsutil.sha256_file(f"{root}/{rel}"), unknown), strict=True))
    files: dict[str, FileEntry] = {}
    for rel in found:
        if rel in known:
            files[rel] = known[rel]
        elif rel in digests:
            size, digest = digests[rel]
            files[rel] = FileEntry(size=size, sha256=digest)
    return files


# --- removal ------------------------------------------------------------------------------------


def leftover_partials(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir()
        if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX) and p.is_dir() and not p.is_symlink()
    )


def remove_partials(root: Path) -> list[Path]:
    """Remove half-built snapshots of killed runs.  Call only while holding the root lock."""
    removed = leftover_partials(root)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def beyond_retention(
    snapshots: Iterable[Snapshot], keep: int, is_protected: Callable[[Snapshot], bool] = lambda s: False
) -> list[Snapshot]:
    """The retention rule, for local and off-site copies alike.

    ``snapshots`` are one project's (see relstep.lookup.scoped).  Newest first by
    recorded creation time, then name; everything after the first ``keep`` goes,
    except protected snapshots.
    """
    if keep < 1:
        raise InputError(f"retention must be at least 1, got {keep}")
    return [s for s in newest_first(snapshots)[keep:] if not is_protected(s)]


def to_prune(snapshots: Iterable[Snapshot], keep: int, protect: set[Path] | None = None) -> list[Snapshot]:
    """``snapshots`` beyond the newest ``keep``, minus protected ones."""
    protected = {p.resolve() for p in (protect or set())}
    return beyond_retention(snapshots, keep, lambda s: s.path.resolve() in protected)


def remove_snapshot(snapshot: Snapshot) -> None:
    # Rename first, so a crash mid-delete leaves a dot-name that is cleaned later
    # instead of a directory that still looks like a (now incomplete) snapshot.
    doomed = snapshot.path.parent / f".{snapshot.name}.deleting{PARTIAL_SUFFIX}"
    os.replace(snapshot.path, doomed)
    shutil.rmtree(doomed)


# --- locking ------------------------------------------------------------------------------------


@contextmanager
def root_lock(root: Path, timeout: float, poll: float = 0.2) -> Iterator[None]:
    """One run at a time per backup_root.

    flock(2) is released by the kernel when its holder dies, so a kill -9 never
    leaves a stale lock behind; the lock file itself may stay and is harmless.
    """
    ensure_root(root)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, fsutil.PRIVATE_FILE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"another relstep run has held the lock on {root} for {timeout:g} s; "
                        "wait for it to finish or raise --lock-timeout"
                    ) from None
                time.sleep(poll)
        yield
    finally:
        os.close(fd)
