"""``relstep hook install|uninstall|run``: a thin Typer layer over :mod:`relstep.hooks`.

Mounted by the main app with ``app.add_typer(hook_app, name="hook")``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from relstep import hooks
from relstep.errors import InputError

hook_app = typer.Typer(
    help="Install, remove and run relstep's git hooks (pre-push, pre-receive).",
    no_args_is_help=True,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


class Hook(str, Enum):
    pre_push = "pre-push"
    pre_receive = "pre-receive"


def _exits_on_error(func: F) -> F:
    # Same contract as the main CLI: an expected failure is one line on stderr naming the
    # phase, and the exit code errors.py assigns to it; no traceback.
    # An unexpected exception is the main CLI's one masked internal-error line (exit 70).
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from relstep.cli import guarded

        def call() -> int:
            func(*args, **kwargs)
            return 0

        try:
            code = guarded(f"hook {func.__name__.removesuffix('_command')}", call)
        except typer.Exit as done:   # the command's own exit code (hook run)
            code = done.exit_code
        raise typer.Exit(code)

    return wrapper  # type: ignore[return-value]


RepoOption = Annotated[
    Path,
    typer.Option("--repo", help="The repository (a working tree or a bare repository).", file_okay=False),
]
HookOption = Annotated[Hook, typer.Option("--hook", help="Which git hook.")]


def _config_path(config: Path | None) -> Path | None:
    """--config, else RELSTEP_CONFIG; relative paths are made absolute now, while the cwd is known."""
    if config is None and os.environ.get("RELSTEP_CONFIG"):
        config = Path(os.environ["RELSTEP_CONFIG"])
    return None if config is None else config.expanduser().resolve()


def _tag_prefix(config: Path | None) -> str:
    """``tag_prefix`` from the config relstep run will read (default ``v``).

    Only this one key is read here, before relstep run validates the whole file: the hook
    must decide which tags are versions without failing a branch push over a config problem.
    """
    path = config if config is not None else Path("relstep.yml")
    if not path.is_file():
        return "v"
    import yaml

    from relstep import strict_yaml

    try:
        # Strictly, as relstep run reads it: an alias bomb must not hang the push here either.
        data = strict_yaml.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, strict_yaml.StrictYAMLError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read tag_prefix from {path}: {reason}") from None
    prefix = data.get("tag_prefix", "v") if isinstance(data, dict) else "v"
    if not isinstance(prefix, str):
        raise InputError(f"tag_prefix in {path} must be a string")
    return prefix


@hook_app.command("install")
@_exits_on_error
def install_command(
    hook: HookOption = Hook.pre_push,
    force: Annotated[bool, typer.Option("--force", help="Replace a hook relstep did not write.")] = False,
    repo: RepoOption = Path("."),
    config: Annotated[
        Path | None,
        typer.Option("--config", help="relstep.yml for the hook (stored as an absolute path; needed in a bare repo)."),
    ] = None,
    global_hooks_path: Annotated[
        bool,
        typer.Option("--global-hooks-path",
                     help="Install into the core.hooksPath of your global git config (every repository using it)."),
    ] = False,
) -> None:
    """Install a hook that runs `relstep run --version <tag>` for each version tag pushed."""
    installed = hooks.install_hook(repo, hook.value, force, config=_config_path(config),
                                   global_hooks_path=global_hooks_path)
    typer.echo(f"installed {hook.value} hook at {installed.path}")
    for note in installed.notes:
        typer.echo(f"note: {note}")


@hook_app.command("uninstall")
@_exits_on_error
def uninstall_command(hook: HookOption = Hook.pre_push, repo: RepoOption = Path(".")) -> None:
    """Remove relstep's hook; a hook relstep did not write is left untouched."""
    if hooks.uninstall(repo, hook.value):
        typer.echo(f"removed relstep's {hook.value} hook")
    else:
        typer.echo(f"no relstep {hook.value} hook installed; nothing removed")


@hook_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@_exits_on_error
def run_command(
    ctx: typer.Context,
    hook: Annotated[Hook, typer.Argument(help="The hook git is running.")],
    config: Annotated[Path | None, typer.Option("--config", help="relstep.yml (default: RELSTEP_CONFIG).")] = None,
    tag_prefix: Annotated[str | None, typer.Option("--tag-prefix", help="Default: tag_prefix in the config.")] = None,
) -> None:
    """Called by the installed hook: reads git's ref lines on stdin (git's own arguments are ignored)."""
    del ctx  # git passes `<remote> <url>` to pre-push; they are accepted and not needed.
    if os.environ.get("PRE_COMMIT") == "1":
        # Under the pre-commit framework git's stdin was consumed by pre-commit itself.
        lines = hooks.pre_commit_lines(os.environ)
    elif sys.stdin is None or sys.stdin.isatty():
        lines = []  # run by hand in a terminal: nothing to read, and no hang waiting for input
    else:
        lines = sys.stdin.read().splitlines()
    path = _config_path(config)
    prefix = tag_prefix if tag_prefix is not None else _tag_prefix(path)
    code = hooks.run_hook(
        hook.value, lines, tag_prefix=prefix, config=path, log=lambda line: typer.echo(line, err=True)
    )
    raise typer.Exit(code)
