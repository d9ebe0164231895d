"""`relstep verify`: prove that a snapshot is intact and, with ``--restore-test``, that it restores.

Three levels, each skipped once an earlier one has failed (a snapshot whose bytes
changed cannot pass the later ones, and their errors would only repeat the first):

1. every file against ``MANIFEST.json``: missing, extra (including symlinks and
   other non-files, which relstep never writes) and changed files (size first,
   then SHA-256) are all reported by name;
2. each database's dump is readable by its engine (``check_files``);
3. ``--restore-test``: the dump is restored into a scratch database that the engine
   creates and drops, and the restored database's fingerprint is compared with the one the
   manifest recorded at backup time (``relstep.proof``; row counts for older snapshots).

Core functions return data (``VerifyResult``); ``describe`` renders it as text and
only the CLI prints and chooses the exit code.  Nothing here writes into a snapshot.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relstep import fsutil, lookup, snapshot
from relstep.config import Config
from relstep.databases import command_line_url, engine_named, redact_url, spec_for_url
from relstep.databases.base import Engine
from relstep.databases.registry import engine_errors, spec_named
from relstep.errors import InputError, RelstepError, VerifyError
from relstep.fsutil import human_bytes
from relstep.manifest import DatabaseEntry, FileEntry, Manifest
from relstep.masking import mask_text

# Files are hashed in pool tasks of up to this many bytes or files: one task per
# file costs more in scheduling than hashing a 2 KB source file (measured on
# 25,000 small files, 64 per task beat both 1 and 256).
BATCH_BYTES = 8 * 1024 * 1024
BATCH_FILES = 64


@dataclass(frozen=True)
class Problem:
    kind: str       # missing, extra, changed, manifest, unreadable, restore-test, differs, rows
    subject: str    # a file relative to the snapshot, a database or a table
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.subject}" + (f": {self.detail}" if self.detail else "")

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": mask_text(self.detail)}


@dataclass
class RestoreTest:
    database: str
    engine: str
    scratch: str            # where it ran, masked
    tables: int = 0
    seconds: float = 0.0
    restored: bool = False  # False: the restore itself failed (the problem says why); no tables were compared
    method: str = ""        # what the proof compared: "fingerprint" or "row counts"
    compared: str = ""      # the proof's one line: what was equal, or what differs
    notes: list[str] = field(default_factory=list)


@dataclass
class SnapshotReport:
    path: Path
    version: str | None = None
    deployment_type: str | None = None
    files: int = 0
    bytes: int = 0
    databases_readable: list[str] = field(default_factory=list)
    restore_tests: list[RestoreTest] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vanished: bool = False  # pruned by a concurrent run while being verified: not a failure
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems or self.vanished

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": str(self.path), "name": self.path.name, "ok": self.ok, "vanished": self.vanished,
            "version": self.version, "deployment_type": self.deployment_type,
            "files": self.files, "bytes": self.bytes, "databases_readable": self.databases_readable,
            "restore_tests": [vars(t) for t in self.restore_tests],
            "problems": [p.to_json() for p in self.problems], "notes": [mask_text(n) for n in self.notes],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class VerifyResult:
    reports: list[SnapshotReport]
    notes: list[str] = field(default_factory=list)      # other projects' snapshots left alone

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def failure(self) -> str:
        """One sentence naming the first failing snapshot and its first problems."""
        failed = [r for r in self.reports if not r.ok]
        first = failed[0]
        shown = "; ".join(str(p) for p in first.problems[:3])
        more = len(first.problems) - 3
        text = f"{first.path.name}: {shown}" + (f" and {more} more problem(s)" if more > 0 else "")
        if len(failed) > 1:
            text += f" ({len(failed)} snapshots failed)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "snapshots": [r.to_json() for r in self.reports], "notes": self.notes}


# --------------------------------------------------------------------------- level 1: files


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """Regular files under ``root`` (relative paths), and anything else found there.

    The file type comes with the directory entry, so there is no stat per file:
    sizes come from hashing, which reads every byte anyway.
    """
    files: list[str] = []
    odd: list[str] = []
    prefix = len(str(root)) + 1
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                rel = entry.path[prefix:]
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    files.append(rel)
                else:
                    odd.append(rel)
    return [f for f in files if f != snapshot.MANIFEST], sorted(odd)


Digest = tuple[int, str] | str   # (size, sha256 hex), or why the file could not be read


def _hash_batch(root: Path, batch: list[str]) -> list[tuple[str, Digest]]:
    results: list[tuple[str, Digest]] = []
    for rel in batch:
        try:
            results.append((rel, fsutil.sha256_file(root / rel)))
        except OSError as exc:
            results.append((rel, exc.strerror or str(exc)))
    return results


def _batches(sizes: dict[str, int]) -> list[list[str]]:
    """Largest files first, each alone; small ones in groups, so the pool stays busy to the end
    without paying a task's scheduling for every 2 KB source file."""
    batches: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for rel in sorted(sizes, key=lambda r: sizes[r], reverse=True):
        if sizes[rel] >= BATCH_BYTES:
            batches.append([rel])
            continue
        current.append(rel)
        current_bytes += sizes[rel]
        if current_bytes >= BATCH_BYTES or len(current) >= BATCH_FILES:
            batches.append(current)
            current, current_bytes = [], 0
    if current:
        batches.append(current)
    return batches


