"""Typer CLI: parse options, call the core, render its result, map errors to exit codes.  Nothing else."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer

from relstep.errors import RelstepError, Terminated

app = typer.Typer(
    name="relstep",
    help="Back up, record and prune every release and patch: the pre-deploy step that makes deploys recoverable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class State:
    config_path: str | None = None
    verbose: bool = False
    config: Any = None        # the loaded Config, so a failure can be alerted (notify:)


state = State()

VersionOpt = typer.Option(None, "--version", help="Release version (default: RELSTEP_VERSION, CI tag, tag at HEAD).")
TypeOpt = typer.Option(None, "--type", help="release or patch (default: RELSTEP_DEPLOYMENT_TYPE, else inferred).")
KeepOpt = typer.Option(None, "--keep", help="Snapshots to keep (default: RELEASE_BACKUP_RETENTION_COUNT, config, 30).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there.")
LockOpt = typer.Option(600.0, "--lock-timeout", help="Seconds to wait for another run on the same backup_root.")


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fail(exc: RelstepError) -> NoReturn:
    from relstep.masking import mask_text

    if state.verbose:
        import traceback

        traceback.print_exc()
    if state.config is not None and state.config.notify is not None:
        from relstep import notify

        for note in notify.after_failure(state.config, exc.phase, mask_text(exc.message), exc.exit_code):
            _err(f"relstep: note: {note}")
    _err(f"relstep: {exc.phase} failed: {mask_text(exc.message)}")
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    """The one place expected failures become a message and an exit code."""
    try:
        yield
    except RelstepError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        _err("relstep: interrupted: stopped by SIGINT; no partial snapshot was left behind")
        raise typer.Exit(130) from None
    except Terminated:
        _err("relstep: interrupted: stopped by SIGTERM; no partial snapshot was left behind")
        raise typer.Exit(143) from None


def _config(keep: str | None = None) -> Any:
    from relstep.config import load_config

    state.config = load_config(state.config_path, keep=keep)
    return state.config


def _release(config: Any, version: str | None, kind: str | None) -> Any:
    from relstep.version import resolve_release

    return resolve_release(version, kind, config.base_dir, config.tag_prefix)


def _report(result: Any, as_json: bool, title: str) -> NoReturn:
    """Print a RunResult (text or JSON), hand it to the CI writers, exit with its code."""
    if state.config is not None and state.config.notify is not None:
        from relstep import notify

        result.notes += notify.after_run(state.config, result, success_alert=title == "run")
    try:
        from relstep import ci

        ci.report(result)
    except ImportError:
        pass
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_summary(result, title)
    for warning in result.warnings:
        _err(f"relstep: warning: {warning}")
    for note in result.notes:
        _err(f"relstep: note: {note}")
    if result.exit_code:
        if state.verbose and result.traceback:
            _err(result.traceback.rstrip())
        _err(f"relstep: {result.failed_phase} failed: {result.error}")
    raise typer.Exit(result.exit_code)


def _print_summary(result: Any, title: str) -> None:
    if result.version:
        print(f"relstep {title}: {result.version} ({result.deployment_type})")
    for phase in result.phases:
        outcome = "ok" if phase.ok else ("FAILED" if phase.exit_code else "WARNING")
        print(f"  {phase.name:<8} {outcome:<7} {phase.seconds:7.2f}s  {phase.detail}")
    if result.snapshot:
        print(f"snapshot:        {result.snapshot}")
    if result.ok and result.version:
        print(f"schema revision: {result.schema_revision or '(none)'}")


@app.callback()
def _main(
    config: str | None = typer.Option(
        None, "--config", "-c", help="Path to relstep.yml (default: ./relstep.yml, RELSTEP_CONFIG)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks for failures."),
) -> None:
    state.config_path = config
    state.verbose = verbose
    from relstep import progress

    progress.install(progress.choose())


@app.command()
def backup(
    version: str | None = VersionOpt,
    kind: str | None = TypeOpt,
    as_json: bool = JsonOpt,
    lock_timeout: float = LockOpt,
) -> None:
    """Write one snapshot under backup_root and print its path."""
    from relstep import pipeline

    with _errors():
        config = _config()
        release = _release(config, version, kind)
        result = pipeline.run(config, release, lock_timeout=lock_timeout, phases=("backup",))
    if not as_json and result.ok:
        print(result.snapshot)
        raise typer.Exit(0)
    _report(result, as_json, "backup")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    deploy: list[str] | None = typer.Argument(None, help="Deploy command, after --."),
    version: str | None = VersionOpt,
    kind: str | None = TypeOpt,
    keep: str | None = KeepOpt,
    as_json: bool = JsonOpt,
    lock_timeout: float = LockOpt,
) -> None:
    """Backup, then the deploy command (after --), then record, then prune; stops at the first failure."""
    from relstep import pipeline

    with _errors():
        config = _config(keep)
        release = _release(config, version, kind)
        result = pipeline.run(config, release, deploy=deploy or (), lock_timeout=lock_timeout)
    _report(result, as_json, "run")


@app.command()
def record(
    snapshot_ref: str | None = typer.Option(
        None, "--snapshot", help="Snapshot name or path (default: newest unrecorded)."
    ),
    as_json: bool = JsonOpt,
    lock_timeout: float = LockOpt,
) -> None:
    """Insert the ReleaseRecord row for a snapshot (once; recording again adds nothing)."""
    from relstep import pipeline, snapshot

    with _errors():
        config = _config()
        with snapshot.root_lock(config.backup_root, lock_timeout):
            path = (snapshot.resolve_snapshot(config.backup_root, snapshot_ref) if snapshot_ref
                    else pipeline.newest_unrecorded(config))
            outcome, manifest = pipeline.record_snapshot(config, path)
    if as_json:
        print(json.dumps({"id": outcome.id, "snapshot": str(path), "version": manifest["version"],
                          "already_recorded": outcome.already_recorded, "created_table": outcome.created_table}))
    else:
        verb = "already recorded as" if outcome.already_recorded else "recorded as"
        print(f"{path.name} ({manifest['version']}) {verb} ReleaseRecord id {outcome.id}")
    if outcome.created_table:
        _err("relstep: note: " + pipeline.CREATED_TABLE_HINT.format(table=config.record.table))


@app.command()
def prune(
    keep: str | None = KeepOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; delete nothing."),
    lock_timeout: float = LockOpt,
) -> None:
    """Keep the newest N snapshots and remove the rest (nothing else in backup_root is touched)."""
    from relstep import pipeline, snapshot

    with _errors():
        config = _config(keep)
        with snapshot.root_lock(config.backup_root, lock_timeout):
            outcome = pipeline.prune(config, config.retention, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for path in outcome.removed:
        print(f"{verb} {path}")
    for path in outcome.partials_removed:
        print(f"{verb} leftover {path}")
    print(f"kept {len(outcome.kept)} snapshot(s) (retention {config.retention})")


@app.command("list")
def list_snapshots(as_json: bool = JsonOpt) -> None:
    """Snapshots, newest first: name, version, type, created, size, schema revision, recorded."""
    from relstep import inventory

    with _errors():
        rows = inventory.rows(_config())
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(inventory.table(rows))


@app.command()
def show(ref: str = typer.Argument(..., help="Snapshot name, path or version."), as_json: bool = JsonOpt) -> None:
    """One snapshot's manifest in readable form."""
    from relstep import inventory

    with _errors():
        config = _config()
        path = inventory.find(config, ref)
        manifest = inventory.manifest_summary(path)
    print(json.dumps(manifest, indent=2) if as_json else inventory.describe(path, manifest))


@app.command("offsite")
def offsite_copy(
    snapshot_ref: str | None = typer.Option(None, "--snapshot", help="Snapshot name or path (default: newest)."),
    lock_timeout: float = LockOpt,
) -> None:
    """Copy a snapshot to offsite.url, verify it and prune remote copies beyond offsite.keep (exit 6 on failure)."""
    from relstep import pipeline, snapshot

    with _errors():
        config = _config()
        with snapshot.root_lock(config.backup_root, lock_timeout):
            path = (snapshot.resolve_snapshot(config.backup_root, snapshot_ref) if snapshot_ref
                    else pipeline.newest_snapshot(config))
            outcome = pipeline.offsite_copy(config, path)
    print(outcome.summary())
    for name in outcome.removed:
        print(f"removed off-site {name}")


@app.command()
def init(
    prisma: bool = typer.Option(False, "--prisma", help="Also add the ReleaseRecord model and its migration "
                                "to the Prisma schema."),
) -> None:
    """Inspect this repository and write a commented relstep.yml (never overwrites one)."""
    from pathlib import Path

    from relstep import init as core

    with _errors():
        outcome = core.init(Path.cwd(), Path(state.config_path) if state.config_path else None, prisma=prisma)
    for line in outcome.lines():
        print(line)


@app.command()
def doctor() -> None:
    """Check the config, each database, the dump tools, backup_root and retention; one line per check."""
    from relstep import doctor as core

    checks = core.run_checks(state.config_path)
    for check in checks:
        print(check.line(), flush=True)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    app()


if __name__ == "__main__":
    main()
