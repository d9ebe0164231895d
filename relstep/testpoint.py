"""A test-only seam: park the process at a named point so a test can kill -9 it exactly there.

With ``RELSTEP_TEST_CRASH_AT=<point>`` and ``RELSTEP_TEST_CRASH_MARKER=<path>`` in the
environment, :func:`reached` for that point writes the point's name to the marker (a FIFO the
test is waiting on: an event, not a guess at timing) and then waits for the test's SIGKILL.
Outside the tests neither variable is set and a point costs one environment lookup.

Points are named ``<file>:<stage>`` (``.relstep-pins.json:before-rename``), so a test aims
at one file's write and no other.
"""

from __future__ import annotations

import os
import time

POINT_ENV = "RELSTEP_TEST_CRASH_AT"
MARKER_ENV = "RELSTEP_TEST_CRASH_MARKER"
# The test kills the process as soon as it reads the marker; this bound only keeps a test that
# never does from leaving a parked relstep behind.  The exit code says it was never killed.
PARKED_SECONDS = 120
NOT_KILLED_EXIT = 99


def reached(point: str) -> None:
    if os.environ.get(POINT_ENV) != point:
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        with open(marker, "w", encoding="utf-8") as out:
            out.write(point + "\n")
    time.sleep(PARKED_SECONDS)
    os._exit(NOT_KILLED_EXIT)
