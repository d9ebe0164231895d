"""Helpers for the reliability tests: snapshot checks, tree fingerprints, /proc, private servers, tmpfs.

Everything here inspects real state: files and their SHA-256, ReleaseRecord rows read through
SQLAlchemy, /proc for processes and locks.  Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relstep import records
from tests.helpers import clean_env

REQUIRE = os.environ.get("RELSTEP_TEST_REQUIRE_SERVICES") == "1"


def need(ok: bool, reason: str) -> None:
    """Skip with ``reason``, or fail when RELSTEP_TEST_REQUIRE_SERVICES=1 (as in .ci/run)."""
    if ok:
        return
    if REQUIRE:
        pytest.fail(reason + " and RELSTEP_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


# --------------------------------------------------------------------------- snapshots


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def visible(root: Path) -> list[Path]:
    """Entries of a backup root that are not relstep's dot-named bookkeeping."""
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def partials(root: Path) -> list[Path]:
    return sorted(root.glob(".*.partial")) if root.is_dir() else []


def verify_snapshot(path: Path) -> dict[str, Any]:
    """Assert ``path`` is a complete snapshot: exactly the manifest's files, each size and SHA-256 equal.

    Also: no symlinks or special files inside, 0700/0600 modes, VERSION.txt and DEPLOYMENT_TYPE.txt
    agree with the manifest, and the manifest names its own folder.  Returns the manifest.
    """
    assert path.is_dir() and not path.is_symlink(), f"{path} is not a real directory"
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert manifest["name"] == path.name, (manifest["name"], path.name)
    found: dict[str, Path] = {}
    for entry in path.rglob("*"):
        mode = entry.lstat().st_mode
        assert not stat.S_ISLNK(mode), f"symlink inside a snapshot: {entry}"
        if stat.S_ISDIR(mode):
            assert stat.S_IMODE(mode) == 0o700, (entry, oct(mode))
            continue
        assert stat.S_ISREG(mode), f"special file inside a snapshot: {entry}"
        assert stat.S_IMODE(mode) == 0o600, (entry, oct(mode))
        found[entry.relative_to(path).as_posix()] = entry
    assert found.pop("MANIFEST.json", None) is not None
    assert set(found) == set(manifest["files"]), {
        "missing": sorted(set(manifest["files"]) - set(found)), "extra": sorted(set(found) - set(manifest["files"]))}
    for rel, meta in manifest["files"].items():
        size = found[rel].stat().st_size
        assert (size, sha256(found[rel])) == (meta["size"], meta["sha256"]), f"{path.name}/{rel} differs"
    assert (path / "VERSION.txt").read_text() == manifest["version"] + "\n"
    assert (path / "DEPLOYMENT_TYPE.txt").read_text() == manifest["deployment_type"] + "\n"
    return manifest


def verify_root(root: Path) -> dict[str, dict[str, Any]]:
    """Every visible entry of a backup root must be a complete snapshot: name -> manifest."""
    manifests = {}
    for entry in visible(root):
        manifests[entry.name] = verify_snapshot(entry)
    return manifests


def fingerprint(root: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, tuple]:
    """Everything observable about a tree, path -> (kind, mode, size, content hash or link, mtime).

    The root folder's own mtime is left out (a failed run may create and remove its partial
    folder in it, which is not a change of content); every entry below it counts.
    """
    state: dict[str, tuple] = {}
    if not root.exists() and not root.is_symlink():
        return state
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            full = here / name
            rel = full.relative_to(root).as_posix()
            # relstep's append-only journals beside the snapshots (what verify found, what prune
            # removed) record every run by design, a failed one too: not a change of content.
            if skip(rel) or (name.startswith(".relstep-") and name.endswith(".log")):
                continue
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                state[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, sha256(full), st.st_mtime_ns)
        dirnames[:] = [d for d in dirnames if not skip((here / d).relative_to(root).as_posix())
                       and not (here / d).is_symlink()]
    return state


def record_rows(url: str, table: str = "ReleaseRecord") -> list[records.RecordRow]:
    return records.read_all(url, table)


# --------------------------------------------------------------------------- running relstep


def relstep_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "relstep", *args]


