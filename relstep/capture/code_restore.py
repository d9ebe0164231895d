"""``restore --code-to DIR``: the snapshot's code trees become DIR, swapped in whole.

The trees (``DIR/<name>``) are built in a new folder beside DIR, on the same
filesystem, and only when every file is written does DIR change, by two
renames: DIR as it was moves aside to ``DIR.before-restore-<UTC time>`` (kept,
named in the output with the command that puts it back), the new folder takes
its place.  Nothing is ever written inside the old DIR, so a symlink there
(Capistrano's ``config/database.json -> ../shared/...``) is never written through,
and no file of another release is left in the new tree.  A failure or an
interruption before the renames removes the new folder and leaves DIR alone.

Restored files are 0644 (0755 when the snapshot says executable), folders 0755;
DIR keeps its permissions, and its owner when relstep runs as root; names come back
byte for byte (``names``), sparse files with their holes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import fsutil
from relstep.capture import names, sparse
from relstep.capture.code import CODE_DIR

FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755  # restored code is a normal checkout, not a snapshot
FOLDER_MODE = 0o755
KEPT_SUFFIX = ".before-restore-"
RESTORED_SUFFIX = ".restored-"      # where the undo command moves the restored folder


@dataclass
class CodeRestore:
    folder: Path                                      # DIR
    files: dict[str, int] = field(default_factory=dict)  # code name -> files written
    previous: Path | None = None                      # DIR as it was, moved aside (None: there was nothing)

    def undo_command(self) -> str | None:
        """The shell command that puts the previous DIR back (the restored one moves aside)."""
        if self.previous is None:
            return None
        # Named after the kept folder, which was free when it was chosen: `mv` into a name that
        # exists would move the folder inside it instead.
        restored = self.folder.with_name(self.previous.name.replace(KEPT_SUFFIX, RESTORED_SUFFIX, 1))
        folder, previous = shlex.quote(str(self.folder)), shlex.quote(str(self.previous))
        return f"mv {folder} {shlex.quote(str(restored))} && mv {previous} {folder}"


def _safe_component(value: bytes) -> bool:
    return value not in (b"", b".", b"..") and b"/" not in value and b"\0" not in value


def problems(name: str, summary: Any) -> str | None:
    """What makes a manifest's code entry unsafe to restore, or None.

    The manifest carries no checksum of its own, so every path and name it gives is
    checked before anything is created through it.
    """
    from relstep.manifest import is_safe_relative as safe_relative

    if not isinstance(summary, dict) or not safe_relative(name) or "/" in name:
        return "it is not a code entry"
    symlinks, raw_names = summary.get("symlinks", {}), summary.get("raw_names", {})
    raw_targets, executables = summary.get("raw_link_targets", {}), summary.get("executables", [])
    if not all(isinstance(x, dict) for x in (symlinks, raw_names, raw_targets)) or not isinstance(executables, list):
        return "it is not a code entry"
    if not all(safe_relative(p) for p in (*executables, *symlinks, *raw_names, *raw_targets)):
        return "it lists a path outside its folder"
    if not all(isinstance(v, str) and v and "\0" not in v for v in (*symlinks.values(), *raw_targets.values())):
        return "it lists a symlink without a usable target"
    try:
        originals = [names.from_base64(v) for v in (*raw_names.values(), *raw_targets.values())]
    except (ValueError, AttributeError):
        return "it lists a name that is not base64"
    if not all(_safe_component(o) for o in originals[:len(raw_names)]):
        return "it lists a name that is not one path component"
    if any(b"\0" in o for o in originals[len(raw_names):]):
        return "it lists a symlink target with a NUL byte"
    linked = set(symlinks)
    if any(_under_symlink(p, linked) for p in (*symlinks, *executables)):
        return "it lists a path inside a symlink"
    return None


def _under_symlink(rel: str, links: set[str]) -> bool:
    parts = rel.split("/")
    return any("/".join(parts[:i]) in links for i in range(1, len(parts)))


class _Paths:
    """Stored (snapshot) relative paths -> the bytes paths they are restored to."""

    def __init__(self, root: Path, raw_names: dict[str, str]) -> None:
        self.root = os.fsencode(root)
        self.raw = {rel: names.from_base64(v) for rel, v in raw_names.items()}

    def __call__(self, rel: str) -> bytes:
        if not self.raw:
            return self.root + b"/" + os.fsencode(rel)
        parts = rel.split("/")
        real = [self.raw.get("/".join(parts[: i + 1]), os.fsencode(part)) for i, part in enumerate(parts)]
        return b"/".join([self.root, *real])


def _copy(source: str, dest: bytes, mode: int) -> None:
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            sparse.copy_sparse(src, out)
            os.fchmod(out, mode)  # exact, whatever the umask
        finally:
            os.close(out)
    finally:
        os.close(src)


def _mkdir(path: bytes) -> None:
    os.mkdir(path, 0o700)
    os.chmod(path, FOLDER_MODE)


def build_tree(snapshot_dir: Path, name: str, summary: dict[str, Any], target: Path) -> int:
    """Write ``code/<name>`` of a snapshot as the new folder ``target``; returns the files written.

    ``target`` must not exist: every entry is created new (O_EXCL, mkdir, symlink),
    so nothing can be written through a link, and symlinks come last.
    """
    source = str(snapshot_dir / CODE_DIR / name)
    real = _Paths(target, summary.get("raw_names") or {})
    executables = set(summary.get("executables") or [])
    _mkdir(os.fsencode(target))
    count = 0
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        rel_dir = dirpath[len(source) + 1:]
        prefix = rel_dir + "/" if rel_dir else ""
        for d in dirnames:
            _mkdir(real(prefix + d))
        for f in sorted(filenames):
            rel = prefix + f
            _copy(f"{dirpath}/{f}", real(rel), EXECUTABLE_MODE if rel in executables else FILE_MODE)
            count += 1
    raw_targets = summary.get("raw_link_targets") or {}
    for rel, link_target in sorted((summary.get("symlinks") or {}).items()):
        # Its folder was written above: capture keeps every folder, even one holding only links.
        os.symlink(names.from_base64(raw_targets[rel]) if rel in raw_targets else os.fsencode(link_target), real(rel))
    return count


def _is_empty_folder(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return False
    with os.scandir(path) as it:
        return next(it, None) is None


def _aside_name(folder: Path, now: datetime) -> Path:
    base = f"{folder.name}{KEPT_SUFFIX}{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = folder.with_name(base), 1
    while os.path.lexists(candidate):
        n += 1
        candidate = folder.with_name(f"{base}-{n}")
    return candidate


def restore_code(snapshot_dir: Path, code: dict[str, dict[str, Any]], folder: Path,
                 now: datetime | None = None) -> CodeRestore:
    """Make ``folder`` hold exactly the snapshot's code trees (``folder/<name>``), swapped in whole.

    Raises OSError with ``folder`` unchanged when the new tree cannot be built.
    """
    folder = Path(os.path.abspath(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    result = CodeRestore(folder=folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.restoring-", dir=folder.parent))
    try:
        for name, summary in code.items():
            result.files[name] = build_tree(snapshot_dir, name, summary, staging / name)
        os.chmod(staging, _mode_of(folder))
        _give_to_owner_of(folder, staging)
        fsutil.sync_filesystem_of(staging)
        result.previous = _swap_in(staging, folder, now or datetime.now(timezone.utc))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsutil.fsync_dir(folder.parent)
    return result


def _mode_of(folder: Path) -> int:
    """The new folder keeps the old one's permissions (0755 when there was none)."""
    try:
        st = folder.lstat()
    except FileNotFoundError:
        return FOLDER_MODE
    return stat.S_IMODE(st.st_mode) if stat.S_ISDIR(st.st_mode) else FOLDER_MODE


