"""Off-site copies of finished snapshots, through fsspec (s3fs, sshfs, or local files).

Layout at ``offsite.url``: one folder per snapshot, named as it is locally, holding
the same files.  ``MANIFEST.json`` is uploaded last, and only after every other
file's remote size and SHA-256 matched the manifest, so a remote folder with a
manifest is complete; one without is a leftover of an interrupted upload (the
same role ``.partial`` plays locally).

* Upload is streamed file by file (``fs.open(..., "wb")``), never read whole into
  memory; on S3, files larger than ``PART_SIZE`` go up as a multipart upload in
  parts of that size.
* Verification reads every remote file back and hashes it: a size match alone
  would not notice a corrupted part.
* Remote pruning reuses :func:`relstep.snapshot.beyond_retention` with the
  creation time each remote manifest records, as local pruning does, only for
  the current project's copies (another app's, or one that records no project,
  is never removed), and protects the snapshot recorded last.
* Credentials never come from relstep.yml in clear (config refuses them): S3 uses
  botocore's chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
  ``~/.aws/credentials``, ``AWS_ENDPOINT_URL`` for S3-compatible servers); SFTP uses
  ``~/.ssh/config``, the agent, ``~/.ssh/id_*`` and ``~/.ssh/known_hosts``.

* With ``encryption:`` set, a plain local snapshot (``offsite_only``) is encrypted file by file
  on the way up and decrypted on the way back with the identity (:mod:`relstep.offsite_crypt`);
  the remote manifest then records the ciphertexts' checksums, so every check above needs no key.

``fetch(config, name, dest)`` is the API ``restore``/``verify --from-offsite`` use.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relstep import fsutil, lookup, offsite_crypt, progress, snapshot
from relstep.config import Config, OffsiteConfig
from relstep.errors import InputError, ManifestError, OffsiteError, RelstepError
from relstep.identity import project_of
from relstep.manifest import FileEntry, Manifest
from relstep.masking import mask_text

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Remote:
    fs: Any                      # an fsspec AbstractFileSystem
    root: str                    # the folder holding the snapshots, in fs's own path form
    shown: str                   # the URL for messages, password removed
    # S3 only: the multipart part size.  sshfs reads block_size as one SFTP request's
    # length, and OpenSSH drops the connection on requests above 256 KiB.
    io_options: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if self.root else posixpath.join(*parts)


@dataclass
class PushOutcome:
    name: str
    url: str
    files: int = 0
    bytes: int = 0
    uploaded: bool = True                    # False: an identical, complete copy was already there
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # other projects' copies (or none recorded): left alone
    pruned: bool = True                      # False: remote pruning was skipped (last release unknown)

    def summary(self) -> str:
        what = (f"uploaded {self.files} files ({fsutil.human_bytes(self.bytes)}), verified"
                if self.uploaded else "already there, verified")
        if not self.pruned:
            return (f"{self.name} {what} at {self.url}; remote pruning skipped: the record database "
                    "cannot be read, so the last recorded release is unknown")
        left = f"; left {len(self.skipped)} of other projects alone" if self.skipped else ""
        return f"{self.name} {what} at {self.url}; kept {len(self.kept)}, removed {len(self.removed)}{left}"


# --- connecting -------------------------------------------------------------------------------


def _shown(url: str) -> str:
    from relstep.databases import redact_url

    return redact_url(url)


def open_remote(url: str) -> Remote:
    """An fsspec filesystem and root folder for ``offsite.url``, through its backend's opener."""
    from relstep.offsite_backends import BACKENDS

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    shown = _shown(url)
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise OffsiteError(f"unsupported off-site URL {shown}; use {', '.join(b.example for b in BACKENDS.values())}")
    if backend.module is not None:
        try:
            __import__(backend.module)
        except ImportError:
            raise OffsiteError(f"{scheme}:// off-site copies need {backend.module}; install it with "
                               f"pip install '{backend.extra}'") from None
    try:
        fs, root = backend.open(parts, shown)
    except RelstepError:
        raise
    except Exception as exc:  # every backend raises its own types; all mean "cannot reach"
        raise OffsiteError(f"cannot reach {shown}: {_reason(exc)}") from exc
    return Remote(fs=fs, root=root, shown=shown, io_options=dict(backend.io_options))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return mask_text(f"{name}: {text}" if text and name not in text else (text or name))


@contextmanager
def _failures(what: str, remote: Remote) -> Iterator[None]:
    """Turn any backend error into one OffsiteError sentence naming what was being done."""
    try:
        yield
    except RelstepError:
        raise
    except Exception as exc:
        raise OffsiteError(f"{what} at {remote.shown} failed: {_reason(exc)}") from exc


