"""Code capture: each configured code folder becomes a plain file tree ``code/<name>/``.

A tree (rather than one archive) lets consecutive snapshots share unchanged
files: a file whose content (SHA-256) already exists in the previous snapshot
is hard-linked to it instead of copied, once the previous copy is checked to
still hold exactly those bytes.  A hard link is a second name for the
same bytes, so every snapshot stays self-contained: deleting an older snapshot
only drops a name, never the content a newer one still links.  Snapshot files
are 0600 and never written after the snapshot is finished, which is what makes
sharing their inodes safe.  In an encrypted snapshot the same holds for the
ciphertexts: a file whose plaintext SHA-256 (``plain_sha256``) is the previous
snapshot's links that snapshot's age file, when both were encrypted to the same
recipients (:func:`shares_with`), once the age file is checked to still hold the
recorded ciphertext.

What a tree is not: databases (the configured SQLite file and any file with an
SQLite header, which would carry every value the dump redacts), relstep's own
snapshots (backup_root and the pre-restore folder, for ``code: {app: .}``), and
excluded names; the manifest's ``left_out`` names the first two.  Symlinks are
recorded and recreated, never followed.  Names that are not UTF-8 get a stand-in
(``names``), and sparse files keep their holes (``sparse``).  ``code_restore``
turns a tree back into a folder.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relstep import codec, fsutil
from relstep.capture import names, sparse, sqlite_files
from relstep.errors import BackupError, ConfigError

CODE_DIR = "code"


@dataclass
class CodeSummary:
    """A code entry of the manifest.  Paths are relative to the code folder, as stored in the snapshot."""

    source: str
    files: int = 0
    bytes: int = 0
    linked: int = 0                                   # files shared with the previous snapshot
    symlinks: dict[str, str] = field(default_factory=dict)
    executables: list[str] = field(default_factory=list)
    # What was deliberately not copied, and why: databases, relstep's own snapshots.
    left_out: list[dict[str, str]] = field(default_factory=list)
    # Entries whose name is not valid UTF-8: stored path -> the original last component, base64.
    raw_names: dict[str, str] = field(default_factory=dict)
    # Symlinks whose target is not valid UTF-8: path -> the target's bytes, base64
    # (``symlinks`` then holds its readable form).
    raw_link_targets: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "files": self.files, "bytes": self.bytes, "linked": self.linked,
            "symlinks": self.symlinks, "executables": sorted(self.executables),
            "left_out": self.left_out, "raw_names": self.raw_names, "raw_link_targets": self.raw_link_targets,
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


class _Excluder:
    """``is_excluded`` for a walk that never descends into an excluded folder.

    Every folder on the way down has already been checked, so only an entry's own
    name can match a single-component pattern; whole-path patterns are still checked
    against the full relative path.  Each kind is one compiled regex instead of an
    ``fnmatch`` call per pattern and per path component for each of 20,000 files.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        stripped = [p.strip("/") for p in patterns]
        self._name = self._compile(p for p in stripped if "/" not in p)
        self._path = self._compile(p for p in stripped if "/" in p)

    @staticmethod
    def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
        # fnmatch.translate gives the exact regex fnmatchcase uses (anchored with \Z).
        alternatives = [f"(?:{fnmatch.translate(p)})" for p in patterns]
        return re.compile("|".join(alternatives)) if alternatives else None

    def __call__(self, relative: str, name: str) -> bool:
        return bool((self._name is not None and self._name.match(name))
                    or (self._path is not None and self._path.match(relative)))


def check_sources(code: dict[str, Path]) -> None:
    for name, source in code.items():
        if not source.is_dir():
            raise ConfigError(f"code folder {name!r} ({source}) does not exist or is not a directory; fix code.{name}")


@dataclass(frozen=True)
class Shared:
    """A previous snapshot's copy of some content, and its manifest entry, which a link takes over.

    Plain snapshots: ``size``/``sha256`` are the content's.  Encrypted ones: they are the
    ciphertext's and ``plain_sha256`` the content's, the key a new file is looked up by.
    """

    path: Path
    size: int
    sha256: str
    plain_sha256: str | None = None

    def entry(self) -> dict[str, Any]:
        if self.plain_sha256 is None:
            return {"size": self.size, "sha256": self.sha256}
        return {"size": self.size, "sha256": self.sha256, "plain_sha256": self.plain_sha256}


