"""`relstep restore`: the schema-compatibility gate, then the database and (optionally) the code.

``check`` always runs first and changes nothing: it resolves the snapshot, compares
its ``migrations.json`` with the app's migrations on disk (and, for information,
with the target database's migration table) and looks at the target.  ``restore``
then acts, in an order chosen so that every refusal happens before the first
change: verdict, ``--code-to`` folder, target confirmation, snapshot checksums,
the pre-restore safety snapshot, and only then the engine's own restore.

The safety snapshot goes to ``<backup_root>/../pre-restore/<timestamp>``: the same
layout as a release snapshot (made by ``backup.create_snapshot``), deployment type
``pre-restore``, pruned by the same retention count inside its own folder so that
restores never push release snapshots out.

Core functions return data and raise ``RelstepError``s; ``describe_*`` render text.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relstep import compat, faults, lookup, restore_journal, snapshot, unlock
from relstep.config import Config, DatabaseConfig
from relstep.databases import engine_for, redact_url, spec_for_url
from relstep.databases.base import Engine
from relstep.databases.registry import engine_errors
from relstep.databases.restoring import DEFAULT_LOCK_WAIT, RestoreOptions, RestoreReport
from relstep.defaults import DEFAULT_LOCK_TIMEOUT
from relstep.errors import (
    InputError,
    RelstepError,
    RestoreError,
    RestoreInterrupted,
    RestoreRefused,
    Terminated,
    VerifyError,
)
from relstep.fingerprint import Fingerprint
from relstep.manifest import DatabaseEntry, Manifest
from relstep.masking import mask_text
from relstep.migrations import NONE, MigrationState, read_state, resolve_path, tool_for
from relstep.proof import NO_OWNER, NO_PRIVILEGES
from relstep.proof import prove as prove_equal
from relstep.verify import database_entries, engine_module

if TYPE_CHECKING:
    from relstep.capture.code_restore import CodeRestore
    from relstep.fingerprint import TableContent

PRE_RESTORE_TYPE = "pre-restore"



# --------------------------------------------------------------------------- check


@dataclass
class RestoreCheck:
    """Everything ``restore`` needs, gathered without changing anything."""

    snapshot: Path
    manifest: Manifest
    database: str                       # the manifest's database name ("main")
    entry: DatabaseEntry                # the manifest's entry for it
    target_url: str
    target_empty: bool | None           # None: the target could not be reached
    target_problem: str | None
    migration_tool: str | None
    app_migrations: Path | None         # the app's migrations folder the verdict used
    verdict: compat.Verdict
    target_config: DatabaseConfig       # the target, with the configured redact rules

    @property
    def target(self) -> str:
        return redact_url(self.target_url)

    @property
    def engine(self) -> Engine:
        return engine_module(self.entry.engine)


def _pick_database(manifest: Manifest, path: Path, name: str | None) -> tuple[str, DatabaseEntry, bool]:
    """(name, manifest entry, whether migrations.json describes it) of the database to restore."""
    databases, problems = database_entries(manifest)
    if problems:
        raise VerifyError(f"{path / snapshot.MANIFEST} is damaged: {problems[0].detail}; run `relstep verify`")
    names = ", ".join(databases) or "none"
    if name is None and len(databases) != 1:
        raise InputError(f"{path.name} holds {len(databases)} databases ({names}); choose one with --database NAME",
                         phase="restore")
    if name is not None and name not in databases:
        raise InputError(f"{path.name} has no database {name!r} (it holds {names})", phase="restore")
    chosen = name or next(iter(databases))
    # migrations.json describes the first database, the app's own (see backup.py).
    return chosen, databases[chosen], chosen == next(iter(databases))


def _migration_state(path: Path) -> MigrationState:
    import json

    from relstep import codec

    if not (path / "migrations.json").is_file():
        raise VerifyError(f"{path.name} has no migrations.json; run `relstep verify {path.name}`")
    try:  # through the codec: in an encrypted snapshot it is decrypted as it is read
        data = json.loads(b"".join(codec.read_chunks(path / "migrations.json")).decode("utf-8"))
        state = MigrationState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, codec.UnreadableFile) as exc:
        raise VerifyError(f"{path / 'migrations.json'} is unreadable ({exc}); run `relstep verify`") from exc
    # A snapshot taken without a migration tool records tool None.
    state.tool = state.tool or NONE
    return state


def _target_state(config: Config, url: str, tool: str) -> tuple[bool | None, str | None, MigrationState | None]:
    """(empty?, why unreachable, the target's migration state or None) for the verdict table."""
    from relstep.databases import create_engine
    from relstep.migrations.base import find_table

    try:
        empty = engine_for(url).is_empty(url)
    except RelstepError as exc:
        return None, exc.message, None
    if empty or tool == NONE:
        return empty, None, None
    module = tool_for(tool)
    assert module is not None   # only NONE has no module
    try:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                if find_table(conn, module.TABLE) is None:
                    return empty, None, None
                return empty, None, read_state(conn, tool, config.migrations.path, config.base_dir)
        finally:
            engine.dispose()
    except Exception as exc:  # informational only: any driver error just leaves the column out
        return empty, f"its migration table could not be read: {str(exc).splitlines()[0]}", None


def check(config: Config, ref: str, database_url: str | None = None, database: str | None = None) -> RestoreCheck:
    """Resolve the snapshot and the target and compute the compatibility verdict; change nothing."""
    from relstep.databases import command_line_url

    path = lookup.find_for_restore(config, ref)
    manifest = Manifest.load(path)
    name, entry, described = _pick_database(manifest, path, database)
    # The configured database of the same name, whose URL is the default target and whose
    # redact rules the safety snapshot follows; a snapshot of one database maps to the first.
    configured = {d.name: d for d in config.all_databases}
    db_config = configured.get(name) or (config.database if len(manifest.databases or {}) == 1 else None)
    url = command_line_url(database_url, "--database-url", "restore") if database_url else (
        db_config.url if db_config else None)
    if not url:
        raise InputError(f"no database to restore {name} into; pass --database-url or set database.url in "
                         f"{config.where}", phase="restore")
    spec = spec_for_url(url)
    with engine_errors(RestoreError):  # even --check-only reads the target, through its driver
        spec.require_driver()
    if spec.name != entry.engine:
        raise InputError(f"{path.name} holds a {entry.engine} dump; {redact_url(url)} is not a "
                         f"{entry.engine} database", phase="restore")
    with unlock.reading(path, manifest, "restore"):  # an encrypted snapshot needs its identity: refused here
        state = _migration_state(path) if described else MigrationState(tool=NONE)
    empty, problem, target_state = _target_state(config, url, state.tool)
    verdict = compat.check_project(state, config.migrations.path, config.base_dir, target_state)
    if empty is False and target_state is not None:
        verdict.drift_reference, verdict.drift = _drift(config, name, url, target_state)
    module = tool_for(state.tool)
    app_path = resolve_path(module, config.migrations.path, config.base_dir) if module is not None else None
    return RestoreCheck(path, manifest, name, entry, url, empty, problem, None if state.tool == NONE else state.tool,
                        app_path, verdict, replace(db_config or DatabaseConfig(url=url, name=name), url=url))


def _drift(config: Config, name: str, url: str, target: MigrationState) -> tuple[str | None, list[str]]:
    """The target's live schema against the newest snapshot taken at exactly its applied migrations:
    (that snapshot's name, the differences), or (None, []) when no snapshot can tell."""
    from relstep.fingerprint import Fingerprint, drift

    applied = {(m.name, m.checksum) for m in target.applied}
    from relstep import lookup

    for snap in lookup.of_config(config).visible:
        try:
            entry = (snap.manifest().databases or {}).get(name)
            recorded = entry.fingerprint if entry is not None else None
            if recorded is None or {(m.name, m.checksum) for m in _migration_state(snap.path).applied} != applied:
                continue
            reference = Fingerprint.from_json(recorded)
            engine = engine_for(url)
            with engine_errors(RestoreError):
                live = engine.fingerprint(url, content=False)
        except (RelstepError, ValueError, AttributeError):
            return None, []  # informational: an unreadable reference or target only leaves drift out
        # Kept outside the dump (grants, journal mode): comparable when the snapshot is of this database.
        same = _database_name(url) == _database_name(entry.url if entry is not None else None)
        outside = () if same else tuple(getattr(engine, "FINGERPRINT_OUTSIDE_DUMP", {}))
        return snap.path.name, drift(reference, live, outside)
    return None, []


def refuse_if_incompatible(chk: RestoreCheck, force: bool) -> None:
    if chk.verdict.ok or force:
        return
    hint = ""
    if chk.app_migrations is not None and not chk.app_migrations.exists():
        hint = f" (no migrations at {chk.app_migrations}: check migrations.path)"
    raise RestoreRefused(
        f"{chk.snapshot.name} is {chk.verdict.summary()}{hint}; nothing was restored "
        "(check out the code that matches the snapshot, or pass --force to restore anyway)"
    )


# --------------------------------------------------------------------------- restore


@dataclass
class RestoreOutcome:
    check: RestoreCheck
    forced: bool = False
    safety_snapshot: Path | None = None
    safety_pruned: list[Path] = field(default_factory=list)
    tables: int = 0
    seconds: float = 0.0
    code: CodeRestore | None = None     # with --code-to: what DIR now holds, and where the old DIR went
    notes: list[str] = field(default_factory=list)
    proof: str = ""   # the proof's line: "restored database equals the snapshot: ..."
    report: RestoreReport = field(default_factory=RestoreReport)      # what the engine did (swap, ended sessions)

    def todo(self) -> list[str]:
        """What the person must still do, in order."""
        steps = []
        verdict, tool = self.check.verdict, self.check.migration_tool
        if verdict.pending:
            module = tool_for(tool) if tool else None
            command = getattr(module, "APPLY_COMMAND", None) or "your migration tool"
            steps.append(f"run the {len(verdict.pending)} pending migration(s) with `{command}`: "
                         + ", ".join(verdict.pending))
        if self.forced and not verdict.ok:
            steps.append("the snapshot was restored despite an incompatible schema (--force): check the app "
                         "against it before opening it to users")
        redacted = self.check.entry.redacted
        if redacted:
            columns = ", ".join(f"{t}.{c}" for t, cs in sorted(redacted.items()) for c in cs)
            steps.append(f"reset the passwords: the backup never held them, so {columns} are now empty "
                         "(NULL or ''); have users reset theirs, or set new ones")
        excluded = self.check.entry.excluded_tables
        if excluded:
            steps.append(f"refill the excluded tables, restored empty: {', '.join(excluded)}")
        if self.code is not None:
            steps += [f"deploy the {name} code from {self.code.folder / name}" for name in self.code.files]
            if self.code.previous:
                steps.append(f"once the app works, delete the previous code {self.code.previous} "
                             "(until then, the command above puts it back)")
        if self.report.replaced:
            steps.append(f"once the app works, drop the previous database {self.report.replaced} "
                         f"(DROP DATABASE); until then it undoes this restore: {self.report.undo}")
        if self.safety_snapshot is not None:
            steps.append(f"once the app works, keep or delete the safety snapshot {self.safety_snapshot}; "
                         f"to undo this restore: relstep restore {self.safety_snapshot} --yes")
        return steps


def check_code_target(chk: RestoreCheck, code_to: Path | None, yes: bool) -> dict[str, dict[str, Any]]:
    """The code trees to extract, after refusing a non-empty folder without --yes (exit 2).

    Their names and paths were checked when the manifest was loaded (relstep.manifest), and again
    here by the code restore's own rules before anything is created through them.
    """
    from relstep.capture.code_restore import KEPT_SUFFIX, problems

    if code_to is None:
        return {}
    code = {name: summary.model_dump() for name, summary in chk.manifest.code.items()}
    if not code:
        raise InputError(f"{chk.snapshot.name} holds no code; nothing to extract into {code_to}", phase="restore")
    for name, summary in code.items():
        problem = problems(name, summary)
        if problem:
            raise VerifyError(f"{chk.snapshot / snapshot.MANIFEST} lists unsafe code paths for {name!r} "
                              f"({problem}); run `relstep verify`")
    if code_to.is_symlink() or (code_to.exists() and not code_to.is_dir()):
        kind = "a symlink" if code_to.is_symlink() else "a file"
        if not yes:
            raise InputError(f"--code-to {code_to} is {kind}; pass --yes to move it aside and put the code "
                             "there, or choose an empty folder (nothing was changed)", phase="restore")
    elif code_to.is_dir() and any(code_to.iterdir()) and not yes:
        raise InputError(f"--code-to {code_to} is not empty; pass --yes to replace it (it is kept beside as "
                         f"{code_to.name}{KEPT_SUFFIX}<time>), or choose an empty folder (nothing was changed)",
                         phase="restore")
    return code


def _current_version(config: Config, url: str) -> str:
    """The release the target database is at, from its ReleaseRecord table, for the safety snapshot's label."""
    from relstep import records

    try:
        rows = records.read_all(url, config.record.table)
    except RelstepError:
        return "unknown"
    return rows[-1].version if rows else "unknown"


def take_safety_snapshot(config: Config, target: DatabaseConfig, lock_timeout: float,
                         now: datetime | None = None) -> Path:
    """Back up the target database into the pre-restore folder."""
    from relstep.backup import create_snapshot
    from relstep.databases.base import optional
    from relstep.version import Release

    # Only the database is at risk: restore never writes over the code on disk
    # (--code-to refuses a non-empty folder without --yes), so the safety snapshot
    # leaves the code out and stays quick to take at the worst moment.
    # Replacing ``database`` leaves just the target in ``all_databases``: the other
    # configured databases are not being overwritten.
    # The same project as the app's: the pre-restore folder may be shared by several apps too.
    # The target may lack a column the configured patterns name (it is at another schema): that must
    # not cost the safety snapshot, so every pattern is optional here (columns that exist are redacted).
    if target.redact is not None:
        target = replace(target, redact=tuple(optional(p) for p in target.redact))
    pre_config = replace(config, backup_root=lookup.pre_restore_root(config), database=target, code={})
    release = Release(_current_version(config, target.url), PRE_RESTORE_TYPE, "pre-restore safety snapshot")
    with snapshot.root_lock(pre_config.backup_root, lock_timeout):
        try:
            return create_snapshot(pre_config, release, now).path
        except RelstepError as exc:
            raise RestoreError(f"the pre-restore safety snapshot failed, so nothing was restored: {exc.message}"
                               ) from exc


def prune_safety_snapshots(config: Config, lock_timeout: float, protect: Path) -> list[Path]:
    """Keep the newest ``retention`` safety snapshots, and ``protect`` (the one just restored from).

    Runs after the restore: pruning first could remove a safety snapshot that is
    itself being restored (undoing a restore), before it was read.
    """
    removed = []
    root = lookup.pre_restore_root(config)
    with snapshot.root_lock(root, lock_timeout):
        for old in snapshot.to_prune(lookup.of_config(config, root).own, config.retention, {protect}):
            try:
                snapshot.remove_snapshot(old)
            except OSError:
                continue  # an old safety snapshot left behind costs only disk; the restore is done
            removed.append(old.path)
    return removed


def restore(
    config: Config,
    chk: RestoreCheck,
    *,
    force: bool = False,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    code_to: Path | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    terminate_sessions: bool = False,
    no_owner: bool = False,
    no_privileges: bool = False,
) -> RestoreOutcome:
    """Restore ``chk``'s snapshot into its target.  Every refusal comes before the first change.

    ``confirm`` asks the person (on a terminal) before a non-empty database is
    overwritten; without it, or when it says no, only ``yes`` lets the restore go on.
    """
    from relstep import verify

    refuse_if_incompatible(chk, force)
    code = check_code_target(chk, code_to, yes)
    try:
        empty = chk.engine.is_empty(chk.target_url)
    except RelstepError as exc:
        raise RestoreError(f"cannot reach the target: {exc.message}; nothing was restored") from exc
    if not empty and not yes:
        question = f"{chk.target} is not empty; replace its contents with {chk.snapshot.name}?"
        if confirm is None or not confirm(question):
            raise InputError(f"{chk.target} is not empty; pass --yes to replace its contents "
                             "(a safety snapshot is taken first); nothing was changed", phase="restore")
    outcome = RestoreOutcome(check=chk, forced=force and not chk.verdict.ok)
    with snapshot.root_lock(config.backup_root, lock_timeout):
        # Under the lock a concurrent prune cannot remove the snapshot while it is read.
        # Only what this restore reads: the database's folder, the migration state, and the code
        # trees when --code-to asks for them (the other databases and code are not touched).
        needed = (chk.entry.path.rstrip("/") + "/", "migrations.json", *(("code/",) if code_to else ()))
        problems, _files, _bytes = verify.check_files(chk.snapshot, chk.manifest, within=needed)
        if problems:
            raise VerifyError(f"{chk.snapshot.name} fails verification ({problems[0]}"
                              + (f" and {len(problems) - 1} more" if len(problems) > 1 else "")
                              + "); nothing was restored")
        if not empty:
            _refuse_unreadable_put_back(config, chk)
            outcome.safety_snapshot = take_safety_snapshot(config, chk.target_config, lock_timeout)
        outcome.report.on_change = restore_journal.begin(config.backup_root, chk.snapshot, chk.target,
                                                         outcome.safety_snapshot)
        try:
            with unlock.reading(chk.snapshot, chk.manifest, "restore"):
                _restore_database(chk, outcome, RestoreOptions(
                    lock_wait=lock_wait, terminate_sessions=terminate_sessions, no_owner=no_owner,
                    no_privileges=no_privileges, keep_empty_replaced=True))
        finally:  # every end inside Python names the way back itself; only a kill leaves the journal
            outcome.report.on_change = None
            restore_journal.finish(config.backup_root)
        if outcome.safety_snapshot is not None:
            outcome.safety_pruned = prune_safety_snapshots(config, lock_timeout, chk.snapshot)
    if code:
        from relstep.capture.code_restore import restore_code

        assert code_to is not None
        try:
            with unlock.reading(chk.snapshot, chk.manifest, "restore"):
                outcome.code = restore_code(chk.snapshot, code, code_to)
        except OSError as exc:
            raise RestoreError(f"the database was restored, but the code could not be built beside {code_to} "
                               f"and swapped in ({exc.strerror or exc}); {code_to} is unchanged: free space or fix "
                               "the permissions of its folder, then restore again with --code-to") from exc
    return outcome


def prove(url: str, chk: RestoreCheck, outcome: RestoreOutcome, options: RestoreOptions,
          same_database: bool = False, named_like_the_snapshot: str | None = None,
          content: Mapping[str, TableContent] | None = None) -> None:
    """Raise RestoreError unless the database at ``url`` equals the snapshot's entry: by its
    fingerprint (schema and content digests), by row counts for snapshots that have none.

    The engines call it on the staged copy before it replaces anything; after an in-place restore
    (PostgreSQL's one transaction, without a staged database) it runs on the result.  ``content``:
    the content digests the engine already read back while it loaded (only the schema is read here).
    """
    left_out: dict[str, str] = {}
    if options.no_owner:
        left_out.update(NO_OWNER)
    if options.no_privileges:
        left_out.update(NO_PRIVILEGES)
    faults.point("proof")
    try:
        proof = prove_equal(chk.engine, chk.entry, url, same_database=same_database, left_out=left_out,
                            named_like_the_snapshot=named_like_the_snapshot, content=content)
    except ValueError as exc:  # a fingerprint this relstep cannot read
        raise RestoreError(f"cannot check the restored database: {exc}") from exc
    outcome.tables = proof.tables
    outcome.proof = proof.sentence()
    outcome.notes += proof.notes
    if not proof.ok:
        raise RestoreError(f"the restored database {proof.sentence()}")


def _database_name(url: object) -> str | None:
    """The database a URL names (the last path part), to tell a restore into the snapshot's own database."""
    if not isinstance(url, str):
        return None
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None


def way_back(outcome: RestoreOutcome) -> str:
    """The exact command that puts the previous database back, or "" when there is nothing to undo."""
    if outcome.report.undo:
        return outcome.report.undo
    if outcome.safety_snapshot is not None:
        return f"relstep restore {outcome.safety_snapshot} --yes"
    return ""


def _state_and_way_back(chk: RestoreCheck, outcome: RestoreOutcome) -> str:
    """"<target> is unchanged" (or what happened to it), and the command that puts the old one back."""
    report = outcome.report
    if report.put_back:
        return f"{chk.target} had been changed, so relstep put {report.put_back} back: it is as before"
    if report.live_changed:
        state = f"{chk.target} was changed part-way" + "".join(f" ({note})" for note in report.notes)
    else:
        state = f"{chk.target} is unchanged"
    back = way_back(outcome)
    where = f"the safety snapshot {outcome.safety_snapshot}" if outcome.safety_snapshot else "the previous database"
    return state + (f"; to put back {where}: `{back}`" if back else "")


def _refuse_unreadable_put_back(config: Config, chk: RestoreCheck) -> None:
    """Where a failed live load is undone from the safety snapshot, that snapshot must be readable
    by this restore: an encrypted one needs the identity now, not after the live tables are gone."""
    from relstep.databases.registry import spec_for_url

    encrypts_locally = config.encryption is not None and not config.encryption.offsite_only
    if encrypts_locally and spec_for_url(chk.target_url).loads_live_in_place and unlock.chosen_identity() is None:
        raise InputError(
            f"{chk.target} is reloaded in place, and a failure would be undone from the safety snapshot, which "
            f"is encrypted to the config's encryption.recipients; pass --identity "
            f"FILE or set {unlock.IDENTITY_VARIABLE} so relstep can put it back; nothing was changed",
            phase="restore")


def _put_back(chk: RestoreCheck, outcome: RestoreOutcome, options: RestoreOptions) -> None:
    """After a load that failed on the live database (MariaDB's DDL is not transactional): restore
    the safety snapshot taken just before, so the target is as it was."""
    assert outcome.safety_snapshot is not None
    safety = outcome.safety_snapshot
    try:
        manifest = Manifest.load(safety)
        _name, entry, _described = _pick_database(manifest, safety, None)
        with unlock.reading(safety, manifest, "restore"):  # an encrypted safety snapshot: decrypted as read
            chk.engine.restore(safety / entry.path, chk.target_url, entry.extra,
                               RestoreOptions(lock_wait=options.lock_wait))
    except (RelstepError, OSError, ValueError) as exc:
        outcome.report.notes.append(f"putting the safety snapshot back failed too: {exc}")
        return
    outcome.report.put_back = f"the safety snapshot {safety}"


def _restore_database(chk: RestoreCheck, outcome: RestoreOutcome, options: RestoreOptions) -> None:
    started = time.monotonic()
    same_name = _database_name(chk.target_url) == _database_name(chk.entry.url)
    # A staged copy has another name: what the server keeps under the target's name (MariaDB's
    # grants) is compared on the target itself, before the staged copy replaces anything.
    def prove_staged(url: str, content: Mapping[str, TableContent] | None = None) -> None:
        prove(url, chk, outcome, options, named_like_the_snapshot=chk.target_url if same_name else None,
              content=content)

    recorded = Fingerprint.from_json(chk.entry.fingerprint) if chk.entry.fingerprint is not None else None
    options = replace(options, prove=prove_staged, report=outcome.report, recorded=recorded)
    try:
        chk.engine.restore(chk.snapshot / chk.entry.path, chk.target_url, chk.entry.extra, options)
        if not outcome.proof:  # restored in place, nothing staged to prove first: prove the result
            prove(chk.target_url, chk, outcome, options, same_database=same_name)
    except RelstepError as exc:
        if outcome.report.live_changed and outcome.safety_snapshot is not None:
            _put_back(chk, outcome, options)
        message = f"{exc.message}; {_state_and_way_back(chk, outcome)}"
        if isinstance(exc, InputError):  # refused before any change (a role the snapshot needs): exit 2
            raise InputError(message, phase="restore") from exc
        raise (type(exc) if isinstance(exc, RestoreError) else RestoreError)(message) from exc
    except (KeyboardInterrupt, Terminated) as exc:
        signum = exc.args[0] if isinstance(exc, Terminated) and exc.args else signal.SIGINT
        raise RestoreInterrupted(
            f"stopped by {signal.Signals(signum).name} before the restore finished, and relstep's statements on "
            f"the server were ended; {_state_and_way_back(chk, outcome)}", 128 + signum) from None
    outcome.seconds = time.monotonic() - started


# --------------------------------------------------------------------------- text


def describe_check(chk: RestoreCheck) -> str:
    m = chk.manifest
    target = "unreachable: " + (chk.target_problem or "?") if chk.target_empty is None else (
        "empty" if chk.target_empty else "not empty")
    lines = [
        f"snapshot:   {chk.snapshot} ({m.version}, {m.deployment_type}, created {m.created_at or '?'})",
        f"target:     {chk.target} ({target})",
    ]
    if chk.target_empty is not None and chk.target_problem:
        lines.append(f"            {chk.target_problem}")
    if chk.migration_tool:
        lines.append(f"migrations: {chk.migration_tool}, app's migrations in {chk.app_migrations}")
    else:
        lines.append("migrations: the snapshot recorded no migration tool; nothing to compare")
    lines.append(f"verdict:    {chk.verdict.summary()}")
    rows = chk.verdict.rows()
    if rows:
        width = max(len("STATUS"), *(len(status) for status, _ in rows))
        lines.append(f"  {'STATUS'.ljust(width)}  MIGRATION")
        lines += [f"  {status.ljust(width)}  {name}" for status, name in rows]
    return mask_text("\n".join(lines))


def describe_code(restored: CodeRestore, code: dict[str, Any]) -> list[str]:
    from relstep.capture.code_restore import left_out_lines

    lines = [f"extracted code {name}: {count} files into {restored.folder / name}"
             for name, count in restored.files.items()]
    if restored.previous:
        lines.append(f"the previous {restored.folder} is kept as {restored.previous}; to put it back: "
                     f"{restored.undo_command()}")
    lines += [f"not in the code (left out at backup): {line}" for line in left_out_lines(code)]
    return lines


def describe_outcome(outcome: RestoreOutcome) -> str:
    chk = outcome.check
    lines = []
    if outcome.forced:
        lines.append("restored despite the incompatible verdict (--force)")
    if outcome.safety_snapshot:
        lines.append(f"safety snapshot of the previous database: {outcome.safety_snapshot}")
    lines += [f"pruned old safety snapshot: {p}" for p in outcome.safety_pruned]
    lines += [f"ended {session.describe()}" for session in outcome.report.ended]
    lines.append(f"restored {chk.database} from {chk.snapshot.name} into {chk.target} ({outcome.seconds:.1f} s): "
                 f"{outcome.proof}")
    if outcome.report.method:
        lines.append(f"how: {outcome.report.method}")
    if outcome.report.replaced:
        lines.append(f"the previous database is kept as {outcome.report.replaced}; to put it back: "
                     f"{outcome.report.undo}")
    if outcome.code:
        lines += describe_code(outcome.code, {name: entry.model_dump() for name, entry in chk.manifest.code.items()})
    lines += [f"note: {n}" for n in [*outcome.report.notes, *outcome.notes]]
    todo = outcome.todo()
    if todo:
        lines.append("still to do:")
        lines += [f"  {i}. {step}" for i, step in enumerate(todo, 1)]
    return mask_text("\n".join(lines))
