"""Projects whose migration tables are written by the REAL tools: Prisma, Alembic, Django.

Test-only dependencies: alembic, django (plus psycopg for PostgreSQL, already in
the ``postgres`` extra); Prisma needs ``node`` and ``npm`` on PATH and the npm
registry once (the install is cached, see ``prisma_cli``).

Each fixture builds a project, lets the real tool apply all but its last
migration(s) and returns a :class:`RealProject`.  The expensive ones are session
scoped, and kept in ``config.stash`` so that importing them into several test
modules (``tests/test_compat.py`` and ``tests/migrations/``) still builds each
once per session.  Alembic and Django run as subprocesses: their ``env.py`` /
settings would otherwise reconfigure logging inside the test process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relstep.databases import create_engine, sqlalchemy_url
from relstep.migrations import MigrationState, read_state

PRISMA_VERSION = "6.19.3"
ADAPTER_PG_VERSION = "7.10.1"
REQUIRE_SERVICES = os.environ.get("RELSTEP_TEST_REQUIRE_SERVICES") == "1"
ENGINES = ["sqlite", "postgresql"]


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(reason + " and RELSTEP_TEST_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(reason)


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv[:4]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@dataclass
class RealProject:
    """A project with its database at "backup time": some migrations applied, some pending."""

    tool: str
    url: str
    project_dir: Path
    migrations_path: str                  # relative to project_dir
    applied: list[str]                    # what the real tool applied, in order
    pending: list[str]                    # on disk, not applied
    remove: dict[str, Path] = field(default_factory=dict)   # name -> file or folder holding it
    source: dict[str, Path] = field(default_factory=dict)   # name -> the file to edit
    edit_line: str = ""                   # a meaningful change to a migration file

    def read(self, url: str | None = None) -> MigrationState:
        engine = create_engine(url or self.url)
        try:
            with engine.connect() as conn:
                return read_state(conn, "auto", self.migrations_path, self.project_dir)
        finally:
            engine.dispose()

    def variant(self, dest: Path, kind: str) -> Path:
        """A copy of the project's code for one verdict: identical, compatible, unknown, checksum."""
        shutil.copytree(self.project_dir, dest, symlinks=True)

        def here(path: Path) -> Path:
            return dest / path.relative_to(self.project_dir)

        drop = {"identical": self.pending, "compatible": [], "unknown": [*self.pending, self.applied[-1]],
                "checksum": self.pending}[kind]
        for name in drop:
            target = here(self.remove[name])
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if kind == "checksum":
            with here(self.source[self.applied[-1]]).open("a", encoding="utf-8") as f:
                f.write(self.edit_line)
        return dest


def _once(request: pytest.FixtureRequest, key: str, build: Callable[[], Any]) -> Any:
    """``build()`` once per test session, however many modules import the fixture."""
    stash: dict[str, Any] = request.config.stash.setdefault(_STASH, {})
    if key not in stash:
        stash[key] = build()
    return stash[key]


_STASH = pytest.StashKey[dict]()


def session_database(request: pytest.FixtureRequest, engine: str) -> str:
    """A fresh database that lives until the end of the session.

    The same server settings as ``tests/conftest.py``; its helpers are not imported
    because another folder's ``conftest`` module can shadow that name.
    """
    if engine == "sqlite":
        folder = request.getfixturevalue("tmp_path_factory").mktemp("sqlite")
        return f"sqlite:///{folder / 'app.db'}"
    import psycopg

    host = os.environ.get("RELSTEP_TEST_PG_HOST", "127.0.0.1")
    port = int(os.environ.get("RELSTEP_TEST_PG_PORT", "5432"))
    user = os.environ.get("RELSTEP_TEST_PG_USER", "postgres")
    name = f"relstep_m_{uuid.uuid4().hex[:12]}"

    def admin(sql: str) -> None:
        with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # a fixed statement with a generated name

    try:
        admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable on {host}:{port}: {str(exc).splitlines()[0]}")
    request.config.add_cleanup(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return f"postgresql://{user}@{host}:{port}/{name}"


# ---------------------------------------------------------------- Prisma

# Prisma's WebAssembly schema engine leaves a 10 s timer armed after its work is
# done, so every command idles 10 s before exiting.  Unref-ing long timers lets
# node exit as soon as nothing else is pending; the command itself is unchanged.
UNREF_LONG_TIMERS = """\
const schedule = global.setTimeout;
global.setTimeout = function (fn, ms, ...args) {
  const timer = schedule(fn, ms, ...args);
  if (ms >= 5000 && timer && typeof timer.unref === "function") timer.unref();
  return timer;
};
"""

PRISMA_CONFIG = """\
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";
const u = new URL(process.env.DATABASE_URL!);
const pg = { host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username),
             password: decodeURIComponent(u.password), database: u.pathname.slice(1), idleTimeoutMillis: 200 };
export default defineConfig({ experimental: { adapter: true }, engine: "js", schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" }, async adapter() { return new PrismaPg(pg); } });
"""

PRISMA_HEADER = """\
generator client {
  provider   = "prisma-client-js"
  engineType = "client"
}

datasource db {
  provider = "postgresql"
  url      = env("DATABASE_URL")
}

model User {
  id       Int    @id @default(autoincrement())
  email    String @unique
  password String
}
"""

PRISMA_POST = """
model Post {
  id    Int    @id @default(autoincrement())
  title String
}
"""


def prisma_cli(request: pytest.FixtureRequest) -> Path:
    """node_modules holding prisma and @prisma/adapter-pg, installed once and cached.

    The cache lives in ``$RELSTEP_TEST_CACHE`` or pytest's cache dir
    (``.pytest_cache/d/``), so later sessions skip npm.  Install scripts are not run: Prisma's would try to
    download native engines, and ``migrate deploy`` here uses the WebAssembly one.
    """
    if not (shutil.which("node") and shutil.which("npm")):
        unavailable("node and npm are needed to run Prisma")
    name = f"prisma-{PRISMA_VERSION}-adapter-pg-{ADAPTER_PG_VERSION}"
    cache = getattr(request.config, "cache", None)   # None under -p no:cacheprovider
    if os.environ.get("RELSTEP_TEST_CACHE"):
        root = Path(os.environ["RELSTEP_TEST_CACHE"]) / name
    elif cache is not None:
        root = cache.mkdir(name)
    else:
        root = request.getfixturevalue("tmp_path_factory").mktemp(name)
    root.mkdir(parents=True, exist_ok=True)
    final = root / "node"
    if not (final / "node_modules" / "prisma" / "build" / "index.js").is_file():
        staging = root / f".node.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        (staging / "package.json").write_text('{"name": "relstep-prisma-fixture", "private": true}\n')
        packages = [f"prisma@{PRISMA_VERSION}", f"@prisma/adapter-pg@{ADAPTER_PG_VERSION}"]
        done = run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", *packages], staging, check=False)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            unavailable(f"npm install of Prisma failed: {done.stderr.strip().splitlines()[-1:]}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)   # only a complete install ever sits at ``final``
    (final / "unref-long-timers.js").write_text(UNREF_LONG_TIMERS)
    return final


def _build_prisma(request: pytest.FixtureRequest) -> RealProject:
    cli = prisma_cli(request)
    url = session_database(request, "postgresql")
    project = request.getfixturevalue("tmp_path_factory").mktemp("prisma-app")
    (project / "node_modules").symlink_to(cli / "node_modules", target_is_directory=True)
    (project / "prisma.config.ts").write_text(PRISMA_CONFIG)
    migrations = project / "prisma" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "migration_lock.toml").write_text('provider = "postgresql"\n')
    env = {"DATABASE_URL": url, "CHECKPOINT_DISABLE": "1", "PRISMA_HIDE_UPDATE_MESSAGE": "1"}

    def prisma(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        main = str(cli / "node_modules" / "prisma" / "build" / "index.js")
        return run(["node", "-r", str(cli / "unref-long-timers.js"), main, *args], project, env, check)

    def diff(name: str, before: Path | None) -> None:
        (migrations / name).mkdir()
        start = ["--from-schema-datamodel", str(before)] if before else ["--from-empty"]
        out = str(migrations / name / "migration.sql")
        prisma("migrate", "diff", *start, "--to-schema-datamodel", "prisma/schema.prisma", "--script", "-o", out)

    # Two migrations written by `migrate diff` from two versions of the schema.
    schema = project / "prisma" / "schema.prisma"
    schema.write_text(PRISMA_HEADER)
    diff("20260101000000_init", None)
    first = project / "v1.prisma"
    shutil.copy(schema, first)
    schema.write_text(PRISMA_HEADER + PRISMA_POST)
    diff("20260102000000_add_post", first)
    first.unlink()
    prisma("migrate", "deploy")

    # A third migration fails half-way (its first statement runs, then an error),
    # and is marked rolled back.  `migrate resolve --rolled-back` needs Prisma's
    # native engine, which cannot be downloaded here; it sets rolled_back_at on
    # the failed row, so the same UPDATE is issued directly.
    broken = migrations / "20260103000000_add_tags"
    broken.mkdir()
    (broken / "migration.sql").write_text(
        'CREATE TABLE "Tag" ("id" SERIAL PRIMARY KEY);\nSELECT * FROM "NoSuchTable";\n'
    )
    failed = prisma("migrate", "deploy", check=False)
    assert failed.returncode != 0, failed.stdout
    from sqlalchemy import text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE _prisma_migrations SET rolled_back_at = now() "
            "WHERE migration_name = :name AND finished_at IS NULL"
        ), {"name": broken.name})
    engine.dispose()
    return RealProject(
        tool="prisma", url=url, project_dir=project, migrations_path="prisma/migrations",
        applied=["20260101000000_init", "20260102000000_add_post"], pending=[broken.name],
        remove={p.name: p for p in migrations.iterdir() if p.is_dir()},
        source={p.name: p / "migration.sql" for p in migrations.iterdir() if p.is_dir()},
        edit_line='CREATE INDEX "Post_title_idx" ON "Post"("title");\n',
    )