# --- listing ----------------------------------------------------------------------------------


def _created(name: str) -> float:
    """A snapshot's creation time from its name: what a local snapshot's mtime is set to."""
    return snapshot.name_time(name) or 0.0


def _entries(remote: Remote) -> list[str]:
    remote.fs.invalidate_cache()   # s3fs caches listings; another run may have changed the remote
    if not remote.fs.exists(remote.root):
        return []
    names = [posixpath.basename(p.rstrip("/")) for p in remote.fs.ls(remote.root, detail=False)]
    return sorted(n for n in names if snapshot.SNAPSHOT_NAME.match(n))


def _is_complete(remote: Remote, name: str) -> bool:
    return bool(remote.fs.exists(remote.path(name, snapshot.MANIFEST)))


def _has_files(remote: Remote, name: str) -> bool:
    found = remote.fs.find(remote.path(name), detail=True)
    return any(info.get("type") == "file" for info in found.values())


def _read_remote(remote: Remote, name: str) -> snapshot.Snapshot:
    """A complete remote copy with its manifest read (small: one request), as a local one is listed."""
    where = f"{name}/{snapshot.MANIFEST} at {remote.shown}"
    try:
        loaded: Manifest | None = Manifest.parse(remote.fs.cat_file(remote.path(name, snapshot.MANIFEST)), where)
        problem = None
    except ManifestError as exc:
        loaded, problem = None, exc
    return snapshot.Snapshot(Path(remote.path(name)), snapshot.created_time(name, loaded), loaded, problem)


def list_remote(remote: Remote) -> tuple[list[snapshot.Snapshot], list[str]]:
    """(complete snapshots of every project newest first, names of incomplete leftovers)."""
    complete, leftovers = [], []
    for name in _entries(remote):
        if _is_complete(remote, name):
            complete.append(_read_remote(remote, name))
        elif _has_files(remote, name):
            leftovers.append(name)
        # else: an empty folder.  Some S3 servers (SeaweedFS) keep listing a prefix whose
        # objects were all deleted; it holds nothing, so it is neither a copy nor a leftover.
    return snapshot.newest_first(complete), leftovers


# --- upload and verification ------------------------------------------------------------------


