"""PostgreSQL's encrypted layout: one ``pg_dump -Fc`` archive streamed through the codec, and
``pg_restore`` reading it back from its standard input.

``pg_dump -Fd`` writes its files itself, as plaintext; an encrypted snapshot cannot hold them.  With
recipients set the dump is instead::

    pg_dump.custom.zst    pg_dump --format=custom --compress=0 to a pipe, then the codec: zstd (every
                          core), age, SHA-256 as written; no plaintext byte reaches the disk
    redacted/...          as in the plain layout (the codec encrypts them too)
    redacted.json         as in the plain layout, encrypted

Why ``--compress=0``: pg_dump 15 only has zlib, single-threaded; the codec's zstd on two threads
is faster and smaller (TOOLING.md measured 3.8 s for ``-Fc`` against 1.8 s for ``-Fc -Z0 | zstd``).

Reading: :class:`Archive` says where ``pg_restore`` reads a dump, the directory (a path argument,
``--jobs`` allowed) or this file (decrypted and decompressed by the codec in a feeding thread,
written to ``pg_restore``'s stdin: sequential, no ``--jobs``, no plaintext file).  Every
``pg_restore`` run of a restore or a readability check goes through :meth:`Archive.started`, so the
plain and the encrypted snapshot take the same steps.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from relstep import codec
from relstep.databases import pg_custom, tools
from relstep.databases.base import DatabaseError

ARCHIVE = "pg_dump.custom.zst"
FORMAT = "pg_dump-custom-zstd-age"
DIRECTORY = "pg_dump"       # the plain layout's folder (postgres.DUMP_DIR)
CHUNK = 1 << 18


def streams(dest_dir: Path) -> bool:
    """True when the dump written into ``dest_dir`` now is encrypted: it must be the streamed archive."""
    return codec.encrypts(dest_dir / ARCHIVE)


def dump_args(pg_dump: str, snapshot: str, no_data: list[str]) -> list[str]:
    """``pg_dump`` writing the custom format to stdout (``no_data``: quoted tables whose rows are left out)."""
    return [
        pg_dump,
        "--format=custom",
        "--compress=0",     # the codec compresses (zstd, every core): see the module docstring
        f"--snapshot={snapshot}",
        # Owners and privileges (GRANTs, default privileges, the public schema's ACL) are kept, as
        # in the directory layout.
        "--no-password",
        *(f"--exclude-table-data={t}" for t in no_data),
    ]


@dataclass
class _Collected:
    """What a helper thread read from a pipe, or the error that stopped it."""

    data: bytearray = field(default_factory=bytearray)
    failure: BaseException | None = None


def _collect(pipe: IO[bytes], into: _Collected, on_line: Callable[[str], None] | None = None) -> None:
    """Read ``pipe`` to its end into ``into``; line by line, each handed to ``on_line``, when given,
    and then ``""`` (the end), whatever happened."""
    handler = on_line
    try:
        if on_line is None:
            while chunk := pipe.read(CHUNK):
                into.data += chunk
        else:
            for line in pipe:
                into.data += line
                if handler is not None:
                    try:
                        handler(line.decode("utf-8", "replace").rstrip("\n"))
                    except Exception:  # only an aid: the pipe is still read to its end
                        handler = None
    except BaseException as exc:  # handed to the caller's thread
        into.failure = exc
    finally:
        if on_line is not None:
            with suppress(Exception):
                on_line("")  # whoever waits on a line learns there will be none


def _thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name="relstep-pg-stream", daemon=True)
    thread.start()
    return thread


@dataclass
class RunningDump:
    """A running ``pg_dump``: its exit once it is done, and (streamed) the archive the codec wrote and
    the tap that read each table's CRC-32 and length from the same bytes (pg_custom)."""

    written: codec.Written | None = None
    done: subprocess.CompletedProcess[str] | None = None
    tap: pg_custom.ArchiveTap | None = None


