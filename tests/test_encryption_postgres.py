"""Encrypted PostgreSQL snapshots (issue 16): one `pg_dump -Fc` stream through the codec, restored by
`pg_restore` reading the decrypted stream on stdin.  Real server, real pg_dump/pg_restore, real pyrage.

Both restore paths run (staged and swapped for a role that may create databases; one transaction for a
role that may not); large objects, a redacted column, a GRANT to another role, an index, a view and a
foreign key must all come back, and the snapshot's bytes hold none of the row values.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
from conftest import PG_HOST, PG_PORT

from tests.helpers import write_config
from tests.reliability.restore_support import as_role, pg, pg_role_database, public_state, relstep_sessions
from tests.secret_scan import Scan
from tests.test_encryption import keygen, only_snapshot, run

ROW_VALUE = "planted-pg-row-value-8123"
BLOB_VALUE = "planted-pg-large-object-9034"
PASSWORD_VALUE = "planted-pg-password-7301"   # redacted: in no file, and NULL after a restore
AGE_MAGIC = b"age-encryption.org/v1\n"


@pytest.fixture(params=["owner", "no-createdb"])
def pg_db(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    with pg_role_database(request.param) as found:
        yield found


@pytest.fixture
def reader_role() -> Iterator[str]:
    import psycopg

    role = f"pgenc_reader_{uuid.uuid4().hex[:8]}"
    with pg() as conn:
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    try:
        yield role
    finally:
        with pg() as conn:
            for (db,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall():
                try:
                    with pg(db) as other:
                        other.execute(f'DROP OWNED BY "{role}"')
                except psycopg.OperationalError:
                    continue  # another test's database, dropped meanwhile
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _own_sessions(db: str) -> list[Any]:
    """This test's restore sessions still on the server (other engineers' tests run restores too)."""
    return [s for s in relstep_sessions() if s[1] and str(s[1]).startswith(db)]


def _state(db: str) -> dict[str, Any]:
    """What a restore must bring back: objects, constraints, rows, large objects, table privileges."""
    return public_state(db, blob_oids=False, grantees_like="pgenc_reader_%")


def _encrypted_pg_app(tmp_path: Path, url: str, reader: str) -> tuple[Path, Path]:
    as_role(url,
             "CREATE TABLE account (id int PRIMARY KEY, email text NOT NULL, password text)",
             "CREATE TABLE note (id int PRIMARY KEY, account int NOT NULL REFERENCES account(id), body text, doc oid)",
             "CREATE INDEX note_body ON note (body)",
             "CREATE VIEW note_view AS SELECT id, body FROM note",
             f"INSERT INTO account SELECT g, 'user' || g || '@example.com', '{PASSWORD_VALUE}-' || g "
             "FROM generate_series(1, 50) g",
             f"INSERT INTO note VALUES (1, 1, '{ROW_VALUE}', lo_from_bytea(0, convert_to('{BLOB_VALUE}', 'UTF8')))",
             "INSERT INTO note SELECT g, 1 + g % 50, 'note ' || g, NULL FROM generate_series(2, 2000) g",
             f'GRANT SELECT ON note TO "{reader}"')
    app = tmp_path / "app"
    app.mkdir()
    (app / ".gitignore").write_text("backups/\n")
    from tests.helpers import init_repo

    init_repo(app)
    identity, public = keygen(_keys(tmp_path) / "team.age")
    write_config(app, {"database": {"url": url, "redact": ["account.password"]}, "migrations": {"tool": "none"},
                       "encryption": {"recipients": [public]}})
    return app, identity


def _keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    return keys


def test_an_encrypted_postgres_snapshot_is_one_stream_and_restores_everything(
    tmp_path: Path, pg_db: tuple[str, str], reader_role: str
) -> None:
    url, db = pg_db
    app, identity = _encrypted_pg_app(tmp_path, url, reader_role)
    ran = run("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)
    at_backup = _state(db)

    # The layout: one custom-format archive, the redacted table's rows and their index, all age files.
    manifest = json.loads((snap / "MANIFEST.json").read_text())
    entry = manifest["databases"]["main"]
    assert entry["format"] == "pg_dump-custom-zstd-age"
    assert sorted(entry["files"]) == ["pg_dump.custom.zst", "redacted.json", "redacted/000-account.copy.zst"]
    assert entry["redacted"] == {"account": ["password"]}
    # Content digests from pg_dump's stream as it passed through relstep (pg_custom): the CRC-32 of
    # each table's rows, as the plain layout records; the redacted table's rows by SHA-256.
    methods = {t: c["digest"].split(":")[0] for t, c in entry["fingerprint"]["content"].items()}
    assert methods == {"account": "copy", "note": "gzcrc"}
    for rel in entry["files"]:
        path = snap / "databases/main" / rel
        assert path.read_bytes().startswith(AGE_MAGIC), rel
        assert manifest["files"][f"databases/main/{rel}"]["plain_sha256"]
    # No plaintext anywhere: not the row, not the large object, not the redacted password, not a
    # plain pg_dump directory (nothing else exists under the database's folder).
    assert sorted(p.relative_to(snap / "databases/main").as_posix()
                  for p in (snap / "databases/main").rglob("*") if p.is_file()) == sorted(entry["files"])
    # (Object names are not secret here: the plain manifest's fingerprint names tables and indexes.)
    scan = Scan([ROW_VALUE, BLOB_VALUE, PASSWORD_VALUE, "CREATE TABLE"])
    scan.add_tree("snapshot", snap)
    assert scan.leaks() == []
    # Decrypted with pyrage itself, the archive is a real pg_dump custom archive that holds the value.
    import zstandard

    ids = [pyrage.x25519.Identity.from_str(identity.read_text().splitlines()[-1])]
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(
        pyrage.decrypt((snap / "databases/main/pg_dump.custom.zst").read_bytes(), ids))
    assert plain.startswith(b"PGDMP") and ROW_VALUE.encode() in plain and BLOB_VALUE.encode() in plain
    assert PASSWORD_VALUE.encode() not in plain, "the redacted column's rows are not in pg_dump's part"

    # The scratch database is made by a role that may create one (the app's role may not, on one path).
    scratch = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
    verified = run("verify", "1.0.0", "--restore-test", "--scratch-url", scratch, "--identity", str(identity), cwd=app)
    assert verified.code == 0, verified.out + verified.err
    assert "database: main dump readable" in verified.out
    assert ("proof:    restored database equals the snapshot: 1 schema, 2 tables (content), 1 view, 3 indexes, "
            "3 constraints, 2 grants, 1 extension, 4 owners, 1 large object") in verified.out, verified.out

    # Change everything a restore must undo, then restore with the identity.
    as_role(url, "DELETE FROM note WHERE id > 1000", "UPDATE note SET body = 'changed' WHERE id = 1",
             "SELECT lo_unlink(doc) FROM note WHERE doc IS NOT NULL", "DROP VIEW note_view",
             f'REVOKE SELECT ON note FROM "{reader_role}"', "CREATE TABLE stray (x int)")
    restored = run("restore", "1.0.0", "--yes", "--identity", str(identity), cwd=app)
    assert restored.code == 0, restored.err
    after = _state(db)
    # Everything as at the backup, the redacted column as NULL.
    at_backup["rows"]["account"] = [(i, email, None) for i, email, _password in at_backup["rows"]["account"]]
    assert after == at_backup
    assert [bytes(b) for (b,) in after["blobs"]] == [BLOB_VALUE.encode()]
    assert after["grants"] == [(reader_role, "note", "SELECT")]
    assert _own_sessions(db) == []


def test_postgres_no_key_wrong_key_and_a_tampered_byte_change_nothing(
    tmp_path: Path, pg_db: tuple[str, str], reader_role: str
) -> None:
    url, db = pg_db
    app, identity = _encrypted_pg_app(tmp_path, url, reader_role)
    assert run("backup", "--version", "1.0.0", cwd=app).code == 0
    snap = only_snapshot(app)
    as_role(url, "UPDATE note SET body = 'after the backup' WHERE id = 1")
    before = _state(db)
    other, _ = keygen(_keys(tmp_path) / "other.age")

    no_key = run("restore", "1.0.0", "--yes", cwd=app)
    assert no_key.code == 2
    assert no_key.last_err == (f"relstep: restore failed: {snap.name} is encrypted (age); pass --identity FILE or "
                               "set RELSTEP_AGE_IDENTITY_FILE to the identity file of one of its recipients")
    no_key_test = run("verify", "1.0.0", "--restore-test", cwd=app)
    assert no_key_test.code == 8 and "it is encrypted; pass --identity FILE" in no_key_test.out + no_key_test.err
    for command in (("restore", "1.0.0", "--yes"), ("verify", "1.0.0", "--restore-test")):
        wrong = run(*command, "--identity", str(other), cwd=app)
        assert wrong.code == 2, wrong.err
        assert wrong.last_err.endswith("was not encrypted to this identity; pass the identity of one of the "
                                       "snapshot's recipients (`relstep show` lists them)"), wrong.last_err
        assert len(wrong.err.strip().splitlines()) == 1, "one line"
    assert _state(db) == before

    # One byte of the archive's age payload flipped: the checksum sees it before any decryption.
    archive = snap / "databases/main/pg_dump.custom.zst"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(archive, 0o600)
    archive.write_bytes(bytes(data))
    tampered = run("restore", "1.0.0", "--yes", "--identity", str(identity), cwd=app)
    assert tampered.code == 8, tampered.err
    assert "fails verification (changed databases/main/pg_dump.custom.zst" in tampered.last_err
    assert "nothing was restored" in tampered.last_err
    assert _state(db) == before

    # The manifest made to agree with the tampered file: age's own authentication, checked chunk by
    # chunk as the stream is fed to pg_restore, stops the restore and the target stays as it was.
    _rewrite_entry(snap, "databases/main/pg_dump.custom.zst")
    blind = run("verify", "1.0.0", cwd=app)
    assert blind.code == 0, "without the identity only the ciphertext's checksum and age header are checked"
    keyed = run("verify", "1.0.0", "--identity", str(identity), cwd=app)
    assert keyed.code == 8
    assert ("unreadable databases/main/pg_dump.custom.zst: "
            f"{snap / 'databases/main/pg_dump.custom.zst'} is corrupt: its age encryption does not authenticate"
            in keyed.out), keyed.out
    streamed = run("restore", "1.0.0", "--yes", "--identity", str(identity), cwd=app)
    assert streamed.code == 9, streamed.err
    assert ("databases/main/pg_dump.custom.zst is corrupt: its age encryption does not authenticate"
            in streamed.last_err), streamed.last_err
    assert _state(db) == before
    assert _own_sessions(db) == []


def _rewrite_entry(snap: Path, rel: str) -> None:
    """Make MANIFEST.json's size and SHA-256 of ``rel`` those of the file as it is now."""
    import hashlib

    manifest_path = snap / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    data = (snap / rel).read_bytes()
    manifest["files"][rel].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    os.chmod(manifest_path, 0o600)
    manifest_path.write_text(json.dumps(manifest, indent=2))


