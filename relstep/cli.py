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


def _publish(result: Any, as_json: bool = False) -> None:
    """Hand a result to the CI writers (GitHub outputs/summary/annotation, GitLab dotenv).

    Every command calls this on success and on failure.  Under --json the annotation
    goes to stderr so stdout stays one JSON object.
    """
    from relstep import ci

    ci.report(result, stream=sys.stderr if as_json else None)


def _fail(exc: RelstepError) -> NoReturn:
    from relstep.masking import mask_text
    from relstep.result import RunResult

    if state.verbose:
        import traceback

        # Masked like the pipeline's tracebacks: a driver's error text can carry part of a password.
        _err(mask_text(traceback.format_exc()).rstrip())
    if state.config is not None and state.config.notify is not None:
        from relstep import notify

        for note in notify.after_failure(state.config, exc.phase, mask_text(exc.message), exc.exit_code):
            _err(f"relstep: note: {note}")
    _publish(RunResult(failed_phase=exc.phase, error=mask_text(exc.message), exit_code=exc.exit_code))
    _err(f"relstep: {exc.phase} failed: {mask_text(exc.message)}")
    raise typer.Exit(exc.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    """The one place expected failures become a message and an exit code."""
    try:
        yield
    except RelstepError as exc:
        _fail(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        code, name = _interruption(exc)
        _err(f"relstep: interrupted: stopped by {name}; no partial snapshot was left behind")
        raise typer.Exit(code) from None


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
    _publish(result, as_json)
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
        _publish(result)
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
    from relstep.result import RunResult

    with _errors():
        config = _config()
        with snapshot.root_lock(config.backup_root, lock_timeout):
            path = (snapshot.resolve_snapshot(config.backup_root, snapshot_ref) if snapshot_ref
                    else pipeline.newest_unrecorded(config))
            outcome, manifest = pipeline.record_snapshot(config, path)
    _publish(RunResult(version=manifest["version"], deployment_type=manifest["deployment_type"], snapshot=str(path),
                       schema_revision=manifest.get("schema_revision"), record_id=outcome.id), as_json)
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
    from relstep.result import RunResult

    with _errors():
        config = _config(keep)
        with snapshot.root_lock(config.backup_root, lock_timeout):
            outcome = pipeline.prune(config, config.retention, dry_run=dry_run)
    _publish(RunResult(pruned=[] if dry_run else [str(p) for p in outcome.removed]))
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


def _fetched(config: Any, ref: str | None, lock_timeout: float) -> str:
    """--from-offsite: copy the snapshot into backup_root first; the local name to use from then on."""
    from relstep import offsite

    return offsite.fetch_into_backup_root(config, ref, lock_timeout).name


@app.command()
def restore(
    ref: str = typer.Argument(..., metavar="SNAPSHOT|VERSION", help="Snapshot name or path, or a version."),
    database_url: str | None = typer.Option(None, "--database-url", help="Restore into this database "
                                            "(default: database.url)."),
    database: str | None = typer.Option(None, "--database", help="Which of the snapshot's databases to restore "
                                        "(needed when it holds several)."),
    code_to: str | None = typer.Option(None, "--code-to", help="Also extract the code trees into this folder."),
    check_only: bool = typer.Option(False, "--check-only", help="Print the compatibility verdict and stop (0 or 7)."),
    force: bool = typer.Option(False, "--force", help="Restore even when the schema verdict is incompatible."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Overwrite a non-empty database or --code-to folder."),
    from_offsite: bool = typer.Option(False, "--from-offsite", help="Fetch the snapshot (name or version) "
                                      "from offsite.url into backup_root first."),
    lock_timeout: float = LockOpt,
    lock_wait: float = typer.Option(30.0, "--lock-wait", help="Seconds to wait for the database locks (or "
                                    "sessions) in the way; then stop, changing nothing, and name them."),
    terminate_sessions: bool = typer.Option(False, "--terminate-sessions", help="End the database sessions "
                                            "in the restore's way first (and say whom)."),
    no_owner: bool = typer.Option(False, "--no-owner", help="PostgreSQL, into another environment: leave the "
                                  "snapshot's object owners out (says what it left out)."),
    no_privileges: bool = typer.Option(False, "--no-privileges", help="PostgreSQL, into another environment: "
                                       "leave the snapshot's GRANTs and default privileges out."),
) -> None:
    """Check schema compatibility, then restore a snapshot's database (and code, with --code-to)."""
    from pathlib import Path

    from relstep import restore as core

    with _errors():
        config = _config()
        ref = _fetched(config, ref, lock_timeout) if from_offsite else ref
        chk = core.check(config, ref, database_url, database)
        print(core.describe_check(chk), flush=True)
        core.refuse_if_incompatible(chk, force)
        if check_only:
            raise typer.Exit(0)
        # Ask only a person at a terminal; piped input never counts as consent.
        confirm = (lambda q: typer.confirm(q, default=False, err=True)) if sys.stdin.isatty() else None
        outcome = core.restore(config, chk, force=force, yes=yes, confirm=confirm,
                               code_to=Path(code_to) if code_to else None, lock_timeout=lock_timeout,
                               lock_wait=lock_wait, terminate_sessions=terminate_sessions,
                               no_owner=no_owner, no_privileges=no_privileges)
    print(core.describe_outcome(outcome))


@app.command()
def verify(
    ref: str | None = typer.Argument(None, metavar="[SNAPSHOT|VERSION]", help="Default: the newest snapshot."),
    every: bool = typer.Option(False, "--all", help="Verify every snapshot in backup_root."),
    restore_test: bool = typer.Option(False, "--restore-test", help="Also restore into a scratch database "
                                      "and compare every table's row count with the manifest."),
    scratch_url: str | None = typer.Option(None, "--scratch-url", help="Server for the scratch database "
                                           "(default: database.url's server)."),
    from_offsite: bool = typer.Option(False, "--from-offsite", help="Fetch the snapshot (name or version) "
                                      "from offsite.url into backup_root first."),
    as_json: bool = JsonOpt,
) -> None:
    """Check every file against MANIFEST.json and that each dump is readable; exit 8 naming what failed."""
    from relstep import verify as core
    from relstep.errors import VerifyError

    with _errors():
        config = _config()
        ref = _fetched(config, ref, LockOpt.default) if from_offsite else ref
        result = core.verify(config, ref, every=every, with_restore_test=restore_test, scratch_url=scratch_url)
        print(json.dumps(result.to_json(), indent=2) if as_json else core.describe(result), flush=True)
        if not result.reports:
            raise VerifyError("there is no snapshot to verify; run `relstep backup` first")
        if not result.ok:
            raise VerifyError(result.failure())


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


from relstep.hooks_cli import hook_app  # noqa: E402 - registered after the core commands, for --help order

app.add_typer(hook_app, name="hook")


def _on_signal(signum: int, frame: Any) -> None:
    # SIGINT too: click turns a KeyboardInterrupt outside `_errors()` into "Aborted!" and exit 1.
    raise Terminated(signum)


def _interruption(exc: BaseException) -> tuple[int, str]:
    """(exit code, signal name) for an interruption: 130 for SIGINT, 143 for SIGTERM."""
    if isinstance(exc, Terminated):
        signum = exc.args[0] if exc.args else signal.SIGTERM
    else:
        signum = signal.SIGINT
    return 128 + signum, signal.Signals(signum).name


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        app()
    except (KeyboardInterrupt, Terminated) as exc:
        # A signal outside a command's `_errors()` (parsing, imports, output): its code, no traceback.
        code, name = _interruption(exc)
        _err(f"relstep: interrupted: stopped by {name}")
        raise SystemExit(code) from None
    finally:
        # The work is done or abandoned: a late signal just ends the process (no traceback at exit).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    main()
