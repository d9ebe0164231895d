"""Run one command and print its resource usage as JSON: ``python probe.py CMD [ARG...]``.

It runs in a fresh process of its own, so ``RUSAGE_CHILDREN`` covers exactly the
command and every descendant it waited for (pg_dump's workers, gzip, tar):
``cpu`` is their user+system time and ``tree_rss_kb`` the largest peak RSS of any
one of them (Linux reports the maximum, not a sum).  The wall clock starts after
this interpreter is up, so its own start-up is not charged to the command.

``relstep-self`` as the first argument runs relstep's CLI inside a child Python
that writes its own ``RUSAGE_SELF`` peak RSS at exit: that is relstep's process
alone, without the dump tools it starts.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# Runs relstep exactly as its console script does, then reports this process's own peak.
_RELSTEP_SELF = """
import atexit, resource, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # a folder named relstep in cwd must not shadow it
out = sys.argv[1]
def _report():
    with open(out, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
atexit.register(_report)
sys.argv = ["relstep", *sys.argv[2:]]
from relstep.cli import main
sys.exit(main())
"""


def main(argv: list[str]) -> int:
    self_file = None
    if argv and argv[0] == "relstep-self":
        fd, self_file = tempfile.mkstemp(prefix="relstep-rss-")
        os.close(fd)
        argv = [sys.executable, "-c", _RELSTEP_SELF, self_file, *argv[1:]]
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_rss = None
    if self_file:
        with open(self_file) as f:
            text = f.read().strip()
        os.unlink(self_file)
        self_rss = int(text) if text else None
    print(json.dumps({
        "returncode": done.returncode,
        "stderr": done.stderr.decode(errors="replace")[-2000:],
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "tree_rss_kb": usage.ru_maxrss,
        "self_rss_kb": self_rss,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
