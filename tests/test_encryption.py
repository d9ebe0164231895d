"""Encryption at rest with age (issue 16), through the real CLI, real pyrage and real databases.

Every snapshot here is written by `relstep backup` with `encryption.recipients` set; the scan opens
every file of it (zstd, gzip, tar, pg custom archives) and looks for a planted row value, code
line, environment value and migration name in several encodings (tests/secret_scan.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyrage
import pytest

from relstep.databases import create_engine
from tests.apps import make_app
from tests.helpers import Ran, relstep, write_config
from tests.secret_scan import Scan

ROW_VALUE = "planted-row-value-4711"
CODE_LINE = "const plantedCodeLine = 'planted-code-line-5813';"
ENV_VALUE = "planted-environment-value-6907"
MIGRATION_NAME = "20260301000000_planted_migration_name"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    from tests.helpers import clean_env

    return relstep(*args, cwd=cwd, input="", env=clean_env(**(env or {})))


def tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from sqlalchemy import MetaData, select

    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted(tuple(row) for row in conn.execute(select(table)))
                    for name, table in metadata.tables.items() if name != "ReleaseRecord"}
    finally:
        engine.dispose()


def keygen(where: Path) -> tuple[Path, str]:
    ran = run("keygen", "--output", str(where), cwd=where.parent)
    assert ran.code == 0, ran.err
    public = ran.out.split("public key: ", 1)[1].strip()
    return where, public


def encrypted_app(tmp_path: Path, request: pytest.FixtureRequest, engine: str,
                  recorded_migration: bool = False) -> tuple[Path, str, Path]:
    """An app on ``engine`` whose snapshots are encrypted to a fresh identity; plants every kind of value.

    ``recorded_migration``: SQLite and PostgreSQL also record MIGRATION_NAME as a finished Prisma
    migration, one the app's code does not have (a restore then needs --force past the compat gate)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    identity, public = keygen(keys / "team.age")
    app, url = make_app(tmp_path, request, engine)
    db = create_engine(url)
    try:
        with db.begin() as conn:
            from sqlalchemy import text

            conn.execute(text('UPDATE "Post" SET title = :v WHERE id = (SELECT min(id) FROM "Post")'
                              if engine != "mysql" else
                              "UPDATE Post SET title = :v ORDER BY id LIMIT 1"), {"v": ROW_VALUE})
            if engine == "postgres" and recorded_migration:  # the table as Prisma creates it
                conn.execute(text('CREATE TABLE "_prisma_migrations" ("id" VARCHAR(36) PRIMARY KEY NOT NULL, '
                                  '"checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ, '
                                  '"migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ, '
                                  '"started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), '
                                  '"applied_steps_count" INTEGER NOT NULL DEFAULT 0)'))
            if engine == "sqlite" or (engine == "postgres" and recorded_migration):
                # Without finished_at the migration is not applied, and migrations.json leaves it out.
                conn.execute(text('INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, '
                                  "finished_at, applied_steps_count) VALUES ('x', 'c', :m, '2026-03-01', "
                                  ":finished, 1)"), {"m": MIGRATION_NAME,
                                                     "finished": "2026-03-01" if recorded_migration else None})
    finally:
        db.dispose()
    (app / "backend/src/planted.js").write_text(CODE_LINE + "\n")
    config = {"database": {"url": url}, "migrations": {"tool": "auto"},
              "code": {"backend": "backend"},
              "environment": {"planted": f"echo {ENV_VALUE}"},
              "encryption": {"recipients": [public]}}
    write_config(app, config)
    return app, url, identity


def only_snapshot(app: Path) -> Path:
    [snap] = [p for p in (app / "backups/releases").iterdir() if not p.name.startswith(".")]
    return snap


