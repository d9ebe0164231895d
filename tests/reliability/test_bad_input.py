"""A corpus of bad input: each case gives one clear line, its documented exit code, and changes nothing.

Every case runs the real CLI on a copy of one app that already has two snapshots (the older one
recorded in ReleaseRecord).  Before and after, the whole app folder is fingerprinted (every file's
bytes, mode and mtime, every folder's mode and mtime, every link) and the ReleaseRecord rows read:
both must be identical afterwards.  stderr must be exactly one line, `relstep: <phase> failed:
<reason>`, matched in full against the case's pattern.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relstep.snapshot import SNAPSHOT_NAME
from tests.helpers import clean_env, git, relstep, sqlite_app
from tests.reliability.support import fingerprint, record_rows, visible

WHOLE = "a whole number from 1 to 100000"
NOT_A_VERSION = re.escape("is not a version; use MAJOR.MINOR.PATCH such as v1.2.3 or v1.2.3-rc.1")
LONG_VERSION = "1.2.3-" + "a" * 294  # 300 characters


@dataclass
class Ctx:
    """What a case's setup and placeholders can use."""

    app: Path
    root: Path
    newest: str
    oldest: str
    fixtures: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str, escape: bool = False) -> str:
        values = {"app": str(self.app), "root": str(self.root), "newest": self.newest, "oldest": self.oldest,
                  **self.fixtures}
        for key, value in values.items():
            text = text.replace("{" + key + "}", re.escape(value) if escape else value)
        return text


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    message: str                                  # regex for the one stderr line; {placeholders} allowed
    config: str | None = None                     # replaces relstep.yml (with {placeholders})
    env: tuple[tuple[str, str], ...] = ()
    setup: Callable[[Ctx], None] | None = None
    needs: tuple[str, ...] = ()                   # fixtures (database URLs) the case uses


RUN = ("run", "--version", "9.0.0")
SERVER_CONFIG = "database:\n  url: '{url}'\nrecord:\n  url: sqlite:///app.db\nenvironment: {{}}\n"


def _config(url: str) -> str:
    return SERVER_CONFIG.replace("{url}", url).replace("{{}}", "{}")


