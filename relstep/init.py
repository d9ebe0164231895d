"""`relstep init`: look at a repository and write a commented relstep.yml (and, with --prisma, the
ReleaseRecord model and its migration).

What is looked at, and what it decides:

* a Prisma schema (``prisma/schema.prisma``, ``schema.prisma``, or one in a code folder):
  the provider, the ``env("...")`` variable of its URL, the migrations folder, and the
  columns worth redacting (password/secret/token-like fields, with their ``@map`` names);
* ``alembic.ini`` (its ``script_location``), ``manage.py`` (Django), ``package.json``
  (Knex, Sequelize, TypeORM in its dependencies);
* a ``.env`` naming ``DATABASE_URL``: only the variable's name and URL scheme are used;
  the value (a password, usually) is never copied;
* the folders ``backend``, ``frontend``, ``api``, ``web``, ``client`` as code to capture.

Nothing is ever overwritten: an existing relstep.yml is refused, and an existing
ReleaseRecord model is left alone.
"""

from __future__ import annotations

import configparser
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from relstep.config import CONFIG_NAMES, DEFAULT_RETENTION
from relstep.databases.base import DEFAULT_REDACT
from relstep.errors import InputError

CODE_FOLDERS = ("backend", "frontend", "api", "web", "client")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# Prisma field names that hold secrets; matched case-insensitively against the whole name.
SECRET_FIELD = re.compile(r".*(password|passwd|secret|token|apikey|api_key|hash).*", re.IGNORECASE)
MIGRATION_TIME = "%Y%m%d%H%M%S"

RELEASE_RECORD_MODEL = """
/// One row per deployed release, written by relstep (`relstep record`): which backup
/// snapshot and schema revision each release and patch went out with.
model ReleaseRecord {
  id             Int      @id @default(autoincrement())
  version        String
  deploymentType String
  backupPath     String
  schemaRevision String?
  recordedAt     DateTime @default(now())
}
"""

# Exactly what `prisma migrate diff --from-empty --to-schema-datamodel` writes for the model above.
RELEASE_RECORD_SQL = {
    "postgresql": """-- CreateTable
CREATE TABLE "ReleaseRecord" (
    "id" SERIAL NOT NULL,
    "version" TEXT NOT NULL,
    "deploymentType" TEXT NOT NULL,
    "backupPath" TEXT NOT NULL,
    "schemaRevision" TEXT,
    "recordedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ReleaseRecord_pkey" PRIMARY KEY ("id")
);
""",
    "mysql": """-- CreateTable
CREATE TABLE `ReleaseRecord` (
    `id` INTEGER NOT NULL AUTO_INCREMENT,
    `version` VARCHAR(191) NOT NULL,
    `deploymentType` VARCHAR(191) NOT NULL,
    `backupPath` VARCHAR(191) NOT NULL,
    `schemaRevision` VARCHAR(191) NULL,
    `recordedAt` DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),

    PRIMARY KEY (`id`)
) DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
""",
    "sqlite": """-- CreateTable
CREATE TABLE "ReleaseRecord" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "version" TEXT NOT NULL,
    "deploymentType" TEXT NOT NULL,
    "backupPath" TEXT NOT NULL,
    "schemaRevision" TEXT,
    "recordedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
""",
}


@dataclass
class PrismaSchema:
    path: Path
    provider: str | None              # normalised: postgresql, mysql, sqlite (or Prisma's word if other)
    url_env: str | None               # the variable in url = env("...")
    migrations: Path
    secret_columns: list[str] = field(default_factory=list)   # "Table.column", as in the database
    has_release_record: bool = False
    migration_count: int = 0


@dataclass
class Findings:
    root: Path
    prisma: PrismaSchema | None = None
    migration_tool: str = "auto"
    migrations_path: str | None = None
    env_var: str = "DATABASE_URL"
    env_file_scheme: str | None = None     # the scheme of DATABASE_URL in .env, e.g. "postgresql"
    sqlite_file: str | None = None
    code: dict[str, str] = field(default_factory=dict)
    node: bool = False
    pm2: bool = False
    python: bool = False
    notes: list[str] = field(default_factory=list)

    def described(self) -> list[str]:
        found = []
        if self.prisma:
            found.append(f"Prisma schema {self.prisma.path.relative_to(self.root)} "
                         f"(provider {self.prisma.provider or 'unknown'}, {self.prisma.migration_count} migrations)")
        elif self.migration_tool != "auto":
            found.append(f"migration tool {self.migration_tool}")
        if self.env_file_scheme:
            found.append(f".env names {self.env_var} ({self.env_file_scheme})")
        if self.sqlite_file:
            found.append(f"SQLite database {self.sqlite_file}")
        if self.code:
            found.append("code folders " + ", ".join(self.code))
        return found


