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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relstep import children
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


def _git(repo: Path, *args: str, ok_codes: tuple[int, ...] = (0,)) -> str:
    try:
        proc = children.run(["git", *args], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise InputError("git not found on PATH; install git to manage hooks") from None
    if proc.returncode not in ok_codes:
        last = (proc.stderr.strip().splitlines() or ["git failed"])[-1]
        raise InputError(f"{repo} is not a git repository ({last})")
    return proc.stdout.strip()


def _repo(repo: Path) -> Path:
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise InputError(f"{repo} is not a directory")
    return repo


def hooks_dir(repo: Path) -> Path:
    """The directory git runs ``repo``'s hooks from (honours ``core.hooksPath``; bare repos too)."""
    repo = _repo(repo)
    path = Path(_git(repo, "rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else (repo / path).resolve()


def hooks_path_setting(repo: Path) -> tuple[str, str] | None:
    """(scope, value) of the ``core.hooksPath`` git uses for ``repo`` (local, worktree, global,
    system, command), or None when it is not set and hooks live in ``$GIT_DIR/hooks``."""
    out = _git(_repo(repo), "config", "--show-scope", "--get", "core.hooksPath", ok_codes=(0, 1))
    if not out:
        return None
    scope, _, value = out.partition("\t")
    return scope, value


def own_hooks_dir(repo: Path) -> Path:
    """``$GIT_COMMON_DIR/hooks``: this repository's own hooks folder, shared by its worktrees."""
    repo = _repo(repo)
    path = Path(_git(repo, "rev-parse", "--git-common-dir"))
    return (path if path.is_absolute() else repo / path).resolve() / "hooks"


def husky_hook_file(directory: Path, hook: str) -> Path | None:
    """The script husky runs for ``hook`` when ``directory`` (core.hooksPath) is husky's, else None.

    husky 9 points core.hooksPath at ``.husky/_``, whose generated wrappers run the committed
    ``.husky/<hook>``; husky 4-8 point it at ``.husky`` itself (``.husky/_/husky.sh`` beside).
    Either way relstep belongs in ``.husky/<hook>``, never in place of the wrapper.
    """
    if directory.name == "_" and directory.parent.name == ".husky" and (directory / "h").is_file():
        return directory.parent / hook
    if directory.name == ".husky" and (directory / "_" / "husky.sh").is_file():
        return directory / hook
    return None


BLOCK_START = f"{MARKER}: begin"
BLOCK_END = "# relstep: end"


def hook_script(hook: str, command: Sequence[str], config: Path | None = None) -> str:
    """The hook file's text: a marker and one ``exec`` of relstep with absolute paths."""
    return (
        "#!/bin/sh\n"
        f"{MARKER} (`relstep hook uninstall --hook {hook}` removes it)\n"
        "# Runs `relstep run --version <version>` for each version tag pushed; a failure refuses the push.\n"
        "# The interpreter is the one relstep was installed with, so the hook works without a venv on PATH.\n"
        f'exec {_hook_command(hook, command, config)} "$@"\n'
    )


def _hook_command(hook: str, command: Sequence[str], config: Path | None) -> str:
    argv = [*command, "hook", "run", hook]
    if config is not None:
        argv += ["--config", str(config)]
    return shlex.join(argv)


def husky_block(hook: str, command: Sequence[str], config: Path | None = None) -> str:
    """relstep's lines inside husky's ``.husky/<hook>`` (run by husky with ``sh -e``, git's stdin)."""
    return (
        f"{BLOCK_START} (`relstep hook uninstall --hook {hook}` removes this block)\n"
        f'{_hook_command(hook, command, config)} "$@"\n'
        f"{BLOCK_END}\n"
    )


def _without_block(text: str) -> str:
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    inside = False
    for line in lines:
        if line.startswith(BLOCK_START):
            inside = True
        elif inside and line.startswith(BLOCK_END):
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


def default_command() -> list[str]:
    """Run relstep with this very interpreter (``python -m relstep``), by absolute path."""
    return [str(Path(sys.executable).absolute()), "-m", "relstep"]


def is_relstep_hook(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False


@dataclass(frozen=True)
class Installed:
    """Where a hook went, and why there (one sentence each, for the user)."""

    path: Path
    notes: tuple[str, ...] = ()


# Set in the repository's config when relstep pointed core.hooksPath at the repository's own
# hooks; uninstall then removes both, and the global hooks apply again.
_SET_BY_RELSTEP = "relstep.hooksPathSetByRelstep"


def install(repo: Path, hook: str = "pre-push", force: bool = False, **options: Any) -> Path:
    """Write relstep's ``hook`` for ``repo`` and return its path (see :func:`install_hook`)."""
    return install_hook(repo, hook, force, **options).path


def install_hook(
    repo: Path,
    hook: str = "pre-push",
    force: bool = False,
    *,
    config: Path | None = None,
    command: Sequence[str] | None = None,
    global_hooks_path: bool = False,
) -> Installed:
    """Write relstep's ``hook`` for ``repo``.

    Where: the folder git runs this repository's hooks from, except that a ``core.hooksPath``
    from the global or system config (which every repository of the user shares) is not used
    unless ``global_hooks_path``; instead the hook goes into this repository's own hooks folder
    and the repository's ``core.hooksPath`` is pointed at it (git reads one hooksPath, the most
    local one, and ignores ``$GIT_DIR/hooks`` while any is set).  Under husky, relstep's lines are
    added to husky's ``.husky/<hook>``.

    An existing hook that relstep did not write is kept unless ``force``; with ``force`` it is
    moved aside to ``<hook>.relstep-replaced`` rather than lost.  ``config`` is stored as an
    absolute path (required in practice for pre-receive: a bare repository has no relstep.yml).
    """
    _check_hook(hook)
    repo = _repo(repo)
    if config is not None:
        config = Path(config).expanduser().resolve()
        if not config.is_file():
            raise InputError(f"config file {config} not found")
    command = command or default_command()
    directory, notes = _target_dir(repo, global_hooks_path)
    husky = husky_hook_file(directory, hook)
    if husky is not None:
        return _install_into_husky(husky, hook, command, config, notes)
    path = directory / hook
    if path.exists() and not is_relstep_hook(path):
        if not force:
            raise InputError(f"{path} exists and was not installed by relstep; use --force to replace it")
        path.replace(path.with_name(f"{hook}.relstep-replaced"))
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(hook_script(hook, command, config), encoding="utf-8", newline="\n")
    path.chmod(0o755)
    return Installed(path, notes)


def _target_dir(repo: Path, global_hooks_path: bool) -> tuple[Path, tuple[str, ...]]:
    setting = hooks_path_setting(repo)
    if setting is None or setting[0] not in ("global", "system"):
        if global_hooks_path:
            raise InputError(
                "--global-hooks-path: no global core.hooksPath is set for this repository"
                + (f" (its core.hooksPath is {setting[1]}, set in its {setting[0]} config)" if setting else "")
                + "; install without --global-hooks-path"
            )
        return hooks_dir(repo), ()
    if global_hooks_path:
        return hooks_dir(repo), (f"relstep installed into the {setting[0]} core.hooksPath {setting[1]}: every "
                                 "repository using it runs relstep for its version tags",)
    own = own_hooks_dir(repo)
    others = sorted(p.name for p in hooks_dir(repo).glob("*") if p.is_file() and os.access(p, os.X_OK)
                    and not p.name.endswith(".sample"))
    _git(repo, "config", "--local", "core.hooksPath", str(own))
    _git(repo, "config", "--local", _SET_BY_RELSTEP, str(own))
    lost = f"; the {setting[0]} hooks there ({', '.join(others)}) no longer run in this repository" if others else ""
    return own, (
        f"core.hooksPath is set in your {setting[0]} git config ({setting[1]}), shared by all your repositories: "
        f"relstep installed into this repository's own hooks and set this repository's core.hooksPath to {own}"
        f"{lost} (`relstep hook uninstall` undoes it; --global-hooks-path installs into {setting[1]} instead)",
    )


def _install_into_husky(
    path: Path, hook: str, command: Sequence[str], config: Path | None, notes: tuple[str, ...]
) -> Installed:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = _without_block(existing)
    if kept and not kept.endswith("\n"):
        kept += "\n"
    if not kept and path.parent.name == ".husky" and not (path.parent / "_" / "h").is_file():
        kept = "#!/usr/bin/env sh\n. \"$(dirname -- \"$0\")/_/husky.sh\"\n"  # husky 4-8 run this file itself
    path.write_text(kept + husky_block(hook, command, config), encoding="utf-8", newline="\n")
    path.chmod(path.stat().st_mode | 0o755)
    return Installed(path, (*notes, f"husky manages this repository's hooks: relstep's lines were added at the end "
                                    f"of {path}, which husky runs for {hook}; keep them last there"))


def uninstall(repo: Path, hook: str) -> bool:
    """Remove relstep's ``hook`` from ``repo``; a hook relstep did not write is left alone.

    Under husky only relstep's block leaves ``.husky/<hook>``.  When relstep had pointed the
    repository's ``core.hooksPath`` at its own hooks, that setting goes too.  Returns whether
    anything of relstep's was removed.
    """
    _check_hook(hook)
    repo = _repo(repo)
    directory = hooks_dir(repo)
    husky = husky_hook_file(directory, hook)
    removed = False
    if husky is not None:
        if husky.exists() and BLOCK_START in husky.read_text(encoding="utf-8"):
            kept = _without_block(husky.read_text(encoding="utf-8"))
            if kept.strip():
                husky.write_text(kept, encoding="utf-8", newline="\n")
            else:
                husky.unlink()
            removed = True
    else:
        path = directory / hook
        if is_relstep_hook(path):
            path.unlink()
            removed = True
    set_by_us = _git(repo, "config", "--local", "--get", _SET_BY_RELSTEP, ok_codes=(0, 1))
    if removed and set_by_us and set_by_us == _git(repo, "config", "--local", "--get", "core.hooksPath",
                                                   ok_codes=(0, 1)):
        if not any(is_relstep_hook(directory / name) for name in HOOKS):
            _git(repo, "config", "--local", "--unset", "core.hooksPath")
            _git(repo, "config", "--local", "--unset", _SET_BY_RELSTEP)
    return removed


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
            code = children.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL).returncode
        except OSError as exc:
            raise InputError(f"cannot start relstep ({argv[0]}): {exc.strerror}") from None
        if code < 0:
            code = 128 - code  # killed by signal N: report it the way a shell would (128 + N)
        if code != 0:
            say(f"relstep: {hook}: relstep run failed for {tag} (exit {code}); refusing the push")
            return code
    return 0