def _tag(name: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        git("tag", name, cwd=ctx.app)

    return setup


def _write(rel: str, data: bytes) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        (ctx.app / rel).write_bytes(data)

    return setup


def _backup_root_file(ctx: Ctx) -> None:
    shutil.rmtree(ctx.root)
    ctx.root.write_text("not a folder\n")


def _backup_root_link(ctx: Ctx) -> None:
    shutil.rmtree(ctx.root)
    ctx.root.symlink_to("/")


def _manifest(transform: Callable[[str], str]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        manifest = ctx.root / ctx.newest / "MANIFEST.json"
        manifest.write_text(transform(manifest.read_text()))

    return setup


def _drop_key(key: str) -> Callable[[str], str]:
    import json

    def transform(text: str) -> str:
        data = json.loads(text)
        del data[key]
        return json.dumps(data)

    return transform


def _files_as_list(text: str) -> str:
    import json

    data = json.loads(text)
    data["files"] = list(data["files"])
    return json.dumps(data)


def _tampered_hash(text: str) -> str:
    import json

    data = json.loads(text)
    data["files"]["VERSION.txt"]["sha256"] = "0" * 64
    return json.dumps(data)


def _extra_file(ctx: Ctx) -> None:
    extra = ctx.root / ctx.newest / "code" / "backend" / "planted.js"
    extra.write_text("// not from relstep\n")
    extra.chmod(0o600)


def _changed_dump(ctx: Ctx) -> None:
    dump = ctx.root / ctx.newest / "databases" / "main" / "database.sqlite3.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))


def _old_pg_dump(ctx: Ctx) -> None:
    """A PATH shim named pg_dump that claims 9.6 (a client older than the 15 server); it never dumps."""
    shims = ctx.app.parent / "shims"
    shims.mkdir()
    shim = shims / "pg_dump"
    shim.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 9.6.0"; exit 0; fi\n'
                    'echo "the shim must never be asked to dump" >&2\nexit 1\n')
    shim.chmod(0o755)
    ctx.env["PATH"] = f"{shims}:{ctx.env['PATH']}"


CASES = [
    # --- versions and tags ----------------------------------------------------------------------
    Case("version-latest", ("run", "--version", "latest"), 2,
         f"relstep: version failed: --version 'latest' {NOT_A_VERSION}"),
    Case("version-1.2", ("run", "--version", "1.2"), 2, rf"relstep: version failed: --version '1\.2' {NOT_A_VERSION}"),
    Case("version-shell", ("run", "--version", "v1.2.3;rm -rf /"), 2,
         rf"relstep: version failed: --version 'v1\.2\.3;rm -rf /' {NOT_A_VERSION}"),
    Case("version-path", ("backup", "--version", "../../x"), 2,
         rf"relstep: version failed: --version '\.\./\.\./x' {NOT_A_VERSION}"),
    Case("version-empty", ("run", "--version", ""), 2,
         re.escape("relstep: version failed: --version is empty; give a version such as 1.2.3 (or a tag such as "
                   "v1.2.3)")),
    Case("version-300-chars", ("run", "--version", LONG_VERSION), 2,
         rf"relstep: version failed: --version '1\.2\.3-{'a' * 54}\.\.\.' {NOT_A_VERSION}"),
    Case("version-env-empty", ("run",), 2,
         re.escape("relstep: version failed: RELSTEP_VERSION is empty; give a version such as 1.2.3 (or a tag "
                   "such as v1.2.3)"), env=(("RELSTEP_VERSION", ""),)),
    Case("version-github-ref", ("run",), 2, rf"relstep: version failed: GITHUB_REF_NAME '\.\./\.\./x' {NOT_A_VERSION}",
         env=(("GITHUB_REF_TYPE", "tag"), ("GITHUB_REF_NAME", "../../x"))),
    Case("version-gitlab-tag", ("run",), 2,
         rf"relstep: version failed: CI_COMMIT_TAG 'v1\.2\.3;rm -rf /' {NOT_A_VERSION}",
         env=(("CI_COMMIT_TAG", "v1.2.3;rm -rf /"),)),
    Case("tag-latest-at-head", ("run",), 2,
         r"relstep: version failed: no tag at HEAD looks like vMAJOR\.MINOR\.PATCH \(found latest\); "
         r"tag the release \(git tag v1\.2\.3\) or pass --version", setup=_tag("latest")),
    Case("no-tag-at-head", ("run",), 2,
         r"relstep: version failed: no tag points at HEAD; tag the release \(git tag v1\.2\.3\) or pass --version "
         r"/ set RELSTEP_VERSION"),
    Case("type-hotfix", ("run", "--version", "1.2.3", "--type", "hotfix"), 2,
         "relstep: version failed: --type must be release or patch, got 'hotfix'"),
    Case("type-env", ("run", "--version", "1.2.3"), 2,
         "relstep: version failed: RELSTEP_DEPLOYMENT_TYPE must be release or patch, got 'Release'",
         env=(("RELSTEP_DEPLOYMENT_TYPE", "Release"),)),
    # --- retention: in relstep.yml and as `run --keep` --------------------------------------------
    *[Case(f"retention-yaml-{i}", RUN, 2,
           rf"relstep: config failed: {{app}}/relstep\.yml: retention must be {WHOLE}, got {shown}; "
           "nothing was deleted",
           config=f"retention: {value}\ndatabase:\n  url: sqlite:///app.db\n")
      for i, (value, shown) in enumerate([("0", "0"), ("-1", "-1"), ("abc", "'abc'"), ("1.5", "1.5"),
                                          ("1e3", "1000\\.0"), ("''", "''"),
                                          ("100000000000000000000", "100000000000000000000")])],
    *[Case(f"retention-keep-{i}", (*RUN, f"--keep={value}"), 2,
           rf"relstep: config failed: --keep must be {WHOLE}, got '{re.escape(value)}'; nothing was deleted")
      for i, value in enumerate(["0", "-1", "abc", "1.5", "1e3", "", "100000000000000000000"])],
    # --- YAML -------------------------------------------------------------------------------------
    Case("yaml-syntax", RUN, 2, r"relstep: config failed: {app}/relstep\.yml: invalid YAML at line \d+, column \d+: .+",
         config="backup_root: [unclosed\ndatabase: {url: x\n"),
    Case("yaml-tab-indent", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: invalid YAML at line 2, column 1: found character '\\t' "
         r"that cannot start any token",
         config="database:\n\turl: sqlite:///app.db\n"),
    Case("yaml-unknown-key", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: unknown key 'retension'; see docs/configuration\.md for "
         r"the keys relstep reads", config="retension: 3\n"),
    Case("yaml-unknown-nested-key", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: unknown key 'database\.uri'; see docs/configuration\.md "
         r"for the keys relstep reads", config="database:\n  uri: sqlite:///app.db\n"),
    Case("yaml-code-is-a-list", RUN, 2, r"relstep: config failed: {app}/relstep\.yml: code: .*dict.*",
         config="database:\n  url: sqlite:///app.db\ncode: [backend, frontend]\n"),
    Case("yaml-redact-is-a-string", RUN, 2, r"relstep: config failed: {app}/relstep\.yml: database\.redact: .*list.*",
         config="database:\n  url: sqlite:///app.db\n  redact: User.password\n"),
    Case("yaml-backup-root-number", RUN, 2, r"relstep: config failed: {app}/relstep\.yml: backup_root: .*string.*",
         config="backup_root: 5\ndatabase:\n  url: sqlite:///app.db\n"),
    Case("yaml-unset-variable", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: database\.url uses \$\{RELSTEP_TEST_UNSET_VARIABLE\}, but the "
         r"environment variable RELSTEP_TEST_UNSET_VARIABLE is not set",
         config="database:\n  url: ${RELSTEP_TEST_UNSET_VARIABLE}\n"),
    Case("yaml-python-object", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: invalid YAML at line 1, column 1: could not determine a "
         r"constructor for the tag 'tag:yaml\.org,2002:python/object/apply:os\.system'",
         config="!!python/object/apply:os.system ['touch PWNED']\n"),
    Case("yaml-python-name", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: invalid YAML at line 1, column 14: could not determine a "
         r"constructor for the tag 'tag:yaml\.org,2002:python/name:os\.getcwd'",
         config="backup_root: !!python/name:os.getcwd ''\n"),
    Case("yaml-top-level-list", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: the top level must be a mapping of keys, not list",
         config="- backup_root\n- database\n"),
    Case("yaml-unknown-migration-tool", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: migrations\.tool 'liquibase' is not one of .*",
         config="database:\n  url: sqlite:///app.db\nmigrations:\n  tool: liquibase\n"),
    Case("yaml-unsupported-scheme", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: database\.url: unsupported database URL scheme oracle://; "
         r"use one of .*",
         config="database:\n  url: oracle://scott:tiger@db/orcl\n"),
    Case("yaml-code-name-traversal", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: code: name '\.\./x' must be letters, digits, '-', '_' or '\.'",
         config="database:\n  url: sqlite:///app.db\ncode:\n  ../x: backend\n"),
    Case("yaml-duplicate-key", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: line 3: key 'retention' is given twice \(first on line 1\); "
         r"keep one", config="retention: 3\ntag_prefix: v\nretention: 5\ndatabase:\n  url: sqlite:///app.db\n"),
    *[Case(f"yaml-1.1-number-{value}", RUN, 2,
           rf"relstep: config failed: {{app}}/relstep\.yml: line 1: {re.escape(value)} is not a plain decimal number; "
           r"relstep reads YAML 1\.2, where it would not mean what YAML 1\.1 makes of it: write decimal digits for a "
           rf"number, or quote it \('{re.escape(value)}'\) for text",
           config=f"retention: {value}\ndatabase:\n  url: sqlite:///app.db\n")
      for value in ("010", "1:30", "0x1F")],
    Case("yaml-billion-laughs", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: line \d+: the aliases here expand to more than 10000 values; "
         r"write the values out instead of nesting aliases",
         config="code:\n  a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
             f"  {chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))),
    Case("yaml-recursive-alias", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: line 1: an alias refers to the value that contains it "
         r"\(a recursive alias\); remove it", config="code: &a [*a]\n"),
    Case("yaml-required-variable", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: database\.url: RELSTEP_TEST_UNSET_VARIABLE is not set: "
         r"export the app's database URL",
         config="database:\n  url: ${RELSTEP_TEST_UNSET_VARIABLE:?export the app's database URL}\n"),
    Case("url-port-not-a-number", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: DATABASE_URL "
         r"postgresql://app:\*\*\*@127\.0\.0\.1:fivefour/app has a port that is not a number from 1 to 65535; "
         r"write host:PORT, and percent-encode ':' '/' '@' in the password",
         setup=_write("relstep.yml", b"retention: 3\n"),
         env=(("DATABASE_URL", "postgresql://app:Pw-7f3c9e-never-leak@127.0.0.1:fivefour/app\n"),)),
    # Command-line URLs are read as database.url is (trimmed, checked before anything connects).
    Case("restore-url-port-not-a-number", ("restore", "{newest}", "--yes", "--database-url",
                                           "postgresql://app:Pw-7f3c9e-never-leak@127.0.0.1:fivefour/app\n"), 2,
         r"relstep: restore failed: --database-url postgresql://app:\*\*\*@127\.0\.0\.1:fivefour/app has a port "
         r"that is not a number from 1 to 65535; write host:PORT, and percent-encode ':' '/' '@' in the password"),
    Case("verify-scratch-url-port-not-a-number", ("verify", "{newest}", "--restore-test", "--scratch-url",
                                                  " mysql://app:Pw-7f3c9e-never-leak@127.0.0.1:99999/app"), 2,
         r"relstep: verify failed: --scratch-url mysql://app:\*\*\*@127\.0\.0\.1:99999/app has a port that is "
         r"not a number from 1 to 65535; write host:PORT, and percent-encode ':' '/' '@' in the password"),
    Case("url-ssl-ca-missing", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: database\.url mysql://app:\*\*\*@127\.0\.0\.1:3306/app"
         r"\?ssl_ca=/nonexistent/ca\.pem: ssl_ca=/nonexistent/ca\.pem does not exist; fix the path \(relative paths "
         r"are read from the working directory\) or remove the parameter",
         config=_config("mysql://app:Pw-7f3c9e-never-leak@127.0.0.1:3306/app?ssl_ca=/nonexistent/ca.pem")),
    Case("record-table-two-dots", RUN, 2,
         r"relstep: config failed: {app}/relstep\.yml: record\.table: 'a\.b\.c' must be TABLE or SCHEMA\.TABLE "
         r"\(one dot at most, neither part empty\)",
         config="database:\n  url: sqlite:///app.db\nrecord:\n  table: a.b.c\n"),
    Case("config-file-missing", ("--config", "nowhere.yml", *RUN), 2,
         r"relstep: config failed: config file nowhere\.yml not found; pass an existing file to --config or "
         r"RELSTEP_CONFIG"),
    Case("config-not-utf8", RUN, 2, r"relstep: config failed: cannot read {app}/relstep\.yml: .*utf-8.*",
         setup=_write("relstep.yml", b"database:\n  url: sqlite:///app.db\n# \xff\xfe caf\xe9\n")),
    # --- paths ------------------------------------------------------------------------------------
    Case("code-folder-missing", RUN, 2,
         r"relstep: config failed: code folder 'api' \({app}/services/api\) does not exist or is not a directory; "
         r"fix code\.api", config="database:\n  url: sqlite:///app.db\ncode:\n  api: services/api\n"),
    Case("backup-root-is-a-file", RUN, 2,
         r"relstep: config failed: backup_root {root} is a file, not a directory; point backup_root at a directory",
         setup=_backup_root_file),
    Case("backup-root-links-to-slash", RUN, 2,
         r"relstep: config failed: backup_root {root} is a symlink, not a directory; point backup_root at a "
         r"directory", setup=_backup_root_link),
    Case("show-dotdot-etc", ("show", "../../etc"), 2,
         r"relstep: input failed: no snapshot '\.\./\.\./etc' in {root}; run `relstep list` to see the snapshots"),
    Case("show-absolute-etc", ("show", "/etc"), 2,
         r"relstep: input failed: '/etc' is not a finished snapshot inside {root}; run `relstep list` to see the "
         r"snapshots"),
    Case("show-escape-from-snapshot", ("show", "{newest}/../../.."), 2,
         r"relstep: input failed: no snapshot '{newest}/\.\./\.\./\.\.' in {root}; run `relstep list` to see "
         r"the snapshots"),
    Case("record-dotdot-etc", ("record", "--snapshot", "../../etc"), 2,
         r"relstep: input failed: no snapshot '\.\./\.\./etc' in {root}; run `relstep list` to see the snapshots"),
    Case("restore-dotdot-etc", ("restore", "../../etc", "--yes"), 2,
         r"relstep: input failed: no snapshot '\.\./\.\./etc' in {root}; run `relstep list` to see the snapshots"),
    Case("verify-dotdot-etc", ("verify", "../../etc"), 2,
         r"relstep: input failed: no snapshot '\.\./\.\./etc' in {root}; run `relstep list` to see the snapshots"),
    # --- databases (the backup phase: exit 3) ------------------------------------------------------
    Case("mariadb-wrong-password", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: cannot connect to MariaDB/MySQL at mysql://(\w+):\*\*\*@127\.0\.0\.1:3306/\w+: "
         r"access denied for user '\1'; check the user name and password",
         config="database:\n  url: '{mysql_wrong_password}'\nrecord:\n  url: sqlite:///app.db\nenvironment: {}\n",
         needs=("mysql_wrong_password",)),
    Case("postgres-unknown-host", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: unknown database host no-such-host\.invalid in "
         r"postgresql://app:\*\*\*@no-such-host\.invalid:5432/app; check the host name",
         config=_config("postgresql://app:Pw-7f3c9e-never-leak@no-such-host.invalid:5432/app")),
    Case("mariadb-unknown-host", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: cannot connect to MariaDB/MySQL at "
         r"mysql://app:\*\*\*@no-such-host\.invalid:3306/app: cannot resolve host 'no-such-host\.invalid'",
         config=_config("mysql://app:Pw-7f3c9e-never-leak@no-such-host.invalid:3306/app")),
    Case("postgres-no-such-database", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: database relstep_no_such_db does not exist on PostgreSQL at 127\.0\.0\.1:5432 "
         r"\(postgresql://postgres:\*\*\*@127\.0\.0\.1:5432/relstep_no_such_db\); create it or fix the URL",
         config=_config("postgresql://postgres:Pw-7f3c9e-never-leak@127.0.0.1:5432/relstep_no_such_db"),
         needs=("pg_admin_url",)),
    Case("mariadb-no-such-database", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: cannot connect to MariaDB/MySQL at mysql://root@127\.0\.0\.1:3306/"
         r"relstep_no_such_db: database 'relstep_no_such_db' does not exist",
         config=_config("mysql://root@127.0.0.1:3306/relstep_no_such_db"), needs=("mysql_url",)),
    Case("postgres-refused", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: PostgreSQL at 127\.0\.0\.1:1 refused the connection to database app "
         r"\(postgresql://app:\*\*\*@127\.0\.0\.1:1/app\); is the server running\?",
         config=_config("postgresql://app:Pw-7f3c9e-never-leak@127.0.0.1:1/app")),
    Case("pg-dump-older-than-server", ("backup", "--version", "9.0.0"), 3,
         r"relstep: backup failed: pg_dump 9 is older than the PostgreSQL 1\d server at 127\.0\.0\.1:5432; "
         r"install a PostgreSQL client of version 1\d or newer",
         config="database:\n  url: '{pg_url}'\nrecord:\n  url: sqlite:///app.db\nenvironment: {}\n",
         setup=_old_pg_dump, needs=("pg_url",)),
    # --- damaged snapshots ------------------------------------------------------------------------
    Case("manifest-not-json", ("show", "{newest}"), 2,
         r"relstep: input failed: cannot read {root}/{newest}/MANIFEST\.json: .+",
         setup=_manifest(lambda text: text[: len(text) // 2])),
    Case("manifest-without-version", ("record", "--snapshot", "{newest}"), 2,
         r"relstep: input failed: {root}/{newest}/MANIFEST\.json is not a relstep manifest: it has no version",
         setup=_manifest(_drop_key("version"))),
    Case("manifest-files-not-a-map", ("show", "{newest}"), 2,
         r"relstep: input failed: {root}/{newest}/MANIFEST\.json is not a relstep manifest: files is not a mapping",
         setup=_manifest(_files_as_list)),
    Case("manifest-tampered-hash", ("verify", "{newest}"), 8, r"relstep: verify failed: .*VERSION\.txt.*",
         setup=_manifest(_tampered_hash)),
    Case("snapshot-extra-file", ("verify", "{newest}"), 8, r"relstep: verify failed: .*code/backend/planted\.js.*",
         setup=_extra_file),
    Case("snapshot-changed-dump", ("verify", "{newest}"), 8,
         r"relstep: verify failed: .*databases/main/database\.sqlite3\.zst.*", setup=_changed_dump),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An app with two snapshots; the older one recorded."""
    app = sqlite_app(tmp_path_factory.mktemp("bad-input"))
    assert relstep("run", "--version", "1.0.0", cwd=app).code == 0
    assert relstep("backup", "--version", "1.0.1", cwd=app).code == 0
    return app


def _copy(template: Path, dest: Path) -> Path:
    app = dest / "app"
    shutil.copytree(template, app, symlinks=True)
    with sqlite3.connect(app / "app.db") as conn:  # the recorded paths follow the copy
        conn.execute('UPDATE "ReleaseRecord" SET "backupPath" = replace("backupPath", ?, ?)',
                     (str(template), str(app)))
    return app


@pytest.fixture
def mysql_wrong_password(mysql_password_url: str) -> str:
    return mysql_password_url.replace("Pw-7f3c9e-never-leak", "wrong-password")


def test_the_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_its_exit_code_and_no_change(
    case: Case, template: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    app = _copy(template, tmp_path)
    root = app / "backups" / "releases"
    names = [p.name for p in visible(root)]
    ctx = Ctx(app, root, newest=names[-1], oldest=names[0],
              fixtures={name: request.getfixturevalue(name) for name in case.needs}, env=clean_env(**dict(case.env)))
    if case.config is not None:
        (app / "relstep.yml").write_text(ctx.fill(case.config))
    if case.setup is not None:
        case.setup(ctx)
    not_git = lambda rel: rel == ".git" or rel.startswith(".git/")  # noqa: E731 - git refreshes its index
    before = fingerprint(app, not_git)
    rows = record_rows(f"sqlite:///{app / 'app.db'}")

    top_before = set(os.listdir("/"))
    try:
        ran = relstep(*(ctx.fill(arg) for arg in case.argv), cwd=app, env=ctx.env)
    finally:
        # backup_root -> / once made relstep write its snapshot into /: never leave one there.
        leaked = set(os.listdir("/")) - top_before
        for name in leaked:
            if SNAPSHOT_NAME.match(name) and Path("/", name, "MANIFEST.json").is_file():
                shutil.rmtree(Path("/", name))
            elif name == ".relstep.lock":
                Path("/", name).unlink()
    assert not leaked, f"relstep wrote {sorted(leaked)} into /"

    assert ran.code == case.code, ran.err
    assert ran.err.count("\n") == 1 and ran.err.endswith("\n"), ran.err
    assert re.fullmatch(ctx.fill(case.message, escape=True), ran.err.rstrip("\n")), ran.err
    assert "Pw-7f3c9e-never-leak" not in ran.out + ran.err
    after = fingerprint(app, not_git)
    # A failed backup creates and removes its partial folder: backup_root's own mtime may move.
    for state in (before, after):
        if "backups/releases" in state and state["backups/releases"][0] == "dir":
            state["backups/releases"] = state["backups/releases"][:2]
    assert after == before
    assert record_rows(f"sqlite:///{app / 'app.db'}") == rows
