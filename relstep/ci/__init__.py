"""The one place relstep's CI outputs are written (GitHub Actions and GitLab CI).

The CLI calls :func:`report` after every command, on success and on failure alike, so that
later steps and jobs see the version, the snapshot and the exit code even when a phase failed.
Each writer only acts when its CI's variable is set, so calling it outside CI does nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

from relstep.ci import github, gitlab
from relstep.result import RunResult

__all__ = ["report"]


def report(result: RunResult, environ: Mapping[str, str] = os.environ, *, stream: TextIO | None = None) -> None:
    """Publish ``result`` to the CI it runs in.

    - ``$GITHUB_OUTPUT``: the step outputs; ``$GITHUB_STEP_SUMMARY``: a table of the phases;
      on failure with ``GITHUB_ACTIONS=true`` an ``::error`` annotation on ``stream``.
    - ``$RELSTEP_DOTENV``: a GitLab dotenv report.

    ``stream`` defaults to stdout, where workflow commands are usually written; the CLI passes
    ``sys.stderr`` under ``--json`` so stdout stays pure JSON (the runner reads both streams).

    A CI file that cannot be written is a warning on stderr, not an exception: the run's own
    outcome and exit code must not be replaced by a reporting problem.
    """
    out = stream if stream is not None else sys.stdout
    try:
        github.report(result, environ, out)
    except (OSError, ValueError, TypeError) as exc:
        _warn(f"could not write the GitHub Actions outputs: {exc}")
    # GitLab sets GITLAB_CI=true; gitlab-ci-local (the same job, run on a laptop) sets it to "false".
    # Either way the job has a log with collapsible sections, so either gets the changes.
    if "GITLAB_CI" in environ and result.changes_text:
        previous = (result.changes or {}).get("old") or {}
        gitlab.log_changes(f"relstep: changes since {previous.get('version')}", result.changes_text, sys.stderr)
    try:
        dropped = gitlab.report(result, environ)
    except (OSError, ValueError) as exc:
        _warn(f"could not write the GitLab dotenv report to {environ.get('RELSTEP_DOTENV')}: {exc}")
    else:
        for key in dropped:
            _warn(f"{key} left out of the GitLab dotenv report: its value exceeds {gitlab.MAX_VALUE_BYTES} bytes")


def _warn(message: str) -> None:
    print(f"relstep: warning: {message}", file=sys.stderr)
