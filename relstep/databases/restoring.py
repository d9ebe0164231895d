"""What every engine's restore shares: its options, the sessions in its way, what it reports back.

A restore must never make things worse, so each engine's ``restore`` takes a
:class:`RestoreOptions` that bounds every lock wait (``lock_wait``), says whether the
sessions in the way may be ended (``terminate_sessions``), and carries the proof
(``prove``) that a staged copy equals the snapshot before it replaces anything.  It
returns a :class:`RestoreReport`: whom it ended, and where the previous state went
(the replaced database's name and the exact command that puts it back).
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from relstep.errors import SessionsInTheWay

if TYPE_CHECKING:
    from relstep.fingerprint import Fingerprint, TableContent

DEFAULT_LOCK_WAIT = 30.0   # seconds; --lock-wait


@dataclass(frozen=True)
class Session:
    """A server session that holds (or may hold) a lock a restore needs."""

    id: int
    user: str
    application: str
    state: str
    since: datetime | None
    in_target: bool = True     # False: it uses another database (it may still hold a lock in this one)

    def describe(self) -> str:
        since = f", since {self.since.isoformat(timespec='seconds')}" if self.since else ""
        app = f", application {self.application!r}" if self.application else ""
        return f"session {self.id} (user {self.user!r}{app}, {self.state}{since})"


def describe_sessions(sessions: list[Session]) -> str:
    return "; ".join(s.describe() for s in sessions) or "no session could be named (it ended meanwhile)"


def sessions_in_the_way(target: str, what: str, seconds: float, sessions: list[Session]) -> SessionsInTheWay:
    """The error for a lock not granted within --lock-wait: nothing changed, and who is in the way."""
    return SessionsInTheWay(
        f"{what} on {target} waited {seconds:g} s (--lock-wait) for {describe_sessions(sessions)}; "
        "nothing was changed: end those sessions (stop the app) and run the restore again, or pass "
        "--terminate-sessions to end them first"
    )


class Prove(Protocol):
    """Raises RestoreError when the database at ``url`` differs from the snapshot.  ``content``: the
    tables' content digests, when the engine read them back itself while it loaded (then the proof
    reads only the schema)."""

    def __call__(self, url: str, content: Mapping[str, TableContent] | None = None) -> None: ...


def _no_proof(url: str, content: Mapping[str, TableContent] | None = None) -> None:
    return None


@dataclass
class RestoreReport:
    """What a restore did besides loading the snapshot, filled in as it goes (read after a failure too)."""

    ended: list[Session] = field(default_factory=list)     # sessions --terminate-sessions ended
    replaced: str | None = None                            # where the previous database is kept
    undo: str | None = None                                # the exact command that puts it back
    method: str = ""                                       # how it was loaded ("staged and swapped", ...)
    live_changed: bool = False                             # the target was touched (set before touching it)
    put_back: str | None = None                            # after a failed live load: what was put back
    notes: list[str] = field(default_factory=list)
    # What a kill -9 could leave, for the journal of an unfinished restore (relstep.restore_journal):
    # set by the engine before it creates or changes the thing, then ``changed()`` writes it down.
    staged: str | None = None                              # the staged copy (database or file)
    drop_staged: str | None = None                         # the exact command that removes it
    swap_to: str | None = None                             # where the target goes if the swap commits
    swap_undo: str | None = None                           # the command that undoes that swap
    committing: bool = False                               # the swap / COMMIT / copy that makes it the snapshot began
    on_change: Callable[[RestoreReport], None] | None = None

    def changed(self) -> None:
        """Write down what is now at stake (kill -9 prints nothing: the journal must say it)."""
        if self.on_change is not None:
            self.on_change(self)


@dataclass(frozen=True)
class RestoreOptions:
    lock_wait: float = DEFAULT_LOCK_WAIT
    terminate_sessions: bool = False
    prove: Prove = _no_proof
    # Restores into another environment: leave the snapshot's owners / privileges out (PostgreSQL).
    no_owner: bool = False
    no_privileges: bool = False
    report: RestoreReport = field(default_factory=RestoreReport)
    # The fingerprint the snapshot recorded, for an engine that reads the restored tables back while
    # it loads (PostgreSQL): it digests them the way this was made.  None: the proof reads them after.
    recorded: Fingerprint | None = None
    # PostgreSQL's swap into an empty target: keep the empty database it replaced (printed, dropped
    # by the person later) rather than drop it at once, whose checkpoint writes the whole restored
    # database out first.  `relstep restore` keeps it; verify's scratch restore drops it.
    keep_empty_replaced: bool = False


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the body runs: cleanup after an interruption is not cut short
    by a second Ctrl-C (the signal is delivered, and acted on, once the body is done)."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


CONNECTION_CHECK_MS = 1000   # PostgreSQL's client_connection_check_interval for a restore's sessions


def dies_with_relstep(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGKILLs the tool when relstep dies, even of kill -9
    (``setpriv --pdeathsig``, util-linux): a restore's pg_restore, psql or mariadb client must
    not go on loading after relstep is gone.  Where setpriv is missing the tool runs as before
    (it still stops at the end of its input, and the server's lock waits are bounded).

    The kernel's "parent" here is the *thread* that forked: start such a tool from the thread that
    waits for it (every caller does, the main thread), never from a short-lived worker thread,
    whose end would kill the tool mid-load."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv
