"""Encryption at rest with age: recipients (who can read), identities (the key that reads), keygen,
and the two streaming stages the codec puts between compression and the disk.

The cryptography is pyrage's (the Rust ``age`` crate); nothing here is hand-written crypto.
pyrage's stream functions pull from a reader and push to a writer, while the codec is pushed to
and pulled from: each stage runs pyrage in one helper thread connected by a bounded queue, so the
data stays in memory (a few chunks at a time) and never touches the disk as plaintext.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from relstep.errors import ConfigError, InputError

MAGIC = b"age-encryption.org/v1\n"
IDENTITY_VARIABLE = "RELSTEP_AGE_IDENTITY_FILE"
EXTRA_HINT = "pip install 'relstep[age]' (the Action: extras: age)"
_QUEUE_DEPTH = 8        # chunks in flight between the codec and pyrage's thread
_END = b""              # end of the stream on a queue (a real chunk is never empty)


class IdentityNeeded(InputError):
    """An encrypted snapshot was read without an identity, or with one it was not encrypted to."""


def pyrage() -> Any:
    """The age implementation, imported when first needed (``relstep --help`` never pays for it)."""
    try:
        import pyrage as module
    except ImportError:
        raise ConfigError(f"age encryption is not installed; {EXTRA_HINT}") from None
    return module


# --------------------------------------------------------------------------- recipients


def _is_recipient(text: str) -> bool:
    return text.startswith(("age1", "ssh-ed25519 ", "ssh-rsa "))


def _is_private(text: str) -> bool:
    return text.upper().startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in text


def parse_recipient(text: str, where: str) -> Any:
    """A pyrage recipient for an ``age1...`` or ``ssh-ed25519``/``ssh-rsa`` public key."""
    age = pyrage()
    try:
        if text.startswith("age1"):
            return age.x25519.Recipient.from_str(text)
        return age.ssh.Recipient.from_str(text)
    except (age.RecipientError, ValueError) as exc:
        raise ConfigError(f"{where}: {text[:24]}... is not a valid age or SSH public key ({exc})") from None


def load_recipients(entries: Sequence[str], base_dir: Path, where: str) -> tuple[str, ...]:
    """Every recipient named in ``encryption.recipients``: a key inline, or a file of keys (one a line)."""
    keys: list[str] = []
    for entry in entries:
        entry = entry.strip()
        if _is_private(entry):  # checked first: a private key is never echoed into a message
            raise ConfigError(f"{where}: encryption.recipients holds a private key; list public keys only "
                              "and keep the identity off the deploy host")
        if _is_recipient(entry):
            keys.append(entry)
            continue
        path = (base_dir / entry).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"{where}: encryption.recipients: {entry} is neither a public key (age1..., ssh-ed25519, ssh-rsa) "
                f"nor a readable file of them ({exc.strerror or exc})"
            ) from None
        found = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise ConfigError(f"{where}: encryption.recipients: {path} holds no public key")
        keys.extend(found)
    if not keys:
        raise ConfigError(f"{where}: encryption.recipients is empty; name at least one age or SSH public key")
    for key in keys:
        if _is_private(key):
            raise ConfigError(f"{where}: encryption.recipients names a file holding a private key; list public "
                              "keys only and keep the identity off the deploy host")
        parse_recipient(key, f"{where}: encryption.recipients")
    return tuple(dict.fromkeys(keys))


def recipient_objects(keys: Iterable[str]) -> list[Any]:
    return [parse_recipient(key, "encryption.recipients") for key in keys]


def describe_recipient(key: str) -> str:
    """An age key as it is; an SSH key as its type and key (the comment may name a person)."""
    parts = key.split()
    return " ".join(parts[:2])


# --------------------------------------------------------------------------- identities


def identity_path(option: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """``--identity FILE``, else ``RELSTEP_AGE_IDENTITY_FILE``; never a key inside relstep.yml."""
    environ = os.environ if environ is None else environ
    value = option or environ.get(IDENTITY_VARIABLE)
    return Path(value).expanduser() if value else None


def load_identities(path: Path) -> list[Any]:
    """The identities in an age identity file (``AGE-SECRET-KEY-1...`` lines) or an SSH private key."""
    age = pyrage()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityNeeded(f"cannot read the identity file {path}: {exc.strerror or exc}; "
                             f"pass --identity FILE or set {IDENTITY_VARIABLE}") from None
    try:
        if b"PRIVATE KEY-----" in data:
            return [age.ssh.Identity.from_buffer(data)]
        lines = [line.strip() for line in data.decode("utf-8").splitlines()]
        found = [age.x25519.Identity.from_str(line) for line in lines if line.startswith("AGE-SECRET-KEY-")]
    except (age.IdentityError, ValueError, UnicodeDecodeError) as exc:
        raise IdentityNeeded(f"{path} is not an age identity file or SSH private key ({exc})") from None
    if not found:
        raise IdentityNeeded(f"{path} holds no identity (no AGE-SECRET-KEY-1... line); "
                             "use the file `relstep keygen` wrote")
    return found


def keygen(output: Path) -> str:
    """Write a new identity file (0600, never over an existing file); return its public key."""
    age = pyrage()
    identity = age.x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise InputError(f"{output} already exists; choose another --output (an identity is never overwritten)") \
            from None
    except OSError as exc:
        raise InputError(f"cannot create {output}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return public


# --------------------------------------------------------------------------- streaming stages


class _QueueReader(io.RawIOBase):
    """What pyrage's encrypting thread reads: the chunks the codec puts on the queue."""

    def __init__(self, chunks: queue.Queue[bytes]) -> None:
        self._chunks = chunks
        self._held = b""
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._held and not self.ended:
            chunk = self._chunks.get()
            if chunk is _END or not chunk:
                self.ended = True
            self._held = chunk
        count = min(len(buffer), len(self._held))
        buffer[:count] = self._held[:count]
        self._held = self._held[count:]
        return count

    def drain(self) -> None:
        """Take every chunk still coming, so a writer never blocks on a stage that failed."""
        while not self.ended:
            if not self._chunks.get():
                self.ended = True