# ---------------------------------------------------------------- Alembic

ALEMBIC_OPS = {
    "0001": 'op.create_table("users", sa.Column("id", sa.Integer, primary_key=True), sa.Column("email", sa.Text))',
    "0002": 'op.create_table("posts", sa.Column("id", sa.Integer, primary_key=True), sa.Column("title", sa.Text))',
    "0003": 'op.add_column("posts", sa.Column("body", sa.Text))',
}


def _alembic(project: Path, *args: str) -> None:
    run([sys.executable, "-m", "alembic", "-c", str(project / "alembic.ini"), *args], project)


def _alembic_template(request: pytest.FixtureRequest) -> Path:
    """A project made by `alembic init` with three revisions made by `alembic revision`."""
    project = request.getfixturevalue("tmp_path_factory").mktemp("alembic-template")
    run([sys.executable, "-m", "alembic", "init", "alembic"], project)
    down = None
    for rev, body in ALEMBIC_OPS.items():
        _alembic(project, "revision", "--rev-id", rev, "-m", f"step {rev}")
        file = next((project / "alembic" / "versions").glob(f"{rev}_*.py"))
        text = file.read_text()
        # The template's upgrade() is the first function with a bare `pass`.
        text, count = re.subn(r"^    pass$", "    " + body, text, count=1, flags=re.M)
        assert count == 1 and f"{down!r}" in text.replace('"', "'"), text
        file.write_text(text)
        down = rev
    return project


def _build_alembic(request: pytest.FixtureRequest, engine: str) -> RealProject:
    template = _once(request, "alembic-template", lambda: _alembic_template(request))
    url = session_database(request, engine)
    project = request.getfixturevalue("tmp_path_factory").mktemp(f"alembic-{engine}") / "app"
    shutil.copytree(template, project)
    ini = project / "alembic.ini"
    sa_url = sqlalchemy_url(url).render_as_string(hide_password=False).replace("%", "%%")
    ini_text = re.sub(r"^sqlalchemy\.url = .*$", lambda _: f"sqlalchemy.url = {sa_url}", ini.read_text(), flags=re.M)
    ini.write_text(ini_text)
    _alembic(project, "upgrade", "0002")
    files = {rev: next((project / "alembic" / "versions").glob(f"{rev}_*.py")) for rev in ALEMBIC_OPS}
    return RealProject(
        tool="alembic", url=url, project_dir=project, migrations_path="alembic",
        applied=["0001", "0002"], pending=["0003"], remove=files, source=files,
        edit_line='\n\ndef extra() -> None:\n    op.create_index("posts_title", "posts", ["title"])\n',
    )


# ---------------------------------------------------------------- Django

