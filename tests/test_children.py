"""A signal that lands while relstep starts a child never leaves that child running.

The signal is real and arrives at a seeded point: the child itself sends it to relstep from
``preexec_fn``, after the fork and before its exec, while relstep is still inside
``subprocess.Popen`` waiting for the exec.  A plain ``Popen`` unwinds there without handing back
the process, which then runs on (and holds relstep's pipes open: what made
``test_an_interrupted_run_alerts_and_pings_fail[SIGINT]`` hang once in CI).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relstep import children
from relstep.errors import Terminated
from tests.reliability.support import is_alive

pytestmark = pytest.mark.unit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)   # what relstep's CLI installs for SIGINT and SIGTERM


@pytest.fixture
def relstep_handlers() -> Iterator[None]:
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _signal_parent(signum: int) -> None:
    os.kill(os.getppid(), signum)


def _child_gone(read_end: int) -> bool:
    """True once every copy of the pipe's write end is closed, i.e. the child holding one has died."""
    ready, _, _ = select.select([read_end], [], [], 30.0)
    return bool(ready) and os.read(read_end, 1) == b""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("own_group", [False, True], ids=["same-group", "own-group"])
def test_a_signal_while_a_child_starts_kills_the_child_and_reaches_relsteps_handler(
    relstep_handlers: None, signum: int, own_group: bool
) -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(Terminated) as raised:
            children.start(SLEEPER, own_group=own_group, pass_fds=(write_end,),
                           preexec_fn=lambda: _signal_parent(signum))
        os.close(write_end)
        write_end = -1
        assert raised.value.args == (signum,)
        assert _child_gone(read_end), "the child started while the signal arrived is still running"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_the_held_signals_get_their_handlers_back(relstep_handlers: None) -> None:
    done = children.run([sys.executable, "-c", "print('ok')"], stdout=subprocess.PIPE, text=True)
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert signal.getsignal(signal.SIGINT) is _raise_terminated
    assert signal.getsignal(signal.SIGTERM) is _raise_terminated


def test_an_ignored_signal_stays_ignored_in_relstep_and_the_child(relstep_handlers: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    proc = children.start(SLEEPER, preexec_fn=lambda: _signal_parent(signal.SIGTERM))
    try:
        assert proc.poll() is None   # nothing was raised, the child runs
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        children.kill(proc, group=False)
        proc.wait()


def test_run_kills_the_child_when_relstep_stops_waiting(relstep_handlers: None) -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            children.run(SLEEPER, pass_fds=(write_end,), timeout=0.5)
        os.close(write_end)
        write_end = -1
        assert _child_gone(read_end)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_signal_whose_default_action_ends_relstep_takes_the_child_first(tmp_path: Path) -> None:
    """Library use, no handler installed: SIGTERM's default action ends the process at once; the
    child started while it arrived must not outlive it."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import os, signal, sys\n"
        "from relstep import children\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        f"proc = children.start({SLEEPER!r}, preexec_fn=lambda: (open({str(pid_file)!r}, 'w').write(str(os.getpid())),"
        " os.kill(os.getppid(), signal.SIGTERM)))\n"
        "sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM, done.stderr
    child = int(pid_file.read_text())
    assert not is_alive(child), "the child outlived relstep"

