"""Seeded fault points, for the reliability tests only: where a test stops, fails or kills relstep.

Outside the tests ``RELSTEP_TEST_FAULT`` is unset and :func:`point` is one dictionary lookup.
A test sets ``RELSTEP_TEST_FAULT=<point>:<action>``; when relstep reaches that point:

* ``pause``: it opens the FIFO ``RELSTEP_TEST_FAULT_FIFO`` for writing (which blocks until the
  test opens it to read), writes the point's name and a newline, closes it, then waits for a
  signal for ever.  The test reads the line, an event, not a sleep, and then does what it
  tests (kill -9, SIGINT, a lock) knowing exactly where relstep is;
* ``kill``: relstep SIGKILLs itself there (kill -9 at an exact point, no cleanup of any kind);
* ``fail``: it raises DatabaseError there, a failure at exactly that step.

A point fires once per process: the put-back that follows a seeded failure passes the same
points and runs normally.
"""

from __future__ import annotations

import os
import signal

from relstep.databases.base import DatabaseError

FAULT = "RELSTEP_TEST_FAULT"
FIFO = "RELSTEP_TEST_FAULT_FIFO"

_fired: set[str] = set()


def point(name: str) -> None:
    seeded = os.environ.get(FAULT)
    if not seeded or name in _fired:
        return
    where, _, action = seeded.rpartition(":")
    if where != name:
        return
    _fired.add(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "fail":
        raise DatabaseError(f"seeded failure at {name} ({FAULT})")
    if action == "pause":
        with open(os.environ[FIFO], "w") as fifo:  # blocks until the test reads
            fifo.write(name + "\n")
        while True:  # SIGINT / SIGTERM still reach their handlers (and end this wait); SIGKILL ends relstep
            signal.pause()
