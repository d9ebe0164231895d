"""Encrypted snapshots share unchanged code files by hard link, as plain ones do (issue 16).

An unchanged code file links to the previous snapshot's encrypted copy when its plaintext checksum
matches and the recipients are the same.  Real CLI, real pyrage, a real SQLite app; the inodes and
the bytes are what is asserted.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from relstep.fsutil import CHUNK
from tests.helpers import write_config
from tests.test_encryption import encrypted_app, keygen, run


def snapshots(app: Path) -> list[Path]:
    root = app / "backups/releases"
    return sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)


def code_files(snap: Path) -> dict[str, Path]:
    return {p.relative_to(snap).as_posix(): p for p in (snap / "code").rglob("*") if p.is_file()}


def manifest(snap: Path) -> dict:
    return json.loads((snap / "MANIFEST.json").read_text())


def test_unchanged_encrypted_code_files_are_shared_only_with_the_same_recipients(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app, _url, identity = encrypted_app(tmp_path, request, "sqlite")
    backend = app / "backend"
    # The multi-chunk read path (hashed first, copied only when changed) and an empty file too.
    (backend / "assets").mkdir()
    (backend / "assets/big.bin").write_bytes(random.Random(16).randbytes(CHUNK + CHUNK // 2))
    (backend / "src/empty.txt").write_bytes(b"")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    (backend / "src/planted.js").write_text("const changed = 'only this file changed';\n")
    second_run = run("backup", "--version", "1.0.1", cwd=app)
    assert second_run.code == 0, second_run.err
    first, second = snapshots(app)

    old, new = code_files(first), code_files(second)
    assert set(old) == set(new) and len(new) >= 4
    changed = "code/backend/src/planted.js"
    for rel in new:
        assert new[rel].read_bytes().startswith(b"age-encryption.org/v1\n"), rel
        if rel == changed:
            assert new[rel].stat().st_ino != old[rel].stat().st_ino
        else:
            assert new[rel].stat().st_ino == old[rel].stat().st_ino, f"{rel} is not shared"
            # The link takes over the previous entry: the same ciphertext, the same plaintext checksum.
            assert manifest(second)["files"][rel] == manifest(first)["files"][rel]
    assert manifest(second)["code"]["backend"]["linked"] == len(new) - 1
    assert manifest(second)["files"][changed]["plain_sha256"] != manifest(first)["files"][changed]["plain_sha256"]

    # Pruning the first snapshot leaves the second whole: its code restores byte for byte with the identity.
    pruned = run("prune", "--keep", "1", cwd=app)
    assert pruned.code == 0, pruned.err
    assert snapshots(app) == [second]
    target = tmp_path / "restored-code"
    target.mkdir()
    restored = run("restore", "1.0.1", "--yes", "--code-to", str(target), "--identity", str(identity), cwd=app)
    assert restored.code == 0, restored.err
    restored_backend = target / "backend"
    for rel in new:
        source_rel = rel.removeprefix("code/backend/")
        assert (restored_backend / source_rel).read_bytes() == (backend / source_rel).read_bytes(), rel

    # New recipients: the old ciphertexts are not readable by them, so nothing is shared.
    _other, other_public = keygen(tmp_path / "keys" / "other.age")
    config = yaml.safe_load((app / "relstep.yml").read_text())
    write_config(app, {**config, "encryption": {"recipients": [other_public]}})
    third_run = run("backup", "--version", "1.0.2", cwd=app)
    assert third_run.code == 0, third_run.err
    third = snapshots(app)[-1]
    after = code_files(third)
    assert set(after) == set(new)
    assert not {p.stat().st_ino for p in after.values()} & {p.stat().st_ino for p in new.values()}
    assert manifest(third)["code"]["backend"]["linked"] == 0
    assert manifest(third)["encryption"]["recipients"] == [other_public]


def test_a_changed_previous_ciphertext_is_never_shared(tmp_path: Path) -> None:
    """The previous age file must still hold the ciphertext its manifest records, byte for byte."""
    import os

    import pyrage

    from relstep import codec
    from relstep.capture import code as code_capture

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.js").write_bytes(b"export const a = 1;\n")
    (source / "b.js").write_bytes(b"export const b = 2;\n")
    recipients = [pyrage.x25519.Identity.generate().to_public()]
    first, second = tmp_path / "s1", tmp_path / "s2"
    hashes: dict[str, dict] = {}
    first.mkdir()
    with codec.encrypting(first, recipients):
        code_capture.capture_tree("app", source, first, (), {}, {}, hashes)
    damaged = first / "code/app/a.js"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0x01   # same size, another last byte: only the checksum tells
    os.chmod(damaged, 0o600)
    damaged.write_bytes(bytes(data))

    second.mkdir()
    reuse = code_capture.previous_by_hash(first, hashes, encrypted=True)
    new_hashes: dict[str, dict] = {}
    with codec.encrypting(second, recipients):
        summary = code_capture.capture_tree("app", source, second, (), {}, reuse, new_hashes)
    assert summary.linked == 1
    assert (second / "code/app/b.js").stat().st_ino == (first / "code/app/b.js").stat().st_ino
    assert (second / "code/app/a.js").stat().st_ino != damaged.stat().st_ino
    assert new_hashes["code/app/a.js"]["plain_sha256"] == hashes["code/app/a.js"]["plain_sha256"]
    assert (second / "code/app/a.js").read_bytes() != bytes(data)
