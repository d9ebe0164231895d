"""Progress of long phases (bytes dumped, files archived, bytes uploaded), shown without the core knowing how.

The core only calls :func:`task` (and :meth:`Task.advance` / :meth:`Task.update`)::

    with progress.task("dumping database main", unit="bytes") as t:
        t.update(bytes_written_so_far)

and never prints.  The CLI installs one reporter per process with :func:`install`:

* on a terminal, a live ``rich`` display on stderr that disappears when done;
* in CI (stderr not a TTY, or ``CI=true``), plain timestamped lines on stderr, never
  a control character, and only for tasks that run longer than
  ``RELSTEP_PROGRESS_INTERVAL`` seconds (default 10; then one line per interval and
  one when done), so quick runs keep their one-line output;
* by default (library use, tests calling the core), nothing at all.

``RELSTEP_PROGRESS=auto|rich|plain|off`` overrides the choice.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TextIO

from relstep.fsutil import human_bytes

DEFAULT_INTERVAL = 10.0
POLL_SECONDS = 0.5
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Task:
    """One unit of long work.  Thread-safe: code capture reports from a worker thread."""

    def __init__(self, reporter: Reporter, label: str, unit: str, total: int | None) -> None:
        self.reporter = reporter
        self.label = label
        self.unit = unit                 # "bytes" or "files"
        self.total = total
        self.completed = 0
        self.bytes = 0                   # for "files" tasks: the bytes those files hold
        self.started = time.monotonic()
        self.detail = ""
        self.state: Any = None           # the reporter's own bookkeeping
        self._lock = threading.Lock()

    def advance(self, amount: int = 1, size: int = 0) -> None:
        with self._lock:
            self.completed += amount
            self.bytes += size
        self.reporter.changed(self)

    def update(self, completed: int) -> None:
        with self._lock:
            self.completed = completed
            if self.unit == "bytes":
                self.bytes = completed
        self.reporter.changed(self)

    def amount(self) -> str:
        """``12.3 MiB`` or ``120 files, 4.5 MiB``: what has been done so far, for people."""
        if self.unit == "bytes":
            done = human_bytes(self.completed)
            return f"{done} of {human_bytes(self.total)}" if self.total else done
        text = f"{self.completed}" + (f" of {self.total}" if self.total else "") + f" {self.unit}"
        return text + (f", {human_bytes(self.bytes)}" if self.bytes else "")


class Reporter:
    """The silent default; subclasses show tasks."""

    def started(self, task: Task) -> None:
        pass

    def changed(self, task: Task) -> None:
        pass

    def finished(self, task: Task) -> None:
        pass


class PlainReporter(Reporter):
    """Timestamped lines for CI logs: only for tasks that outlast ``interval`` seconds."""

    def __init__(self, stream: TextIO, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        from relstep.masking import mask_text

        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Labels carry file and database names: a stray escape in one must not reach a CI log as a control code.
        clean = _CONTROL.sub("?", mask_text(text))
        with self._lock:
            self.stream.write(f"{stamp} relstep: {clean}\n")
            self.stream.flush()

    def started(self, task: Task) -> None:
        task.state = {"last": None}
        if self.interval <= 0:
            self._line(f"{task.label} ...")
            task.state["last"] = self.clock()

    def changed(self, task: Task) -> None:
        now = self.clock()
        last = task.state["last"] if task.state else None
        if (last is None and now - task.started >= self.interval) or (last is not None and now - last >= self.interval):
            task.state["last"] = now
            self._line(f"{task.label}: {task.amount()}")

    def finished(self, task: Task) -> None:
        if task.state and (task.state["last"] is not None or self.clock() - task.started >= self.interval):
            seconds = self.clock() - task.started
            self._line(f"{task.label}: {task.detail or 'done'}, {task.amount()} in {seconds:.1f} s")


class RichReporter(Reporter):
    """A live display on a terminal (stderr), removed when the last task ends."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._progress: Any = None
        self._active = 0
        self._lock = threading.Lock()

    def started(self, task: Task) -> None:
        with self._lock:
            if self._progress is None:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                self._progress = Progress(
                    SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                    console=Console(file=self.stream), transient=True,
                )
                self._progress.start()
            task.state = self._progress.add_task(task.label, total=task.total, amount=task.amount())
            self._active += 1

    def changed(self, task: Task) -> None:
        if self._progress is not None and task.state is not None:
            self._progress.update(task.state, completed=task.completed, amount=task.amount())

    def finished(self, task: Task) -> None:
        with self._lock:
            if self._progress is None or task.state is None:
                return
            self._progress.remove_task(task.state)
            self._active -= 1
            if self._active == 0:
                self._progress.stop()
                self._progress = None


_reporter: Reporter = Reporter()


def install(reporter: Reporter) -> Reporter:
    """Make ``reporter`` show every task from now on; returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def current() -> Reporter:
    return _reporter


def choose(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> Reporter:
    """The reporter for this process: rich on a terminal, plain lines in CI, per RELSTEP_PROGRESS."""
    stream = sys.stderr if stream is None else stream
    environ = os.environ if environ is None else environ
    mode = environ.get("RELSTEP_PROGRESS", "auto").strip().lower()
    if mode == "off":
        return Reporter()
    try:
        interval = float(environ.get("RELSTEP_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        interval = DEFAULT_INTERVAL
    if not math.isfinite(interval):
        interval = DEFAULT_INTERVAL   # nan would compare false forever and inf never arrives: no line, ever
    in_ci = environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if mode == "rich" or (mode != "plain" and tty and not in_ci):
        return RichReporter(stream)
    return PlainReporter(stream, interval)


@contextmanager
def task(label: str, unit: str = "bytes", total: int | None = None) -> Iterator[Task]:
    """Report one task for the duration of the block (also when it fails)."""
    reporter = _reporter
    current_task = Task(reporter, label, unit, total)
    reporter.started(current_task)
    try:
        yield current_task
    except BaseException:
        current_task.detail = "stopped"
        raise
    finally:
        reporter.finished(current_task)


@contextmanager
def polling(current_task: Task, measure: Callable[[], int], every: float = POLL_SECONDS) -> Iterator[None]:
    """Update ``current_task`` from ``measure()`` in a thread while the block runs.

    For work done by an external tool (a dump tool writing files) whose progress can
    only be seen from outside, e.g. the size of the folder it writes into.
    """
    if type(current_task.reporter) is Reporter:
        yield  # nobody is watching: no thread, no directory walks
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                current_task.update(measure())
            except OSError:
                continue  # files come and go while a tool writes them

    thread = threading.Thread(target=loop, name="relstep-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        try:
            current_task.update(measure())
        except OSError:
            pass
