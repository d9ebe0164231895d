"""The client programs engines run (pg_dump, mariadb-dump, ...): finding, versioning, running them.

One policy for every engine:

* a tool is looked up on PATH under each of its names in turn; a missing one is a
  :class:`~relstep.databases.base.DatabaseError` that says what to install;
* ``--version`` is read with one timeout (:data:`VERSION_TIMEOUT`);
* a tool runs in its own process group under umask 077 (its files hold the data), and if the
  caller fails while it runs (an error, SIGINT, SIGTERM) the whole group is killed, so parallel
  workers (``pg_dump -j``) never keep writing after relstep has cleaned up and gone;
* passwords never reach argv: the caller passes them in ``env``, through an inherited pipe
  (``pass_fds``), which this module hands to the child untouched, or in a file that lives in memory
  only (:func:`memory_file`);
* a failed tool's stderr becomes one line: its last error line, not a trailing hint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from relstep import children
from relstep.databases.base import DatabaseError

VERSION_TIMEOUT = 15      # seconds for `tool --version`: a wedged binary must not stall doctor or a backup
CONNECT_TIMEOUT = 10      # seconds to reach a server, unless its URL says otherwise: fail, never hang
MISSING = "missing"       # what tool_versions() reports for a tool that is not on PATH
# How tools and engines say "the disk is full" when they say it at all (pg_dump's leader often only
# reports "a worker process died unexpectedly"; SQLite says "database or disk is full"): the
# backup also looks at the free space, since the words may be missing.
DISK_FULL_WORDS = ("no space left on device", "disk is full", "disk quota exceeded")


@dataclass(frozen=True)
class ToolSpec:
    """A client program an engine needs: the names it goes by (first found wins) and how to install it."""

    names: tuple[str, ...]
    install_hint: str

    @property
    def label(self) -> str:
        return " or ".join(self.names)

    def find(self) -> str | None:
        return which(self.names)

    def require(self) -> str:
        """The tool's path, or a DatabaseError naming it and how to install it."""
        path = self.find()
        if path is None:
            raise DatabaseError(f"{self.names[0]} not found on PATH; {self.install_hint}")
        return path


def which(names: Iterable[str]) -> str | None:
    for name in names:
        if path := shutil.which(name):
            return path
    return None


def tool_version(path: str) -> str:
    """The tool's ``--version`` line on one line, or ``unknown (...)`` when it cannot say."""
    try:
        done = children.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", timeout=VERSION_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return " ".join((done.stdout or done.stderr).split()) or "unknown"


def versions(tools: Iterable[ToolSpec]) -> dict[str, str]:
    """``{name found on PATH (or the first name): version line or "missing"}`` for each tool."""
    found: dict[str, str] = {}
    for tool in tools:
        path = tool.find()
        found[Path(path).name if path else tool.names[0]] = tool_version(path) if path else MISSING
    return found


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the tool and every process it started (it leads its own process group)."""
    children.kill(proc, group=True)


def popen(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    text: bool = False,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[Any]:
    """Start a tool in its own process group, under umask 077; DatabaseError if it cannot start.

    The caller owns the process: on failure it ends the group with :func:`kill_group`
    (``with owned(popen(...))`` does that for it).
    """
    try:
        return children.start(
            args, env=None if env is None else dict(env), stdin=stdin, stdout=stdout, stderr=stderr, text=text,
            errors="replace" if text else None, umask=0o077, own_group=True, pass_fds=pass_fds,
        )
    except OSError as exc:
        raise DatabaseError(f"cannot start {Path(args[0]).name}: {exc.strerror or exc}") from exc


@contextmanager
def owned(proc: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """``proc`` running while the caller works; if the caller fails, the tool's process group dies.

    On a normal exit the caller has waited for the tool (``finish``); on any exception, SIGINT and
    SIGTERM's ``Terminated`` included, the group is killed before the exception goes on.
    """
    with proc:
        try:
            yield proc
        except BaseException:
            kill_group(proc)
            raise


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait for a text-mode tool started with piped stdout/stderr and collect both."""
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run(args: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool to its end (text mode), its process group killed if relstep is interrupted."""
    with owned(popen(args, env=env, text=True)) as proc:
        return finish(proc)


def error_line(
    stderr: str,
    *,
    errors: re.Pattern[str] | None = None,
    noise: re.Pattern[str] | None = None,
    prefix: re.Pattern[str] | None = None,
) -> str:
    """The tool's own reason for failing, on one line.

    ``errors`` picks the lines that state an error (else every line counts); of those, the last
    one not matching ``noise`` (a follow-on message such as "a worker process died") wins;
    ``prefix`` is stripped from it (the tool's name, say).
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    stated = [line for line in lines if errors.search(line)] if errors else []
    specific = [line for line in stated if not (noise and noise.search(line))]
    line = (specific or stated or lines or ["exited without a message"])[-1]
    if prefix is not None:
        line = prefix.sub("", line)
    return " ".join(line.split())


_memory_files: dict[bytes, int] = {}
_memory_lock = threading.Lock()


def memory_file(data: bytes) -> str:
    """A path the tools relstep starts can open, as often as they like, to read ``data``, which
    never touches a disk.

    A memfd that relstep keeps open until it exits, named through ``/proc/<relstep>/fd/N``: every
    open of that path starts at the beginning (parallel workers re-read it), it needs no
    ``pass_fds`` at the call sites, and only relstep's user (and root) may open it.  For the
    settings a tool takes from no environment variable and relstep must not put in argv (libpq's
    ``sslpassword``, through a service file).  One file per distinct content.
    """
    with _memory_lock:
        fd = _memory_files.get(data)
        if fd is None:
            fd = os.memfd_create("relstep", os.MFD_CLOEXEC)
            os.write(fd, data)
            _memory_files[data] = fd
    return f"/proc/{os.getpid()}/fd/{fd}"