@pytest.mark.parametrize("engine", ["sqlite", "mysql", "postgres"])
def test_an_encrypted_snapshot_holds_no_value_and_restores_equal(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> None:
    app, url, identity = encrypted_app(tmp_path, request, engine, recorded_migration=True)
    before = tables(url)
    ran = run("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)

    scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE, *([MIGRATION_NAME] if engine != "mysql" else [])])
    scan.add_tree("snapshot", snap)
    assert scan.leaks() == []
    # What list, prune and status read stays plain: version, type, times, sizes, checksums, recipients.
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    assert (snap / "VERSION.txt").read_text() == "1.0.0\n"
    assert manifest["encryption"]["recipients"] == [identity.read_text().split("public key: ")[1].split()[0]]
    data_files = [rel for rel in manifest["files"] if rel not in ("VERSION.txt", "DEPLOYMENT_TYPE.txt")]
    assert {"environment.json", "migrations.json", "code/backend/src/planted.js"} <= set(data_files)
    for rel in data_files:
        entry = manifest["files"][rel]
        assert (snap / rel).read_bytes().startswith(b"age-encryption.org/v1\n"), rel
        assert set(entry) == {"size", "sha256", "plain_sha256"} and entry["sha256"] != entry["plain_sha256"]
    # Decrypting with pyrage itself gives the plaintext whose SHA-256 the manifest records.
    import hashlib

    ids = [pyrage.x25519.Identity.from_str(identity.read_text().splitlines()[-1])]
    plain = pyrage.decrypt((snap / "code/backend/src/planted.js").read_bytes(), ids)
    assert plain == (CODE_LINE + "\n").encode()
    assert hashlib.sha256(plain).hexdigest() == manifest["files"]["code/backend/src/planted.js"]["plain_sha256"]
    if engine != "mysql":  # the planted migration is recorded, in the encrypted migrations.json only
        migrations = json.loads(pyrage.decrypt((snap / "migrations.json").read_bytes(), ids))
        assert MIGRATION_NAME in [m["name"] for m in migrations["applied"]], migrations
        assert manifest["schema_revision"] is None

    show = run("show", "1.0.0", cwd=app)
    assert show.code == 0 and "encrypted to:    age, 1 recipient(s)" in show.out

    # Without the identity verify still checks every ciphertext and age header.
    plain_verify = run("verify", "1.0.0", cwd=app)
    assert plain_verify.code == 0, plain_verify.err
    assert "readability was not checked" in plain_verify.out + plain_verify.err

    with_key = run("verify", "1.0.0", "--restore-test", "--identity", str(identity), cwd=app)
    assert with_key.code == 0, with_key.out + with_key.err

    # Restore needs the identity, and then brings back every row.
    from sqlalchemy import text

    db = create_engine(url)
    try:
        with db.begin() as conn:
            conn.execute(text('DELETE FROM "Post"' if engine != "mysql" else "DELETE FROM Post"))
    finally:
        db.dispose()
    changed = tables(url)
    refused = run("restore", "1.0.0", "--yes", cwd=app)
    assert refused.code == 2
    assert refused.last_err == (f"relstep: restore failed: {snap.name} is encrypted (age); pass --identity FILE or "
                                "set RELSTEP_AGE_IDENTITY_FILE to the identity file of one of its recipients")
    assert tables(url) == changed, "refused before anything changed"
    # --force: the planted migration is one the app's code does not have (the compat gate would stop).
    restored = run("restore", "1.0.0", "--yes", *(["--force"] if engine != "mysql" else []), cwd=app,
                   env={"RELSTEP_AGE_IDENTITY_FILE": str(identity)})
    assert restored.code == 0, restored.err
    after = tables(url)
    for table in ("Post",):
        assert after[table] == before[table]


