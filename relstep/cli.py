"""Typer CLI: parse options, run each command through the one command runner, print what it returns.

Every command is declared with :func:`command`.  It adds the options commands share (``--config/-c``
and ``--verbose/-v`` after the command name too, ``--json``, ``--lock-timeout``, ``--keep``) and hands
the call to :func:`_execute`, the one path that loads the config, takes the backup_root lock where the
command needs it, renders the :class:`~relstep.result.Outcome` as text or JSON, writes the CI outputs,
sends alerts and turns every failure, expected or not, into one stderr line and its exit code.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import shlex
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import typer
from typer.core import TyperCommand

from relstep.defaults import DEFAULT_LOCK_TIMEOUT
from relstep.errors import InputError, InternalError, RelstepError, Terminated
from relstep.result import Outcome, RunResult

if TYPE_CHECKING:
    from relstep.restore import RestoreCheck

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


state = State()


# --- output -------------------------------------------------------------------------------------


def _out(text: str) -> None:
    from relstep.masking import mask_text

    print(mask_text(text), flush=True)


def _err(line: str) -> None:
    from relstep.masking import mask_text

    print(mask_text(line), file=sys.stderr, flush=True)


# --- options every command shares ---------------------------------------------------------------


def _seconds(value: str) -> float:
    """--lock-timeout: a finite number of seconds, 0 (try once) or more."""
    try:
        seconds = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of seconds; give 0 or more, e.g. 600") from None
    # nan would never time out (every comparison is false) and inf waits forever: neither is a bound.
    if not math.isfinite(seconds) or seconds < 0:
        raise typer.BadParameter(f"{value!r} is not a number of seconds; give 0 or more, e.g. 600")
    return seconds


ConfigOpt = typer.Option(None, "--config", "-c", metavar="PATH",
                         help="Path to relstep.yml (default: ./relstep.yml, RELSTEP_CONFIG).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show tracebacks for failures.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there.")
LockOpt = typer.Option(DEFAULT_LOCK_TIMEOUT, "--lock-timeout", parser=_seconds, metavar="SECONDS",
                       help="Seconds to wait for another run on the same backup_root (0 or more).")
IdentityOpt = typer.Option(None, "--identity", metavar="FILE",
                           help="age identity file (or SSH private key) that reads an encrypted snapshot "
                                "(default: RELSTEP_AGE_IDENTITY_FILE).")
KeepOpt = typer.Option(None, "--keep", help="Snapshots to keep (default: RELEASE_BACKUP_RETENTION_COUNT, config, 30).")
VersionOpt = typer.Option(None, "--version", help="Release version (default: RELSTEP_VERSION, CI tag, tag at HEAD).")
TypeOpt = typer.Option(None, "--type", help="release or patch (default: RELSTEP_DEPLOYMENT_TYPE, else inferred).")

Lock = Literal["runner", "core"]


@dataclass
class Invocation:
    """One command's call as the runner sees it; the command's body reads what it needs from it."""

    command: str
    as_json: bool = False
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    keep: str | None = None
    config: Any = None            # the loaded Config, for commands that load one

    def say(self, text: str) -> None:
        """Text for people that must appear now (before a prompt or a long step); nothing under --json."""
        if not self.as_json:
            _out(text)


Body = Callable[..., Outcome]


def command(
    name: str | None = None,
    *,
    loads_config: bool = True,
    json_output: bool = True,
    lock: Lock | None = None,
    keep: bool = False,
    identity: bool = False,
    cls: type[TyperCommand] | None = None,
    **settings: Any,
) -> Callable[[Body], Body]:
    """Register ``body(inv, **own_options) -> Outcome`` as a command run by :func:`_execute`.

    The shared options are added here, once, so no command can lack one: ``--config/-c`` and
    ``--verbose/-v`` always (people type them after the command name); ``--json`` for every
    reporting command; ``--lock-timeout`` when the command waits for the backup_root lock (taken by
    the runner with ``lock="runner"``, by the core with ``lock="core"``); ``--keep`` where the
    retention can be overridden (it is part of loading the config).
    """
    shared: list[tuple[str, Any, Any]] = [("config_path", str | None, ConfigOpt), ("verbose", bool, VerboseOpt)]
    if json_output:
        shared.append(("as_json", bool, JsonOpt))
    if lock is not None:
        shared.append(("lock_timeout", float, LockOpt))
    if keep:
        shared.append(("keep", str | None, KeepOpt))
    if identity:
        shared.append(("identity", str | None, IdentityOpt))

    def decorate(body: Body) -> Body:
        command_name = name or body.__name__.replace("_", "-")

        @functools.wraps(body)
        def callback(**kwargs: Any) -> None:
            common = {key: kwargs.pop(key) for key, _, _ in shared}
            if common["config_path"] is not None:
                state.config_path = common["config_path"]
            state.verbose = state.verbose or common["verbose"]
            if identity:
                from relstep import encryption

                encryption.set_identity_option(common["identity"])
            inv = Invocation(command_name, as_json=common.get("as_json", False),
                             lock_timeout=common.get("lock_timeout", DEFAULT_LOCK_TIMEOUT), keep=common.get("keep"))
            raise typer.Exit(_execute(inv, lambda: body(inv, **kwargs), loads_config=loads_config,
                                      holds_lock=lock == "runner"))

        own = list(inspect.signature(body).parameters.values())[1:]   # without `inv`
        added = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
                 for key, kind, option in shared]
        callback.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
        # Typer resolves the body's (string) annotations through these; `inv` and `return` are not options.
        callback.__annotations__ = {key: value for key, value in body.__annotations__.items()
                                    if key in {p.name for p in own}} | {key: kind for key, kind, _ in shared}
        app.command(command_name, cls=cls, **settings)(callback)
        return body

    return decorate


# --- the runner ---------------------------------------------------------------------------------


def _load_config(keep: str | None) -> Any:
    from relstep.config import load_config

    return load_config(state.config_path, keep=keep)


@contextmanager
def _root_lock(inv: Invocation) -> Iterator[None]:
    from relstep import snapshot

    with snapshot.root_lock(inv.config.backup_root, inv.lock_timeout):
        yield


def _execute(inv: Invocation, body: Callable[[], Outcome], *, loads_config: bool, holds_lock: bool) -> int:
    """The one path of every command: config, lock, body, then :func:`_deliver`; returns the exit code."""
    try:
        with _failures(inv.command):
            if loads_config:
                inv.config = _load_config(inv.keep)
            with _root_lock(inv) if holds_lock else nullcontext():
                outcome = body()
    except _Failed as failed:
        outcome = Outcome(result=failed.result)
    except _Interrupted as interrupted:
        return interrupted.code
    return _deliver(inv, outcome)


class _Failed(Exception):
    def __init__(self, result: RunResult) -> None:
        super().__init__(result.error)
        self.result = result


class _Interrupted(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@contextmanager
def _failures(command_name: str) -> Iterator[None]:
    """Every way a command can fail, as a result (`_Failed`) or an interruption (`_Interrupted`).

    Expected failures keep their class's exit code; anything else is an :class:`InternalError`
    (exit 70): one masked line, the traceback only with -v.
    """
    try:
        yield
    except RelstepError as exc:
        raise _Failed(RunResult.failed(exc, traceback.format_exc())) from None
    except (KeyboardInterrupt, Terminated) as exc:
        code, signame = _interruption(exc)
        _err(f"relstep: interrupted: stopped by {signame}; no partial snapshot was left behind")
        raise _Interrupted(code) from None
    except typer.Exit:
        raise   # a command's own exit code (`relstep hook run` ends this way), not a failure
    except typer.Abort:
        # A prompt that got end-of-file: no answer is no consent.
        raise _Failed(RunResult.failed(InputError("no answer at the prompt; nothing was changed",
                                                  phase=command_name))) from None
    except Exception as exc:
        raise _Failed(RunResult.failed(InternalError.wrapping(command_name, exc), traceback.format_exc())) from None


def _deliver(inv: Invocation, outcome: Outcome) -> int:
    """Alerts, CI outputs, stdout (text or JSON), then stderr's warnings, notes and failure line."""
    result = outcome.result
    if result is not None:
        if inv.config is not None and inv.config.notify is not None:
            from relstep import notify

            result.notes += notify.after_run(inv.config, result, success_alert=inv.command == "run")
        from relstep import ci

        # Under --json the ::error annotation goes to stderr, so stdout stays one JSON object.
        ci.report(result, stream=sys.stderr if inv.as_json else None)
    heartbeat: list[str] = []
    if inv.config is not None and inv.config.notify is not None:
        from relstep import notify

        if inv.command in notify.PINGED_COMMANDS:
            heartbeat = notify.ping(inv.config, result is None or result.exit_code == 0)
    if inv.as_json:
        data = outcome.data if outcome.data is not None else (result.to_json() if result is not None else {})
        _out(json.dumps(data, indent=2, default=str))
    elif outcome.text:
        _out(outcome.text)
    for note in heartbeat:
        _err(f"relstep: note: {note}")
    if result is None:
        return 0
    for warning in result.warnings:
        _err(f"relstep: warning: {warning}")
    for note in result.notes:
        _err(f"relstep: note: {note}")
    if result.exit_code:
        if state.verbose and result.traceback:
            _err(result.traceback.rstrip())
        _err(f"relstep: {result.failed_phase} failed: {result.error}")
    return result.exit_code


# --- commands -----------------------------------------------------------------------------------


def _release(config: Any, version: str | None, kind: str | None) -> Any:
    from relstep.version import resolve_release

    return resolve_release(version, kind, config.base_dir, config.tag_prefix)


def _summary(result: RunResult, title: str) -> str:
    lines = []
    if result.version:
        lines.append(f"relstep {title}: {result.version} ({result.deployment_type})")
    for phase in result.phases:
        outcome = "ok" if phase.ok else ("FAILED" if phase.exit_code else "WARNING")
        lines.append(f"  {phase.name:<8} {outcome:<7} {phase.seconds:7.2f}s  {phase.detail}")
    if result.snapshot:
        lines.append(f"snapshot:        {result.snapshot}")
    if result.ok and result.version:
        lines.append(f"schema revision: {result.schema_revision or '(none)'}")
    return "\n".join(lines)


@app.callback()
def _main(config_path: str | None = ConfigOpt, verbose: bool = VerboseOpt) -> None:
    state.config_path = config_path
    state.verbose = verbose
    from relstep import progress

    progress.install(progress.choose())


@command(lock="core")
def backup(inv: Invocation, version: str | None = VersionOpt, kind: str | None = TypeOpt) -> Outcome:
    """Write one snapshot under backup_root and print its path."""
    from relstep import pipeline

    result = pipeline.run(inv.config, _release(inv.config, version, kind), lock_timeout=inv.lock_timeout,
                          phases=("backup",))
    return Outcome(text=result.snapshot if result.ok else _summary(result, "backup"), result=result)


class _DeployCommand(TyperCommand):
    """``relstep run [OPTIONS] -- COMMAND...``: only what follows ``--`` is the deploy command.

    Everything before ``--`` is parsed as relstep's options wherever it stands, so an unknown
    option is an error before anything runs, and a word that is not an option is refused rather
    than guessed to be the deploy command (``relstep run ./deploy.sh`` says to add ``--``).
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        cut = args.index("--") if "--" in args else len(args)
        ctx.meta["relstep.deploy"] = args[cut + 1:]
        rest = super().parse_args(ctx, args[:cut])
        if ctx.args:
            raise _click_exceptions().UsageError(
                f"the deploy command goes after `--`: relstep run [OPTIONS] -- {shlex.join(ctx.args)}", ctx)
        return rest


@command(lock="core", keep=True, cls=_DeployCommand, context_settings={"allow_extra_args": True},
         options_metavar="[OPTIONS] [-- DEPLOY COMMAND...]")
def run(inv: Invocation, ctx: typer.Context, version: str | None = VersionOpt, kind: str | None = TypeOpt) -> Outcome:
    """Backup, then the deploy command (after --), then record, then prune; stops at the first failure."""
    from relstep import pipeline

    deploy = ctx.meta.get("relstep.deploy", [])
    result = pipeline.run(inv.config, _release(inv.config, version, kind), deploy=deploy,
                          lock_timeout=inv.lock_timeout)
    return Outcome(text=_summary(result, "run"), result=result)


@command(lock="runner")
def record(
    inv: Invocation,
    snapshot_ref: str | None = typer.Option(None, "--snapshot", help="Snapshot name or path "
                                            "(default: newest unrecorded)."),
) -> Outcome:
    """Insert the ReleaseRecord row for a snapshot (once; recording again adds nothing)."""
    from relstep import pipeline, snapshot

    config = inv.config
    path = (snapshot.resolve_snapshot(config.backup_root, snapshot_ref) if snapshot_ref
            else pipeline.newest_unrecorded(config))
    outcome, manifest = pipeline.record_snapshot(config, path)
    result = RunResult(version=manifest.version, deployment_type=manifest.deployment_type, snapshot=str(path),
                       schema_revision=manifest.schema_revision, record_id=outcome.id)
    if outcome.created_table:
        result.notes.append(pipeline.CREATED_TABLE_HINT.format(table=config.record.table))
    verb = "already recorded as" if outcome.already_recorded else "recorded as"
    return Outcome(
        text=f"{path.name} ({manifest.version}) {verb} ReleaseRecord id {outcome.id}",
        data={"id": outcome.id, "snapshot": str(path), "version": manifest.version,
              "already_recorded": outcome.already_recorded, "created_table": outcome.created_table},
        result=result,
    )


@command(lock="runner", keep=True)
def prune(
    inv: Invocation,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be removed; delete nothing."),
) -> Outcome:
    """Keep the newest N snapshots and remove the rest (nothing else in backup_root is touched)."""
    from relstep import pipeline

    retention = inv.config.retention
    outcome = pipeline.prune(inv.config, retention, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {path}" for path in outcome.removed]
    lines += [f"{verb} leftover {path}" for path in outcome.partials_removed]
    lines.append(f"kept {len(outcome.kept)} snapshot(s) (retention {retention})")
    lines += outcome.notes
    result = RunResult(pruned=[] if dry_run else [str(p) for p in outcome.removed])
    result.warnings += [f"could not remove leftover {path}: {reason}; remove it by hand"
                        for path, reason in outcome.partials_left]
    data = {"dry_run": dry_run, "retention": retention, "removed": [str(p) for p in outcome.removed],
            "kept": [str(p) for p in outcome.kept], "leftovers_removed": [str(p) for p in outcome.partials_removed],
            "leftovers_left": [{"path": str(p), "reason": r} for p, r in outcome.partials_left],
            "notes": outcome.notes}
    return Outcome(text="\n".join(lines), data=data, result=result)


@command("list")
def list_snapshots(inv: Invocation) -> Outcome:
    """Snapshots, newest first: name, version, type, created, size, schema revision, recorded."""
    from relstep import inventory

    rows, notes = inventory.listing(inv.config)
    return Outcome(text=inventory.table(rows, notes), data=rows)


@command(identity=True)
def show(inv: Invocation, ref: str = typer.Argument(..., help="Snapshot name, path or version.")) -> Outcome:
    """One snapshot's manifest in readable form."""
    from relstep import inventory

    path = inventory.find(inv.config, ref)
    manifest = inventory.manifest_summary(path)
    return Outcome(text=inventory.describe(path, manifest), data=manifest)


@command()
def diff(
    inv: Invocation,
    old: str | None = typer.Argument(None, metavar="[A]", help="Snapshot name or version (default: the one "
                                     "before the newest, or before B)."),
    new: str | None = typer.Argument(None, metavar="[B]", help="Snapshot name or version (default: the newest)."),
    as_markdown: bool = typer.Option(False, "--markdown", help="Print Markdown (for a PR comment or a summary)."),
) -> Outcome:
    """What changed between two snapshots: migrations, schema, rows, code files, environment, size."""
    from relstep import diff as core

    if as_markdown and inv.as_json:
        raise InputError("--json and --markdown exclude each other; choose one")
    found = core.compare(*core.choose(inv.config, old, new))
    return Outcome(text=core.markdown(found) if as_markdown else core.text(found), data=found.to_json())


@command()
def status(
    inv: Invocation,
    max_age: str | None = typer.Option(None, "--max-age", metavar="DURATION", help="Fail (exit 11) when the "
                                       "newest snapshot is older, e.g. 26h, 2d."),
    min_size_ratio: float | None = typer.Option(None, "--min-size-ratio", metavar="R", help="Fail (exit 11) when "
                                                "the newest snapshot is smaller than R times the previous one."),
) -> Outcome:
    """The newest snapshot, its age and record, retention, pins and verify results; with thresholds a health check."""
    from relstep import status as core
    from relstep.errors import HealthError

    if min_size_ratio is not None and not 0 < min_size_ratio <= 1:
        raise InputError(f"--min-size-ratio {min_size_ratio:g} must be more than 0 and at most 1, e.g. 0.5")
    seconds = core.parse_duration(max_age) if max_age is not None else None
    found_status = core.gather(inv.config)
    found = core.problems(found_status, seconds, min_size_ratio)
    checking = seconds is not None or min_size_ratio is not None
    failure = None
    if checking and found:
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        failure = HealthError(found[0] + more)
    return Outcome(text=core.text(found_status, found), data=core.to_json(found_status, found),
                   result=RunResult.failed(failure) if failure else None)


def _pin_target(inv: Invocation, ref: str) -> tuple[str, str | None]:
    from relstep import lookup, snapshot

    path = lookup.find(inv.config, ref)
    loaded = snapshot.read(path).loaded
    return path.name, loaded.version if loaded else None


@command(lock="runner")
def pin(
    inv: Invocation,
    ref: str = typer.Argument(..., metavar="SNAPSHOT|VERSION", help="Snapshot name or path, or a version."),
    reason: str | None = typer.Option(None, "--reason", help="Why it is kept (shown by list and status)."),
) -> Outcome:
    """Keep a snapshot forever: never pruned, locally or off-site, and not counted against the retention."""
    from relstep import pins

    name, version = _pin_target(inv, ref)
    done = pins.pin(inv.config.backup_root, name, reason, version)
    return Outcome(text=f"pinned {name} ({version})" + (f": {reason}" if reason else ""),
                   data={"pinned": name, "version": version, "reason": reason, "pinned_at": done.pinned_at})


@command(lock="runner")
def unpin(
    inv: Invocation,
    ref: str = typer.Argument(..., metavar="SNAPSHOT|VERSION", help="Snapshot name or path, or a version."),
) -> Outcome:
    """Remove a pin: the snapshot counts against the retention again (the next prune may remove it)."""
    from relstep import pins

    root = inv.config.backup_root
    # A pinned name first: its pin can be removed even if the snapshot is gone.
    name = ref if ref in pins.names(root) else _pin_target(inv, ref)[0]
    removed = pins.unpin(root, name)
    if removed is None:
        raise InputError(f"{name} is not pinned; `relstep status` lists the pins")
    return Outcome(text=f"unpinned {name}", data={"unpinned": name, "reason": removed.reason})


def _fetched(inv: Invocation, ref: str | None) -> str:
    """--from-offsite: copy the snapshot into backup_root first; the local name to use from then on."""
    from relstep import offsite
    from relstep.encryption import IdentityNeeded

    try:
        return offsite.fetch_into_backup_root(inv.config, ref, inv.lock_timeout).name
    except IdentityNeeded as exc:   # a copy encrypted on the way up: named as the command's, as locally
        raise IdentityNeeded(exc.message, phase=inv.command) from None


def _restore_check_json(chk: RestoreCheck) -> dict[str, Any]:
    manifest = chk.manifest
    return {"snapshot": str(chk.snapshot), "version": manifest.version,
            "deployment_type": manifest.deployment_type, "database": chk.database, "target": chk.target,
            "target_empty": chk.target_empty, "target_problem": chk.target_problem,
            "migration_tool": chk.migration_tool,
            "app_migrations": str(chk.app_migrations) if chk.app_migrations else None,
            "verdict": chk.verdict.to_json(), "summary": chk.verdict.summary()}


@command(lock="core", identity=True)
def restore(
    inv: Invocation,
    ref: str = typer.Argument(..., metavar="SNAPSHOT|VERSION", help="Snapshot name or path, or a version."),
    database_url: str | None = typer.Option(None, "--database-url", help="Restore into this database "
                                            "(default: database.url)."),
    database: str | None = typer.Option(None, "--database", help="Which of the snapshot's databases to restore "
                                        "(needed when it holds several)."),
    code_to: str | None = typer.Option(None, "--code-to", help="Also restore the code trees: built beside this "
                                       "folder, then swapped in whole (the old one kept and named)."),
    check_only: bool = typer.Option(False, "--check-only", help="Print the compatibility verdict and stop (0 or 7)."),
    force: bool = typer.Option(False, "--force", help="Restore even when the schema verdict is incompatible."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Overwrite a non-empty database or --code-to folder."),
    from_offsite: bool = typer.Option(False, "--from-offsite", help="Fetch the snapshot (name or version) "
                                      "from offsite.url into backup_root first."),
    lock_wait: float = typer.Option(30.0, "--lock-wait", help="Seconds to wait for the database locks (or "
                                    "sessions) in the way; then stop, changing nothing, and name them."),
    terminate_sessions: bool = typer.Option(False, "--terminate-sessions", help="End the database sessions "
                                            "in the restore's way first (and say whom)."),
    no_owner: bool = typer.Option(False, "--no-owner", help="PostgreSQL, into another environment: leave the "
                                  "snapshot's object owners out (says what it left out)."),
    no_privileges: bool = typer.Option(False, "--no-privileges", help="PostgreSQL, into another environment: "
                                       "leave the snapshot's GRANTs and default privileges out."),
) -> Outcome:
    """Check schema compatibility, then restore a snapshot's database (and code, with --code-to)."""
    from pathlib import Path

    from relstep import restore as core

    ref = _fetched(inv, ref) if from_offsite else ref
    chk = core.check(inv.config, ref, database_url, database)
    inv.say(core.describe_check(chk))   # before the verdict can refuse and before any prompt
    data: dict[str, Any] = {"check": _restore_check_json(chk), "restored": None}
    core.refuse_if_incompatible(chk, force)
    if check_only:
        return Outcome(data=data)
    # Ask only a person at a terminal; piped input never counts as consent.
    confirm = (lambda q: typer.confirm(q, default=False, err=True)) if sys.stdin.isatty() else None
    outcome = core.restore(inv.config, chk, force=force, yes=yes, confirm=confirm,
                           code_to=Path(code_to) if code_to else None, lock_timeout=inv.lock_timeout,
                           lock_wait=lock_wait, terminate_sessions=terminate_sessions,
                           no_owner=no_owner, no_privileges=no_privileges)
    data["restored"] = {
        "tables": outcome.tables, "seconds": round(outcome.seconds, 3), "forced": outcome.forced,
        "safety_snapshot": str(outcome.safety_snapshot) if outcome.safety_snapshot else None,
        "safety_pruned": [str(p) for p in outcome.safety_pruned],
        "code": None if outcome.code is None else {
            "folder": str(outcome.code.folder), "files": outcome.code.files,
            "previous": str(outcome.code.previous) if outcome.code.previous else None,
            "undo": outcome.code.undo_command(),
        },
        "database": {"method": outcome.report.method, "replaced": outcome.report.replaced,
                     "undo": outcome.report.undo, "ended_sessions": [s.describe() for s in outcome.report.ended]},
        "notes": [*outcome.report.notes, *outcome.notes], "todo": outcome.todo(),
    }
    return Outcome(text=core.describe_outcome(outcome), data=data)


@command(lock="core", identity=True)
def verify(
    inv: Invocation,
    ref: str | None = typer.Argument(None, metavar="[SNAPSHOT|VERSION]", help="Default: the newest snapshot."),
    every: bool = typer.Option(False, "--all", help="Verify every snapshot in backup_root."),
    restore_test: bool = typer.Option(False, "--restore-test", help="Also restore into a scratch database "
                                      "and compare every table's row count with the manifest."),
    scratch_url: str | None = typer.Option(None, "--scratch-url", help="Server for the scratch database "
                                           "(default: database.url's server)."),
    from_offsite: bool = typer.Option(False, "--from-offsite", help="Fetch the snapshot (name or version) "
                                      "from offsite.url into backup_root first."),
) -> Outcome:
    """Check every file against MANIFEST.json and that each dump is readable; exit 8 naming what failed."""
    from relstep import verify as core
    from relstep.errors import VerifyError

    ref = _fetched(inv, ref) if from_offsite else ref
    result = core.verify(inv.config, ref, every=every, with_restore_test=restore_test, scratch_url=scratch_url)
    failure = None
    if not result.reports:
        failure = VerifyError("there is no snapshot to verify; run `relstep backup` first")
    elif not result.ok:
        failure = VerifyError(result.failure())
    return Outcome(text=core.describe(result), data=result.to_json(),
                   result=RunResult.failed(failure) if failure else None)


@command("offsite", lock="runner")
def offsite_copy(
    inv: Invocation,
    snapshot_ref: str | None = typer.Option(None, "--snapshot", help="Snapshot name or path (default: newest)."),
) -> Outcome:
    """Copy a snapshot to offsite.url, verify it and prune remote copies beyond offsite.keep (exit 6 on failure)."""
    from dataclasses import asdict

    from relstep import pipeline, snapshot

    config = inv.config
    path = (snapshot.resolve_snapshot(config.backup_root, snapshot_ref) if snapshot_ref
            else pipeline.newest_snapshot(config))
    outcome = pipeline.offsite_copy(config, path)
    lines = [outcome.summary(), *(f"removed off-site {name}" for name in outcome.removed)]
    return Outcome(text="\n".join(lines), data=asdict(outcome))


@command(loads_config=False)
def keygen(
    inv: Invocation,
    output: str = typer.Option("relstep-age-identity.txt", "--output", "-o", metavar="FILE",
                               help="Where to write the new identity (0600; never over an existing file)."),
) -> Outcome:
    """Write a new age identity file and print its public key (for encryption.recipients)."""
    from pathlib import Path

    from relstep import encryption

    public = encryption.keygen(Path(output))
    text = (f"identity: {output} (keep it off the deploy host; without it the snapshots cannot be read)\n"
            f"public key: {public}")
    return Outcome(text=text, data={"identity": output, "public_key": public})


@command(loads_config=False)
def init(
    inv: Invocation,
    prisma: bool = typer.Option(False, "--prisma", help="Also add the ReleaseRecord model and its migration "
                                "to the Prisma schema."),
) -> Outcome:
    """Inspect this repository and write a commented relstep.yml (never overwrites one)."""
    from pathlib import Path

    from relstep import init as core

    outcome = core.init(Path.cwd(), Path(state.config_path) if state.config_path else None, prisma=prisma)
    data = {"config": str(outcome.config) if outcome.config else None, "written": [str(p) for p in outcome.written],
            "found": outcome.findings.described(), "notes": outcome.notes}
    return Outcome(text="\n".join(outcome.lines()), data=data)


@command(loads_config=False)
def doctor(inv: Invocation) -> Outcome:
    """Check the config, each database, the dump tools, backup_root and retention; one line per check."""
    from relstep import doctor as core

    checks = core.run_checks(state.config_path)
    failed = [c for c in checks if not c.ok]
    data = {"ok": not failed, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]}
    result = None
    if failed:
        result = RunResult(failed_phase="doctor", exit_code=1,
                           error=f"{len(failed)} of {len(checks)} checks failed: {', '.join(c.name for c in failed)}")
    return Outcome(text="\n".join(c.line() for c in checks), data=data, result=result)


from relstep import hooks_cli  # noqa: E402 - registered after the core commands, for --help order

app.add_typer(hooks_cli.hook_app, name="hook")


# --- process entry ------------------------------------------------------------------------------


def guarded(command_name: str, func: Callable[[], int]) -> int:
    """For commands outside the runner (``relstep hook ...``): the same failure lines and exit codes."""
    try:
        with _failures(command_name):
            return func()
    except _Failed as failed:
        result = failed.result
        if state.verbose and result.traceback:
            _err(result.traceback.rstrip())
        _err(f"relstep: {result.failed_phase} failed: {result.error}")
        return result.exit_code
    except _Interrupted as interrupted:
        return interrupted.code


hooks_cli.use_guard(guarded)


def _on_signal(signum: int, frame: Any) -> None:
    # SIGINT too: click turns a KeyboardInterrupt outside the runner into "Aborted!" and exit 1.
    raise Terminated(signum)


def _interruption(exc: BaseException) -> tuple[int, str]:
    """(exit code, signal name) for an interruption: 130 for SIGINT, 143 for SIGTERM."""
    if isinstance(exc, Terminated):
        signum = exc.args[0] if exc.args else signal.SIGTERM
    else:
        signum = signal.SIGINT
    return 128 + signum, signal.Signals(signum).name


def _click_exceptions() -> Any:
    """The click exceptions typer raises: its vendored copy (typer >= 0.28, which no longer uses click) or click's."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ModuleNotFoundError:
        return importlib.import_module("click.exceptions")


def _usage_error(exc: Any) -> int:
    """Click's usage errors (unknown option, bad value, missing argument) as relstep's one line, exit 2."""
    if isinstance(exc, _click_exceptions().NoArgsIsHelpError):
        exc.show()   # `relstep` alone: the help, as click prints it
        return exc.exit_code
    where = exc.ctx.command_path if exc.ctx is not None else "relstep"
    message = " ".join(exc.format_message().split())
    _err(f"relstep: input failed: {message} (see `{where} --help`)")
    return InputError.exit_code


def main(argv: list[str] | None = None) -> None:
    import logging

    # SQLAlchemy's pool logs (with a traceback, through logging's last-resort stderr handler) an
    # exception raised while it closes a connection, then re-raises it: a SIGINT/SIGTERM landing
    # there would print a traceback before relstep's one line. Every error it logs is also raised,
    # and the runner reports that; so its records go nowhere.
    logging.getLogger("sqlalchemy").addHandler(logging.NullHandler())
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    clicks = _click_exceptions()
    try:
        code = app(args=argv, prog_name="relstep", standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except clicks.UsageError as exc:
        code = _usage_error(exc)
    except clicks.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        # A signal outside a command's runner (parsing, imports, output): its code, no traceback.
        code, name = _interruption(exc)
        _err(f"relstep: interrupted: stopped by {name}")
    except Exception as exc:
        # Outside every command (option callbacks, start-up): still one line, never a traceback.
        unexpected = exc
        code = guarded("relstep", lambda: _raise(unexpected))
    finally:
        # The work is done or abandoned: a late signal just ends the process (no traceback at exit).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise SystemExit(code)


def _raise(exc: BaseException) -> int:
    raise exc


if __name__ == "__main__":
    main()