def hash_files(root: Path, sizes: dict[str, int]) -> dict[str, Digest]:
    """Every file of ``sizes`` (relative path -> expected size, for scheduling), hashed on a thread pool.

    hashlib releases the GIL while it hashes a buffer, so threads hash several files
    at once; ``fsutil.sha256_file`` streams each through one reused buffer per thread.
    """
    digests: dict[str, Digest] = {}
    with ThreadPoolExecutor(thread_name_prefix="relstep-verify") as pool:
        for results in pool.map(lambda batch: _hash_batch(root, batch), _batches(sizes)):
            digests.update(results)
    return digests


def check_files(
    path: Path, manifest: Manifest, within: tuple[str, ...] | None = None
) -> tuple[list[Problem], int, int]:
    """Every file of the snapshot against the manifest: (problems, files checked, bytes read).

    ``within`` limits the check to paths starting with one of these prefixes (restore
    checks only what it is about to use, not the code trees it leaves alone).  The
    manifest's paths were checked when it was loaded (relstep.manifest).
    """
    expected: dict[str, FileEntry] = dict(manifest.files)
    problems: list[Problem] = []
    found, odd = _walk(path)
    if within is not None:
        expected = {rel: meta for rel, meta in expected.items() if rel.startswith(within)}
        found = [rel for rel in found if rel.startswith(within)]
        odd = [rel for rel in odd if rel.startswith(within)]
    on_disk = set(found)
    problems += [Problem("missing", rel) for rel in sorted(expected.keys() - on_disk)]
    problems += [Problem("extra", rel, "not in the manifest") for rel in sorted(on_disk - expected.keys())]
    problems += [Problem("extra", rel, "not a regular file") for rel in odd]
    digests = hash_files(path, {rel: expected[rel].size for rel in expected.keys() & on_disk})
    total = 0
    for rel, digest in sorted(digests.items()):
        if isinstance(digest, str):
            problems.append(Problem("unreadable", rel, digest))
            continue
        size, sha256 = digest
        total += size
        want = expected[rel].size
        if size != want:
            hint = "truncated" if size < want else "grown"
            problems.append(Problem("changed", rel, f"{size} bytes, the manifest says {want} ({hint})"))
        elif sha256 != expected[rel].sha256:
            problems.append(Problem("changed", rel, "its SHA-256 differs from the manifest's"))
    return problems, len(digests), total


def _plain_digest(path: Path) -> Digest:
    """(size, SHA-256) of an encrypted file's plaintext, decrypted as a stream; or why it cannot be read."""
    import hashlib

    from relstep import codec

    digest, size = hashlib.sha256(), 0
    try:
        for chunk in codec.read_chunks(path):
            digest.update(chunk)
            size += len(chunk)
    except codec.UnreadableFile as exc:
        return str(exc)
    return size, digest.hexdigest()