@dataclass
class InitOutcome:
    config: Path | None
    written: list[Path]
    findings: Findings
    notes: list[str]

    def lines(self) -> list[str]:
        out = [f"found: {item}" for item in self.findings.described()]
        out += [f"wrote {p}" for p in self.written]
        out += [f"note: {n}" for n in self.notes]
        if self.config is not None:
            out.append("next: review it, then `relstep doctor` and `relstep run --version 0.1.0` (or tag a release)")
        return out


# --- inspection --------------------------------------------------------------------------------


def _block(text: str, kind: str) -> str:
    match = re.search(kind + r"\s+\w+\s*\{(.*?)\n\}", text, re.DOTALL)
    return match.group(1) if match else ""


def _secret_columns(text: str) -> list[str]:
    """``Table.column`` of secret-looking scalar fields, honouring @map / @@map."""
    columns = []
    for match in re.finditer(r"^model\s+(\w+)\s*\{(.*?)^\}", text, re.DOTALL | re.MULTILINE):
        model, body = match.group(1), match.group(2)
        table_map = re.search(r'@@map\(\s*(?:name:\s*)?"([^"]+)"', body)
        table = table_map.group(1) if table_map else model
        for line in body.splitlines():
            field_match = re.match(r"\s*(\w+)\s+(String|Bytes)\??(\s|$)", line)
            if not field_match or not SECRET_FIELD.fullmatch(field_match.group(1)):
                continue
            mapped = re.search(r'@map\(\s*(?:name:\s*)?"([^"]+)"', line)
            columns.append(f"{table}.{mapped.group(1) if mapped else field_match.group(1)}")
    return columns


def read_prisma_schema(path: Path) -> PrismaSchema:
    text = path.read_text(encoding="utf-8")
    datasource = _block(text, "datasource")
    provider = re.search(r'provider\s*=\s*"(\w+)"', datasource)
    url_env = re.search(r'url\s*=\s*env\(\s*"(\w+)"\s*\)', datasource)
    word = provider.group(1) if provider else None
    return PrismaSchema(
        path=path,
        provider=_engine_of_provider(word) if word else None,
        url_env=url_env.group(1) if url_env else None,
        migrations=path.parent / "migrations",
        secret_columns=_secret_columns(text),
        has_release_record=re.search(r"^model\s+ReleaseRecord\s*\{", text, re.MULTILINE) is not None,
        migration_count=len(list((path.parent / "migrations").glob("*/migration.sql"))),
    )


def _find_prisma(root: Path) -> Path | None:
    candidates = [root / "prisma" / "schema.prisma", root / "schema.prisma"]
    candidates += [root / folder / "prisma" / "schema.prisma" for folder in CODE_FOLDERS]
    return next((c for c in candidates if c.is_file()), None)


def _env_file(root: Path, var: str) -> str | None:
    """The URL scheme of ``var`` in .env (never the value), or None."""
    env = root / ".env"
    if not env.is_file():
        return None
    try:
        lines = env.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = re.match(r"\s*(?:export\s+)?" + re.escape(var) + r"\s*=\s*['\"]?([A-Za-z][A-Za-z0-9+.-]*):", line)
        if match:
            return match.group(1).split("+", 1)[0].lower()
    return None


def _package_deps(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    deps: set[str] = set()
    for key in ("dependencies", "devDependencies"):
        if isinstance(data.get(key), dict):
            deps |= set(data[key])
    return deps


def _alembic_versions(ini: Path) -> str | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini, encoding="utf-8")
        location = parser.get("alembic", "script_location", fallback="alembic")
    except (configparser.Error, OSError):
        return None
    location = location.replace("%(here)s", ".").strip().rstrip("/")
    return f"{location}/versions" if location and not location.startswith("/") else None