def test_restore_test_after_backup_of_an_encrypted_snapshot_needs_the_identity(
    tmp_path: Path, pg_url: str, reader_role: str
) -> None:
    import yaml

    app, identity = _encrypted_pg_app(tmp_path, pg_url, reader_role)
    config = yaml.safe_load((app / "relstep.yml").read_text())
    config["database"]["restore_test_after_backup"] = True
    write_config(app, config)

    refused = run("backup", "--version", "1.0.0", cwd=app)
    assert refused.code == 2
    assert refused.last_err == (
        "relstep: config failed: database.restore_test_after_backup (main) must read the new snapshot, which is "
        f"encrypted; set RELSTEP_AGE_IDENTITY_FILE for the backup, or turn it off in {app / 'relstep.yml'} and run "
        "`relstep verify --restore-test --identity FILE` where the identity is kept")
    assert not (app / "backups/releases").exists() or not any((app / "backups/releases").iterdir())

    # With the identity the restore test decrypts the new snapshot as a restore does (it read the
    # ciphertext as a dump before, and the backup failed), and the snapshot is kept as written.
    tested = run("backup", "--version", "1.0.0", cwd=app, env={"RELSTEP_AGE_IDENTITY_FILE": str(identity)})
    assert tested.code == 0, tested.err
    snap = only_snapshot(app)
    assert (snap / "databases/main/pg_dump.custom.zst").read_bytes().startswith(AGE_MAGIC)


