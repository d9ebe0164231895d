"""Waiting for a process to reach a point, on an event: a FIFO the process writes a line to.

The FIFO is opened for reading (non-blocking) before the process starts, so the writer's open
never blocks; ``select`` then wakes when the line arrives.  The process dying first fails the
wait with its stderr instead of hanging the test.
"""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

WAIT_SECONDS = 60.0


class Marker:
    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)

    def wait(self, proc: subprocess.Popen, timeout: float = WAIT_SECONDS) -> str:
        """The line the process wrote; fails if it exits (or the timeout passes) first."""
        # Linux reports no hang-up on a FIFO whose writer never came, so select sleeps until the
        # write; the one-second slices only notice a process that died before writing.
        waited = 0.0
        data = b""
        while waited < timeout:
            ready, _, _ = select.select([self._fd], [], [], 1.0)
            if ready:
                data += os.read(self._fd, 4096)
                if data.endswith(b"\n"):
                    return data.decode().strip()
            elif proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"the process exited {proc.returncode} before the marker: {err}")
            waited += 1.0
        raise AssertionError(f"no marker from the process within {timeout:g} s")

    def close(self) -> None:
        os.close(self._fd)
