"""Starting child processes so that an interruption can never leave one running behind relstep.

``subprocess.Popen`` returns only after the child has exec'd; a SIGINT or SIGTERM that lands in
between (the child already runs, already writes, but relstep holds no handle to it yet) unwinds
relstep through ``Popen.__init__`` and the child is orphaned: a deploy command or a pg_dump left
running after relstep said it stopped, holding relstep's output pipes open.  :func:`start` holds
those two signals while the child starts, then delivers what arrived once the caller has the
handle, killing the child if the delivery ends relstep's work.  Every child relstep starts goes
through it (:func:`run` for the ones run to their end).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

_HELD = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, Any], Any] | int


def start(args: Sequence[str], *, own_group: bool = False, **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **popen_kwargs)``, with SIGINT/SIGTERM held until it has returned.

    ``own_group`` starts the child as the leader of a new session (``start_new_session``), so that
    :func:`kill` ends it together with everything it started.  A signal that arrived meanwhile is
    delivered to relstep's own handler right after; if that handler raises (relstep's do), the
    child is killed first, so nobody is left holding a process no one owns.
    """
    caught: list[int] = []
    previous = _hold(caught)
    try:
        proc = subprocess.Popen(list(args), start_new_session=own_group, **popen_kwargs)
    except BaseException:
        _release(previous)
        _deliver(caught)
        raise
    _release(previous)
    if caught and previous.get(caught[0]) == signal.SIG_DFL:
        kill(proc, group=own_group)   # the default action ends relstep at once: the child goes first
        proc.wait()
    try:
        _deliver(caught)
    except BaseException:
        kill(proc, group=own_group)
        with suppress(BaseException):
            proc.wait()
        raise
    return proc


def run(
    args: Sequence[str],
    *,
    input: bytes | str | None = None,
    timeout: float | None = None,
    own_group: bool = False,
    **popen_kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """Like ``subprocess.run(..., check=False)``, started through :func:`start`.

    The child is killed if relstep stops waiting for it for any reason (an exception, SIGINT or
    SIGTERM's ``Terminated``); on ``timeout`` it is killed and ``TimeoutExpired`` raised, as
    ``subprocess.run`` does.
    """
    if input is not None:
        popen_kwargs["stdin"] = subprocess.PIPE
    proc = start(args, own_group=own_group, **popen_kwargs)
    # No ``with proc``: its ``__enter__`` is a call, where a signal could land before the ``try``.
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc, group=own_group)
        proc.communicate()
        raise
    except BaseException:
        kill(proc, group=own_group)
        with suppress(BaseException):
            proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def kill(proc: subprocess.Popen[Any], *, group: bool) -> None:
    """SIGKILL the child (``group``: and every process of the group it leads), if it still runs."""
    with suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()


def _hold(caught: list[int]) -> dict[int, Handler]:
    """Replace the handlers of the held signals by one that only notes them; the old ones."""
    if threading.current_thread() is not threading.main_thread():
        return {}   # handlers can be changed only there; signals are handled only there too
    previous: dict[int, Handler] = {}
    for signum in _HELD:
        handler = signal.getsignal(signum)
        if handler is None or handler == signal.SIG_IGN:
            continue   # installed outside Python, or ignored: nothing to hold
        previous[signum] = handler
        signal.signal(signum, lambda received, frame: caught.append(received))
    return previous


def _release(previous: dict[int, Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _deliver(caught: list[int]) -> None:
    """Hand the first held signal to the handler now installed (it raises, or ends the process)."""
    if caught:
        signal.raise_signal(caught[0])