def test_a_failing_encrypted_postgres_dump_leaves_no_file_and_says_why(tmp_path: Path) -> None:
    """pg_dump (or the fingerprint beside it) fails on a table the role may not read: one line, exit 3,
    no snapshot and no partial folder; pg_dump's process group is gone."""
    with pg_role_database("owner") as (url, db):
        with pg(db) as conn:  # the superuser's table in the app's database: the app's role cannot read it
            conn.execute("CREATE TABLE secret_audit (id int PRIMARY KEY, what text)")
            conn.execute("INSERT INTO secret_audit VALUES (1, 'x')")
        app = tmp_path / "app"
        app.mkdir()
        (app / ".gitignore").write_text("backups/\n")
        from tests.helpers import init_repo

        init_repo(app)
        _identity, public = keygen(_keys(tmp_path) / "team.age")
        write_config(app, {"database": {"url": url}, "migrations": {"tool": "none"},
                           "encryption": {"recipients": [public]}})
        ran = run("backup", "--version", "1.0.0", cwd=app)
        assert ran.code == 3, ran.err
        assert ran.last_err.startswith("relstep: backup failed: ") and "permission denied" in ran.last_err
        root = app / "backups/releases"
        left = [p.name for p in root.iterdir()] if root.exists() else []
        assert left in ([], [".relstep.lock"]), "no snapshot, no .partial folder"
        with pg() as conn:
            dumping = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                   "AND application_name = 'pg_dump'", (db,)).fetchone()
        assert dumping == (0,)