def test_wrong_key_and_tampered_byte_are_caught(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, _url, identity = encrypted_app(tmp_path, request, "sqlite")
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = only_snapshot(app)
    other, _ = keygen(tmp_path / "keys" / "other.age")

    wrong = run("restore", "1.0.0", "--yes", "--identity", str(other), cwd=app)
    assert wrong.code == 2
    assert "was not encrypted to this identity; pass the identity of one of the snapshot's recipients" in wrong.last_err
    wrong_verify = run("verify", "1.0.0", "--identity", str(other), cwd=app)
    assert wrong_verify.code == 2 and "was not encrypted to this identity" in wrong_verify.last_err

    # One ciphertext byte flipped inside the dump's age payload: the checksum and age's MAC both see it.
    dump = snap / "databases/main/db.sqlite3.zst"
    if not dump.exists():
        [dump] = [p for p in (snap / "databases").rglob("*") if p.is_file()]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(dump, 0o600)
    dump.write_bytes(bytes(data))
    tampered = run("verify", "1.0.0", cwd=app)
    assert tampered.code == 8 and "changed" in tampered.out + tampered.err
    restore = run("restore", "1.0.0", "--yes", "--identity", str(identity), cwd=app)
    assert restore.code == 8, restore.err
    assert "fails verification" in restore.last_err and "nothing was restored" in restore.last_err


def test_config_refuses_a_private_key_and_a_bad_recipient(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    identity = pyrage.x25519.Identity.generate()
    write_config(app, {"database": {"url": url}, "encryption": {"recipients": [str(identity)]}})
    ran = run("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 2
    assert "encryption.recipients holds a private key; list public keys only" in ran.last_err
    assert str(identity) not in ran.err and str(identity)[15:] not in ran.err, "the key is never echoed"
    write_config(app, {"database": {"url": url}, "encryption": {"recipients": ["age1notakey"]}})
    ran = run("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 2 and "is not a valid age or SSH public key" in ran.last_err
    assert not (app / "backups/releases").exists() or not any((app / "backups/releases").iterdir())


def test_recipients_from_a_file_and_ssh_keys(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import subprocess

    app, url = make_app(tmp_path, request, "sqlite")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id_ed25519")], check=True)
    ssh_public = (tmp_path / "id_ed25519.pub").read_text().strip()
    (app / "recipients.txt").write_text(f"# the team\n{ssh_public}\n")
    write_config(app, {"database": {"url": url}, "encryption": {"recipients": ["recipients.txt"]}})
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = only_snapshot(app)
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    assert manifest["encryption"]["recipients"] == [" ".join(ssh_public.split()[:2])]
    ok = run("verify", "1.0.0", "--identity", str(tmp_path / "id_ed25519"), cwd=app)
    assert ok.code == 0, ok.out + ok.err


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    path, public = keygen(tmp_path / "id.age")
    assert public.startswith("age1") and oct(path.stat().st_mode & 0o777) == "0o600"
    again = run("keygen", "--output", str(path), cwd=tmp_path)
    assert again.code == 2 and "already exists" in again.last_err
    assert public in path.read_text()


def test_the_codec_names_a_tampered_age_file_and_removes_a_failed_one(tmp_path: Path) -> None:
    """age's own authentication, below the manifest's checksum: one flipped byte is one clear line."""
    from relstep import codec

    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "f.zst"
    with codec.encrypting(tmp_path, [identity.to_public()]):
        written = codec.write_bytes(path, ROW_VALUE.encode() * 50_000, compress=True)
    assert written.plain_sha256 is not None and ROW_VALUE.encode() not in path.read_bytes()
    with codec.decrypting(tmp_path, [identity]):
        assert b"".join(codec.read_chunks(path, compressed=True)) == ROW_VALUE.encode() * 50_000
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01
    path.write_bytes(bytes(data))
    with codec.decrypting(tmp_path, [identity]), pytest.raises(codec.UnreadableFile) as caught:
        codec.drain(codec.read_chunks(path, compressed=True))
    assert str(caught.value).startswith(f"{path} is corrupt: its age encryption does not authenticate")

    # A write that fails midway leaves no file, encrypted or not.
    with codec.encrypting(tmp_path, [identity.to_public()]):
        writer = codec.create(tmp_path / "g")
        writer.write(b"partial")
        writer.abort()
    assert not (tmp_path / "g").exists()


def test_offsite_only_without_an_off_site_copy_is_refused(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    app, url = make_app(tmp_path, request, "sqlite")
    public = str(pyrage.x25519.Identity.generate().to_public())
    write_config(app, {"database": {"url": url}, "encryption": {"recipients": [public], "offsite_only": True}})
    ran = run("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 2
    assert ran.last_err.endswith("encryption.offsite_only is set but no off-site copy is configured, so nothing "
                                 "would be encrypted; add offsite.url, or remove offsite_only to encrypt the local "
                                 "snapshots")
    assert not (app / "backups/releases").exists() or not any((app / "backups/releases").iterdir())


def _reencrypted(snap: Path, rel: str, identity: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (same length) in the plaintext of ``rel``, re-encrypt it to the same
    recipient as valid age (and valid zstd, where it was), and make the manifest's ciphertext entry
    agree: only the plaintext checksum can tell."""
    import hashlib

    import zstandard

    assert len(old) == len(new)
    key = pyrage.x25519.Identity.from_str(identity.read_text().splitlines()[-1])
    path = snap / rel
    plain = pyrage.decrypt(path.read_bytes(), [key])
    compressed = plain.startswith(b"\x28\xb5\x2f\xfd")
    content = zstandard.ZstdDecompressor().decompressobj().decompress(plain) if compressed else plain
    assert old.encode() in content, rel
    content = content.replace(old.encode(), new.encode())
    plain = zstandard.ZstdCompressor(write_checksum=True).compress(content) if compressed else content
    data = pyrage.encrypt(plain, [key.to_public()])
    os.chmod(path, 0o600)
    path.write_bytes(data)
    manifest_path = snap / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][rel].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    os.chmod(manifest_path, 0o600)
    manifest_path.write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("engine", ["sqlite", "mysql", "postgres"])
@pytest.mark.parametrize("which", ["dump", "environment"])
def test_verify_with_the_identity_catches_other_content_encrypted_to_the_same_key(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str, which: str
) -> None:
    app, _url, identity = encrypted_app(tmp_path, request, engine)
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = only_snapshot(app)
    if which == "dump":  # the database's largest file: SQLite's copy, MariaDB's SQL, PostgreSQL's archive
        dump = max((p for p in (snap / "databases/main").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        rel, old = dump.relative_to(snap).as_posix(), ROW_VALUE
    else:
        rel, old = "environment.json", ENV_VALUE
    _reencrypted(snap, rel, identity, old, "X" * len(old))

    without = run("verify", "1.0.0", cwd=app)
    assert without.code == 0, "without the key only the ciphertext can be checked, and it agrees"
    keyed = run("verify", "1.0.0", "--identity", str(identity), cwd=app)
    assert keyed.code == 8, keyed.out + keyed.err
    assert (f"problem:  changed {rel}: its decrypted content's SHA-256 differs from the manifest's plain_sha256"
            in keyed.out), keyed.out
    assert keyed.last_err.startswith(f"relstep: verify failed: {snap.name}: changed {rel}: "), keyed.last_err
