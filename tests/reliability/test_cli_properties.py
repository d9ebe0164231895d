"""Property: whatever arguments, relstep.yml and environment a user gives, the CLI ends with an exit
code the README documents, never a traceback, and a failed run changes nothing.

hypothesis drives the real Typer app in-process (the same commands, config loading, engines and
files as `python -m relstep`, without a new interpreter per example) against a SQLite app in a
temporary folder. Each example is checked against the state just before it: a run that fails must
leave every file of the app (bytes, modes, mtimes, links; the snapshot folder included) and every
ReleaseRecord row as they were. A run that succeeds may change them; the next example starts from
there. Deploy commands are never generated: `run` gets no `--`, so nothing but relstep runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from relstep.cli import app as relstep_app
from tests.helpers import clean_env, sqlite_app
from tests.reliability.support import fingerprint, record_rows

# The README's exit code table (130/143 need a signal, which no example sends).
DOCUMENTED_EXIT_CODES = {0, 2, 3, 4, 5, 6, 7, 8, 9}

BASE_CONFIG = """\
backup_root: backups/releases
retention: 30
database:
  url: sqlite:///app.db
code:
  backend: backend
migrations:
  tool: none
environment: {}
"""

# Scalars users write by hand (and by mistake); YAML 1.1 reads several of them as numbers.
SCALARS = ["3", "010", "0x1F", "1:30", "1_000", "0o17", "1e3", "-1", "0", "yes", "on", "~", "''", "'5'",
           "2024-01-01", ".inf", ".nan", "[1, 2]", "{a: 1}", "&a [*a]", "!!python/name:os.getcwd ''",
           "${RETENTION:-4}", "${RETENTION:?set RETENTION}", "${1BAD}", "$${X}", "${UNSET_PROPERTY_VAR}"]
URLS = ["sqlite:///app.db", "file:./app.db", " sqlite:///app.db\n", "sqlite:///missing/dir/x.db",
        "postgresql://u:pw@127.0.0.1:abc/db", "mysql://root@127.0.0.1:99999/db", "oracle://h/db",
        "mysql://root@127.0.0.1:1/db?ssl_ca=/nonexistent.pem", "${DATABASE_URL:-sqlite:///app.db}", "", "::"]
TABLES = ["ReleaseRecord", "main.ReleaseRecord", "app.ReleaseRecord", "a.b.c", ".x", "Release Record"]
BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(6))

# Whole files a user could have written, each one of the cases.
WHOLE_CONFIGS = [
    BASE_CONFIG.replace("retention: 30", "retention: 010"),
    BASE_CONFIG.replace("retention: 30", "retention: 1:30"),
    BASE_CONFIG + "retention: 5\n",
    BASE_CONFIG.replace("  url: sqlite:///app.db", "  url: ${DB:-sqlite:///app.db}"),
    BASE_CONFIG.replace("  url: sqlite:///app.db", "  url: ${DB:?set DB}"),
    BASE_CONFIG.replace("  url: sqlite:///app.db", "  url: postgresql://u:pw@127.0.0.1:abc/db"),
    BASE_CONFIG.replace("  url: sqlite:///app.db", "  url: mysql://root@127.0.0.1:1/db?ssl_ca=/nonexistent.pem"),
    BASE_CONFIG + "record:\n  table: main.ReleaseRecord\n",
    BASE_CONFIG + "record:\n  table: a.b.c\n",
    BASE_CONFIG.replace("code:\n  backend: backend", "code: &a [*a]"),
    BOMB,
]

env_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
arg_text = st.one_of(st.sampled_from(["1.2.3", "v1.2.3", "1.2", "latest", "", "-1", "nan", "inf", "0", "1e3",
                                      "../../etc", "/etc", "--json", "--config", "-x"]), env_text)


@st.composite
def config_text(draw: st.DrawFn) -> str:
    lines = BASE_CONFIG.splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["retention", "url", "table", "duplicate", "unknown", "bomb", "raw", "drop"]))
        if kind == "retention":
            _put(lines, 1, f"retention: {draw(st.sampled_from(SCALARS))}\n")
        elif kind == "url":
            _put(lines, 3, f"  url: {draw(st.sampled_from(URLS))!r}\n".replace("'", '"'))
        elif kind == "table":
            lines.append(f"record:\n  table: {draw(st.sampled_from(TABLES))!r}\n")
        elif kind == "duplicate" and lines:
            lines.append(draw(st.sampled_from(lines)))
        elif kind == "unknown":
            lines.append(f"{draw(st.sampled_from(['retension', 'projects', 'x']))}: 1\n")
        elif kind == "bomb":
            lines = [BOMB]
        elif kind == "raw":
            lines.append(f"tag_prefix: {draw(st.sampled_from(SCALARS))}\n")
        elif lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
    return "".join(lines)


def _put(lines: list[str], index: int, line: str) -> None:
    """Replace line ``index`` of the base file, or add the line when earlier edits shortened it."""
    if index < len(lines):
        lines[index] = line
    else:
        lines.append(line)


@st.composite
def command(draw: st.DrawFn) -> list[str]:
    value = draw(arg_text)
    # Mostly a good version, so that the other inputs are what the run trips over (if anything).
    version = draw(st.one_of(st.sampled_from(["1.2.3", "2.0.0-rc.1", "3.0.0+build.7"]), arg_text))
    choices = [
        ["backup", "--version", version],
        ["run", "--version", draw(st.sampled_from(["1.2.3", "2.0.0-rc.1"])), "--keep", value],
        ["run", "--version", version, "--lock-timeout", draw(arg_text)],
        ["prune", "--keep", value],
        ["list", *draw(st.sampled_from([[], ["--json"]]))],
        ["show", value],
        ["verify", value],
        ["record", "--snapshot", value],
        ["restore", value, "--check-only"],
        [value],
        ["--config", draw(st.sampled_from(["relstep.yml", "nope.yml", "/etc/passwd", value])), "list"],
    ]
    return draw(st.sampled_from(choices))


@st.composite
def environment(draw: st.DrawFn) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in draw(st.sets(st.sampled_from(["DATABASE_URL", "RELEASE_BACKUP_RETENTION_COUNT", "RELSTEP_VERSION",
                                              "RELSTEP_DEPLOYMENT_TYPE", "RETENTION"]), max_size=3)):
        env[name] = draw(st.one_of(env_text, st.sampled_from(URLS + SCALARS)))
    return env


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = sqlite_app(tmp_path_factory.mktemp("properties"))
    (path / "relstep.yml").write_text(BASE_CONFIG)
    return path


def _state(app: Path) -> tuple[dict[str, tuple], list]:
    tree = fingerprint(app, lambda rel: rel == ".git" or rel.startswith(".git/"))
    # A failed backup creates and removes its partial folder: backup_root's own mtime may move.
    if tree.get("backups/releases", ("",))[0] == "dir":
        tree["backups/releases"] = tree["backups/releases"][:2]
    if tree.get("backups", ("",))[0] == "dir":
        tree["backups"] = tree["backups"][:2]
    try:
        rows = record_rows(f"sqlite:///{app / 'app.db'}")
    except Exception as exc:  # the table may not exist yet; that is a state too
        rows = [type(exc).__name__]
    return tree, rows


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command(), config=st.one_of(st.just(BASE_CONFIG), config_text(), st.sampled_from(WHOLE_CONFIGS)),
       env=environment())
def test_any_input_exits_with_a_documented_code_and_a_failure_changes_nothing(
    app: Path, argv: list[str], config: str, env: dict[str, str]
) -> None:
    check_one_run(app, argv, config, env)


# hypothesis may not draw every whole file above in its bounded examples: each is also run on its own.
@pytest.mark.parametrize("argv", [["backup", "--version", "1.2.3"], ["list"], ["prune", "--keep", "1"]],
                         ids=["backup", "list", "prune"])
@pytest.mark.parametrize("config", WHOLE_CONFIGS, ids=[f"config{i}" for i in range(len(WHOLE_CONFIGS))])
def test_each_bad_file_of_the_corpus(app: Path, argv: list[str], config: str) -> None:
    check_one_run(app, argv, config, {})


def check_one_run(app: Path, argv: list[str], config: str, env: dict[str, str]) -> None:
    (app / "relstep.yml").write_text(config)
    before = _state(app)
    base_env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    with contextlib.chdir(app), _only(base_env):
        result = CliRunner().invoke(relstep_app, argv, env=env, catch_exceptions=True)
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, config, env, output)
    assert "Traceback" not in output, (argv, config, env, output)
    assert result.exit_code in DOCUMENTED_EXIT_CODES, (result.exit_code, argv, config, env, output)
    if result.exit_code != 0:
        # One line says why: relstep's `<phase> failed: <reason>`, or click's for a usage error.
        last = output.strip().splitlines()[-1] if output.strip() else ""
        assert last.startswith(("relstep: ", "Error: ")), (argv, config, env, output)
        assert _state(app) == before, (argv, config, env, output)
        assert (app / "relstep.yml").read_text() == config


@contextlib.contextmanager
def _only(environ: dict[str, str]):  # type: ignore[no-untyped-def]
    """os.environ reduced to ``environ`` (CliRunner's env= only adds and overrides)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
