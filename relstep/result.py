"""Data the core returns to the CLI (and to the CI output writers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from relstep.errors import RelstepError


@dataclass
class PhaseResult:
    name: str                 # "backup", "deploy", "record", "prune", "offsite", "verify", ...
    ok: bool
    seconds: float
    detail: str = ""          # one line, already masked
    exit_code: int = 0        # ok False with exit_code 0: failed, but optional (a warning)


@dataclass
class RunResult:
    version: str | None = None
    deployment_type: str | None = None
    snapshot: str | None = None           # absolute path of the snapshot written or used
    schema_revision: str | None = None
    record_id: int | None = None
    pruned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # one-line hints for the person reading the log
    # Failures that did not fail the step (an optional off-site copy); each one line, masked.
    warnings: list[str] = field(default_factory=list)
    phases: list[PhaseResult] = field(default_factory=list)
    failed_phase: str | None = None
    error: str | None = None              # the one-sentence reason, masked
    exit_code: int = 0
    traceback: str | None = field(default=None, repr=False)   # shown with -v only, never serialised

    @classmethod
    def failed(cls, exc: RelstepError, traceback: str | None = None) -> RunResult:
        """The result of a command that stopped with ``exc`` before it had phases to report."""
        from relstep.masking import mask_text

        return cls(failed_phase=exc.phase, error=mask_text(exc.message), exit_code=exc.exit_code,
                   traceback=mask_text(traceback) if traceback else None)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["traceback"]
        data["ok"] = self.ok
        return data


@dataclass
class Outcome:
    """What a CLI command hands the command runner, which alone prints, publishes and exits.

    ``result`` decides the exit code and the last stderr line, and is what the CI writers and
    the alerts see; a command with nothing for them (list, show) leaves it ``None`` on success.
    """

    text: str | None = None               # stdout without --json (the command may have said more earlier)
    data: Any = None                      # stdout with --json; None: the result's own JSON
    result: RunResult | None = None
