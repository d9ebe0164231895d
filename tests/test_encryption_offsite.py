"""Off-site copies of an encrypted snapshot are its encrypted files: real SeaweedFS S3 and real sshd SFTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import relstep, write_config
from tests.secret_scan import Scan
from tests.servers import S3Server, SftpServer, s3_server, sftp_server  # noqa: F401  (fixtures)
from tests.test_encryption import CODE_LINE, ENV_VALUE, MIGRATION_NAME, ROW_VALUE, encrypted_app, only_snapshot
from tests.test_offsite import _s3_target, _sftp_target


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_the_off_site_copy_of_an_encrypted_snapshot_holds_no_value(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str, engine: str
) -> None:
    app, _url, _identity = encrypted_app(tmp_path, request, engine)
    if kind == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        remote, env, _read, _names = _s3_target(s3, tmp_path)
        fs = s3.fs()
        prefix = remote.removeprefix("s3://")

        def remote_files() -> dict[str, bytes]:
            fs.invalidate_cache()
            return {path[len(prefix) + 1:]: fs.cat_file(path) for path in fs.find(prefix)}
    else:
        sftp: SftpServer = request.getfixturevalue("sftp_server")
        remote, env, _read, _names = _sftp_target(sftp, tmp_path)
        root = tmp_path / "sftp-root" / "releases"

        def remote_files() -> dict[str, bytes]:
            return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    import yaml

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