def check_plaintext(path: Path, manifest: Manifest, damaged: set[str]) -> list[Problem]:
    """With the identity: every encrypted file decrypted and its plaintext against ``plain_sha256``.

    The ciphertext's checksum says the file is the one written; this says it holds what was
    written (a file re-encrypted to the same key with other content passes the first check only).
    Files in ``damaged`` already failed the ciphertext check and are not read again."""
    encrypted = sorted(rel for rel, entry in manifest.files.items()
                       if entry.plain_sha256 is not None and rel not in damaged)
    problems: list[Problem] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="relstep-decrypt") as pool:
        for rel, digest in zip(encrypted, pool.map(lambda rel: _plain_digest(path / rel), encrypted), strict=True):
            if isinstance(digest, str):
                problems.append(Problem("unreadable", rel, digest))
            elif digest[1] != manifest.files[rel].plain_sha256:
                problems.append(Problem("changed", rel, "its decrypted content's SHA-256 differs from the "
                                                        "manifest's plain_sha256"))
    return problems


# --------------------------------------------------------------------------- levels 2 and 3: databases


def database_entries(manifest: Manifest) -> tuple[dict[str, DatabaseEntry], list[Problem]]:
    """The manifest's databases whose engine this relstep knows, and problems for the others."""
    if manifest.databases is None:
        return {}, [Problem("manifest", snapshot.MANIFEST, "has no 'databases' map")]
    good, problems = {}, []
    for name, entry in manifest.databases.items():
        try:
            spec_named(entry.engine)
        except InputError:
            problems.append(Problem("manifest", snapshot.MANIFEST, f"database {name!r} names an unknown engine"))
            continue
        good[name] = entry
    return good, problems


def engine_module(name: str) -> Engine:
    """The engine module for a manifest's engine name ("postgresql", "mysql", "sqlite").

    The registry resolves them.
    """
    return engine_named(name)


def check_databases(path: Path, databases: dict[str, DatabaseEntry]) -> dict[str, Problem | None]:
    """Each database's dump through its engine's ``check_files``: name -> the problem, or None."""
    found: dict[str, Problem | None] = {}
    for name, entry in databases.items():
        try:
            engine_module(entry.engine).check_files(path / entry.path)
            found[name] = None
        except (RelstepError, OSError) as exc:
            found[name] = Problem("unreadable", f"database {name}", _reason(exc))
    return found


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, RelstepError) else (getattr(exc, "strerror", None) or str(exc))


def scratch_server(config: Config, engine: str, scratch_url: str | None, entry: DatabaseEntry) -> str | None:
    """The server a restore test of ``engine`` runs on: --scratch-url, else a configured
    database of the same engine, else the snapshot's own URL when it carries no
    (redacted) password.  SQLite's scratch database is a temporary file, any URL will do."""
    candidates = [scratch_url, *(db.url for db in config.all_databases), entry.url]
    for url in candidates:
        if isinstance(url, str) and url and "***@" not in url:
            try:
                if spec_for_url(url).name == engine:
                    return url
            except InputError:
                continue
    return None


def restore_test(path: Path, name: str, entry: DatabaseEntry, server: str) -> tuple[RestoreTest, list[Problem]]:
    """Restore one database of the snapshot into a scratch database and prove it equal to the snapshot."""
    from relstep.proof import prove

    engine = engine_module(entry.engine)
    spec = spec_for_url(server)
    if not spec.has_server:
        scratch_label = f"a temporary {spec.label} file"
    else:
        scratch_label = f"a scratch database on {redact_url(server).rsplit('/', 1)[0]}"
    test = RestoreTest(database=name, engine=entry.engine, scratch=scratch_label)
    started = time.monotonic()
    try:
        with engine.scratch_database(server) as scratch:
            engine.restore(path / entry.path, scratch, entry.extra)
            proof = prove(engine, entry, scratch, same_database=False)
    except RelstepError as exc:
        return test, [Problem("restore-test", f"database {name}", exc.message)]
    except ValueError as exc:  # a fingerprint this relstep cannot read
        return test, [Problem("manifest", snapshot.MANIFEST, f"database {name!r}: {exc}")]
    finally:
        test.seconds = time.monotonic() - started
    test.restored = True
    test.tables, test.method, test.compared = proof.tables, proof.method, proof.sentence()
    test.notes = proof.notes
    return test, [Problem("differs", f"database {name}", difference) for difference in proof.differences]


