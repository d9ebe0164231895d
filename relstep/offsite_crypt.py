"""Off-site copies encrypted on the way up and decrypted on the way back (``encryption.offsite_only``).

The local snapshot stays plain; its off-site copy has the layout of an encrypted snapshot:

* every data file is the age encryption of the local file's bytes, streamed from the local file
  through pyrage to the remote file (no plaintext temporary file, nothing held whole);
* ``VERSION.txt`` and ``DEPLOYMENT_TYPE.txt`` stay plain, as in an encrypted snapshot;
* ``MANIFEST.local.json`` is the local snapshot's own manifest, encrypted: what a download puts
  back, so the snapshot fetched with the identity is byte for byte the local one;
* ``MANIFEST.json`` (plain, uploaded last) is the local manifest with each encrypted file's entry
  replaced by its ciphertext's size and SHA-256 plus ``plain_sha256`` (the local file's SHA-256),
  the schema revision left out (a migration's name), and ``encryption`` naming the recipients with
  ``offsite_only: true``.  Listing, remote retention and integrity checks need no key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from relstep import codec
from relstep.errors import OffsiteError
from relstep.manifest import EncryptionEntry, FileEntry, Manifest

if TYPE_CHECKING:
    from relstep.config import Config

LOCAL_MANIFEST = "MANIFEST.local.json"
# Uploaded as they are: what an encrypted snapshot keeps plain besides its manifest.
PLAIN_FILES = frozenset({"VERSION.txt", "DEPLOYMENT_TYPE.txt"})
CHUNK = 1024 * 1024


def recipients_for(config: Config, manifest: Manifest) -> tuple[str, ...] | None:
    """The public keys a local snapshot's off-site copy is encrypted to on the way, or None.

    A snapshot already encrypted goes up as it is.  A plain one is encrypted whenever
    ``encryption:`` is configured (``offsite_only``, or a snapshot made before encryption was
    turned on): with recipients set, nothing leaves the host in clear.
    """
    if config.encryption is None or manifest.encryption is not None:
        return None
    return tuple(config.encryption.recipients)


def is_encrypted_copy(manifest: Manifest) -> bool:
    """True for a remote copy encrypted on the way up (it holds the local manifest, encrypted)."""
    return bool(manifest.encryption is not None and manifest.encryption.offsite_only)


class _RemoteSink:
    """The end of the encrypting stage: counts, hashes and writes the ciphertext to the remote file.

    Called from pyrage's helper thread; nothing else touches it until the stage is closed."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.out.write(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """The remote file flushes itself when it is closed."""


def encrypt_to(source: BinaryIO, out: BinaryIO, recipients: list[Any],
               on_bytes: Callable[[int], None]) -> tuple[FileEntry, tuple[int, str]]:
    """Stream ``source`` into ``out`` as one age file; (its entry, the plaintext's (size, SHA-256)).

    The entry is the ciphertext's size and SHA-256 with ``plain_sha256``, as an encrypted
    snapshot records it; the caller compares the plaintext's with the local manifest.
    """
    from relstep.encryption import Encrypting

    sink = _RemoteSink(out)
    stage = Encrypting(sink, recipients)
    plain = hashlib.sha256()
    size = 0
    try:
        while chunk := source.read(CHUNK):
            plain.update(chunk)
            size += len(chunk)
            stage.write(chunk)
            on_bytes(len(chunk))   # progress in plaintext bytes, the upload's total, from this thread
    finally:
        stage.close()   # the last age chunk (or, after a failure, the end of the helper thread)
    entry = FileEntry(size=sink.size, sha256=sink.digest.hexdigest(), plain_sha256=plain.hexdigest())
    return entry, (size, plain.hexdigest())


class _HashingReader:
    """What pyrage's decrypting thread reads: the remote file, hashed as it is read."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def finish(self) -> tuple[int, str]:
        while self.read(CHUNK):   # anything after the age file counts against the checksum
            pass
        return self.size, self.digest.hexdigest()


def decrypt_to(raw: BinaryIO, target: Path, identities: list[Any], entry: FileEntry, where: str) -> None:
    """Decrypt the remote file open as ``raw`` into a new private ``target``; both checksums checked.

    Raises IdentityNeeded (exit 2) for an identity the copy was not encrypted to, OffsiteError
    when the ciphertext or the plaintext differs from ``entry``; the caller removes what it built.
    """
    from relstep.encryption import decrypted

    reader = _HashingReader(raw)
    try:
        with codec.create(target) as out:
            for chunk in decrypted(reader, identities, where):
                out.write(chunk)
    except codec.UnreadableFile as exc:
        raise OffsiteError(f"{exc}; the off-site copy is damaged") from None
    if reader.finish() != (entry.size, entry.sha256):
        raise OffsiteError(f"{where} does not match its manifest's SHA-256")
    assert out.result is not None
    if out.result.sha256 != entry.plain_sha256:
        raise OffsiteError(f"{where} decrypts to bytes other than the manifest's plain_sha256")


def remote_manifest(local: Manifest, files: dict[str, FileEntry], recipients: Sequence[str]) -> bytes:
    """The plain MANIFEST.json of an encrypted off-site copy (see the module docstring)."""
    from relstep.encryption import describe_recipient

    encryption = EncryptionEntry(recipients=[describe_recipient(k) for k in recipients],
                                 offsite_only=True)
    remote = local.model_copy(update={"files": files, "schema_revision": None, "encryption": encryption})
    return remote.to_json().encode("utf-8")


def local_manifest_entry(remote: Manifest, where: str) -> FileEntry:
    """The entry of the encrypted local manifest an encrypted copy must hold."""
    entry = remote.files.get(LOCAL_MANIFEST)
    if entry is None or entry.plain_sha256 is None:
        raise OffsiteError(f"{where} says it was encrypted on the way up but holds no encrypted {LOCAL_MANIFEST}; "
                           "the copy cannot be trusted")
    return entry


def check_local_manifest(remote: Manifest, local: Manifest, where: str) -> None:
    """The decrypted local manifest describes exactly the files of the remote one (their plaintexts)."""
    expected = {rel: entry.plain_sha256 or entry.sha256 for rel, entry in remote.files.items()
                if rel != LOCAL_MANIFEST}
    found = {rel: entry.sha256 for rel, entry in local.files.items()}
    if expected != found:
        raise OffsiteError(f"the manifests of {where} disagree about its files; the copy cannot be trusted")


def identities_for(name: str, shown: str) -> list[Any]:
    """The identities that open an encrypted off-site copy, checked before anything is fetched."""
    from relstep.encryption import IDENTITY_VARIABLE, IdentityNeeded, chosen_identity, load_identities

    path = chosen_identity()
    if path is None:
        raise IdentityNeeded(
            f"the off-site copy of {name} at {shown} is encrypted (age); pass --identity FILE or set "
            f"{IDENTITY_VARIABLE} to the identity file of one of its recipients; nothing was fetched"
        )
    return list(load_identities(path))