@contextmanager
def dumping(args: list[str], env: Mapping[str, str], dest: Path) -> Iterator[RunningDump]:
    """Run ``pg_dump`` while the caller reads the same snapshot (the fingerprint); on exit the archive is
    complete and ``done`` holds pg_dump's exit (the caller checks it).  On any failure the file is removed."""
    tap = pg_custom.ArchiveTap()
    result = RunningDump(tap=tap)
    errors = _Collected()
    copied = _Collected()
    writer = codec.create(dest, compress=True, threads=-1)
    try:
        with tools.owned(tools.popen(args, env=env)) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            stdout = proc.stdout

            def copy() -> None:
                try:
                    while chunk := stdout.read(CHUNK):
                        writer.write(chunk)
                        tap.feed(chunk)  # never raises: a stream it cannot parse only stops the tap
                except BaseException as exc:  # a full disk, say: pg_dump is ended below
                    copied.failure = exc
                    tools.kill_group(proc)

            threads = [_thread(copy), _thread(_collect, proc.stderr, errors)]
            try:
                yield result
            except BaseException:
                tools.kill_group(proc)  # first: the threads end once pg_dump's pipes close
                raise
            finally:
                for thread in threads:
                    thread.join()
            code = proc.wait()
        if copied.failure is not None:
            raise copied.failure
        stderr = errors.data.decode("utf-8", "replace")
        result.done = subprocess.CompletedProcess(args, code, "", stderr)
        if code == 0:
            result.written = writer.close()
        else:
            writer.abort()
    except BaseException:
        writer.abort()
        raise


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Archive:
    """Where ``pg_restore`` reads a snapshot's dump: the plain directory or the encrypted stream."""

    path: Path
    streamed: bool

    @classmethod
    def of(cls, db_dir: Path) -> Archive:
        streamed = db_dir / ARCHIVE
        if streamed.is_file():
            return cls(streamed, True)
        return cls(db_dir / DIRECTORY, False)

    @property
    def required(self) -> Path:
        """The file that must exist for this to be one of relstep's dumps."""
        return self.path if self.streamed else self.path / "toc.dat"

    def argv(self, args: list[str], jobs: int | None = None) -> list[str]:
        """``args`` reading this dump: the directory as the last argument, or nothing (stdin).

        A stream is read in order, so ``--jobs`` (which seeks between tables) is only for the directory."""
        if self.streamed:
            return args
        return [*args, *([f"--jobs={jobs}"] if jobs else []), str(self.path)]

    @contextmanager
    def started(self, args: list[str], env: Mapping[str, str] | None,
                stdout: int | IO[Any] | None = subprocess.PIPE,
                on_line: Callable[[str], None] | None = None) -> Iterator[Running]:
        """``pg_restore`` (``args`` from :meth:`argv`) running, fed the decrypted archive when streamed.

        Its stderr is read by a thread, so a chatty tool never blocks on a full pipe; the caller
        reads stdout (or gives another ``stdout``) and ends with :meth:`Running.finish`.
        ``on_line`` gets each line of stderr as it comes (on that thread), then ``""`` at its end."""
        stdin = subprocess.PIPE if self.streamed else subprocess.DEVNULL
        with tools.owned(tools.popen(args, env=env, stdin=stdin, stdout=stdout)) as proc:
            running = Running(proc, self, on_line)
            try:
                yield running
            except BaseException:
                tools.kill_group(proc)  # first: then the feeder's pipe breaks and its thread ends
                raise
            finally:
                running.join()

    def run(self, args: list[str], env: Mapping[str, str] | None) -> subprocess.CompletedProcess[str]:
        """``pg_restore`` to its end, its stdout and stderr as text (the feed's failure raised)."""
        with self.started(args, env) as running:
            return running.finish()


class Running:
    """A started ``pg_restore``: the feeding thread (streamed archives) and the stderr reader."""

    def __init__(self, proc: subprocess.Popen[bytes], archive: Archive,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.proc = proc
        self.archive = archive
        self._errors = _Collected()
        self._fed = _Collected()
        assert proc.stderr is not None
        self._threads = [_thread(_collect, proc.stderr, self._errors, on_line)]
        if archive.streamed:
            assert proc.stdin is not None
            self._threads.append(_thread(self._feed, proc.stdin))

    def _feed(self, stdin: IO[bytes]) -> None:
        try:
            for chunk in codec.read_chunks(self.archive.path, compressed=True):
                stdin.write(chunk)
        except BrokenPipeError:
            pass  # pg_restore read what it needed (--list reads only the table of contents) and ended
        except BaseException as exc:  # damage, a wrong key: named by finish(), whatever pg_restore said
            self._fed.failure = exc
        finally:
            with suppress(OSError):
                stdin.close()  # a damaged stream ends here: pg_restore fails on the cut-off archive

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads = []

    def finish(self) -> subprocess.CompletedProcess[str]:
        """Wait for the tool; its output, or the feed's failure (a damaged or undecryptable archive)."""
        out = self.proc.stdout.read() if self.proc.stdout is not None else b""
        self.join()
        code = self.proc.wait()
        failure = self._fed.failure
        if failure is not None:
            if isinstance(failure, codec.UnreadableFile):
                raise DatabaseError(str(failure)) from failure
            raise failure
        return subprocess.CompletedProcess(self.proc.args, code, out.decode("utf-8", "replace"),
                                           self._errors.data.decode("utf-8", "replace"))


def check_readable(archive: Archive, pg_restore: str) -> subprocess.CompletedProcess[str]:
    """Read the whole streamed archive as ``pg_restore`` would restore it (its SQL thrown away):
    the table of contents, every data block and large object, through the codec's checks."""
    with archive.started(archive.argv([pg_restore, "--file=/dev/null"]), None, stdout=subprocess.DEVNULL) as running:
        return running.finish()
