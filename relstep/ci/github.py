"""GitHub Actions: step outputs, the job summary table and the ``::error`` annotation.

Modelled on python-semantic-release's ``GitHubActionsOutput``: one class owns the output
names, validates the values and renders them, so the Action's ``outputs:`` and what relstep
writes cannot drift apart.  Every value is masked before it is rendered.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from relstep.ci._mask import mask
from relstep.result import RunResult

#: The outputs declared in action.yml, in order.  tests/ci checks that the two agree.
OUTPUT_NAMES = ("version", "deployment-type", "snapshot", "schema-revision", "record-id", "diff")

DEPLOYMENT_TYPES = frozenset({"release", "patch"})


@dataclass(frozen=True)
class GitHubActionsOutput:
    """The values relstep publishes as step outputs; ``None`` is written as an empty string.

    Empty outputs are still written so that ``steps.<id>.outputs.snapshot`` is always
    defined (an empty string) rather than silently missing after a failed phase.
    """

    version: str | None = None
    deployment_type: str | None = None
    snapshot: str | None = None
    schema_revision: str | None = None
    record_id: int | None = None
    diff: str | None = None        # `relstep run`: the changes since the previous snapshot, as JSON

    def __post_init__(self) -> None:
        for name in ("version", "deployment_type", "snapshot", "schema_revision"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"GitHub output {name} must be a string or None, not {type(value).__name__}")
        if self.deployment_type is not None and self.deployment_type not in DEPLOYMENT_TYPES:
            raise ValueError(f"GitHub output deployment-type must be one of {sorted(DEPLOYMENT_TYPES)}")
        # bool is an int subclass; a True record id is a bug upstream, not an id.
        if self.record_id is not None and (not isinstance(self.record_id, int) or isinstance(self.record_id, bool)):
            raise TypeError("GitHub output record-id must be an int or None")

    @classmethod
    def from_result(cls, result: RunResult) -> GitHubActionsOutput:
        return cls(
            version=result.version,
            deployment_type=result.deployment_type,
            snapshot=result.snapshot,
            schema_revision=result.schema_revision,
            record_id=result.record_id,
            diff=json.dumps(result.changes, separators=(",", ":")) if result.changes is not None else None,
        )

    def to_dict(self) -> dict[str, str]:
        """Output name -> masked string value, in OUTPUT_NAMES order."""
        raw: dict[str, object] = {
            "version": self.version,
            "deployment-type": self.deployment_type,
            "snapshot": self.snapshot,
            "schema-revision": self.schema_revision,
            "record-id": self.record_id,
            "diff": self.diff,
        }
        return {name: mask(raw[name]) for name in OUTPUT_NAMES}

    def to_output_text(self) -> str:
        """The block to append to ``$GITHUB_OUTPUT``, one ``name<<DELIMITER`` entry per output.

        The heredoc form is used for every value, not only multi-line ones: a path or a
        migration name containing a newline could otherwise inject a second output.
        """
        return "".join(_heredoc(name, value) for name, value in self.to_dict().items())

    def write(self, path: str | Path) -> None:
        """Append the outputs to ``path`` (the runner's per-step ``$GITHUB_OUTPUT`` file)."""
        # newline="\n": the runner splits on "\n" on every OS; no CRLF translation on Windows.
        with open(path, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(self.to_output_text())


def _heredoc(name: str, value: str) -> str:
    # Same shape as @actions/core's prepareKeyValueMessage: a random delimiter that must not
    # occur in the name or the value (a value crafted to contain it could end the block early).
    while True:
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        if delimiter not in name and delimiter not in value:
            break
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def escape_data(text: str) -> str:
    """Escape the message part of a workflow command (``::cmd::<data>``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a property value of a workflow command (``::cmd key=<value>::``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def error_annotation(result: RunResult) -> str:
    """The ``::error title=relstep <phase> failed::<reason>`` line for a failed result."""
    phase = mask(result.failed_phase or "relstep")
    reason = mask(result.error) or f"exited with code {result.exit_code}"
    return f"::error title={escape_property(f'relstep {phase} failed')}::{escape_data(reason)}"


def _cell(value: object) -> str:
    # Table cells: HTML-escape (the summary renders HTML) and neutralise the column
    # separator and line breaks, which would otherwise break the row.
    text = html.escape(mask(value), quote=False)
    return text.replace("|", "&#124;").replace("\r", " ").replace("\n", " ")


def summary_markdown(result: RunResult) -> str:
    """A Markdown section for ``$GITHUB_STEP_SUMMARY``: headline, phase table, key facts."""
    outcome = "passed" if result.ok else f"failed in {result.failed_phase or 'relstep'} (exit {result.exit_code})"
    release = _cell(result.version or "unknown version")
    if result.deployment_type:
        release += f" ({_cell(result.deployment_type)})"
    lines = [f"### relstep {release}: {outcome}", ""]
    if result.phases:
        lines += ["| Phase | Outcome | Seconds | Detail |", "| --- | --- | ---: | --- |"]
        for phase in result.phases:
            mark = "✅ passed" if phase.ok else "❌ failed"
            lines.append(f"| {_cell(phase.name)} | {mark} | {phase.seconds:.2f} | {_cell(phase.detail)} |")
        lines.append("")
    facts = [
        ("Snapshot", result.snapshot),
        ("Schema revision", result.schema_revision),
        ("Record id", result.record_id),
        ("Pruned", ", ".join(result.pruned) if result.pruned else None),
        ("Error", result.error),
    ]
    # getattr: notes is a newer RunResult field; the summary must not break on an older core.
    facts += [("Note", note) for note in getattr(result, "notes", None) or []]
    for label, value in facts:
        if value is not None and value != "":
            lines.append(f"- **{label}:** {_cell(value)}")
    changes = getattr(result, "changes_markdown", None)
    if changes:   # relstep.diff's Markdown: names are in code spans, which render no HTML
        lines += ["", mask(changes).rstrip("\n")]
    return "\n".join(lines).rstrip("\n") + "\n\n"


def report(result: RunResult, environ: Mapping[str, str], stream: TextIO) -> None:
    """Write whatever the environment asks for: outputs, summary, and an annotation on failure."""
    output_path = environ.get("GITHUB_OUTPUT")
    if output_path:
        GitHubActionsOutput.from_result(result).write(output_path)
    summary_path = environ.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        with open(summary_path, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(summary_markdown(result))
    if not result.ok and environ.get("GITHUB_ACTIONS") == "true":
        stream.write(error_annotation(result) + "\n")
        stream.flush()