class Encrypting:
    """A codec stage: bytes written here reach ``sink`` as one age file to ``recipients``."""

    def __init__(self, sink: Any, recipients: list[Any]) -> None:
        self._chunks: queue.Queue[bytes] = queue.Queue(_QUEUE_DEPTH)
        self._reader = _QueueReader(self._chunks)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sink, recipients), name="relstep-age", daemon=True)
        self._thread.start()

    def _run(self, sink: Any, recipients: list[Any]) -> None:
        try:
            pyrage().encrypt_io(self._reader, sink, recipients)
        except BaseException as exc:  # handed to the writer's thread in close()
            self._error = exc
        finally:
            self._reader.drain()

    def write(self, data: bytes | memoryview) -> int:
        if self._error is not None:
            raise self._error
        if data:
            self._chunks.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: pyrage writes its own chunks as they fill."""

    def close(self) -> None:
        self._chunks.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _QueueWriter:
    """What pyrage's decrypting thread writes to: chunks for the reading generator."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException | None], cancelled: threading.Event) -> None:
        self._chunks = chunks
        self._cancelled = cancelled

    def write(self, data: bytes) -> int:
        if self._cancelled.is_set():
            raise OSError("reading stopped")
        if data:
            self._chunks.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Chunks go onto the queue as they are written."""


def decrypted(raw: Any, identities: list[Any], path: Path | str) -> Iterator[bytes]:
    """The plaintext of the age file open as ``raw``, each chunk authenticated before it is handed on.

    Raises UnreadableFile-compatible errors through ``on_error``: a wrong key and a damaged file
    are told apart (the first is IdentityNeeded, exit 2; the second a damaged file)."""
    from relstep.codec import UnreadableFile

    age = pyrage()
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE_DEPTH)
    cancelled = threading.Event()

    def run() -> None:
        try:
            age.decrypt_io(raw, _QueueWriter(chunks, cancelled), identities)
        except BaseException as exc:
            chunks.put(exc)
        else:
            chunks.put(None)

    thread = threading.Thread(target=run, name="relstep-age-read", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                if isinstance(item, age.DecryptError) and "No matching keys" in str(item):
                    raise IdentityNeeded(f"{path} was not encrypted to this identity; pass the identity of one of "
                                         "the snapshot's recipients (`relstep show` lists them)")
                raise UnreadableFile(f"{path} is corrupt: its age encryption does not authenticate ({item})")
            yield item
    finally:
        cancelled.set()
        while thread.is_alive():  # let a blocked put() finish, then the thread ends on the cancel
            try:
                chunks.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def check_header(path: Path) -> str | None:
    """Without an identity: why ``path`` is not a well-formed age file (its header), or None.

    The header's MAC is keyed by the file key, so only the identity can authenticate it; what is
    checked here is the format: the magic line, recipient stanzas and the MAC line."""
    try:
        with open(path, "rb") as raw:
            head = raw.read(1 << 16)
    except OSError as exc:
        return f"{path} is unreadable: {exc.strerror or exc}"
    if not head.startswith(MAGIC):
        return f"{path} is not an age file (its header is missing)"
    end = head.find(b"\n--- ")
    if end < 0 or b"\n-> " not in head[: end + 1]:
        return f"{path} has a damaged age header (no recipient stanza or MAC line)"
    return None


# --------------------------------------------------------------------------- reading a snapshot

_identity_option: str | None = None   # --identity FILE of the running command (set by the CLI)


def set_identity_option(value: str | None) -> None:
    global _identity_option
    _identity_option = value


def identity_given() -> bool:
    return identity_path(_identity_option) is not None


def _probe(snapshot_dir: Path, files: Mapping[str, Any], identities: list[Any], phase: str) -> None:
    """Decrypt the smallest encrypted file once: a wrong identity is refused before anything changes."""
    from relstep import codec

    encrypted = [rel for rel, entry in files.items() if getattr(entry, "plain_sha256", None)]
    if not encrypted:
        return
    smallest = min(encrypted, key=lambda rel: files[rel].size)
    with codec.decrypting(snapshot_dir, identities):
        try:
            codec.drain(codec.read_chunks(snapshot_dir / smallest))
        except IdentityNeeded as exc:
            raise IdentityNeeded(exc.message, phase=phase) from None
        except codec.UnreadableFile:
            pass  # damage, not the key: verify and restore name it where they read the file


def reading(snapshot_dir: Path, manifest: Any, phase: str) -> Any:
    """While open, the snapshot's encrypted files are decrypted as they are read.

    A plain snapshot needs nothing; an encrypted one needs ``--identity FILE`` or
    RELSTEP_AGE_IDENTITY_FILE, checked against the snapshot before the caller changes anything."""
    import contextlib

    from relstep import codec

    if getattr(manifest, "encryption", None) is None:
        return contextlib.nullcontext()
    path = identity_path(_identity_option)
    if path is None:
        raise IdentityNeeded(
            f"{snapshot_dir.name} is encrypted (age); pass --identity FILE or set {IDENTITY_VARIABLE} "
            "to the identity file of one of its recipients", phase=phase
        )
    try:
        identities = load_identities(path)
    except IdentityNeeded as exc:
        raise IdentityNeeded(exc.message, phase=phase) from None
    _probe(snapshot_dir, manifest.files, identities, phase)
    return codec.decrypting(snapshot_dir, identities)
