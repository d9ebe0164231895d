"""What `relstep list` and `relstep show` report about the snapshots in backup_root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relstep import fsutil, lookup
from relstep.config import Config
from relstep.errors import RecordError
from relstep.fsutil import human_bytes
from relstep.manifest import Manifest


def _recorded(config: Config) -> set[str] | None:
    """Recorded backup paths, or None when the record database cannot be read."""
    if not config.record.url:
        return None
    from relstep import records

    try:
        return {row.backup_path for row in records.read_all(config.record.url, config.record.table)}
    except RecordError:
        return None


def rows(config: Config) -> list[dict[str, Any]]:
    """This app's snapshots and those that record no project, newest first (other projects' are skipped)."""
    return listing(config)[0]


def listing(config: Config) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, notes): the rows of ``rows`` and lines naming what was left out or is never pruned."""
    recorded = _recorded(config)
    view = lookup.of_config(config)
    result = []
    for snap in view.visible:
        manifest = snap.loaded
        result.append({
            "name": snap.name,
            "path": str(snap.path),
            "project": snap.project,
            "version": manifest.version if manifest else None,
            "deployment_type": manifest.deployment_type if manifest else None,
            "created_at": manifest.created_at if manifest else None,
            "size": manifest.size if manifest else 0,
            "schema_revision": manifest.schema_revision if manifest else None,
            "recorded": None if recorded is None else str(snap.path) in recorded,
            **({"problem": snap.problem.message} if snap.problem else {}),
        })
    notes = [note for note in (view.skipped_note(), view.unowned_note()) if note]
    return result, notes


def table(data: list[dict[str, Any]], notes: list[str] | None = None) -> str:
    footer = "".join(f"\n{note}" for note in notes or ())
    if not data:
        return "no snapshots" + footer
    headers = ("SNAPSHOT", "VERSION", "TYPE", "CREATED", "SIZE", "SCHEMA REVISION", "RECORDED")
    lines = [
        (r["name"], r["version"] or "?", r["deployment_type"] or "?", r["created_at"] or "?", human_bytes(r["size"]),
         r["schema_revision"] or "-", {True: "yes", False: "no", None: "?"}[r["recorded"]])
        for r in data
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *lines, strict=False)]
    return "\n".join(_row(row, widths) for row in (headers, *lines)) + footer


def _row(values: tuple[Any, ...], widths: list[int]) -> str:
    return "  ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=False)).rstrip()


def find(config: Config, ref: str) -> Path:
    """A snapshot by name or path inside backup_root (any project's: show only reads), or this
    app's newest one of a version."""
    return lookup.find(config, ref, foreign_by_name=True)


def manifest_summary(path: Path) -> dict[str, Any]:
    manifest = Manifest.load(path)
    summary = manifest.model_dump(mode="json", exclude={"files"})
    summary["path"] = str(path)
    summary["file_count"] = len(manifest.files)
    summary["size"] = manifest.size
    summary["disk_usage"] = fsutil.tree_size(path)
    return summary


def describe(path: Path, summary: dict[str, Any]) -> str:
    lines = [
        f"snapshot:        {path}",
        f"version:         {summary.get('version')} ({summary.get('deployment_type')})",
        f"created:         {summary.get('created_at')}",
        f"project:         {summary.get('project') or '- (recorded none)'}",
        f"git commit:      {summary.get('git_commit') or '-'}",
        f"engine:          {summary.get('engine')}",
        f"migration tool:  {summary.get('migration_tool') or '-'}",
        f"schema revision: {summary.get('schema_revision') or '-'}",
        f"files:           {summary['file_count']} ({human_bytes(summary['size'])})",
    ]
    databases = summary.get("databases") or {"main": {"row_counts": summary.get("row_counts", {})}}
    for name, db in databases.items():
        # One database keeps the short heading; several say whose rows these are.
        lines.append("row counts:" if len(databases) == 1 else f"row counts ({name}, {db.get('engine')}):")
        counts = db.get("row_counts", {})
        width = max((len(t) for t in counts), default=0)
        lines += [f"  {table.ljust(width)}  {count}" for table, count in sorted(counts.items())]
        if db.get("redacted"):
            cols = ", ".join(f"{t}.{c}" for t, cs in db["redacted"].items() for c in cs)
            lines.append(f"redacted ({name}): {cols}")
        for key, why in sorted((db.get("extra") or {}).items()):
            if key.endswith("_skipped"):  # what a restore of this snapshot will not bring back
                lines.append(f"left out ({name}): {key.removesuffix('_skipped')}: {why}")
    for name, code in summary.get("code", {}).items():
        lines.append(f"code {name}: {code.get('files')} files from {code.get('source')}")
        # Databases and snapshots found in the folder: a restore of this code will not hold them.
        lines += [f"left out (code {name}): {item.get('path')}: {item.get('reason')}"
                  for item in code.get("left_out") or [] if isinstance(item, dict)]
    return "\n".join(lines)
