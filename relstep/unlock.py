"""Opening an encrypted snapshot for reading: which identity, checked before anything changes.

The policy above the codec's age stage (relstep.encryption): restore and verify call
``reading``; the codec itself only decrypts with the identities it is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relstep import codec
from relstep.encryption import IDENTITY_VARIABLE, IdentityNeeded, chosen_identity, load_identities


def _probe(snapshot_dir: Path, files: Mapping[str, Any], identities: list[Any], phase: str) -> None:
    """Decrypt the smallest encrypted file once: a wrong identity is refused before anything changes."""
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

    if getattr(manifest, "encryption", None) is None:
        return contextlib.nullcontext()
    path = chosen_identity()
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