# --------------------------------------------------------------------------- the command


def select(config: Config, ref: str | None, every: bool) -> tuple[list[Path], list[str]]:
    """(snapshots to verify, notes): one by name/path/version, all of this app's (and those that
    record no project), or (default) this app's newest; the notes name other projects' skipped."""
    if ref is not None and every:
        raise InputError("give either a SNAPSHOT or --all, not both", phase="verify")
    if ref is not None:
        return [lookup.find_for_restore(config, ref)], []
    view = lookup.of_config(config)
    skipped = [note for note in (view.skipped_note(),) if note]
    if every:
        return [s.path for s in view.visible], skipped
    return [s.path for s in (view.own[:1] or view.visible[:1])], skipped


def verify_snapshot(
    config: Config, path: Path, *, with_restore_test: bool = False, scratch_url: str | None = None
) -> SnapshotReport:
    started = time.monotonic()
    report = SnapshotReport(path=path)
    try:
        manifest: Manifest | None = Manifest.load(path)
    except InputError as exc:   # ManifestError, or the manifest vanished meanwhile
        report.problems.append(Problem("manifest", snapshot.MANIFEST, exc.message))
        manifest = None
    if manifest is not None:
        report.version, report.deployment_type = manifest.version, manifest.deployment_type
        _verify_contents(config, path, manifest, report, with_restore_test, scratch_url)
    # prune renames a snapshot away before deleting it: files that vanished because a
    # concurrent run pruned the snapshot are retention working, not damage.
    report.vanished = bool(report.problems) and not path.exists()
    report.seconds = time.monotonic() - started
    return report


def _verify_contents(
    config: Config, path: Path, manifest: Manifest, report: SnapshotReport,
    with_restore_test: bool, scratch_url: str | None,
) -> None:
    from relstep import encryption, unlock

    if manifest.encryption is not None and not encryption.identity_given():
        _verify_ciphertext(path, manifest, report, with_restore_test)
        return
    with unlock.reading(path, manifest, "verify"):
        _verify_readable(config, path, manifest, report, with_restore_test, scratch_url)


def _verify_ciphertext(path: Path, manifest: Manifest, report: SnapshotReport, with_restore_test: bool) -> None:
    """Without the identity: every file against its checksum, every encrypted one's age header."""
    from relstep.encryption import IDENTITY_VARIABLE, check_header

    file_problems, report.files, report.bytes = check_files(path, manifest)
    report.problems += file_problems
    damaged = {p.subject for p in file_problems}
    for rel, entry in manifest.files.items():
        if entry.plain_sha256 is not None and rel not in damaged:
            why = check_header(path / rel)
            if why is not None:
                report.problems.append(Problem("unreadable", rel, why))
    note = f"encrypted: the dumps' readability was not checked; pass --identity FILE or set {IDENTITY_VARIABLE}"
    report.notes.append(note)
    if with_restore_test:
        report.problems.append(Problem("restore-test", path.name, f"it is encrypted; {note.split('; ', 1)[1]}"))


def _verify_readable(
    config: Config, path: Path, manifest: Manifest, report: SnapshotReport,
    with_restore_test: bool, scratch_url: str | None,
) -> None:
    databases, problems = database_entries(manifest)
    report.problems += problems
    # Hashing and the engines' readability checks read different files, and both
    # spend their time in code that releases the GIL: run them side by side.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="relstep-dbcheck") as pool:
        db_future = pool.submit(check_databases, path, databases)
        file_problems, report.files, report.bytes = check_files(path, manifest)
        db_checks = db_future.result()
    if manifest.encryption is not None:  # the identity was given (else _verify_ciphertext ran)
        file_problems += check_plaintext(path, manifest, {p.subject for p in file_problems})
    report.problems += file_problems
    for name, problem in db_checks.items():
        if problem is None:
            report.databases_readable.append(name)
        elif not any(p.subject.startswith(databases[name].path + "/") for p in file_problems):
            # Otherwise the file problems already name what is wrong; a dump that changed
            # on disk only fails its readability check again, in vaguer words.
            report.problems.append(problem)
    if not with_restore_test:
        return
    if report.problems:
        report.notes.append("restore test skipped: the snapshot already failed verification")
        return
    for name, entry in databases.items():
        server = scratch_server(config, entry.engine, scratch_url, entry)
        if server is None:  # checked up front by plan_restore_tests; kept for direct callers
            report.problems.append(Problem("restore-test", f"database {name}", "no server; pass --scratch-url"))
            continue
        test, problems = restore_test(path, name, entry, server)
        report.restore_tests.append(test)
        report.problems += problems
        report.notes += [f"database {name}: {note}" for note in test.notes]