def shares_with(before: Any, now: Any) -> bool:
    """Whether a snapshot encrypted as ``now`` may link the files of one encrypted as ``before``.

    Both are a manifest's ``encryption`` entry (None: plain).  A link gives the new snapshot the
    old ciphertext, readable by exactly the old recipients: sharing across a change of recipients
    would leave a removed recipient able to read, or a new one unable to, so it needs the same set.
    """
    if before is None or now is None:
        return before is None and now is None
    return bool(before.scheme == now.scheme and set(before.recipients) == set(now.recipients))


def previous_by_hash(previous: Path | None, files: dict[str, dict[str, Any]], *,
                     encrypted: bool = False) -> dict[str, Shared]:
    """content SHA-256 -> a file of the previous snapshot's code tree holding that content.

    ``encrypted``: the previous snapshot's files are age files, looked up by their
    ``plain_sha256``; the caller checked with :func:`shares_with` that the recipients are the same.
    """
    if previous is None:
        return {}
    index: dict[str, Shared] = {}
    for rel, meta in files.items():
        if not rel.startswith(CODE_DIR + "/") or "sha256" not in meta:
            continue
        plain = meta.get("plain_sha256")
        if encrypted != (plain is not None):
            continue  # a ciphertext never stands in for plain content, nor the reverse
        index.setdefault(plain or meta["sha256"], Shared(previous / rel, meta["size"], meta["sha256"], plain))
    return index


def _write_new(dest: str, chunks: Iterable[bytes | memoryview]) -> codec.Written:
    """A new private file through the codec (which encrypts it in an encrypted snapshot)."""
    with codec.create(dest) as out:
        for chunk in chunks:
            out.write(chunk)
    assert out.result is not None
    return out.result


