"""The backup phase: one complete snapshot of database, code, environment and migration state."""

from __future__ import annotations

import errno
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep import __version__, codec, fsutil, lookup, progress, snapshot
from relstep.capture import code as code_capture
from relstep.config import Config, DatabaseConfig
from relstep.databases import engine_for, engine_name, spec_for_url
from relstep.databases.base import DumpInfo, DumpPlan, plan_patterns
from relstep.databases.registry import engine_errors
from relstep.databases.tools import DISK_FULL_WORDS
from relstep.errors import BackupError, ConfigError, RelstepError
from relstep.identity import project_of
from relstep.manifest import CodeEntry, DatabaseEntry, EncryptionEntry, FileEntry, Manifest
from relstep.masking import mask_url, register_environment_secrets, register_url_secrets
from relstep.version import Release

DATABASES_DIR = "databases"
MIGRATIONS_FILE = "migrations.json"
ENVIRONMENT_FILE = "environment.json"


@dataclass
class BackupOutcome:
    path: Path
    manifest: Manifest
    proofs: dict[str, str] = field(default_factory=dict)   # database -> its restore test's proof line

    @property
    def schema_revision(self) -> str | None:
        return self.manifest.schema_revision


def check_inputs(config: Config) -> None:
    """Everything that can be refused before a byte is written (exit 2)."""
    if config.database is None:
        raise ConfigError(
            f"no database to back up; set database.url in {config.where} or the DATABASE_URL environment variable"
        )
    code_capture.check_sources(config.code)
    _check_restore_test_can_read(config)
    with engine_errors(BackupError):  # a missing driver is refused before the snapshot exists
        for db in config.all_databases:
            spec_for_url(db.url).require_driver()


def _check_restore_test_can_read(config: Config) -> None:
    """restore_test_after_backup reads the new snapshot back: encrypted, that takes the identity, which
    the deploy host is not meant to hold.  Refused before a byte is written unless one is given."""
    if config.encryption is None or config.encryption.offsite_only:
        return
    tested = [db.name for db in config.all_databases if db.restore_test_after_backup]
    if not tested:
        return
    from relstep.encryption import IDENTITY_VARIABLE, identity_given

    if not identity_given():
        raise ConfigError(
            f"database.restore_test_after_backup ({', '.join(tested)}) must read the new snapshot, which is "
            f"encrypted; set {IDENTITY_VARIABLE} for the backup, or turn it off in {config.where} and run "
            "`relstep verify --restore-test --identity FILE` where the identity is kept"
        )


def _migration_reader(config: Config):
    """The ``inspect`` callback: read the migration table at the dump's point in time."""
    from relstep import migrations

    def read(conn: Any) -> Any:
        return migrations.read_state(conn, config.migrations.tool, config.migrations.path, config.base_dir)

    return read


def _dump_database(config: Config, db: DatabaseConfig, dest: Path) -> DumpInfo:
    engine = engine_for(db.url)
    plan = DumpPlan(redact=plan_patterns(db.redact or (), db.redact_defaults), exclude_tables=db.exclude_tables)
    # migrations: describes the first database (the app's own); the others are dumped as they are.
    inspect = _migration_reader(config) if db == config.database else None
    # Engines stream into dest through their tools; the folder's size is the progress anyone can see.
    with progress.task(f"dumping database {db.name}", unit="bytes") as task, \
            progress.polling(task, lambda: fsutil.tree_size(dest)), engine_errors(BackupError):
        return engine.dump(db.url, dest, plan, inspect=inspect)