def _check_servers(config: Config, paths: list[Path], scratch_url: str | None) -> None:
    """Before any work: every database to restore-test has a server to do it on (else exit 2)."""
    for path in paths:
        try:
            databases, _ = database_entries(Manifest.load(path))
        except InputError:
            continue  # reported as a verification problem of that snapshot
        for entry in databases.values():
            with engine_errors(VerifyError):  # a restore test connects: its driver must be installed
                spec_named(entry.engine).require_driver()
            if scratch_server(config, entry.engine, scratch_url, entry) is None:
                raise InputError(
                    f"{path.name} holds a {entry.engine} dump but no {entry.engine} server is configured "
                    f"for the restore test; pass --scratch-url {entry.engine}://USER@HOST/DATABASE",
                    phase="verify",
                )


def verify(
    config: Config,
    ref: str | None = None,
    *,
    every: bool = False,
    with_restore_test: bool = False,
    scratch_url: str | None = None,
) -> VerifyResult:
    if scratch_url is not None and not with_restore_test:
        raise InputError("--scratch-url is only used with --restore-test", phase="verify")
    if scratch_url is not None:
        # an unsupported scheme or unreadable URL is bad input (exit 2), not a failed verify
        scratch_url = command_line_url(scratch_url, "--scratch-url", "verify")
    paths, notes = select(config, ref, every)
    if with_restore_test:
        _check_servers(config, paths, scratch_url)
    reports = [verify_snapshot(config, p, with_restore_test=with_restore_test, scratch_url=scratch_url)
               for p in paths]
    _log_results(config, reports)
    return VerifyResult(reports, notes)


def _log_results(config: Config, reports: list[SnapshotReport]) -> None:
    """Each result into backup_root's verify log (beside the snapshots, never in them), for `relstep status`."""
    from relstep import journal

    root = config.backup_root
    for report in reports:
        if report.vanished or report.path.parent.resolve() != root.resolve():
            continue
        problem = mask_text(str(report.problems[0])) if report.problems else None
        try:
            journal.log_verified(root, report.path.name, report.ok, problem)
        except OSError as exc:
            report.notes.append(f"could not record this result for `relstep status` in {root}: {exc.strerror or exc}")


# --------------------------------------------------------------------------- text


def describe(result: VerifyResult) -> str:
    if not result.reports:
        return "\n".join(["no snapshots to verify", *result.notes])
    lines = []
    for r in result.reports:
        status = "ok" if r.ok and not r.vanished else ("pruned meanwhile" if r.vanished else "FAILED")
        lines.append(f"{r.path.name}  {r.version or '?'} ({r.deployment_type or '?'})  {status}  ({r.seconds:.1f} s)")
        if r.vanished:
            lines.append("  removed by a concurrent prune while being verified; not checked")
            continue
        lines.append(f"  files:    {r.files} ({human_bytes(r.bytes)}) checked against MANIFEST.json")
        for name in r.databases_readable:
            lines.append(f"  database: {name} dump readable")
        for t in r.restore_tests:
            if not t.restored:
                lines.append(f"  restore:  {t.database} ({t.engine}) could not be restored into {t.scratch} "
                             f"({t.seconds:.1f} s); nothing was compared")
                continue
            lines.append(f"  restore:  {t.database} ({t.engine}) restored into {t.scratch} ({t.seconds:.1f} s)")
            if t.compared:
                lines.append(f"  proof:    {t.compared}")
        lines += [f"  problem:  {p}" for p in r.problems]
        lines += [f"  note:     {n}" for n in r.notes]
    lines += result.notes
    # Engine messages mask their own URLs; this also catches a password inside any other text.
    return mask_text("\n".join(lines))
