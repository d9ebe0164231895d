"""`relstep doctor`: the checks a first run (or a changed server) would otherwise discover the hard way.

One :class:`Check` per line: the config loads; each database answers (its driver is
installed); its dump tool (the registry's) is on PATH and its major version is not older
than the server's (dump tools refuse newer servers or silently miss newer syntax); backup_root is
writable with room for twice the last snapshot; the retention value and where it
came from; the off-site target answers.  Nothing is written except a probe file
that is removed at once, and no alert is sent.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from relstep.config import RETENTION_ENV, Config, DatabaseConfig
from relstep.errors import RelstepError
from relstep.masking import mask_text

SPACE_FACTOR = 2
FUTURE_SLACK = 300      # seconds: clocks of two machines sharing a backup_root may differ a little


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL':<5} {self.name:<24} {mask_text(self.detail)}"


def major_version(text: str) -> int | None:
    """The major version in a tool's ``--version`` line or a server's version string."""
    for pattern in (r"Distrib\s+(\d+)\.", r"\bfrom\s+(\d+)\.", r"\)\s*(\d+)(?:\.\d+)", r"^\s*(\d+)(?:\.\d+)",
                    r"(\d+)\.\d+"):
        match = re.search(pattern, text)
        if match:
            return int(match.group(1))
    return None


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def server_version(db: DatabaseConfig) -> str:
    """Connect and ask the server its version; raises DatabaseError (or DriverMissing) with the reason."""
    from relstep.databases import spec_for_url

    spec = spec_for_url(db.url)
    spec.require_driver()
    return spec.load().server_version(db.url)


def _database_checks(db: DatabaseConfig) -> list[Check]:
    from relstep.databases import redact_url, spec_for_url
    from relstep.databases.base import DriverMissing
    from relstep.databases.tools import MISSING

    label = f"database {db.name}"
    try:
        version = server_version(db)
    except DriverMissing as exc:
        return [Check(label, False, exc.message)]
    except Exception as exc:  # any driver error means "not reachable", with its own words
        return [Check(label, False, f"cannot connect to {redact_url(db.url)}: {_reason(exc)}")]
    checks = [Check(label, True, f"{redact_url(db.url)} answers (server {version})")]
    spec = spec_for_url(db.url)
    if not spec.dump_tools:
        return [*checks, Check(f"dump tool {db.name}", True, spec.builtin_dump)]
    versions = spec.load().tool_versions()
    tool = spec.dump_tools[0]  # the one that dumps; the others (if any) are its helpers
    found = next(((name, versions[name]) for name in tool.names if versions.get(name, MISSING) != MISSING), None)
    if found is None:
        return [*checks, Check(f"dump tool {db.name}", False, f"{tool.label} not found on PATH; {tool.install_hint}")]
    name, tool_version = found
    tool_major, server_major = major_version(tool_version), major_version(version)
    if tool_major is not None and server_major is not None and tool_major < server_major:
        return [*checks, Check(f"dump tool {db.name}", False,
                               f"{name} {tool_major} is older than the server ({server_major}); "
                               f"install the version {server_major} client")]
    return [*checks, Check(f"dump tool {db.name}", True, tool_version)]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def last_snapshot_size(config: Config) -> tuple[str, int] | None:
    from relstep import lookup

    for snap in lookup.of_config(config).own:
        return snap.name, snap.manifest().size
    return None


def _future_snapshots_check(config: Config, now: float | None = None) -> Check | None:
    """This app's snapshots recorded as made in the future: retention would keep them ahead of every new one."""
    from relstep import lookup

    now = time.time() if now is None else now
    # Only this app's: another project's retention is its own, and the retention line names them.
    ahead = [s for s in lookup.of_config(config).own if s.created > now + FUTURE_SLACK]
    if not ahead:
        return None
    shown = ", ".join(s.name for s in ahead[:5])
    return Check("snapshot times", False,
                 f"{len(ahead)} snapshot(s) in {config.backup_root} are dated in the future ({shown}): the clock "
                 "was wrong when they were made; retention keeps them ahead of every new snapshot until that time, "
                 "so check the clock and remove them by hand if they are not needed")


