"""GitLab CI: a dotenv report (``artifacts: reports: dotenv:``) for later jobs.

GitLab parses this file itself and is strict about it (its ParseDotenvArtifactService):
the whole file must stay under 5 KB, keys are ASCII letters, digits and underscores, a value
cannot span lines, blank lines and comments are not allowed, and quotes are not unescaped.
A file that breaks a rule makes the artifact upload fail, so the rules are enforced here
rather than hoped for.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from relstep.ci._mask import mask
from relstep.result import RunResult

#: GitLab's default dotenv size limit (plan_limits.dotenv_size) for the whole file.
MAX_DOTENV_BYTES = 5 * 1024
#: Per value: far above any real path or version, far below the file limit.
MAX_VALUE_BYTES = 2000
#: The oldest GitLab versions accept at most 10 variables per report.
MAX_VARIABLES = 10

_KEY = re.compile(r"\A[A-Za-z0-9_]{1,255}\Z")
# Every control character (line breaks included) becomes a space: GitLab reads one line per variable.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class DotenvReport:
    """Validated ``KEY=value`` pairs, rendered in the subset of dotenv that GitLab accepts."""

    def __init__(self, values: Mapping[str, object]) -> None:
        if len(values) > MAX_VARIABLES:
            raise ValueError(f"a GitLab dotenv report holds at most {MAX_VARIABLES} variables")
        self.values: dict[str, str] = {}
        self.dropped: list[str] = []
        for key, raw in values.items():
            if not _KEY.match(key):
                raise ValueError(f"invalid GitLab dotenv key {key!r}: use ASCII letters, digits and underscores")
            value = _CONTROL.sub(" ", mask(raw)).strip()
            if not value:
                # Omitted, not written as KEY=: a dotenv variable overrides the job's own
                # variables in later jobs, so an empty one would shadow a user's default.
                continue
            if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
                # Truncating a path or a revision would hand later jobs a wrong value; leave it out.
                self.dropped.append(key)
                continue
            self.values[key] = value
        # Several near-limit values could still overflow the file: drop the longest until it fits.
        while len(self._render().encode("utf-8")) > MAX_DOTENV_BYTES:
            longest = max(self.values, key=lambda k: len(self.values[k].encode("utf-8")))
            del self.values[longest]
            self.dropped.append(longest)

    @classmethod
    def from_result(cls, result: RunResult) -> DotenvReport:
        return cls(
            {
                "RELSTEP_VERSION": result.version,
                "RELSTEP_DEPLOYMENT_TYPE": result.deployment_type,
                "RELSTEP_SNAPSHOT": result.snapshot,
                "RELSTEP_SCHEMA_REVISION": result.schema_revision,
                "RELSTEP_RECORD_ID": result.record_id,
                "RELSTEP_EXIT_CODE": result.exit_code,
            }
        )

    def _render(self) -> str:
        return "".join(f"{key}={value}\n" for key, value in self.values.items())

    def to_text(self) -> str:
        return self._render()

    def write(self, path: str | Path) -> None:
        """Replace ``path`` atomically, so an upload never sees half a file."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(self.to_text())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def report(result: RunResult, environ: Mapping[str, str]) -> list[str]:
    """Write the dotenv report to ``$RELSTEP_DOTENV`` if set; return the keys left out as too long."""
    path = environ.get("RELSTEP_DOTENV")
    if not path:
        return []
    dotenv = DotenvReport.from_result(result)
    dotenv.write(path)
    return dotenv.dropped


def log_changes(header: str, text: str, stream: TextIO) -> None:
    """`relstep run`'s changes since the previous version, as a collapsible section of the job log.

    The whole text is the section's body, its title line included: GitLab shows ``header`` on the
    section's line, but gitlab-ci-local (the same job on a laptop) drops whatever follows the marker.
    """
    import time

    stamp = int(time.time())
    stream.write(f"\x1b[0Ksection_start:{stamp}:relstep_changes[collapsed=false]\r\x1b[0K{mask(header)}\n")
    stream.write("".join(f"{line}\n" for line in mask(text).splitlines()))
    stream.write(f"\x1b[0Ksection_end:{stamp}:relstep_changes\r\x1b[0K\n")
    stream.flush()