def _hash_remote(remote: Remote, path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with remote.fs.open(path, "rb", **remote.io_options) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def verify_remote(remote: Remote, name: str, files: Mapping[str, FileEntry],
                  on_bytes: Callable[[int], None] | None = None) -> None:
    """Every file's remote size and SHA-256 equal the manifest's; raises OffsiteError naming the first that differs."""
    base = remote.path(name)
    remote.fs.invalidate_cache()
    listed = {posixpath.relpath(p, base): info.get("size") for p, info in
              remote.fs.find(base, detail=True).items()} if remote.fs.exists(base) else {}
    for rel, meta in sorted(files.items()):
        if rel not in listed:
            raise OffsiteError(f"{rel} of {name} is missing at {remote.shown}")
        if listed[rel] is not None and int(listed[rel]) != meta.size:
            raise OffsiteError(
                f"{rel} of {name} is {listed[rel]} bytes at {remote.shown}, the manifest says {meta.size}"
            )
        size, digest = _hash_remote(remote, remote.path(name, rel))
        if (size, digest) != (meta.size, meta.sha256):
            raise OffsiteError(f"{rel} of {name} at {remote.shown} does not match the manifest's SHA-256")
        if on_bytes:
            on_bytes(size)


def _upload_file(remote: Remote, local: Path, target: str, on_bytes: Callable[[int], None]) -> tuple[int, str]:
    """Stream one file up, hashing what is sent; large files go as multipart uploads on S3."""
    digest = hashlib.sha256()
    size = 0
    with open(local, "rb", buffering=0) as src, remote.fs.open(target, "wb", **remote.io_options) as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
            on_bytes(len(chunk))
    return size, digest.hexdigest()


def _upload(remote: Remote, snap: Path, name: str, files: Mapping[str, FileEntry], manifest_bytes: bytes,
            recipients: tuple[str, ...] | None) -> dict[str, FileEntry]:
    """Send every file but the manifest; the remote files' entries (the local ones unless encrypted on the way).

    ``recipients``: encrypt each data file to them as it is sent, and add the local manifest,
    encrypted (relstep.offsite_crypt).
    """
    total = sum(meta.size for meta in files.values())
    dirs = sorted({posixpath.dirname(rel) for rel in files} | {""})
    for rel_dir in dirs:   # SFTP and local need folders; on S3 this costs nothing
        remote.fs.makedirs(remote.path(name, rel_dir) if rel_dir else remote.path(name), exist_ok=True)
    keys = None
    if recipients is not None:
        from relstep.encryption import recipient_objects

        keys = recipient_objects(recipients)
    sent_entries: dict[str, FileEntry] = {}
    with progress.task(f"uploading {name}", unit="bytes", total=total) as task:
        for rel, meta in sorted(files.items()):
            if keys is None or rel in offsite_crypt.PLAIN_FILES:
                sent = _upload_file(remote, snap / rel, remote.path(name, rel), task.advance)
                sent_entries[rel] = meta
            else:
                with open(snap / rel, "rb", buffering=0) as src, \
                        remote.fs.open(remote.path(name, rel), "wb", **remote.io_options) as out:
                    sent_entries[rel], sent = offsite_crypt.encrypt_to(src, out, keys, task.advance)
            if sent != (meta.size, meta.sha256):
                # The local copy changed since the manifest was written: uploading it would spread the damage.
                raise OffsiteError(
                    f"local file {snap / rel} no longer matches its manifest entry; run `relstep verify`"
                )
        if keys is not None:
            with remote.fs.open(remote.path(name, offsite_crypt.LOCAL_MANIFEST), "wb", **remote.io_options) as out:
                sent_entries[offsite_crypt.LOCAL_MANIFEST], _ = offsite_crypt.encrypt_to(
                    io.BytesIO(manifest_bytes), out, keys, task.advance)
    return sent_entries


def _expected_remote(remote: Remote, name: str, local: Manifest,
                     all_files: dict[str, FileEntry]) -> dict[str, FileEntry]:
    """What a complete remote copy of the local snapshot must hold: the local files, or (encrypted on
    the way up) the ciphertexts its own manifest lists, once that manifest is checked to describe
    exactly the local snapshot's files and manifest."""
    top = remote.fs.cat_file(remote.path(name, snapshot.MANIFEST))
    copy = Manifest.parse(top, f"{name}/{snapshot.MANIFEST} at {remote.shown}")
    if not offsite_crypt.is_encrypted_copy(copy):
        return all_files
    own = offsite_crypt.local_manifest_entry(copy, f"{name} at {remote.shown}")
    if own.plain_sha256 != all_files[snapshot.MANIFEST].sha256:
        raise OffsiteError(f"the off-site copy of {name} at {remote.shown} holds another manifest than the "
                           "local snapshot; remove the remote copy and run `relstep offsite` again")
    offsite_crypt.check_local_manifest(copy, local, f"{name} at {remote.shown}")
    return {**copy.files, snapshot.MANIFEST: FileEntry(size=len(top), sha256=hashlib.sha256(top).hexdigest())}


def _remove(remote: Remote, name: str) -> None:
    path = remote.path(name)
    if remote.fs.exists(path):
        remote.fs.rm(path, recursive=True)


def push(config: Config, snap: Path, protect: str | None = None, prune: bool = True) -> PushOutcome:
    """Copy a finished local snapshot off-site, verify it, then prune remote copies beyond ``offsite.keep``.

    ``protect``: a snapshot name never pruned remotely (the one recorded last); ``prune=False``
    skips remote pruning (the caller could not tell which snapshot to protect).
    """
    offsite = _settings(config)
    manifest = Manifest.load(lookup.refuse_foreign(config, snap))
    name = snap.name
    files = manifest.files
    # The bytes as written, not a re-serialisation: the remote copy must be the same file.
    manifest_bytes = (snap / snapshot.MANIFEST).read_bytes()
    remote = open_remote(offsite.url)
    outcome = PushOutcome(name=name, url=remote.shown, files=len(files) + 1,
                          bytes=manifest.size + len(manifest_bytes))
    all_files = {**files, snapshot.MANIFEST: FileEntry(size=len(manifest_bytes),
                                                       sha256=hashlib.sha256(manifest_bytes).hexdigest())}
    recipients = offsite_crypt.recipients_for(config, manifest)
    with _failures(f"copying {name}", remote):
        if _is_complete(remote, name):
            # A re-run (`relstep offsite`) after a copy that already landed: check it, send nothing.
            expected = _expected_remote(remote, name, manifest, all_files)
            outcome.files, outcome.bytes = len(expected), sum(meta.size for meta in expected.values())
            with progress.task(f"verifying {name} off-site", unit="bytes", total=outcome.bytes) as task:
                verify_remote(remote, name, expected, lambda n: task.advance(n))
            outcome.uploaded = False
        else:
            _remove(remote, name)   # an earlier interrupted attempt: start clean
            try:
                sent = _upload(remote, snap, name, files, manifest_bytes, recipients)
                # The bytes as written locally, or the copy's own manifest when encrypted on the way.
                top = (manifest_bytes if recipients is None
                       else offsite_crypt.remote_manifest(manifest, sent, recipients))
                top_entry = FileEntry(size=len(top), sha256=hashlib.sha256(top).hexdigest())
                outcome.files, outcome.bytes = len(sent) + 1, sum(meta.size for meta in sent.values()) + len(top)
                with progress.task(f"verifying {name} off-site", unit="bytes", total=outcome.bytes) as task:
                    verify_remote(remote, name, sent, lambda n: task.advance(n))
                    # The manifest goes last: its presence is what marks the remote copy complete.
                    with remote.fs.open(remote.path(name, snapshot.MANIFEST), "wb") as out:
                        out.write(top)
                    verify_remote(remote, name, {snapshot.MANIFEST: top_entry}, lambda n: task.advance(n))
            except BaseException:
                try:
                    _remove(remote, name)   # never leave a copy that could pass for complete
                except Exception:  # noqa: S110 - the original failure is the one worth reporting
                    pass
                raise
    if not prune:
        outcome.pruned = False
        return outcome
    from relstep import pins

    with _failures("pruning off-site copies", remote):
        removed, kept, skipped = prune_remote(remote, offsite.keep, {name} | ({protect} if protect else set()),
                                              project_of(config), pinned=pins.names(config.backup_root))
    outcome.removed, outcome.kept, outcome.skipped = removed, kept, skipped
    return outcome


def prune_remote(remote: Remote, keep: int, protect: set[str], project: str,
                 pinned: frozenset[str] | set[str] = frozenset()) -> tuple[list[str], list[str], list[str]]:
    """Remove ``project``'s complete remote copies beyond ``keep`` (the local rule) and incomplete leftovers.

    Returns (removed, kept, skipped): copies of other projects, or that record none,
    are never removed, as locally; ``pinned`` copies are never removed and do not count
    against ``keep``.  One remote folder belongs to one backup_root:
    an incomplete folder there is a failed or killed upload from it (uploads run
    under its lock), not another machine's upload in progress.
    """
    everything, leftovers = list_remote(remote)
    complete = [s for s in everything if s.project == project]
    skipped = [s.name for s in everything if s.project != project]
    doomed = snapshot.beyond_retention([s for s in complete if s.name not in pinned], keep,
                                       lambda s: s.name in protect)
    removed = []
    for snap in doomed:
        _remove(remote, snap.name)
        removed.append(snap.name)
    for name in leftovers:
        if name not in protect and name not in pinned:
            _remove(remote, name)
            removed.append(name)
    kept = [s.name for s in complete if s not in doomed]
    return removed, kept, skipped


def _settings(config: Config) -> OffsiteConfig:
    if config.offsite is None:
        raise InputError(f"no off-site copy is configured; add offsite.url to {config.where}")
    return config.offsite


# --- the API restore / verify use ------------------------------------------------------------


def remote_snapshots(config: Config) -> list[str]:
    """Names of the complete off-site snapshots, newest first."""
    remote = open_remote(_settings(config).url)
    with _failures("listing off-site snapshots", remote):
        return [s.name for s in list_remote(remote)[0]]


def fetch(config: Config, name: str | None, dest: Path) -> Path:
    """Download the off-site snapshot ``name`` (default: the newest) into ``dest/<name>``; return its path.

    The copy is built under ``dest/.<name>.partial``, checked against its manifest
    (sizes and SHA-256), made private and renamed into place, with its mtime set to
    its creation time: fetched into backup_root it is an ordinary local snapshot.
    An existing ``dest/<name>`` is refused rather than overwritten.
    """
    remote = open_remote(_settings(config).url)
    with _failures("fetching an off-site snapshot", remote):
        complete, _ = list_remote(remote)
        names = [s.name for s in complete]
        if name is None:
            if not names:
                raise InputError(f"there is no complete snapshot at {remote.shown}")
            name = names[0]
        elif name not in names:
            raise InputError(f"no complete snapshot {name!r} at {remote.shown}; there are: "
                             f"{', '.join(names[:10]) or 'none'}")
        final = dest / name
        if final.exists():
            raise InputError(f"{final} already exists; remove it or fetch into another folder")
        where = f"{name}/{snapshot.MANIFEST} at {remote.shown}"
        top = remote.fs.cat_file(remote.path(name, snapshot.MANIFEST))
        copy = Manifest.parse(top, where)   # also refuses paths that would leave the snapshot
        # Encrypted on the way up: the identity is needed (and checked) before anything is written.
        identities = offsite_crypt.identities_for(name, remote.shown) if offsite_crypt.is_encrypted_copy(copy) \
            else None
        dest.mkdir(parents=True, exist_ok=True)
        partial = dest / f".{name}{snapshot.PARTIAL_SUFFIX}"
        shutil.rmtree(partial, ignore_errors=True)
        fsutil.make_private_dir(partial)
        try:
            if identities is None:
                (partial / snapshot.MANIFEST).write_bytes(top)
            else:
                _decrypt_file(remote, name, offsite_crypt.LOCAL_MANIFEST,
                              offsite_crypt.local_manifest_entry(copy, f"{name} at {remote.shown}"),
                              partial / snapshot.MANIFEST, identities)
                offsite_crypt.check_local_manifest(copy, Manifest.load(partial), f"{name} at {remote.shown}")
            files = {rel: entry for rel, entry in copy.files.items() if rel != offsite_crypt.LOCAL_MANIFEST}
            total = sum(meta.size for meta in files.values())
            with progress.task(f"downloading {name}", unit="bytes", total=total) as task:
                for rel, meta in sorted(files.items()):
                    target = partial / rel
                    if not target.resolve().is_relative_to(partial.resolve()):
                        raise OffsiteError(f"the manifest of {name} names a file outside the snapshot: {rel}")
                    target.parent.mkdir(parents=True, exist_ok=True, mode=fsutil.PRIVATE_DIR)
                    if identities is not None and meta.plain_sha256 is not None:
                        # The local snapshot's file was plain: decrypted as it arrives, both checksums checked.
                        _decrypt_file(remote, name, rel, meta, target, identities)
                    else:
                        remote.fs.get_file(remote.path(name, rel), str(target))
                        if fsutil.sha256_file(target) != (meta.size, meta.sha256):
                            raise OffsiteError(f"{rel} of {name} at {remote.shown} does not match its manifest")
                    task.advance(meta.size)
            fsutil.privatize_tree(partial)
            os.replace(partial, final)
            stamp = _created(name)
            os.utime(final, (stamp, stamp))
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return final


def _decrypt_file(remote: Remote, name: str, rel: str, meta: FileEntry, target: Path, identities: list[Any]) -> None:
    with remote.fs.open(remote.path(name, rel), "rb", **remote.io_options) as raw:
        offsite_crypt.decrypt_to(raw, target, identities, meta, f"{rel} of {name} at {remote.shown}")


def resolve_remote(config: Config, ref: str | None) -> str:
    """This app's off-site snapshot by name, by version (newest such) or None (the newest).

    Once fetched, restore and verify refuse another project's copy by name, as they do locally.
    """
    remote = open_remote(_settings(config).url)
    project = project_of(config)
    with _failures("listing off-site snapshots", remote):
        complete, _ = list_remote(remote)
        for snap in complete:
            if snap.name == ref and snap.project not in (None, project):
                raise InputError(f"{ref} at {remote.shown} belongs to project {snap.project!r}, not to this app "
                                 f"({project!r}); nothing was fetched")
            if snap.name == ref:
                return snap.name
        own = [s for s in complete if s.project == project]
        if not own:
            raise InputError(f"there is no complete snapshot of project {project!r} at {remote.shown}")
        if ref is None:
            return own[0].name
        wanted = ref[len(config.tag_prefix):] if config.tag_prefix and ref.startswith(config.tag_prefix) else ref
        for snap in own:   # newest first
            if snap.loaded is not None and snap.loaded.version == wanted:
                return snap.name
    raise InputError(f"no off-site snapshot named or versioned {ref!r} of project {project!r} at {remote.shown}")


def fetch_into_backup_root(config: Config, ref: str | None, lock_timeout: float) -> Path:
    """``--from-offsite``: make an off-site snapshot a local one, then restore/verify it as usual.

    Fetched into backup_root (under its lock, so a prune cannot race it) with its
    creation time as mtime, it sorts where it always did.  A snapshot already
    there locally is used as it is.
    """
    name = resolve_remote(config, ref)
    with snapshot.root_lock(config.backup_root, lock_timeout):
        local = config.backup_root / name
        if snapshot.is_finished_snapshot(local):
            return local
        return fetch(config, name, config.backup_root)
