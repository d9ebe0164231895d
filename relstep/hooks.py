"""Git hooks that run ``relstep run`` for every version tag pushed.

- ``pre-push`` (the machine you deploy from): git passes one line per ref being pushed,
  ``<local ref> <local sha> <remote ref> <remote sha>``; a non-zero exit refuses the push.
- ``pre-receive`` (a bare repository on the deploy host, push-to-deploy): one line per ref
  received, ``<old sha> <new sha> <ref>``; a non-zero exit rejects every ref of the push.

A bare repository has no working tree and no ``relstep.yml``, so a pre-receive hook is
installed with an absolute ``--config`` (or finds ``RELSTEP_CONFIG`` in the hook's
environment); ``relstep run`` then runs in that config file's folder.

The functions here are pure apart from the file system and the subprocess; the Typer
wiring is in :mod:`relstep.hooks_cli`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from relstep.errors import InputError

HOOKS = ("pre-push", "pre-receive")

#: Marks a hook file as relstep's: uninstall removes only files carrying it, install
#: replaces them without --force.
MARKER = "# installed by relstep"

# semver.org's grammar: MAJOR.MINOR.PATCH with optional -pre-release and +build parts.
_VERSION = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_TAG_REF = "refs/tags/"

# Variables git sets for a hook that point at *its* repository.  relstep must find the
# application's repository from its own working directory instead (in pre-receive, GIT_DIR
# is the bare repository and the objects of the push sit in a quarantine directory).
_GIT_REPO_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
)


def _check_hook(hook: str) -> None:
    if hook not in HOOKS:
        raise InputError(f"unknown hook {hook!r}; relstep installs {' or '.join(HOOKS)}")


def _is_deletion(sha: str) -> bool:
    # The all-zero object name (40 hex digits for SHA-1 repositories, 64 for SHA-256) means "no object".
    return sha != "" and set(sha) == {"0"}


def tag_version(ref: str, tag_prefix: str) -> str | None:
    """``refs/tags/<prefix><version>`` -> ``<version>``; ``None`` for anything else."""
    if not ref.startswith(_TAG_REF):
        return None
    tag = ref[len(_TAG_REF) :]
    if not tag.startswith(tag_prefix):
        return None
    version = tag[len(tag_prefix) :]
    return version if _VERSION.fullmatch(version) else None


def tags_to_run(hook: str, stdin_lines: Iterable[str], tag_prefix: str) -> list[str]:
    """The tag names (``v1.2.3``) in a hook's stdin that should trigger ``relstep run``.

    Only created or updated tags under ``refs/tags/`` that carry ``tag_prefix`` and parse as
    a version; branch pushes and deletions are ignored.  Duplicates are dropped, order kept.
    """
    _check_hook(hook)
    tags: list[str] = []
    for line in stdin_lines:
        fields = line.split()
        if not fields:
            continue
        if len(fields) != (4 if hook == "pre-push" else 3):
            raise InputError(f"unexpected {hook} input line {line.strip()!r}")
        if hook == "pre-push":
            _local_ref, new_sha, ref, old_sha = fields
        else:
            old_sha, new_sha, ref = fields
        if _is_deletion(new_sha) or new_sha == old_sha:
            continue
        if tag_version(ref, tag_prefix) is None:
            continue
        tag = ref[len(_TAG_REF) :]
        if tag not in tags:
            tags.append(tag)
    return tags


def pre_commit_lines(environ: Mapping[str, str]) -> list[str]:
    """Rebuild a pre-push input line from the pre-commit framework's ``PRE_COMMIT_*`` variables.

    pre-commit reads git's stdin itself and hands a hook only the first ref being pushed:
    ``PRE_COMMIT_REMOTE_BRANCH`` (the remote ref, ``refs/tags/v1.2.3`` for a tag),
    ``PRE_COMMIT_LOCAL_BRANCH``, and ``PRE_COMMIT_FROM_REF``/``PRE_COMMIT_TO_REF`` (absent
    when the push contains the root commit).
    """
    remote_ref = environ.get("PRE_COMMIT_REMOTE_BRANCH", "")
    if not remote_ref:
        return []
    local_ref = environ.get("PRE_COMMIT_LOCAL_BRANCH") or remote_ref
    # Only "not a deletion" and "changed" matter to tags_to_run; pre-commit never runs a hook
    # for a deletion, so placeholder object names are fine when it does not pass them.
    new_sha = environ.get("PRE_COMMIT_TO_REF") or "pre-commit-to-ref"
    old_sha = environ.get("PRE_COMMIT_FROM_REF") or "0" * 40
    return [f"{local_ref} {new_sha} {remote_ref} {old_sha}"]


def _git(repo: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InputError("git not found on PATH; install git to manage hooks") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
        raise InputError(f"{repo} is not a git repository ({last})")
    return proc.stdout.strip()


def hooks_dir(repo: Path) -> Path:
    """The directory git runs ``repo``'s hooks from (honours ``core.hooksPath``; bare repos too)."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise InputError(f"{repo} is not a directory")
    path = Path(_git(repo, "rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else (repo / path).resolve()


def hook_script(hook: str, command: Sequence[str], config: Path | None = None) -> str:
    """The hook file's text: a marker and one ``exec`` of relstep with absolute paths."""
    argv = [*command, "hook", "run", hook]
    if config is not None:
        argv += ["--config", str(config)]
    return (
        "#!/bin/sh\n"
        f"{MARKER} (`relstep hook uninstall --hook {hook}` removes it)\n"
        "# Runs `relstep run --version <version>` for each version tag pushed; a failure refuses the push.\n"
        "# The interpreter is the one relstep was installed with, so the hook works without a venv on PATH.\n"
        f'exec {shlex.join(argv)} "$@"\n'
    )


def default_command() -> list[str]:
    """Run relstep with this very interpreter (``python -m relstep``), by absolute path."""
    return [str(Path(sys.executable).absolute()), "-m", "relstep"]


def is_relstep_hook(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False


def install(
    repo: Path,
    hook: str = "pre-push",
    force: bool = False,
    *,
    config: Path | None = None,
    command: Sequence[str] | None = None,
) -> Path:
    """Write relstep's ``hook`` into ``repo`` and return its path.

    An existing hook that relstep did not write is kept unless ``force``; with ``force`` it is
    moved aside to ``<hook>.relstep-replaced`` rather than lost.  ``config`` is stored as an
    absolute path (required in practice for pre-receive: a bare repository has no relstep.yml).
    """
    _check_hook(hook)
    directory = hooks_dir(repo)
    path = directory / hook
    if path.exists() and not is_relstep_hook(path):
        if not force:
            raise InputError(f"{path} exists and was not installed by relstep; use --force to replace it")
        path.replace(path.with_name(f"{hook}.relstep-replaced"))
    if config is not None:
        config = Path(config).expanduser().resolve()
        if not config.is_file():
            raise InputError(f"config file {config} not found")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(hook_script(hook, command or default_command(), config), encoding="utf-8", newline="\n")
    path.chmod(0o755)
    return path


def uninstall(repo: Path, hook: str) -> bool:
    """Remove relstep's ``hook`` from ``repo``; a hook relstep did not write is left alone.

    Returns whether a file was removed.
    """
    _check_hook(hook)
    path = hooks_dir(repo) / hook
    if not is_relstep_hook(path):
        return False
    path.unlink()
    return True


def hook_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The hook's environment without the variables that tie git to the hook's repository."""
    return {k: v for k, v in environ.items() if k not in _GIT_REPO_VARIABLES}


def run_hook(
    hook: str,
    stdin_lines: Iterable[str],
    *,
    tag_prefix: str = "v",
    config: Path | None = None,
    command: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Run ``relstep run --version <version>`` for each version tag in the push.

    Returns 0 when every run passed (or nothing was to run), else the first failing run's
    exit code, which the hook exits with so git refuses the push.  Runs happen in the
    config's folder when a config is given, else in the current directory (git starts a
    pre-push hook at the top of the working tree).  ``log`` receives one line per run.
    """
    say = log or (lambda _line: None)
    tags = tags_to_run(hook, stdin_lines, tag_prefix)
    env = hook_environment(os.environ if environ is None else environ)
    cwd = None
    if config is not None:
        config = Path(config).expanduser().resolve()
        cwd = config.parent
    for tag in tags:
        version = tag[len(tag_prefix) :]
        argv = [*(command or default_command())]
        if config is not None:
            argv += ["--config", str(config)]
        argv += ["run", "--version", version]
        say(f"relstep: {hook}: tag {tag}: running relstep run --version {version}")
        # stdin is not inherited: git's ref list is the hook's, not relstep's to read.
        try:
            code = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, check=False).returncode
        except OSError as exc:
            raise InputError(f"cannot start relstep ({argv[0]}): {exc.strerror}") from None
        if code < 0:
            code = 128 - code  # killed by signal N: report it the way a shell would (128 + N)
        if code != 0:
            say(f"relstep: {hook}: relstep run failed for {tag} (exit {code}); refusing the push")
            return code
    return 0
