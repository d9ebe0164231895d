"""The off-site backends: one entry per URL scheme, holding every fact about it.

config validates ``offsite.url`` against ``BACKENDS``; ``relstep.offsite`` opens a remote through the
entry's ``open``.  Adding a backend is one opener here and one line in ``BACKENDS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote

from relstep.errors import OffsiteError
from relstep.masking import register_secret

# S3 parts: 5 MiB is S3's minimum; 16 MiB keeps a 10 GiB dump under the 10,000-part limit.
PART_SIZE = int(os.environ.get("RELSTEP_OFFSITE_PART_SIZE", 16 * 1024 * 1024))
CONNECT_TIMEOUT = 15


def _open_s3(parts: SplitResult, shown: str) -> tuple[Any, str]:
    import s3fs

    # Endpoint, region and keys: botocore's own chain (AWS_ENDPOINT_URL, AWS_PROFILE, ~/.aws/...).
    fs = s3fs.S3FileSystem(
        config_kwargs={"connect_timeout": CONNECT_TIMEOUT, "read_timeout": 120,
                       "retries": {"max_attempts": 3, "mode": "standard"}},
        default_block_size=PART_SIZE, skip_instance_cache=True,
    )
    return fs, (parts.netloc + parts.path).rstrip("/")


def _open_sftp(parts: SplitResult, shown: str) -> tuple[Any, str]:
    import sshfs

    kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "known_hosts": _known_hosts(shown),
                              "skip_instance_cache": True}
    if parts.port:
        kwargs["port"] = parts.port
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:   # only ever from ${VAR}: config refuses it in clear
        register_secret(unquote(parts.password))
        kwargs["password"] = unquote(parts.password)
    fs = sshfs.SSHFileSystem(parts.hostname or "localhost", **kwargs)
    return fs, unquote(parts.path).rstrip("/") or "."


def _open_file(parts: SplitResult, shown: str) -> tuple[Any, str]:
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(auto_mkdir=True), unquote(parts.path).rstrip("/") or "/"


def _known_hosts(shown: str) -> str:
    """The known_hosts file to check the server's key against, passed to asyncssh explicitly.

    Left to itself, asyncssh trusts any host key when it finds no known_hosts file, and
    did not reject an unlisted host in our tests; ssh would ask, and an unattended step
    must not accept a key nobody confirmed.  ``UserKnownHostsFile`` in ~/.ssh/config wins.
    """
    ssh = Path("~/.ssh").expanduser()
    path = ssh / "known_hosts"
    try:
        config = (ssh / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        config = ""
    match = re.search(r"^\s*UserKnownHostsFile\s+(\S+)", config, re.IGNORECASE | re.MULTILINE)
    if match and match.group(1).lower() != "none":
        path = Path(match.group(1).strip('"')).expanduser()
    if not path.is_file():
        raise OffsiteError(
            f"cannot check the host key of {shown}: {path} does not exist; add the server's key "
            "(ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts, after checking its fingerprint)"
        )
    return str(path)


@dataclass(frozen=True)
class Backend:
    scheme: str
    example: str                                   # for messages: what such a URL looks like
    open: Callable[[SplitResult, str], tuple[Any, str]]   # (parts, URL for messages) -> (fsspec fs, root)
    module: str | None = None                      # the fsspec implementation to import (None: fsspec's own)
    extra: str | None = None                       # the pip extra that installs it
    # S3 only: the multipart part size.  sshfs reads block_size as one SFTP request's
    # length, and OpenSSH drops the connection on requests above 256 KiB.
    io_options: dict[str, Any] = field(default_factory=dict)


BACKENDS: dict[str, Backend] = {
    "s3": Backend("s3", "s3://bucket/prefix", _open_s3, "s3fs", "relstep[s3]", {"block_size": PART_SIZE}),
    "sftp": Backend("sftp", "sftp://user@host/path", _open_sftp, "sshfs", "relstep[sftp]"),
    "file": Backend("file", "file:///path", _open_file),
}
