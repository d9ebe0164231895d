"""Data the core returns to the CLI (and to the CI output writers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["traceback"]
        data["ok"] = self.ok
        return data
