"""Which app a snapshot belongs to: the ``project`` every snapshot records in its manifest.

Several apps may share one ``backup_root``.  Each snapshot records the project of
the app that wrote it, and list, prune, restore, verify and offsite act only on
the current project's snapshots (docs/snapshot-layout.md, "Apps that share a
backup_root").  The identity is, in order:

1. ``project`` in relstep.yml;
2. the git remote ``origin`` of the repository holding relstep.yml, as host/path
   (``github.com/acme/shop``): the same on every clone, laptop or CI runner, and
   with no user name, password or token;
3. the name of the folder holding relstep.yml.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from relstep import children
from relstep.config import Config

GIT_TIMEOUT = 10
# scp-like git addresses: [user@]host:path (no scheme, no slash before the colon).
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.+)$")


def project_of(config: Config) -> str:
    """The current app's project identity."""
    return config.project or _derived(config.base_dir)


@functools.lru_cache(maxsize=32)
def _derived(base_dir: Path) -> str:
    remote = _origin_url(base_dir)
    identity = remote_identity(remote) if remote else None
    return identity or base_dir.name or "/"


def _origin_url(base_dir: Path) -> str | None:
    try:
        proc = children.run(
            ["git", "config", "--get", "remote.origin.url"], cwd=base_dir, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, timeout=GIT_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        return None   # no git, or a folder git cannot read: the folder's name it is
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def remote_identity(url: str) -> str | None:
    """``host/path`` of a git remote, without scheme, credentials, port or ``.git``; None if it has neither."""
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        host, path = (parts.hostname or ""), parts.path
    elif (match := _SCP_LIKE.match(url)) and not url.startswith(("/", ".")):
        host, path = match["host"], match["path"]
    else:   # a local path used as a remote
        host, path = "", url
    path = path.strip("/").removesuffix(".git").strip("/")
    identity = "/".join(part for part in (host.lower(), path) if part)
    return identity or None
