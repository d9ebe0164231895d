"""One exception root; one subclass per kind of failure, each carrying its exit code.

Only ``relstep.cli`` turns these into output and an exit status.  Every message is
one sentence that says what went wrong and, where possible, what to do about it.
"""

from __future__ import annotations


class RelstepError(Exception):
    """Root of every expected failure."""

    exit_code = 1
    phase = "relstep"

    def __init__(self, message: str, *, phase: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if phase is not None:
            self.phase = phase

    def __str__(self) -> str:
        return self.message


class InputError(RelstepError):
    """Bad input or configuration: nothing has been written."""

    exit_code = 2
    phase = "input"


class ConfigError(InputError):
    phase = "config"


class VersionError(InputError):
    phase = "version"


class ManifestError(InputError):
    """A snapshot's MANIFEST.json is unreadable or malformed (verify reports it as a problem, exit 8)."""


class ManifestTooNew(ManifestError):
    """A snapshot written by a newer relstep, in a manifest format this one does not know."""


class BackupError(RelstepError):
    exit_code = 3
    phase = "backup"


class DeployError(RelstepError):
    exit_code = 4
    phase = "deploy"


class RecordError(RelstepError):
    exit_code = 5
    phase = "record"


class PruneError(RelstepError):
    exit_code = 6
    phase = "prune"


class PinsDamaged(PruneError):
    """The pins file is there but unreadable: which snapshots must never be pruned is unknown."""

    phase = "pins"


class OffsiteError(RelstepError):
    """A required off-site copy failed (the local snapshot is kept)."""

    exit_code = 6
    phase = "offsite"


class RestoreRefused(RelstepError):
    """The snapshot's schema is incompatible with the target app."""

    exit_code = 7
    phase = "restore"


class RestoreError(RelstepError):
    """The restore itself failed (tool error, unreachable target)."""

    exit_code = 9
    phase = "restore"


class SessionsInTheWay(RestoreError):
    """A restore stopped before changing anything: sessions held locks it waited for past --lock-wait."""

    exit_code = 10


class RestoreInterrupted(RestoreError):
    """SIGINT/SIGTERM during a restore: stopped, its server statements ended, the way back named."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class VerifyError(RelstepError):
    exit_code = 8
    phase = "verify"


class HealthError(RelstepError):
    """`relstep status` with thresholds found a problem (too old, too small, unrecorded, failed verify)."""

    exit_code = 11
    phase = "status"


class LockTimeout(RelstepError):
    exit_code = 3
    phase = "lock"


class Interrupted(RelstepError):
    exit_code = 130
    phase = "interrupted"


class InternalError(RelstepError):
    """An exception relstep did not expect (a bug, or a library failing in a way nobody handled).

    The CLI reports it as one masked line instead of a traceback; ``-v`` shows the traceback.
    The exit code is sysexits.h's EX_SOFTWARE, apart from every code relstep documents for a
    known failure, so a CI log or an alert can tell "relstep has a bug" from "the backup failed".
    """

    exit_code = 70
    phase = "relstep"

    @classmethod
    def wrapping(cls, command: str, exc: BaseException) -> InternalError:
        first = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
        what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return cls(f"internal error: {what}; run with -v for the traceback", phase=command)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt so partial snapshots are cleaned up."""

    exit_code = 143


class UnreadableFile(Exception):
    """A snapshot file cannot be read back as written (missing, corrupt, truncated); one line.

    Raised by the codec (relstep.codec, which re-exports it) and by its age stage; readers turn it
    into their phase's error."""