def inspect(root: Path) -> Findings:
    found = Findings(root=root)
    found.code = {name: name for name in CODE_FOLDERS if (root / name).is_dir()}
    schema_path = _find_prisma(root)
    if schema_path is not None:
        found.prisma = read_prisma_schema(schema_path)
        found.migration_tool = "prisma"
        found.migrations_path = found.prisma.migrations.relative_to(root).as_posix()
        found.env_var = found.prisma.url_env or "DATABASE_URL"
    else:
        places = [root, *(root / c for c in found.code)]
        alembic = next((p / "alembic.ini" for p in places if (p / "alembic.ini").is_file()), None)
        django = next((p / "manage.py" for p in places if (p / "manage.py").is_file()), None)
        if alembic is not None:
            found.migration_tool = "alembic"
            versions = _alembic_versions(alembic)
            if versions:
                found.migrations_path = (alembic.parent.relative_to(root) / versions).as_posix()
        elif django is not None:
            found.migration_tool = "django"
            found.migrations_path = django.parent.relative_to(root).as_posix()
    packages = [p / "package.json" for p in (root, *(root / c for c in found.code)) if (p / "package.json").is_file()]
    deps: set[str] = set()
    for package in packages:
        deps |= _package_deps(package)
    found.node = bool(packages)
    found.pm2 = "pm2" in deps or any((root / n).is_file() for n in ("ecosystem.config.js", "ecosystem.config.cjs"))
    found.python = any((root / n).is_file() for n in ("pyproject.toml", "requirements.txt", "manage.py", "alembic.ini"))
    if found.migration_tool == "auto":
        for tool in ("knex", "sequelize", "typeorm"):
            if tool in deps:
                found.migration_tool = tool
                break
    found.env_file_scheme = _env_file(root, found.env_var)
    provider = found.prisma.provider if found.prisma else None
    if found.env_file_scheme is None and provider in (None, "sqlite"):
        dbs = sorted(p for base in (root, root / "prisma") if base.is_dir() for p in base.iterdir()
                     if p.suffix in SQLITE_SUFFIXES and p.is_file())
        if len(dbs) == 1:
            found.sqlite_file = dbs[0].relative_to(root).as_posix()
    if not found.code and (found.node or found.python):
        found.code = {"app": "."}
    return found


# --- writing -----------------------------------------------------------------------------------


def _yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def render_config(found: Findings, config_dir: Path | None = None) -> str:
    """The commented relstep.yml for what was found (every value is plain YAML).

    Paths in relstep.yml are relative to its own folder, so a file written elsewhere
    (``--config deploy/relstep.yml``) points back at the repository.
    """
    config_dir = found.root if config_dir is None else config_dir

    def rel(path: str) -> str:
        return Path(os.path.relpath(found.root / path, config_dir)).as_posix()

    lines = [
        "# relstep configuration, written by `relstep init` (every key: docs/configuration.md).",
        "# Before each deploy, `relstep run -- ./deploy.sh` backs up the database, code and",
        "# environment, runs the deploy, records the release and prunes old snapshots.",
        "",
        "# Snapshots go here (keep it out of git: add backups/ to .gitignore).",
        f"backup_root: {rel('backups/releases')}",
        "# Snapshots to keep; RELEASE_BACKUP_RETENTION_COUNT overrides it.",
        f"retention: {DEFAULT_RETENTION}",
        "# Tags look like v1.2.3; the version is 1.2.3 (PATCH 0 = release, else patch).",
        "tag_prefix: v",
        "",
        "database:",
    ]
    if found.sqlite_file:
        lines += [f"  # The SQLite file found here; or ${{{found.env_var}}} to take the URL from the environment.",
                  f"  url: sqlite:///{rel(found.sqlite_file)}"]
    else:
        source = f"(.env names it: a {found.env_file_scheme} database; relstep reads the environment, not .env)" \
            if found.env_file_scheme else "(set it in the deploy environment or CI secrets)"
        lines += [f"  # From the environment {source}.", f"  url: ${{{found.env_var}}}"]
    extra = [c for c in (found.prisma.secret_columns if found.prisma else []) if not _covered(c)]
    lines += [
        "  # Columns written as NULL in the dump (TABLE.COLUMN globs; a trailing ? lets one match nothing),",
        "  # on top of relstep's defaults (password, token and OTP columns; redact_defaults: false drops them).",
        f"  redact: {_yaml_list(extra)}",
        "  # Tables whose rows are not worth keeping (sessions, caches): schema kept, rows skipped.",
        "  exclude_tables: []",
        "",
    ]
    if found.code:
        lines += ["# Code folders captured into each snapshot as code/<name>/.", "code:"]
        lines += [f"  {name}: {json.dumps(rel(path))}" for name, path in found.code.items()]
    else:
        lines += ["# No backend/frontend/api/web/client folder was found: name your code folders here.",
                  "code: {}"]
    lines += ['code_exclude: [".git", "node_modules", "*.log", ".env", ".env.*"]', ""]
    commands: dict[str, str] = {}
    if found.node:
        commands |= {"node": "node --version", "npm": "npm --version"}
    if found.pm2:
        commands["pm2"] = "pm2 jlist"
    if found.python:
        commands["python"] = "python3 --version"
    if commands:
        lines += ["# Commands whose output is kept in environment.json (a failing one is recorded, never fatal).",
                  "environment:"]
        lines += [f"  {k}: {v}" for k, v in commands.items()]
        lines.append("")
    lines += ["migrations:", f"  tool: {found.migration_tool}"]
    if found.migrations_path:
        lines.append(f"  path: {rel(found.migrations_path)}")
    lines += [
        "",
        "# Where the ReleaseRecord table lives (default: database.url).",
        "record:",
        "  table: ReleaseRecord",
        "",
        "# Off-site copies (docs/offsite.md): credentials come from the environment or",
        "# ~/.aws / ~/.ssh, never from this file.",
        "# offsite:",
        "#   url: s3://my-bucket/releases        # or sftp://deploy@backup-host/srv/backups, file:///mnt/backups",
        "#   keep: 30",
        "#   required: false",
        "",
        "# Alerts on failure (docs/alerts.md).",
        "# notify:",
        "#   webhook: ${SLACK_WEBHOOK_URL}",
        "#   format: slack                       # or json",
        "#   on: [failure]                       # or [failure, success]",
    ]
    return "\n".join(lines) + "\n"