def _capture_code(config: Config, build: snapshot.Building, hashes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # Files are shared with this app's previous snapshot only: another project's may go any time.
    previous = lookup.of_config(config).own
    reuse: dict[str, code_capture.Shared] = {}
    now = _encryption_entry(config)
    if previous:
        before = previous[0].manifest()
        # An encrypted snapshot links the previous one's ciphertexts only if it had the same recipients.
        if code_capture.shares_with(before.encryption, now):
            reuse = code_capture.previous_by_hash(previous[0].path, {rel: f.model_dump() for rel, f in
                                                                     before.files.items()}, encrypted=now is not None)
    summaries = {}
    leave_out = _left_out_of_code(config)
    for name, source in config.code.items():
        with progress.task(f"archiving code {name}", unit="files") as task:
            summaries[name] = code_capture.capture_tree(
                name, source, build.path, config.code_exclude, leave_out, reuse, hashes,
                on_file=functools.partial(task.advance, 1),
            ).to_json()
    return summaries


def _left_out_of_code(config: Config) -> dict[Path, str]:
    """What a code folder may hold but a snapshot must not copy: relstep's snapshots, the databases.

    ``code: {app: .}`` contains backup_root and the pre-restore folder; Prisma's SQLite
    layout puts the live database in the code (``backend/prisma/dev.db``), where a raw
    copy would keep every value the dump redacts.
    """

    leave_out = {
        config.backup_root: "backup_root: snapshots are never copied into snapshots",
        lookup.pre_restore_root(config): "the pre-restore safety snapshots",
    }
    databases = {f"the configured database {db.name} (in its redacted dump)": db.url for db in config.all_databases}
    if config.record.url:
        databases.setdefault("the ReleaseRecord database", config.record.url)
    for why, url in databases.items():
        if engine_name(url) == "sqlite":
            from relstep.databases.sqlite import database_path

            leave_out.setdefault(database_path(url), why)
    return leave_out


def _environment(config: Config) -> dict[str, Any]:
    from relstep.capture.environment import capture_environment

    assert config.database is not None
    commands = dict(config.environment)
    if config.environment_is_default:
        import shutil

        # The defaults are "where the tool exists"; explicitly configured commands are always recorded.
        commands = {k: v for k, v in commands.items() if shutil.which(v.split()[0])}
    tools: dict[str, str] = {}
    with engine_errors(BackupError):
        for module in dict.fromkeys(engine_for(db.url) for db in config.all_databases):
            tools.update(module.tool_versions())
    return capture_environment(commands, config.base_dir, tools)


# A write fails with ENOSPC when less than its own size is left: free space under this, measured
# before the partial snapshot is removed, means the disk filled up whatever the tool reported.
_NEARLY_FULL = 1 << 20


def _says_disk_full(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(current).lower() for words in DISK_FULL_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _disk_full_message(root: Path, free_at_start: int | None) -> str:
    needed = f"more than the {_mib(free_at_start)} that were free when it started" if free_at_start else "more"
    return (
        f"the disk holding {root} is full: the snapshot needed {needed}, and {_mib(_free_bytes(root) or 0)} "
        "are free after removing the partial snapshot; free space or move backup_root, then re-run"
    )


def create_snapshot(config: Config, release: Release, now: datetime | None = None) -> BackupOutcome:
    """Write one snapshot, then restore-test it where configured.  The caller holds the root lock."""
    outcome = _write_snapshot(config, release, now)
    _restore_test(config, outcome)
    return outcome


def _restore_test(config: Config, outcome: BackupOutcome) -> None:
    """``database.restore_test_after_backup``: the new snapshot must restore into a scratch database
    and prove equal to its fingerprint, or the backup phase fails (the snapshot is kept: it is
    still the best copy there is, and `relstep verify --restore-test` can look at it again)."""
    from relstep import unlock
    from relstep.verify import restore_test

    for db in config.all_databases:
        if not db.restore_test_after_backup:
            continue
        with unlock.reading(outcome.path, outcome.manifest, "backup"):  # encrypted: the identity checked above
            test, problems = restore_test(outcome.path, db.name, (outcome.manifest.databases or {})[db.name], db.url)
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            shown = "; ".join(str(p) for p in problems[:3]) + more
            raise BackupError(
                f"snapshot {outcome.path.name} was written but does not restore equal to database {db.name}: "
                f"{shown}; it is kept, see `relstep verify --restore-test {outcome.path.name}`"
            )
        outcome.proofs[db.name] = test.compared


def _write_snapshot(config: Config, release: Release, now: datetime | None) -> BackupOutcome:
    check_inputs(config)
    for db in config.all_databases:
        register_url_secrets(db.url)
    register_environment_secrets()
    snapshot.ensure_root(config.backup_root)
    snapshot.remove_partials(config.backup_root)
    # Snapshots hold production data: nothing relstep or the dump tools create may be
    # group- or world-readable, whatever the caller's umask (finish() chmods again).
    previous_umask = os.umask(0o077)
    free_at_start = _free_bytes(config.backup_root)
    full = False
    try:
        with snapshot.building(config.backup_root, now) as build:
            try:
                return _fill(config, release, build)
            except (OSError, RelstepError) as exc:
                # Asked before building() removes the partial: afterwards the disk has room again.
                free = _free_bytes(build.path)
                full = _says_disk_full(exc) or (free is not None and free < _NEARLY_FULL)
                raise
    except (OSError, RelstepError) as exc:
        if full or _says_disk_full(exc):
            raise BackupError(_disk_full_message(config.backup_root, free_at_start)) from exc
        if isinstance(exc, RelstepError):
            raise
        raise BackupError(f"cannot write the snapshot: {exc.strerror or exc}") from exc
    finally:
        os.umask(previous_umask)


def _database_entry(db: DatabaseConfig, dump: DumpInfo) -> DatabaseEntry:
    return DatabaseEntry(
        engine=dump.engine,
        url=mask_url(db.url),  # masked like every other output: ?password= too, not only userinfo
        path=f"{DATABASES_DIR}/{db.name}",
        format=dump.format,
        tool=dump.tool,
        server_version=dump.server_version,
        row_counts=dump.row_counts,
        row_counts_consistent=dump.consistent,
        redacted=dump.redacted,
        excluded_tables=dump.excluded_tables,
        files=dump.files,
        extra=dump.extra or None,
        # What the proof after a restore compares (docs/snapshot-layout.md, "Fingerprint").
        fingerprint=dump.fingerprint.to_json() if dump.fingerprint is not None else None,
    )


def _encrypted(config: Config, build: snapshot.Building) -> Any:
    """While open, every file created in the snapshot is encrypted to the configured recipients."""
    import contextlib

    if config.encryption is None or config.encryption.offsite_only:
        return contextlib.nullcontext()
    from relstep.encryption import recipient_objects

    return codec.encrypting(build.path, recipient_objects(config.encryption.recipients))


def _encryption_entry(config: Config) -> EncryptionEntry | None:
    """What the manifest says about encryption: readable without the key, as list and prune need."""
    if config.encryption is None or config.encryption.offsite_only:
        return None
    from relstep.encryption import describe_recipient

    return EncryptionEntry(recipients=[describe_recipient(k) for k in config.encryption.recipients])


def _fill(config: Config, release: Release, build: snapshot.Building) -> BackupOutcome:
    assert config.database is not None
    # Written before the encrypting stage starts: what list, prune and status read stays plain.
    build.write_text("VERSION.txt", release.version + "\n")
    build.write_text("DEPLOYMENT_TYPE.txt", release.deployment_type + "\n")
    with _encrypted(config, build):
        manifest = _fill_data(config, release, build)
    # The manifest stays plain too: it is written after the encrypting stage has ended.
    path = build.finish(manifest, private=(code_capture.CODE_DIR,))
    return BackupOutcome(path=path, manifest=manifest)


def _fill_data(config: Config, release: Release, build: snapshot.Building) -> Manifest:
    assert config.database is not None
    databases = config.all_databases
    for db in databases:
        (build.path / DATABASES_DIR / db.name).mkdir(parents=True, mode=0o700)

    hashes: dict[str, dict[str, Any]] = {}
    # The dump mostly waits on its tool; copying code and running the environment
    # commands meanwhile takes them off the critical path.  Several databases are
    # dumped one after the other: each is its own point in time anyway, and two
    # dump tools at once would compete for the same disk.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="relstep-capture") as pool:
        code_future = pool.submit(_capture_code, config, build, hashes)
        env_future = pool.submit(_environment, config)
        dumps = {db.name: _dump_database(config, db, build.path / DATABASES_DIR / db.name) for db in databases}
        code = code_future.result()
        environment = env_future.result()
    for db in databases:  # the dumps' files were hashed by the codec as they were written
        folder = f"{DATABASES_DIR}/{db.name}/"
        hashes.update({folder + relative: entry for relative, entry in dumps[db.name].hashes.items()})

    first = dumps[config.database.name]
    state = first.inspected
    migrations_json = state.to_json() if state is not None else {"tool": None, "applied": [], "schema_revision": None}
    build.write_json(MIGRATIONS_FILE, migrations_json)
    build.write_json(ENVIRONMENT_FILE, environment)

    git = environment.get("git", {})
    hide_revision = codec.encrypts(build.path / MIGRATIONS_FILE)
    # Hashes the codec computed while writing: code capture's and the small files' (write_text).
    known = {rel: FileEntry.model_validate(meta) for rel, meta in {**hashes, **build.hashes}.items()}
    manifest = Manifest(
        name=build.name,
        version=release.version,
        deployment_type=release.deployment_type,
        created_at=build.created.astimezone(timezone.utc).isoformat(timespec="seconds"),
        relstep_version=__version__,
        project=project_of(config),
        git_commit=git.get("commit"),
        git_tags=git.get("tags", []),
        # engine and row_counts describe the first database, as they did before `databases:` existed.
        engine=first.engine,
        row_counts=first.row_counts,
        # A migration's name can say what the release does: in an encrypted snapshot it stays in
        # the encrypted migrations.json only.
        schema_revision=None if hide_revision else migrations_json.get("schema_revision"),
        migration_tool=migrations_json.get("tool"),
        databases={db.name: _database_entry(db, dumps[db.name]) for db in databases},
        code={name: CodeEntry.model_validate(summary) for name, summary in code.items()},
        files=snapshot.manifest_files(build.path, known),
        encryption=_encryption_entry(config),
    )
    # Not passed through mask_data: file paths are keys here, and a file named
    # keys.js is not a secret.  The only secret-bearing field, the URL, is masked above.
    return manifest