def _backup_root_check(config: Config) -> Check:
    from relstep.fsutil import human_bytes

    root = config.backup_root
    name = "backup_root"
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return Check(name, False, f"{root} is {'a symlink' if root.is_symlink() else 'a file'}, not a directory")
    base = _nearest_existing(root)
    if not base.is_dir():
        return Check(name, False, f"{root} cannot be created: {base} is not a directory")
    try:
        # Really write: os.access says yes to root on a read-only mount.
        with tempfile.NamedTemporaryFile(dir=base, prefix=".relstep-doctor-"):
            pass
    except OSError as exc:
        return Check(name, False, f"{root} is not writable ({base}: {exc.strerror or exc})")
    stat = os.statvfs(base)
    free = stat.f_bavail * stat.f_frsize
    where = "" if base == root else f" (created on first backup, under {base})"
    last = last_snapshot_size(config)
    if last is None:
        return Check(name, True, f"{root} writable{where}, {human_bytes(free)} free; no snapshot yet")
    snap, size = last
    needed = SPACE_FACTOR * size
    detail = (f"{root}: {human_bytes(free)} free, last snapshot {snap} is {human_bytes(size)} "
              f"(needs {human_bytes(needed)}, {SPACE_FACTOR}x)")
    return Check(name, free >= needed, detail if free >= needed else f"not enough room: {detail}")


def _retention_check(config: Config, environ: Mapping[str, str]) -> Check:
    """The retention, where it came from, and what it applies to: this app's unpinned snapshots.

    In a shared backup_root the other projects' snapshots are named, not counted (as list and
    prune do), and the unowned ones are counted apart: prune never removes either.
    """
    from relstep import lookup, pins

    if RETENTION_ENV in environ:
        source = RETENTION_ENV
    elif config.raw.get("retention") is not None:
        source = str(config.where)
    else:
        source = "default"
    view = lookup.of_config(config)
    try:
        pinned = pins.names(config.backup_root)
    except RelstepError as exc:   # a damaged pins file: prune would stop, so this check fails
        return Check("retention", False, exc.message)
    counted = [s for s in view.own if s.name not in pinned]
    detail = f"keep {config.retention} (from {source}); {len(counted)} snapshot(s) of project {view.project!r} now"
    if len(counted) < len(view.own):
        detail += f", plus {len(view.own) - len(counted)} pinned"
    if view.unowned:
        detail += f"; {len(view.unowned)} that record no project (never pruned automatically)"
    skipped = view.skipped_note()
    if skipped:
        detail += f"; {skipped}"
    if config.offsite is not None:
        detail += f"; off-site keep {config.offsite.keep}"
    return Check("retention", True, detail)


def _offsite_check(config: Config) -> Check:
    from relstep import offsite

    assert config.offsite is not None
    try:
        names = offsite.remote_snapshots(config)
    except RelstepError as exc:
        return Check("offsite", False, exc.message)
    required = "required" if config.offsite.required else "optional"
    return Check("offsite", True, f"{offsite.open_remote(config.offsite.url).shown} answers ({required}); "
                 f"{len(names)} snapshot(s) there")


def run_checks(config_path: str | None, environ: Mapping[str, str] | None = None,
               cwd: Path | None = None) -> list[Check]:
    from relstep.config import load_config

    environ = os.environ if environ is None else environ
    try:
        config = load_config(config_path, environ=environ, cwd=cwd)
    except RelstepError as exc:
        # Everything else depends on the config: one clear line beats a cascade of failures.
        return [Check("config", False, exc.message)]
    checks = [Check("config", True, config.where)]
    if not config.all_databases:
        checks.append(Check("database", False, f"none configured; set database.url in {config.where} "
                                               "or DATABASE_URL"))
    for db in config.all_databases:
        checks += _database_checks(db)
    record_url = config.record.url
    if record_url and record_url not in {db.url for db in config.all_databases}:
        checks += _database_checks(DatabaseConfig(url=record_url, name="record"))[:1]
    checks.append(_backup_root_check(config))
    checks.append(_retention_check(config, environ))
    future = _future_snapshots_check(config)
    if future is not None:
        checks.append(future)
    if config.offsite is not None:
        checks.append(_offsite_check(config))
    if config.notify is not None:
        checks.append(_notify_check(config))
    return checks


def _notify_check(config: Config) -> Check:
    assert config.notify is not None
    from urllib.parse import urlsplit

    notify = config.notify
    # Not sent: a doctor run must not page anyone.  The host alone, since the URL carries a token.
    parts = []
    if notify.webhook:
        parts.append(f"{notify.format} webhook on {urlsplit(notify.webhook).hostname or '?'}, "
                     f"on {', '.join(notify.on)}")
    if notify.ping_url:
        parts.append(f"heartbeat on {urlsplit(notify.ping_url).hostname or '?'}")
    return Check("notify", True, "; ".join(parts) + " (not sent)")
