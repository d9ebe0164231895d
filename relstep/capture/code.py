"""Code capture: each configured code folder becomes a plain file tree ``code/<name>/``.

A tree (rather than one archive) lets consecutive snapshots share unchanged
files: a file whose content (SHA-256) already exists in the previous snapshot
is hard-linked to it instead of copied.  A hard link is a second name for the
same bytes, so every snapshot stays self-contained: deleting an older snapshot
only drops a name, never the content a newer one still links.  Snapshot files
are 0600 and never written after the snapshot is finished, which is what makes
sharing their inodes safe.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relstep import fsutil
from relstep.errors import BackupError, ConfigError

CODE_DIR = "code"


@dataclass
class CodeSummary:
    source: str
    files: int = 0
    bytes: int = 0
    linked: int = 0                                   # files shared with the previous snapshot
    symlinks: dict[str, str] = field(default_factory=dict)
    executables: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "files": self.files, "bytes": self.bytes, "linked": self.linked,
            "symlinks": self.symlinks, "executables": sorted(self.executables),
        }


def is_excluded(relative: str, patterns: Iterable[str]) -> bool:
    """gitignore-like: a pattern matches any single path component, or the whole relative path."""
    parts = relative.split("/")
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatchcase(relative, pattern.strip("/")):
                return True
        elif any(fnmatch.fnmatchcase(part, pattern.strip("/")) for part in parts):
            return True
    return False


def check_sources(code: dict[str, Path]) -> None:
    for name, source in code.items():
        if not source.is_dir():
            raise ConfigError(f"code folder {name!r} ({source}) does not exist or is not a directory; fix code.{name}")


def previous_by_hash(previous: Path | None, files: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """sha256 -> a file of the previous snapshot's code tree holding that content."""
    if previous is None:
        return {}
    index: dict[str, Path] = {}
    for rel, meta in files.items():
        if rel.startswith(CODE_DIR + "/") and "sha256" in meta:
            index.setdefault(meta["sha256"], previous / rel)
    return index


def _copy_hashing(source: Path, dest: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, fsutil.PRIVATE_FILE)
    with open(source, "rb", buffering=0) as src, os.fdopen(fd, "wb") as out:
        while chunk := src.read(fsutil.CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _link_or_copy(existing: Path, source: Path, dest: Path) -> bool:
    """Hard-link ``existing`` at ``dest``; True if linked.  Falls back to copying."""
    try:
        os.link(existing, dest)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EACCES):
            raise
    _copy_hashing(source, dest)
    return False


def capture_tree(
    name: str,
    source: Path,
    snapshot_dir: Path,
    exclude: Iterable[str],
    skip_paths: Iterable[Path],
    reuse: dict[str, Path],
    hashes: dict[str, dict[str, Any]],
    on_file: Callable[[int], None] | None = None,
) -> CodeSummary:
    """Copy (or link) ``source`` into ``snapshot_dir/code/<name>``; fill ``hashes`` for the manifest."""
    patterns = list(exclude)
    skip = {p.resolve() for p in skip_paths}
    dest_root = snapshot_dir / CODE_DIR / name
    dest_root.mkdir(parents=True, mode=fsutil.PRIVATE_DIR)
    summary = CodeSummary(source=str(source))
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        rel_dir = here.relative_to(source).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        kept_dirs = []
        for d in sorted(dirnames):
            full = here / d
            if is_excluded(rel_dir + d, patterns) or full.resolve() in skip:
                continue
            if full.is_symlink():
                summary.symlinks[rel_dir + d] = os.readlink(full)
                continue
            kept_dirs.append(d)
            (dest_root / (rel_dir + d)).mkdir(mode=fsutil.PRIVATE_DIR)
        dirnames[:] = kept_dirs
        for f in sorted(filenames):
            rel = rel_dir + f
            if is_excluded(rel, patterns):
                continue
            src = here / f
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):
                summary.symlinks[rel] = os.readlink(src)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, fifos, devices: not code
            size, digest = _capture_file(src, dest_root / rel, st.st_size, reuse, summary)
            hashes[f"{CODE_DIR}/{name}/{rel}"] = {"size": size, "sha256": digest}
            summary.files += 1
            summary.bytes += size
            if st.st_mode & stat.S_IXUSR:
                summary.executables.append(rel)
            if on_file:
                on_file(size)
    return summary


def _capture_file(
    src: Path, dest: Path, size_hint: int, reuse: dict[str, Path], summary: CodeSummary
) -> tuple[int, str]:
    try:
        if reuse:
            size, digest = fsutil.sha256_file(src)
            existing = reuse.get(digest)
            if existing is not None and existing.is_file() and os.lstat(existing).st_size == size:
                if _link_or_copy(existing, src, dest):
                    summary.linked += 1
                return size, digest
        return _copy_hashing(src, dest)
    except OSError as exc:
        raise BackupError(f"cannot copy {src}: {exc.strerror or exc}") from exc


def restore_tree(snapshot_dir: Path, name: str, summary: dict[str, Any], target: Path) -> int:
    """Copy ``code/<name>`` out of a snapshot into ``target`` with modes and symlinks; returns files written."""
    source = snapshot_dir / CODE_DIR / name
    count = 0
    for dirpath, _dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source)
        (target / rel_dir).mkdir(parents=True, exist_ok=True)
        for f in filenames:
            dest = target / rel_dir / f
            shutil.copyfile(Path(dirpath) / f, dest)
            os.chmod(dest, 0o644)
            count += 1
    for rel in summary.get("executables", []):
        path = target / rel
        if path.exists():
            os.chmod(path, 0o755)  # noqa: S103 - restored code is a normal checkout, not a snapshot
    for rel, link_target in summary.get("symlinks", {}).items():
        link = target / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            os.symlink(link_target, link)
    return count
