"""Off-site copies through the real CLI: file://, S3 (SeaweedFS) and SFTP (OpenSSH sshd), all started here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from relstep import offsite
from relstep.config import load_config
from relstep.fsutil import sha256_file
from relstep.snapshot import list_snapshots
from tests.helpers import clean_env, relstep, sqlite_app, write_config

# The servers are fixtures of tests/servers.py, imported so pytest finds them here.
from tests.servers import S3Server, SftpServer, Webhook, s3_server, sftp_server, webhook  # noqa: F401

BIG = 12 * 1024 * 1024 + 123
PART = 5 * 1024 * 1024


def snapshots(app: Path) -> list[Path]:
    return [s.path for s in list_snapshots(app / "backups" / "releases")]


def app_with(tmp_path: Path, offsite_conf: dict[str, Any], **extra: Any) -> Path:
    app = sqlite_app(tmp_path)
    config = {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "prisma"},
              "offsite": offsite_conf, **extra}
    write_config(app, config)
    return app


def run(app: Path, version: str, env: dict[str, str] | None = None, *args: str):
    return relstep("run", "--version", version, *args, cwd=app, env=env or clean_env())


def assert_same_files(local: Path, read_remote: Any) -> None:
    """Every file of the local snapshot, MANIFEST.json included, has the same bytes remotely."""
    manifest = json.loads((local / "MANIFEST.json").read_text())
    for rel, meta in manifest["files"].items():
        assert read_remote(f"{local.name}/{rel}") == (local / rel).read_bytes(), rel
        assert len(read_remote(f"{local.name}/{rel}")) == meta["size"]
    assert read_remote(f"{local.name}/MANIFEST.json") == (local / "MANIFEST.json").read_bytes()


# --- file:// -----------------------------------------------------------------------------------


def test_file_url_copies_verifies_and_prunes_by_the_local_rule(tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "releases"
    app = app_with(tmp_path, {"url": f"file://{remote}", "keep": 2}, retention=5)
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        ran = run(app, version)
        assert ran.code == 0, ran.err
        assert [line.split()[:2] for line in ran.out.splitlines()[1:5]][-1] == ["offsite", "ok"], ran.out
    local = snapshots(app)
    assert len(local) == 3                                       # local retention 5
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local[:2])   # off-site keep 2
    for snap in local[:2]:
        assert_same_files(snap, lambda rel: (remote / rel).read_bytes())


def test_remote_copies_are_not_pruned_while_the_record_database_is_down(tmp_path: Path) -> None:
    remote = tmp_path / "remote" / "releases"
    app = app_with(tmp_path, {"url": f"file://{remote}", "keep": 1}, retention=5)
    for version in ("1.0.0", "1.0.1"):
        assert run(app, version).code == 0
    assert sorted(p.name for p in remote.iterdir()) == [snapshots(app)[0].name]
    assert relstep("backup", "--version", "1.0.2", cwd=app).code == 0
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "prisma"},
                       "offsite": {"url": f"file://{remote}", "keep": 1}, "retention": 5,
                       "record": {"url": "postgresql://u@127.0.0.1:1/nodb"}})
    ran = relstep("offsite", cwd=app)
    assert ran.code == 0, ran.err
    assert ran.out.strip().endswith("remote pruning skipped: the record database cannot be read, "
                                    "so the last recorded release is unknown")
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in snapshots(app)[:2])


def test_leftover_of_an_interrupted_upload_is_removed_and_a_tampered_copy_is_caught(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    app = app_with(tmp_path, {"url": f"file://{remote}", "required": True})
    leftover = remote / "20200101T000000Z" / "code"
    leftover.mkdir(parents=True)
    (leftover / "half.bin").write_bytes(b"x")                     # no MANIFEST.json: never finished
    (remote / "not-a-snapshot").mkdir()
    ran = run(app, "1.0.0")
    assert ran.code == 0, ran.err
    name = snapshots(app)[0].name
    assert sorted(p.name for p in remote.iterdir()) == sorted([name, "not-a-snapshot"])
    # A remote copy that no longer matches: `relstep offsite` checks before trusting it.
    (remote / name / "VERSION.txt").write_text("6.6.6\n")
    ran = relstep("offsite", cwd=app)
    assert ran.code == 6
    assert ran.last_err == (f"relstep: offsite failed: VERSION.txt of {name} at file://{remote} "
                            "does not match the manifest's SHA-256")


def test_required_copy_failing_is_exit_6_and_the_local_snapshot_is_kept(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the remote folder should be\n")
    app = app_with(tmp_path, {"url": f"file://{blocker}/releases", "required": True})
    ran = run(app, "1.0.0")
    assert ran.code == 6, ran.err
    (snap,) = snapshots(app)
    assert (snap / "MANIFEST.json").is_file()
    assert ran.last_err.startswith(f"relstep: offsite failed: copying {snap.name} at file://{blocker}/releases failed:")
    assert ran.last_err.endswith(f"the local snapshot {snap.name} is kept")
    assert [line.split()[:2] for line in ran.out.splitlines()[1:5]] == [
        ["backup", "ok"], ["record", "ok"], ["prune", "ok"], ["offsite", "FAILED"]]


def test_optional_copy_failing_warns_alerts_and_passes(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    hook: Webhook = request.getfixturevalue("webhook")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x\n")
    app = app_with(tmp_path, {"url": f"file://{blocker}/releases"},
                   notify={"webhook": hook.url, "format": "json"})
    ran = run(app, "1.2.0", None, "--json")
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)
    assert data["ok"] and data["exit_code"] == 0
    assert data["phases"][-1]["name"] == "offsite" and not data["phases"][-1]["ok"]
    assert data["warnings"] and data["warnings"][0].startswith("offsite failed: copying")
    assert "relstep: warning: offsite failed: copying" in ran.err
    assert len(snapshots(app)) == 1
    (sent,) = hook.requests
    body = sent["body"]
    assert (body["event"], body["phase"], body["version"], body["exit_code"]) == ("warning", "offsite", "1.2.0", 0)
    assert body["reason"].startswith("copying ") and body["project"] == "app"


@pytest.mark.parametrize("url", ["sftp://deploy:hunter2-secret@backup.example/srv/x",
                                 "s3://AKIA:topsecret-key@bucket/prefix"])
def test_a_password_written_into_offsite_url_is_refused(tmp_path: Path, url: str) -> None:
    app = app_with(tmp_path, {"url": url})
    ran = run(app, "1.0.0")
    assert ran.code == 2
    assert "offsite.url holds a password in clear" in ran.last_err
    assert "hunter2-secret" not in ran.err and "topsecret-key" not in ran.err
    assert not snapshots(app)
    # The same password from the environment is fine (masked wherever it would appear).
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "offsite": {"url": "sftp://deploy:${PW}@h/x"}})
    config = load_config(None, environ={"PW": "hunter2-secret"}, cwd=app)
    assert config.offsite is not None and config.offsite.url == "sftp://deploy:hunter2-secret@h/x"


# --- S3 (SeaweedFS) and SFTP (sshd) -------------------------------------------------------------


def _s3_target(s3: S3Server, tmp_path: Path) -> tuple[str, dict[str, str], Any, Any]:
    bucket = s3.bucket("relstep-offsite")
    prefix = f"{bucket}/{tmp_path.name}/releases"
    fs = s3.fs()

    def read(rel: str) -> bytes:
        return fs.cat_file(f"{prefix}/{rel}")

    def names() -> list[str]:
        # Snapshot folders holding objects (SeaweedFS lists emptied prefixes as folders for a while).
        fs.invalidate_cache()
        files = fs.find(prefix, detail=True)
        return sorted({p[len(prefix) + 1:].split("/", 1)[0] for p, i in files.items() if i["type"] == "file"})

    env = clean_env(**s3.env(), RELSTEP_OFFSITE_PART_SIZE=str(PART))
    return f"s3://{prefix}", env, read, names


def _sftp_target(sftp: SftpServer, tmp_path: Path) -> tuple[str, dict[str, str], Any, Any]:
    # The server is this machine: its files can be read back directly to compare.
    root = tmp_path / "sftp-root" / "releases"

    def read(rel: str) -> bytes:
        return (root / rel).read_bytes()

    def names() -> list[str]:
        return sorted(p.name for p in root.iterdir())

    return sftp.url(root), clean_env(**sftp.env()), read, names


@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_round_trip_on_a_real_server(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if kind == "s3":
        url, env, read, names = _s3_target(request.getfixturevalue("s3_server"), tmp_path)
    else:
        url, env, read, names = _sftp_target(request.getfixturevalue("sftp_server"), tmp_path)
    app = app_with(tmp_path, {"url": url, "keep": 2, "required": True})
    (app / "backend" / "big.bin").write_bytes(os.urandom(BIG))
    for version in ("1.0.0", "1.0.1", "1.1.0"):
        ran = run(app, version, env)
        assert ran.code == 0, ran.err
    local = snapshots(app)
    assert names() == sorted(p.name for p in local[:2])
    for snap in local[:2]:
        assert_same_files(snap, read)
    if kind == "s3":
        # Large files went up in parts: S3's ETag of a multipart upload ends in -<parts>.
        s3 = request.getfixturevalue("s3_server")
        info = s3.fs().info(f"{url[5:]}/{local[0].name}/code/backend/big.bin")
        assert info["ETag"].strip('"').endswith("-3"), info
    # The API restore/verify use: fetch a remote snapshot back, checked against its manifest.
    for key, value in env.items():
        if key.startswith("AWS_") or key in ("HOME", "RELSTEP_OFFSITE_PART_SIZE"):
            monkeypatch.setenv(key, value)
    fetched = offsite.fetch(load_config(None, environ=env, cwd=app), None, tmp_path / "fetched")
    assert fetched.name == local[0].name
    manifest = json.loads((fetched / "MANIFEST.json").read_text())
    for rel, meta in manifest["files"].items():
        assert sha256_file(fetched / rel) == (meta["size"], meta["sha256"])
    assert fetched.stat().st_mtime == pytest.approx(local[0].stat().st_mtime, abs=1)


def test_s3_wrong_credentials_fail_a_required_copy(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url, env, _read, _names = _s3_target(request.getfixturevalue("s3_server"), tmp_path)
    env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret-value"
    app = app_with(tmp_path, {"url": url, "required": True})
    ran = run(app, "1.0.0", env)
    assert ran.code == 6, ran.err
    assert "relstep: offsite failed:" in ran.last_err and "is kept" in ran.last_err
    assert "wrong-secret-value" not in ran.out + ran.err
    assert len(snapshots(app)) == 1


def test_sftp_unknown_host_key_is_refused(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    sftp: SftpServer = request.getfixturevalue("sftp_server")
    home = tmp_path / "other-home"
    (home / ".ssh").mkdir(parents=True)
    for name in ("id_ed25519", "id_ed25519.pub"):
        (home / ".ssh" / name).write_bytes((sftp.home / ".ssh" / name).read_bytes())
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    app = app_with(tmp_path, {"url": sftp.url(tmp_path / "r"), "required": True})
    # No known_hosts at all: refused before connecting (asyncssh alone would trust any key).
    ran = run(app, "1.0.0", clean_env(HOME=str(home)))
    assert ran.code == 6, ran.err
    assert "cannot check the host key of sftp://" in ran.last_err
    # A known_hosts that does not list this server: the server's key is not trusted.
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sftp.port} {other_key}\n")
    ran = run(app, "1.0.1", clean_env(HOME=str(home)))
    assert ran.code == 6, ran.err
    assert "Host key is not trusted" in ran.last_err, ran.err
    assert not (tmp_path / "r").exists()


def test_verify_and_restore_from_offsite(tmp_path: Path) -> None:
    pytest.importorskip("relstep.restore")
    pytest.importorskip("relstep.verify")
    import shutil

    remote = tmp_path / "remote"
    app = app_with(tmp_path, {"url": f"file://{remote}"})
    assert run(app, "1.0.0").code == 0
    assert run(app, "1.0.1").code == 0
    old, new = snapshots(app)[1], snapshots(app)[0]
    for snap in (old, new):
        shutil.rmtree(snap)                       # the machine lost its local copies
    ran = relstep("verify", "--from-offsite", cwd=app)
    assert ran.code == 0, ran.err
    assert snapshots(app) == [new]                # fetched back under its own name
    target = tmp_path / "restored.db"
    ran = relstep("restore", "--from-offsite", "v1.0.0", "--database-url", f"sqlite:///{target}", "--yes", cwd=app)
    assert ran.code == 0, ran.err
    assert [p.name for p in snapshots(app)] == [new.name, old.name]   # sorted by creation time, as before
    from relstep.databases import sqlite as sqlite_engine

    manifest = json.loads((old / "MANIFEST.json").read_text())
    assert sqlite_engine.row_counts(f"sqlite:///{target}") == manifest["databases"]["main"]["row_counts"]
    ran = relstep("verify", "--from-offsite", "9.9.9", cwd=app)
    assert ran.code == 2 and "no off-site snapshot named or versioned '9.9.9'" in ran.last_err