def _copy(source: str, dest: str) -> codec.Written:
    """Copy ``source`` to a new private file ``dest`` in one pass; the codec hashes what it writes."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _write_new(dest, fsutil.read_chunks(src))
    finally:
        os.close(src)


def _holds(existing: str, size: int, sha: str, held: bytes | None) -> bool:
    """True if ``existing`` still holds exactly this content.

    The manifest says what a predecessor's file held when it was written; this checks
    what it holds now, so a damaged or tampered file is never given a new name in a new
    snapshot.  A one-chunk file is compared byte for byte (one read, no hashing).
    """
    st = os.lstat(existing)
    # Not a plain private file of the right size: changed, replaced, or made readable by
    # others (finish() leaves code/ alone because everything in it is already 0600).
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mode & 0o077:
        return False
    if held is None:
        return fsutil.sha256_file(existing) == (size, sha)
    fd = os.open(existing, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size + 1) == held
    finally:
        os.close(fd)


def _try_link(existing: Shared, dest: str, held: bytes | None) -> bool:
    """Hard-link ``existing`` (a previous snapshot's copy of the same content) at ``dest``.

    ``held``: the content, when it fits in one chunk.  An encrypted copy is checked against its
    ciphertext's recorded SHA-256 instead: its bytes on disk are not the content.
    """
    if existing.plain_sha256 is not None:
        held = None
    try:
        if not _holds(str(existing.path), existing.size, existing.sha256, held):
            return False
        os.link(existing.path, dest)
        return True
    except OSError as exc:
        # Too many links, another filesystem, no permission, pruned meanwhile: copy instead.
        if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EACCES):
            raise
        return False


def _capture_shared(source: str, dest: str, reuse: Mapping[str, Shared]) -> tuple[dict[str, Any], int, bool]:
    """Link ``dest`` to the predecessor's copy when the content is the same, else copy.

    Returns (the manifest entry, the content's size, whether it was linked).  A file that
    fits in one chunk (nearly every source file) is read once: hashed, compared with the
    predecessor's copy, and written from the same buffer only if it has to be copied.  A
    bigger file is hashed first and read again only when it changed, so an unchanged file
    is never written at all.
    """
    digest = hashlib.sha256()
    size = 0
    held: bytes | None = None
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for chunk in fsutil.read_chunks(fd):
            digest.update(chunk)
            held = bytes(chunk) if size == 0 else None  # only a one-chunk file is kept
            size += len(chunk)
    finally:
        os.close(fd)
    existing = reuse.get(digest.hexdigest())
    if existing is not None and _try_link(existing, dest, held if size else b""):
        return existing.entry(), size, True
    # Changed between the two reads?  The copy's own hash is the one that describes it.
    written = _write_new(dest, [held] if held else []) if held is not None or size == 0 else _copy(source, dest)
    return written.entry(), written.content_size, False


def capture_tree(
    name: str,
    source: Path,
    snapshot_dir: Path,
    exclude: Iterable[str],
    leave_out: Mapping[Path, str],
    reuse: Mapping[str, Shared],
    hashes: dict[str, dict[str, Any]],
    on_file: Callable[[int], None] | None = None,
) -> CodeSummary:
    """Copy (or link) ``source`` into ``snapshot_dir/code/<name>``; fill ``hashes`` for the manifest.

    ``leave_out`` maps folders and files that must not be copied (backup_root, the
    configured database) to the reason the manifest gives; SQLite files found by
    their header are left out too, with their ``-wal``/``-journal``/``-shm``.

    Symlinks are recorded, never followed, and excluded names are never opened, so a
    symlink loop or an unreadable excluded folder cannot stop a backup.  Visits
    folders sorted and top-down with one ``scandir`` per folder and string paths:
    per-file Python work is most of the time a 20,000-file tree takes.
    """
    excluded = _Excluder(exclude)
    skip = {str(p.resolve()): why for p, why in leave_out.items()}
    dest_root = snapshot_dir / CODE_DIR / name
    dest_root.mkdir(parents=True, mode=fsutil.PRIVATE_DIR)
    # Everything below is created 0700/0600 (os.open/os.mkdir modes), so finish() need
    # not chmod the tree again; these two may have come from a looser umask.
    os.chmod(dest_root.parent, fsutil.PRIVATE_DIR)
    os.chmod(dest_root, fsutil.PRIVATE_DIR)
    summary = CodeSummary(source=str(source))
    prefix = f"{CODE_DIR}/{name}/"
    # (folder to read, its resolved path, its path relative to source and the stored one, each
    # with a trailing "/"); the two relative paths differ only below a name that is not UTF-8.
    pending: list[tuple[str, str, str, str]] = [(str(source), str(source.resolve()), "", "")]
    while pending:
        here, real, rel_dir, stored_dir = pending.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            # Not skipped silently (as os.walk would): a backup missing a folder looks complete.
            raise BackupError(f"cannot read {here}: {exc.strerror or exc}") from exc
        taken = {e.name for e in entries if names.is_utf8(e.name)}
        databases: set[str] = set()    # names of this folder's left-out database files
        kept: list[tuple[str, str, str, str]] = []
        for entry in entries:
            rel = rel_dir + entry.name
            # Decided on the name alone: an excluded entry is never stat-ed, opened or followed.
            if excluded(rel, entry.name):
                continue
            stored = entry.name if entry.name in taken else names.stand_in(entry.name, taken)
            stored_rel = stored_dir + stored
            if stored != entry.name:
                summary.raw_names[stored_rel] = names.to_base64(entry.name)
            real_child = f"{real}/{entry.name}"
            # The entry's type comes from the directory listing (no stat, never followed).
            if entry.is_symlink():
                _record_symlink(entry.path, stored_rel, summary)
            elif real_child in skip:
                _leave_out(summary, stored_rel, skip[real_child])
                if not entry.is_dir(follow_symlinks=False):
                    databases.add(entry.name)  # the configured database: its -wal goes with it
            elif entry.is_dir(follow_symlinks=False):
                os.mkdir(f"{dest_root}/{stored_rel}", fsutil.PRIVATE_DIR)
                kept.append((entry.path, real_child, rel + "/", stored_rel + "/"))
            elif (owner := sqlite_files.companion_of(entry.name, databases)) is not None:
                _leave_out(summary, stored_rel, f"belongs to the left-out {stored_dir}{names.readable(owner)}")
            else:
                why = _capture_regular(entry, dest_root, prefix, stored_rel, reuse, hashes, summary, on_file)
                if why is not None:
                    _leave_out(summary, stored_rel, why)
                    databases.add(entry.name)
        pending.extend(reversed(kept))  # popped in sorted order: the same order os.walk gives
    return summary


def _record_symlink(path: str, stored_rel: str, summary: CodeSummary) -> None:
    try:
        target = os.readlink(path)
    except OSError as exc:
        raise BackupError(f"cannot read the symlink {names.readable(path)}: {exc.strerror or exc}") from exc
    if names.is_utf8(target):
        summary.symlinks[stored_rel] = target
    else:
        summary.symlinks[stored_rel] = names.readable(target)
        summary.raw_link_targets[stored_rel] = names.to_base64(target)


def _leave_out(summary: CodeSummary, stored_rel: str, reason: str) -> None:
    summary.left_out.append({"path": stored_rel, "reason": reason})


def _capture_regular(
    entry: os.DirEntry[str], dest_root: Path, prefix: str, stored_rel: str, reuse: Mapping[str, Shared],
    hashes: dict[str, dict[str, Any]], summary: CodeSummary, on_file: Callable[[int], None] | None,
) -> str | None:
    """Copy one regular file into the snapshot; or return why it is left out (an SQLite file)."""
    try:
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            return None  # sockets, fifos, devices: not code
        why = sqlite_files.kind(entry.path, st.st_size)
    except OSError as exc:
        raise BackupError(f"cannot copy {names.readable(entry.path)}: {exc.strerror or exc}") from exc
    if why is not None:
        return why
    dest = f"{dest_root}/{stored_rel}"
    hashes[prefix + stored_rel], size = _capture_file(entry.path, dest, reuse, summary, sparse.is_sparse(st))
    summary.files += 1
    summary.bytes += size
    if st.st_mode & stat.S_IXUSR:
        summary.executables.append(stored_rel)
    if on_file:
        on_file(size)
    return None


def _capture_file(src: str, dest: str, reuse: Mapping[str, Shared], summary: CodeSummary,
                  is_sparse: bool = False) -> tuple[dict[str, Any], int]:
    """(the manifest entry, the content's size) of one file copied, or linked to the predecessor's copy.

    In an encrypted snapshot the codec encrypts every copy; ``reuse`` then holds the previous
    snapshot's ciphertexts (only when it had the same recipients), and a hole in a sparse file
    is encrypted like any other bytes.
    """
    try:
        if is_sparse and not codec.encrypts(dest):
            size, digest = _capture_sparse(src, dest, reuse, summary)
            return {"size": size, "sha256": digest}, size
        if reuse:
            entry, size, linked = _capture_shared(src, dest, reuse)
            summary.linked += linked
            return entry, size
        written = _copy(src, dest)
        return written.entry(), written.content_size
    except OSError as exc:
        raise BackupError(f"cannot copy {names.readable(src)}: {exc.strerror or exc}") from exc


def _capture_sparse(source: str, dest: str, reuse: Mapping[str, Shared], summary: CodeSummary) -> tuple[int, str]:
    """A file with holes: linked when unchanged, else copied with its holes (never filled with zeros)."""
    if reuse:
        size, sha = fsutil.sha256_file(source)
        existing = reuse.get(sha)
        if existing is not None and _try_link(existing, dest, None):
            summary.linked += 1
            return size, sha
    digest = hashlib.sha256()
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, fsutil.PRIVATE_FILE)
        try:
            size = sparse.copy_sparse(src, out, digest)
        finally:
            os.close(out)
    finally:
        os.close(src)
    return size, digest.hexdigest()