def _give_to_owner_of(folder: Path, tree: Path) -> None:
    """Run as root (a restore at 3 a.m. often is), hand the new tree to the old folder's owner.

    Otherwise the app's user would find its own release folder owned by root and
    unwritable.  Links are changed themselves, never what they point to.
    """
    try:
        st = folder.lstat()
    except FileNotFoundError:
        return
    if os.geteuid() != 0 or not stat.S_ISDIR(st.st_mode) or (st.st_uid, st.st_gid) == (0, 0):
        return
    os.chown(tree, st.st_uid, st.st_gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(tree):
        for entry in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, entry), st.st_uid, st.st_gid, follow_symlinks=False)


def _swap_in(staging: Path, folder: Path, now: datetime) -> Path | None:
    """Rename ``staging`` to ``folder``; returns where the previous ``folder`` now is (None: nothing kept)."""
    if not os.path.lexists(folder) or _is_empty_folder(folder):
        os.rename(staging, folder)  # rename(2) replaces an empty folder in one step
        return None
    aside = _aside_name(folder, now)
    os.rename(folder, aside)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(aside, folder)
        raise
    return aside


def left_out_lines(code: dict[str, dict[str, Any]]) -> Iterable[str]:
    """``<name>/<path>: <reason>`` for every file a capture left out, for restore's and show's output."""
    for name, summary in code.items():
        for item in summary.get("left_out") or []:
            if isinstance(item, dict):
                yield f"{name}/{item.get('path')}: {item.get('reason')}"
