"""Off-site copies of encrypted snapshots, and of plain ones with encryption.offsite_only (issue 16).

Real SeaweedFS S3, real sshd SFTP and file://; real pyrage; the uploaded objects are scanned byte
by byte (tests/secret_scan.py) for the planted row value, code line, environment value and
migration name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyrage
import pytest
import yaml

from relstep.databases import create_engine
from tests.helpers import clean_env, relstep, write_config
from tests.secret_scan import Scan
from tests.servers import S3Server, SftpServer, s3_server, sftp_server  # noqa: F401  (fixtures)
from tests.test_encryption import (
    CODE_LINE,
    ENV_VALUE,
    MIGRATION_NAME,
    ROW_VALUE,
    encrypted_app,
    keygen,
    only_snapshot,
    tables,
)
from tests.test_offsite import _s3_target, _sftp_target

# --- helpers; encryption.offsite_only: plain local snapshots, copies encrypted on the way --------


def _remote(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str], Any]:
    """(offsite.url, environment, a function listing every remote file's bytes by path below the root)."""
    if kind == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        url, env, _read, _names = _s3_target(s3, tmp_path)
        fs = s3.fs()
        prefix = url.removeprefix("s3://")

        def s3_files() -> dict[str, bytes]:
            fs.invalidate_cache()
            return {path[len(prefix) + 1:]: fs.cat_file(path) for path in fs.find(prefix)}
        return url, env, s3_files
    if kind == "sftp":
        sftp: SftpServer = request.getfixturevalue("sftp_server")
        url, env, _read, _names = _sftp_target(sftp, tmp_path)
        root = tmp_path / "sftp-root" / "releases"
    else:
        root = tmp_path / "offsite-files"
        url, env = f"file://{root}", clean_env()

    def tree_files() -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return url, env, tree_files


def offsite_only_app(tmp_path: Path, request: pytest.FixtureRequest, url: str,
                     engine: str = "sqlite") -> tuple[Path, str, Path]:
    app, db_url, identity = encrypted_app(tmp_path, request, engine)
    config = yaml.safe_load((app / "relstep.yml").read_text())
    config["encryption"]["offsite_only"] = True
    write_config(app, {**config, "offsite": {"url": url, "required": True, "keep": 1}})
    return app, db_url, identity


def local_files(snap: Path) -> dict[str, bytes]:
    return {p.relative_to(snap).as_posix(): p.read_bytes() for p in snap.rglob("*") if p.is_file()}


def delete_posts(url: str) -> None:
    from sqlalchemy import text

    db = create_engine(url)
    try:
        with db.begin() as conn:
            conn.execute(text("DELETE FROM Post" if url.startswith("mysql") else 'DELETE FROM "Post"'))
    finally:
        db.dispose()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_the_off_site_copy_of_an_encrypted_snapshot_holds_no_value(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, engine: str
) -> None:
    app, _url, _identity = encrypted_app(tmp_path, request, engine, recorded_migration=True)
    remote, env, remote_files = _remote(kind, request, tmp_path)
    config = yaml.safe_load((app / "relstep.yml").read_text())
    write_config(app, {**config, "offsite": {"url": remote, "required": True}})
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env, input="")
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)

    files = remote_files()
    local = {f"{snap.name}/{p.relative_to(snap).as_posix()}": p.read_bytes() for p in snap.rglob("*") if p.is_file()}
    assert files == local, "the off-site copy is the encrypted files, byte for byte"
    scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE, MIGRATION_NAME])
    for where, data in files.items():
        scan.add(f"{kind}:{where}", data)
    assert scan.leaks() == []
    assert files[f"{snap.name}/environment.json"].startswith(b"age-encryption.org/v1\n")
    if engine == "postgres":  # the one streamed archive went off-site, encrypted; no pg_dump directory
        assert files[f"{snap.name}/databases/main/pg_dump.custom.zst"].startswith(b"age-encryption.org/v1\n")
        assert not [where for where in files if "/databases/main/pg_dump/" in where]