def _covered(column: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(column.lower(), p.lower()) for p in DEFAULT_REDACT)


def _next_migration_name(migrations: Path, now: datetime) -> str:
    """``<timestamp>_add_release_record``, later than every existing migration (Prisma applies them by name)."""
    stamp = now.astimezone(timezone.utc)
    existing = [p.name.split("_", 1)[0] for p in migrations.iterdir() if p.is_dir()] if migrations.is_dir() else []
    for name in existing:
        try:
            last = datetime.strptime(name, MIGRATION_TIME).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
        if last >= stamp:
            stamp = last + timedelta(seconds=1)
    return f"{stamp.strftime(MIGRATION_TIME)}_add_release_record"


def _engine_of_provider(word: str) -> str:
    """A Prisma provider as relstep's engine name (the registry's; Prisma's providers are URL schemes),
    or Prisma's own word for one relstep has no engine for (sqlserver, mongodb...)."""
    from relstep.databases.registry import spec_for_url

    try:
        return spec_for_url(f"{word}://").name
    except InputError:
        return word


def add_prisma_release_record(schema: PrismaSchema, now: datetime | None = None) -> list[Path]:
    """Append the model and write its migration; returns the files written."""
    if schema.provider not in RELEASE_RECORD_SQL:
        raise InputError(
            f"{schema.path}: provider {schema.provider or '(none)'} is not one relstep writes migrations for; "
            "use postgresql, mysql or sqlite", phase="init",
        )
    folder = schema.migrations / _next_migration_name(schema.migrations, now or datetime.now(timezone.utc))
    text = schema.path.read_text(encoding="utf-8")
    schema.path.write_text(text.rstrip("\n") + "\n" + RELEASE_RECORD_MODEL, encoding="utf-8")
    folder.mkdir(parents=True)
    sql = folder / "migration.sql"
    sql.write_text(RELEASE_RECORD_SQL[schema.provider], encoding="utf-8")
    written = [schema.path, sql]
    lock = schema.migrations / "migration_lock.toml"
    if not lock.exists():
        lock.write_text(
            "# Please do not edit this file manually\n# It should be added in your version-control system "
            f'(e.g., Git)\nprovider = "{schema.provider}"\n', encoding="utf-8")
        written.append(lock)
    return written


def init(root: Path, target: Path | None = None, *, prisma: bool = False, now: datetime | None = None) -> InitOutcome:
    """Write relstep.yml (refusing to overwrite one); with ``prisma``, also the ReleaseRecord model."""
    target = (root / target) if target is not None and not target.is_absolute() else target
    existing = [target] if target is not None else [root / n for n in CONFIG_NAMES]
    present = next((p for p in existing if p.exists()), None)
    if present is not None and not prisma:
        raise InputError(f"{present} already exists; relstep init never overwrites it (remove it first, "
                         "or write elsewhere with --config PATH init)", phase="init")
    found = inspect(root)
    written: list[Path] = []
    notes: list[str] = []
    config_path = None
    if present is None:
        config_path = target or root / CONFIG_NAMES[0]
        text = render_config(found, config_path.parent)
        try:
            # "x": fails rather than overwrites if the file appeared meanwhile.
            with open(config_path, "x", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise InputError(f"cannot write {config_path}: {exc.strerror or exc}", phase="init") from exc
        written.append(config_path)
    else:
        notes.append(f"{present} exists and was left as it is")
    if prisma:
        if found.prisma is None:
            raise InputError("no Prisma schema found (prisma/schema.prisma); --prisma needs one", phase="init")
        if found.prisma.has_release_record:
            notes.append(f"{found.prisma.path} already has a ReleaseRecord model; nothing added")
        else:
            written += add_prisma_release_record(found.prisma, now)
            from relstep.migrations import prisma as prisma_tool

            notes.append(f"apply it with `{prisma_tool.APPLY_COMMAND}` before the next `relstep run`")
    gitignore = root / ".gitignore"
    if gitignore.is_file() and "backups" not in gitignore.read_text(encoding="utf-8", errors="replace"):
        notes.append("add backups/ to .gitignore: snapshots hold production data")
    return InitOutcome(config=config_path, written=written, findings=found, notes=notes)