DJANGO_SETTINGS = """\
import os
from urllib.parse import urlsplit

SECRET_KEY = "relstep-test-only"
INSTALLED_APPS = ["django.contrib.contenttypes", "blog"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
_url = os.environ["RELSTEP_DJANGO_DB"]
if _url.startswith("sqlite:///"):
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _url[len("sqlite:///"):]}}
else:
    _u = urlsplit(_url)
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": _u.path[1:], "USER": _u.username,
                             "PASSWORD": _u.password or "", "HOST": _u.hostname, "PORT": _u.port}}
"""

DJANGO_MODELS = [
    ("initial", "class Post(models.Model):\n    title = models.CharField(max_length=200)\n"),
    ("post_body", "    body = models.TextField(default='')\n"),
    ("post_tags", "    tags = models.CharField(max_length=100, default='')\n"),
]


def _django(project: Path, db_url: str, *args: str) -> None:
    env = {"PYTHONPATH": str(project), "DJANGO_SETTINGS_MODULE": "site_settings", "RELSTEP_DJANGO_DB": db_url}
    run([sys.executable, "-m", "django", *args], project, env)


def _django_template(request: pytest.FixtureRequest) -> Path:
    """A project whose blog app's three migrations are made by `makemigrations`."""
    project = request.getfixturevalue("tmp_path_factory").mktemp("django-template")
    (project / "site_settings.py").write_text(DJANGO_SETTINGS)
    (project / "manage.py").write_text("# marker only: the tests run `python -m django`\n")
    app = project / "blog"
    (app / "migrations").mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "migrations" / "__init__.py").write_text("")
    models = "from django.db import models\n\n\n"
    scratch = f"sqlite:///{project / 'scratch.db'}"
    for name, addition in DJANGO_MODELS:
        models += addition
        (app / "models.py").write_text(models)
        _django(project, scratch, "makemigrations", "blog", "--name", name)
    (project / "scratch.db").unlink(missing_ok=True)
    return project


def _build_django(request: pytest.FixtureRequest, engine: str) -> RealProject:
    template = _once(request, "django-template", lambda: _django_template(request))
    url = session_database(request, engine)
    project = request.getfixturevalue("tmp_path_factory").mktemp(f"django-{engine}") / "app"
    shutil.copytree(template, project)
    _django(project, url, "migrate", "contenttypes")
    _django(project, url, "migrate", "blog", "0002")
    files = {f"blog.{p.stem}": p for p in (project / "blog" / "migrations").glob("0*.py")}
    return RealProject(
        tool="django", url=url, project_dir=project, migrations_path=".",
        applied=["blog.0001_initial", "blog.0002_post_body"], pending=["blog.0003_post_tags"],
        remove=files, source=files,
        edit_line="\nMigration.operations.append(migrations.RunSQL('SELECT 1'))\n",
    )


# ---------------------------------------------------------------- fixtures

# key -> builder; "tool-engine" keys build that tool's project on that engine.
BUILDERS: dict[str, Callable[[pytest.FixtureRequest], RealProject]] = {
    "prisma-postgresql": _build_prisma,
    **{f"alembic-{e}": (lambda request, e=e: _build_alembic(request, e)) for e in ENGINES},
    **{f"django-{e}": (lambda request, e=e: _build_django(request, e)) for e in ENGINES},
}


def _project(request: pytest.FixtureRequest, key: str) -> RealProject:
    return _once(request, key, lambda: BUILDERS[key](request))


@pytest.fixture(scope="session")
def prisma_project(request: pytest.FixtureRequest) -> RealProject:
    """PostgreSQL after Prisma 6 `migrate deploy`: init and add_post applied, add_tags failed and rolled back."""
    return _project(request, "prisma-postgresql")


@pytest.fixture(scope="session", params=ENGINES)
def alembic_project(request: pytest.FixtureRequest) -> RealProject:
    """`alembic upgrade 0002` (of three revisions) on SQLite and on PostgreSQL."""
    return _project(request, f"alembic-{request.param}")


@pytest.fixture(scope="session", params=ENGINES)
def django_project(request: pytest.FixtureRequest) -> RealProject:
    """`migrate contenttypes` and `migrate blog 0002` (of three) on SQLite and on PostgreSQL."""
    return _project(request, f"django-{request.param}")


@pytest.fixture(scope="session", params=list(BUILDERS))
def real_project(request: pytest.FixtureRequest) -> RealProject:
    """Every real tool's project in turn: Prisma, then Alembic and Django on both engines."""
    return _project(request, request.param)