@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_offsite_only_uploads_encrypted_and_fetches_back_with_the_identity(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    url, env, remote_files = _remote(kind, request, tmp_path)
    app, db_url, identity = offsite_only_app(tmp_path, request, url)
    public = identity.read_text().split("public key: ")[1].split()[0]
    before = tables(db_url)
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env, input="")
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)
    name = snap.name

    # The local snapshot stays plain: every planted value is readable there, nothing is age.
    local_manifest = json.loads((snap / "MANIFEST.json").read_text())
    assert local_manifest.get("encryption") is None
    assert all(set(entry) == {"size", "sha256"} for entry in local_manifest["files"].values())
    assert (snap / "code/backend/src/planted.js").read_text() == CODE_LINE + "\n"
    local_scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE])
    local_scan.add_tree("local", snap)
    assert {secret for secret, _where, _enc in local_scan.leaks()} == {ROW_VALUE, CODE_LINE, ENV_VALUE}

    # The off-site copy: no byte of any object holds a planted value.
    files = remote_files()
    assert files, "something was uploaded"
    scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE, MIGRATION_NAME])
    for where, data in files.items():
        scan.add(f"{kind}:{where}", data)
    assert scan.leaks() == []
    remote_manifest = json.loads(files[f"{name}/MANIFEST.json"])
    assert remote_manifest["encryption"] == {"scheme": "age", "recipients": [public], "offsite_only": True}
    assert remote_manifest["schema_revision"] is None
    assert set(remote_manifest["files"]) == set(local_manifest["files"]) | {"MANIFEST.local.json"}
    for rel, entry in remote_manifest["files"].items():
        data = files[f"{name}/{rel}"]
        # The ciphertext checksums: an integrity check needs no key.
        assert (entry["size"], entry["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), rel
        if rel in ("VERSION.txt", "DEPLOYMENT_TYPE.txt"):
            assert data == (snap / rel).read_bytes() and "plain_sha256" not in entry
            continue
        assert data.startswith(b"age-encryption.org/v1\n"), rel
        plain = (snap / "MANIFEST.json").read_bytes() if rel == "MANIFEST.local.json" else (snap / rel).read_bytes()
        assert entry["plain_sha256"] == hashlib.sha256(plain).hexdigest(), rel
        ids = [pyrage.x25519.Identity.from_str(identity.read_text().splitlines()[-1])]
        assert pyrage.decrypt(data, ids) == plain, rel

    # A re-run finds the copy complete and checks it against its own ciphertext checksums.
    again = relstep("offsite", "--snapshot", name, cwd=app, env=env, input="")
    assert again.code == 0, again.err
    assert f"{name} already there, verified" in again.out

    # The local snapshot restores without any key.
    delete_posts(db_url)
    restored = relstep("restore", "1.0.0", "--yes", cwd=app, env=env, input="")
    assert restored.code == 0, restored.err
    assert tables(db_url)["Post"] == before["Post"]

    # The host lost its snapshot: getting it back from off-site needs the identity.
    original = local_files(snap)
    shutil.rmtree(snap)
    delete_posts(db_url)
    emptied = tables(db_url)
    refused = relstep("restore", "1.0.0", "--from-offsite", "--yes", cwd=app, env=env, input="")
    assert refused.code == 2, refused.err
    assert refused.last_err == (
        f"relstep: restore failed: the off-site copy of {name} at {url} is encrypted (age); pass --identity FILE "
        "or set RELSTEP_AGE_IDENTITY_FILE to the identity file of one of its recipients; nothing was fetched")
    assert len([line for line in refused.err.splitlines() if line.strip()]) == 1
    assert [p.name for p in (app / "backups/releases").iterdir()] == [".relstep.lock"], "nothing was fetched"
    assert tables(db_url) == emptied
    fetched = relstep("restore", "1.0.0", "--from-offsite", "--yes", "--identity", str(identity),
                      cwd=app, env=env, input="")
    assert fetched.code == 0, fetched.err
    assert tables(db_url)["Post"] == before["Post"]
    assert local_files(app / "backups/releases" / name) == original, "fetched back byte for byte"

    # Remote retention keeps working on encrypted copies: keep 1 leaves only the newer one.
    second = relstep("run", "--version", "1.0.1", cwd=app, env=env, input="")
    assert second.code == 0, second.err
    names = sorted({path.split("/", 1)[0] for path in remote_files()})
    newest = sorted(p.name for p in (app / "backups/releases").iterdir() if not p.name.startswith("."))[-1]
    assert names == [newest] != [name]
    assert json.loads(remote_files()[f"{newest}/MANIFEST.json"])["encryption"]["offsite_only"] is True


def test_offsite_only_copy_damage_and_a_wrong_identity_are_caught(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """file:// (the third backend): without a key the ciphertext checksums catch a changed byte;
    a download refuses a wrong identity (exit 2) and a copy that does not authenticate (exit 6)."""
    url, env, _files = _remote("file", request, tmp_path)
    app, _db_url, identity = offsite_only_app(tmp_path, request, url)
    assert relstep("run", "--version", "1.0.0", cwd=app, env=env, input="").code == 0
    snap = only_snapshot(app)
    name = snap.name
    [dump] = [p for p in (tmp_path / "offsite-files" / name / "databases").rglob("*") if p.is_file()]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x01   # inside the age payload, past the header
    dump.write_bytes(bytes(data))
    rel = dump.relative_to(tmp_path / "offsite-files" / name).as_posix()

    checked = relstep("offsite", "--snapshot", name, cwd=app, env=env, input="")
    assert checked.code == 6
    assert checked.last_err.endswith(f"{rel} of {name} at {url} does not match the manifest's SHA-256")

    shutil.rmtree(snap)
    other, _ = keygen(tmp_path / "keys" / "other.age")
    wrong = relstep("verify", "1.0.0", "--from-offsite", "--identity", str(other), cwd=app, env=env, input="")
    assert wrong.code == 2
    assert wrong.last_err == (f"relstep: verify failed: MANIFEST.local.json of {name} at {url} was not encrypted to "
                              "this identity; pass the identity of one of the snapshot's recipients (`relstep show` "
                              "lists them)")
    damaged = relstep("verify", "1.0.0", "--from-offsite", "--identity", str(identity), cwd=app, env=env, input="")
    assert damaged.code == 6
    assert damaged.last_err.startswith(f"relstep: offsite failed: {rel} of {name} at {url} is corrupt: its age "
                                       "encryption does not authenticate")
    assert damaged.last_err.endswith("; the off-site copy is damaged")
    assert [p.name for p in (app / "backups/releases").iterdir()] == [".relstep.lock"], "nothing was left behind"


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_offsite_only_on_the_server_engines(tmp_path: Path, request: pytest.FixtureRequest, engine: str) -> None:
    """PostgreSQL's directory dump (files pg_dump writes itself) and MariaDB's stream go up encrypted
    file by file, and come back restorable with the identity."""
    url, env, remote_files = _remote("file", request, tmp_path)
    app, db_url, identity = offsite_only_app(tmp_path, request, url, engine)
    before = tables(db_url)
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=env, input="")
    assert ran.code == 0, ran.err
    snap = only_snapshot(app)
    scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE])
    for where, data in remote_files().items():
        scan.add(where, data)
    assert scan.leaks() == []
    local_scan = Scan([ROW_VALUE])
    local_scan.add_tree("local", snap)
    assert local_scan.leaks(), "the local dump is plain (and the scan could find the value)"

    original = local_files(snap)
    shutil.rmtree(snap)
    delete_posts(db_url)
    fetched = relstep("restore", "1.0.0", "--from-offsite", "--yes", "--identity", str(identity),
                      cwd=app, env=env, input="")
    assert fetched.code == 0, fetched.err
    assert tables(db_url)["Post"] == before["Post"]
    assert local_files(app / "backups/releases" / snap.name) == original


def test_a_plain_snapshot_goes_off_site_encrypted_once_recipients_are_set(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A snapshot made before `encryption:` was turned on is encrypted on the way, never uploaded plain."""
    url, env, remote_files = _remote("file", request, tmp_path)
    app, _db_url, _identity = encrypted_app(tmp_path, request, "sqlite")
    config = yaml.safe_load((app / "relstep.yml").read_text())
    encryption = config.pop("encryption")
    write_config(app, config)
    assert relstep("backup", "--version", "1.0.0", cwd=app, env=env, input="").code == 0
    snap = only_snapshot(app)
    assert json.loads((snap / "MANIFEST.json").read_text()).get("encryption") is None

    write_config(app, {**config, "encryption": encryption, "offsite": {"url": url, "required": True}})
    sent = relstep("offsite", "--snapshot", snap.name, cwd=app, env=env, input="")
    assert sent.code == 0, sent.err
    files = remote_files()
    assert json.loads(files[f"{snap.name}/MANIFEST.json"])["encryption"]["offsite_only"] is True
    scan = Scan([ROW_VALUE, CODE_LINE, ENV_VALUE, MIGRATION_NAME])
    for where, data in files.items():
        scan.add(where, data)
    assert scan.leaks() == []