def start_relstep(*args: str, cwd: Path, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen(relstep_argv(*args), cwd=cwd, env=env if env is not None else clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.002,
             proc: subprocess.Popen | None = None) -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` (and the process's stderr if it died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = condition()
            if value:
                return value
            raise AssertionError(f"relstep exited {proc.returncode} before {what}: {proc.stderr.read()}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in all_pids():
        parent = parent_of(p)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[bytes]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def program(pid: int) -> str:
    args = cmdline(pid)
    return os.path.basename(args[0].decode(errors="replace")) if args else ""


def lock_holders(path: Path) -> list[int]:
    """PIDs holding an flock(2) on ``path`` (from /proc/locks, matched by inode)."""
    st = path.stat()
    inode = st.st_ino
    pids = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and int(parts[5].rsplit(":", 1)[1]) == inode:
            pids.append(int(parts[4]))
    return pids


_EXECVE = re.compile(rb'^(\d+)\s+execve\((".*?"), \[(.*?)\], \[(.*?)\]')  # pid, path, argv, envp
_HEX_STRING = re.compile(rb'"((?:\\x[0-9a-f]{2})*)"')


def _unhex(escaped: bytes) -> bytes:
    return bytes.fromhex(escaped.replace(b"\\x", b"").decode())


@dataclass
class ExecTrace:
    """Every execve(2) of a process tree, read from strace: each one's argv and environment.

    strace sees each exec as it happens, so a child that lives a millisecond is caught as surely
    as pg_dump (polling /proc would miss it now and then).  execvp trying PATH entries gives one
    execve per attempt; all are kept.
    """

    argvs: list[list[bytes]] = field(default_factory=list)
    environs: list[bytes] = field(default_factory=list)   # NUL-separated, as /proc/PID/environ

    @classmethod
    def parse(cls, log: bytes) -> ExecTrace:
        trace = cls()
        for match in filter(None, map(_EXECVE.match, log.splitlines())):
            trace.argvs.append([_unhex(s) for s in _HEX_STRING.findall(match.group(3))])
            trace.environs.append(b"\0".join(_unhex(s) for s in _HEX_STRING.findall(match.group(4))))
        return trace

    def programs(self) -> set[str]:
        return {os.path.basename(args[0].decode(errors="replace")) for args in self.argvs if args}


def run_traced(argv: list[str], cwd: Path, env: dict[str, str], log: Path,
               timeout: float = 180) -> tuple[ExecTrace, int, str, str]:
    """Run ``argv`` under ``strace -f -e trace=execve``: (trace, exit code, stdout, stderr)."""
    need(shutil.which("strace") is not None, "strace is not installed (apt-get install strace)")
    traced = ["strace", "-f", "-qq", "-v", "-xx", "-s", "1000000", "-e", "trace=execve", "-o", str(log), *argv]
    done = subprocess.run(traced, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return ExecTrace.parse(log.read_bytes()), done.returncode, done.stdout, done.stderr


# --------------------------------------------------------------------------- tmpfs


def try_mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``path``; None on success, else why it could not be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "mount(8) is not installed"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})"
    return None


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs at ``path``; skips (or fails under RELSTEP_TEST_REQUIRE_SERVICES=1) where mount is not allowed."""
    problem = try_mount_tmpfs(path, size)
    need(problem is None, str(problem))
    try:
        yield path
    finally:
        unmount(path)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# --------------------------------------------------------------------------- a private PostgreSQL cluster


def _pg_bindir() -> Path | None:
    """The server binaries matching the pg_dump on PATH (so the dump tool is never older)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return None
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=False).stdout
    major = re.search(r"\)\s*(\d+)", version)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if major:
        candidates = [c for c in candidates if int(c.parts[-3]) == int(major.group(1))] or candidates
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster in a temp folder, on its own port, that tests may stop at will.

    The shared server on 5432 serves every other test, so tests that kill "the database server"
    kill this one.  initdb refuses to run as root, so as root the cluster runs as the ``postgres``
    user (via runuser).  fsync is off: the data is disposable and the tests want speed.
    """

    def __init__(self) -> None:
        bindir = _pg_bindir()
        need(bindir is not None, "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql")
        assert bindir is not None
        self.bindir = bindir
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            need(shutil.which("runuser") is not None, "runuser is needed to run initdb as postgres")
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                need(False, "no postgres user to run a private cluster as")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.base = Path(tempfile.mkdtemp(prefix="relstep-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        if self.as_user:
            shutil.chown(self.base, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N", "-E", "UTF8",
                  "--locale=C")
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*self.as_user, str(self.bindir / tool), *args], capture_output=True, text=True,
                              check=False, cwd=self.base)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}\n{done.stderr}")
        return done

    def pg_ctl_argv(self, *args: str) -> list[str]:
        return [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> None:
        if self.running:
            return
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.base} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database,
                             autocommit=True) as conn:
            conn.execute(sql)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- workloads


def write_code_tree(root: Path, files: int, seed: int = 0) -> None:
    """``files`` small source files in 50 folders (a few KiB each, every one different)."""
    for i in range(files):
        folder = root / f"pkg{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"module{i:05d}.js").write_text(f"// module {i} seed {seed}\n" + "export const x = 1;\n" * (i % 97))


def fill_sqlite(path: Path, rows: int) -> None:
    """A table of ``rows`` rows of 96 hex characters (incompressible enough to make a real dump)."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        conn.executemany("INSERT INTO events (payload) VALUES (?)", ((os.urandom(48).hex(),) for _ in range(rows)))


def fill_postgres(url: str, rows: int) -> None:
    import psycopg

    from relstep.databases import sqlalchemy_url

    parsed = sqlalchemy_url(url)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database,
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS events (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conn.execute("INSERT INTO events (payload) SELECT md5(random()::text) || md5(random()::text) "
                     "|| md5(random()::text) FROM generate_series(1, %s)", (rows,))


def kill_tree(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
