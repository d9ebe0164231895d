"""relstep.yml + environment -> a validated, resolved ``Config``.

Precedence: CLI flags > environment variables > relstep.yml > defaults.  Every
key is optional; relative paths are relative to the folder holding the config
file (or the working directory when there is none).  ``${VAR}`` in a string is
replaced from the environment, ``${VAR:-default}`` falls back to ``default`` when VAR is unset or
empty, ``${VAR:?message}`` stops with ``message`` then (``$$`` writes a literal ``$``).  The file
is read strictly (:mod:`relstep.strict_yaml`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relstep.errors import ConfigError, RelstepError

CONFIG_NAMES = ("relstep.yml", "relstep.yaml")
DEFAULT_RETENTION = 30
# Far above any sane retention, low enough that a typo like 10^20 is caught.
MAX_RETENTION = 100_000
RETENTION_ENV = "RELEASE_BACKUP_RETENTION_COUNT"
DEFAULT_CODE_EXCLUDE = (".git", "node_modules", "*.log", ".env", ".env.*")
DEFAULT_ENVIRONMENT = {"node": "node --version", "npm": "npm --version", "pm2": "pm2 jlist"}
DEFAULT_CODE_DIRS = ("backend", "frontend")

# ``$$`` | ``${NAME}`` | ``${NAME:-default}`` / ``${NAME-default}`` | ``${NAME:?message}`` / ``${NAME?message}``
# (the shell's meanings: with the colon an empty value counts as unset) | any other ``${``, an error.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|(\$\{)")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    name: str = "main"
    redact: tuple[str, ...] | None = None        # patterns added to relstep's defaults (None: none)
    exclude_tables: tuple[str, ...] = ()
    restore_test_after_backup: bool = False       # backup ends by proving the new snapshot restores equal
    redact_defaults: bool = True                 # False: only the configured patterns


@dataclass(frozen=True)
class MigrationsConfig:
    tool: str = "auto"
    path: Path | None = None                      # None: the tool's default under base_dir


@dataclass(frozen=True)
class RecordConfig:
    url: str | None
    table: str = "ReleaseRecord"


@dataclass(frozen=True)
class OffsiteConfig:
    url: str                                      # s3://bucket/prefix, sftp://user@host/path, file:///path
    keep: int                                     # default: the retention count
    required: bool = False                        # True: a failed copy fails the run (exit 6)


@dataclass(frozen=True)
class EncryptionConfig:
    recipients: tuple[str, ...]                   # age1... / ssh-ed25519 / ssh-rsa public keys, validated
    offsite_only: bool = False                    # True: local snapshots plain, off-site copies encrypted


@dataclass(frozen=True)
class NotifyConfig:
    webhook: str | None                           # None: only the heartbeat (ping_url) is configured
    format: str = "slack"                         # "slack" (Slack-compatible) or "json" (generic body)
    on: tuple[str, ...] = ("failure",)
    project: str | None = None                    # None: derived from CI variables or the folder name
    ping_url: str | None = None                   # Healthchecks-style heartbeat: <url> on success, <url>/fail


@dataclass(frozen=True)
class Config:
    base_dir: Path
    file: Path | None
    backup_root: Path
    retention: int
    tag_prefix: str
    database: DatabaseConfig | None
    code: dict[str, Path]
    code_exclude: tuple[str, ...]
    environment: dict[str, str]
    environment_is_default: bool
    migrations: MigrationsConfig
    record: RecordConfig
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # Every database to dump, in the order given; ``database`` is the first of them
    # (the one ``migrations:`` reads), kept so single-database code reads as before.
    databases: tuple[DatabaseConfig, ...] = ()
    offsite: OffsiteConfig | None = None
    notify: NotifyConfig | None = None
    project: str | None = None      # as configured; relstep.identity.project_of derives the default
    encryption: EncryptionConfig | None = None

    @property
    def all_databases(self) -> tuple[DatabaseConfig, ...]:
        """Every database to dump, ``database`` first.

        Code that swaps ``database`` with ``dataclasses.replace`` (a restore target)
        gets that one database alone rather than a stale list.
        """
        if self.database is None:
            return ()
        if self.databases and self.databases[0] == self.database:
            return self.databases
        return (self.database,)

    @property
    def where(self) -> str:
        return str(self.file) if self.file else "defaults (no relstep.yml)"


# --- validation schema (pydantic gives exact, key-naming errors) ------------------------------


def _models() -> Any:
    """Build the pydantic models lazily: ``relstep --help`` must not pay for them."""
    from typing import Annotated, Literal

    from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, StringConstraints

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

    class Database(Strict):
        url: StrictStr | None = None
        redact: list[StrictStr] | None = None
        redact_defaults: StrictBool = True
        exclude_tables: list[StrictStr] = []
        restore_test_after_backup: StrictBool = False

    class NamedDatabase(Database):
        name: StrictStr

    class Offsite(Strict):
        url: StrictStr
        keep: Any = None
        required: StrictBool = False

    class Notify(Strict):
        webhook: StrictStr | None = None
        ping_url: StrictStr | None = None
        format: Literal["slack", "json"] = "slack"
        on: list[Literal["failure", "success"]] = ["failure"]
        project: StrictStr | None = None

    class Encryption(Strict):
        recipients: list[StrictStr]
        offsite_only: StrictBool = False

    class Migrations(Strict):
        tool: StrictStr = "auto"
        path: StrictStr | None = None

    class Record(Strict):
        url: StrictStr | None = None
        table: StrictStr = "ReleaseRecord"

    class File(Strict):
        project: Annotated[StrictStr, StringConstraints(min_length=1, pattern=r"^[^\x00-\x1f\x7f]+$")] | None = None
        backup_root: StrictStr = "backups/releases"
        retention: Any = None
        tag_prefix: StrictStr = "v"
        database: Database | None = None
        databases: list[NamedDatabase] | None = None
        code: dict[StrictStr, StrictStr] | None = None
        code_exclude: list[StrictStr] | None = None
        environment: dict[StrictStr, StrictStr] | None = None
        migrations: Migrations = Migrations()
        record: Record = Record()
        offsite: Offsite | None = None
        notify: Notify | None = None
        encryption: Encryption | None = None

    return File


def _validation_message(error: Any, where: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key {key!r}; see docs/configuration.md for the keys relstep reads"
    return f"{where}: {key}: {first['msg'].lower()}"


# --- loading ---------------------------------------------------------------------------------


def find_config_file(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    chosen = explicit or environ.get("RELSTEP_CONFIG") or None
    if chosen:
        path = (cwd / chosen).resolve()
        if not path.is_file():
            raise ConfigError(f"config file {chosen} not found; pass an existing file to --config or RELSTEP_CONFIG")
        return path
    for name in CONFIG_NAMES:
        if (cwd / name).is_file():
            return (cwd / name).resolve()
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    from relstep import strict_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        data = strict_yaml.load(text)
    except strict_yaml.StrictYAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply; relstep.yml needs a few levels at most") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def expand_variables(value: Any, environ: Mapping[str, str], where: str, key: str = "") -> Any:
    """Replace ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` in every string of a parsed YAML tree."""
    if isinstance(value, dict):
        return {k: expand_variables(v, environ, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_variables(v, environ, where, key) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, word, stray = match.groups()
        if stray is not None:
            raise ConfigError(
                f"{where}: {key}: '${{' must start ${{NAME}}, ${{NAME:-default}} or ${{NAME:?message}} "
                "(NAME: letters, digits, '_'); write $$ for a literal $"
            )
        if name is None:
            return "$"
        value = environ.get(name)
        missing = value is None or (value == "" and operator is not None and operator.startswith(":"))
        if operator is not None and operator.endswith("-"):
            return word if missing else str(value)
        if missing:
            if operator is not None and word.strip():
                raise ConfigError(f"{where}: {key}: {name} is not set: {word.strip()}")
            raise ConfigError(f"{where}: {key} uses ${{{name}}}, but the environment variable {name} is not set")
        return str(value)

    return _VAR.sub(substitute, value)


def parse_retention(value: object, source: str) -> int:
    """A whole number >= 1, written as plain digits; anything else is an error naming its source."""
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]+", text) or int(text) < 1 or int(text) > MAX_RETENTION:
        shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:40] + "...")
        raise ConfigError(
            f"{source} must be a whole number from 1 to {MAX_RETENTION}, got {shown}; nothing was deleted"
        )
    return int(text)


def resolve_retention(
    flag: str | int | None, environ: Mapping[str, str], from_file: object, where: str
) -> int:
    if flag is not None:
        return parse_retention(flag, "--keep")
    if RETENTION_ENV in environ:
        return parse_retention(environ[RETENTION_ENV], RETENTION_ENV)
    if from_file is not None:
        return parse_retention(from_file, f"{where}: retention")
    return DEFAULT_RETENTION




def prisma_schema_dir(base: Path, code_dirs: list[Path], migrations_path: Path | None, where: str) -> Path | None:
    """The folder of the app's ``schema.prisma``, which Prisma resolves ``file:`` URLs against.

    Looked for where Prisma looks (``prisma/schema.prisma``, ``schema.prisma``) in the config's
    folder and in each code folder, or next to ``migrations.path``; two different ones are an
    error, since each would resolve ``file:./dev.db`` to a different database.
    """
    if migrations_path is not None and (migrations_path.parent / "schema.prisma").is_file():
        return migrations_path.parent.resolve()
    found: list[Path] = []
    for root in [base, *code_dirs]:
        for candidate in (root / "prisma" / "schema.prisma", root / "schema.prisma"):
            if candidate.is_file() and candidate.parent.resolve() not in found:
                found.append(candidate.parent.resolve())
    if len(found) > 1:
        raise ConfigError(
            f"{where}: a file: database URL is relative to schema.prisma, and there are several "
            f"({', '.join(str(f / 'schema.prisma') for f in found)}); set migrations.path to the app's "
            "prisma/migrations folder, or use an absolute sqlite:/// URL"
        )
    return found[0] if found else None


# URL parameters naming a file the driver or dump tool opens (MariaDB/PyMySQL, libpq).
_URL_FILE_PARAMS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_capath", "sslrootcert", "sslcert", "sslkey", "sslcrl")


def _check_server_url(url: str, label: str, where: str, cwd: Path) -> None:
    """A non-numeric port, or a TLS file that is not there, named now rather than mid-backup."""
    from relstep.databases import redact_url, sqlalchemy_url, url_problem

    shown = redact_url(url)
    problem = url_problem(url)
    if problem:
        raise ConfigError(f"{where}: {label} {shown} {problem}")
    query = sqlalchemy_url(url).query
    for key in _URL_FILE_PARAMS:
        value = query.get(key)
        if not isinstance(value, str) or not value or (key == "sslrootcert" and value == "system"):
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not path.exists():
            raise ConfigError(
                f"{where}: {label} {shown}: {key}={value} does not exist; fix the path "
                "(relative paths are read from the working directory) or remove the parameter"
            )


def _clean_url(url: str) -> str:
    from relstep.databases import clean_url

    return clean_url(url)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _database(entry: Any, url: str, name: str, place: _Place, label: str) -> DatabaseConfig:
    from relstep.databases import engine_name

    url = _clean_url(url)
    try:
        engine = engine_name(url)  # validates the scheme now, as bad input
    except ConfigError as exc:
        raise ConfigError(f"{place.where}: {label}: {exc}") from None
    if engine != "sqlite":
        _check_server_url(url, label, place.where, place.cwd)
    return DatabaseConfig(
        url=place.resolve(url),
        name=name,
        redact=tuple(entry.redact) if entry is not None and entry.redact is not None else None,
        exclude_tables=tuple(entry.exclude_tables) if entry is not None else (),
        restore_test_after_backup=entry.restore_test_after_backup if entry is not None else False,
        redact_defaults=entry.redact_defaults if entry is not None else True,
    )


@dataclass(frozen=True)
class _Place:
    """Where database URLs are read from and resolved against."""

    where: str
    base: Path
    cwd: Path
    code_dirs: tuple[Path, ...]
    migrations_path: Path | None

    def resolve(self, url: str) -> str:
        """The URL with a relative SQLite path made absolute (Prisma's ``file:`` as Prisma does)."""
        prisma_base = None
        if url.startswith("file:") and not url.startswith(("file:/", "file:?")):
            prisma_base = prisma_schema_dir(self.base, list(self.code_dirs), self.migrations_path, self.where)
        from relstep.databases import absolute_url

        return absolute_url(url, self.base, prisma_base)


def _databases(parsed: Any, environ: Mapping[str, str], place: _Place) -> tuple[DatabaseConfig, ...]:
    """``database:`` (one, dumped as ``main``) or ``databases:`` (several, each named); never both."""
    where = place.where
    if parsed.databases is not None:
        if parsed.database is not None:
            raise ConfigError(f"{where}: use either database or databases, not both")
        if not parsed.databases:
            raise ConfigError(f"{where}: databases: list at least one database, or remove the key")
        seen: set[str] = set()
        result = []
        for i, entry in enumerate(parsed.databases):
            # The name becomes a folder of the snapshot: no separators, no dot-names.
            if not _NAME.fullmatch(entry.name):
                raise ConfigError(
                    f"{where}: databases.{i}.name {entry.name!r} must be letters, digits, '-', '_' or '.'"
                )
            if entry.name in seen:
                raise ConfigError(f"{where}: databases.{i}.name {entry.name!r} is used twice; names must be unique")
            seen.add(entry.name)
            if not entry.url:
                raise ConfigError(f"{where}: databases.{i} ({entry.name}) has no url")
            result.append(_database(entry, entry.url, entry.name, place, f"databases.{i}.url"))
        return tuple(result)
    url = parsed.database.url if parsed.database else None
    label = "database.url"
    if not url:
        url, label = environ.get("DATABASE_URL"), "DATABASE_URL"
    return (_database(parsed.database, url, "main", place, label),) if url and url.strip() else ()




def _offsite(parsed: Any, raw: dict[str, Any], retention: int, where: str) -> OffsiteConfig | None:
    if parsed is None:
        return None
    from urllib.parse import urlsplit

    # Credentials come from the environment or the tools' own config files.  A password
    # written into the file itself is refused; one substituted from ${VAR} is fine.
    raw_url = (raw.get("offsite") or {}).get("url")
    try:
        raw_password = urlsplit(raw_url).password if isinstance(raw_url, str) else None
    except ValueError:
        raw_password = None
    if raw_password and not _VAR.search(raw_password):
        raise ConfigError(
            f"{where}: offsite.url holds a password in clear; remove it and use ${{VAR}} for it, "
            "the provider's environment variables (AWS_ACCESS_KEY_ID, ...) or its usual config files"
        )
    from relstep.offsite_backends import BACKENDS

    scheme = urlsplit(parsed.url).scheme.lower()
    if scheme not in BACKENDS:
        shown = scheme + "://" if scheme else "(none)"
        examples = [b.example for b in BACKENDS.values()]
        raise ConfigError(
            f"{where}: offsite.url scheme {shown} is not supported; use {', '.join(examples[:-1])} or {examples[-1]}"
        )
    keep = retention if parsed.keep is None else parse_retention(parsed.keep, f"{where}: offsite.keep")
    return OffsiteConfig(url=parsed.url, keep=keep, required=parsed.required)


def _encryption(parsed: Any, base: Path, where: str, offsite: OffsiteConfig | None) -> EncryptionConfig | None:
    if parsed is None:
        return None
    from relstep.encryption import load_recipients

    if parsed.offsite_only and offsite is None:
        # Refused rather than accepted: with nothing going off-site, nothing would ever be encrypted.
        raise ConfigError(f"{where}: encryption.offsite_only is set but no off-site copy is configured, so "
                          "nothing would be encrypted; add offsite.url, or remove offsite_only to encrypt "
                          "the local snapshots")
    return EncryptionConfig(recipients=load_recipients(parsed.recipients, base, where),
                            offsite_only=parsed.offsite_only)


def _notify(parsed: Any, where: str) -> NotifyConfig | None:
    if parsed is None:
        return None
    if parsed.webhook is None and parsed.ping_url is None:
        raise ConfigError(f"{where}: notify needs a webhook, a ping_url or both")
    for key in ("webhook", "ping_url"):
        value = getattr(parsed, key)
        if value is not None and not value.startswith(("https://", "http://")):
            raise ConfigError(f"{where}: notify.{key} must be an http:// or https:// URL")
    if not parsed.on:
        raise ConfigError(f"{where}: notify.on must list failure, success or both")
    return NotifyConfig(webhook=parsed.webhook, format=parsed.format, on=tuple(dict.fromkeys(parsed.on)),
                        project=parsed.project, ping_url=parsed.ping_url.rstrip("/") if parsed.ping_url else None)


def _record_url(url: str | None, database: DatabaseConfig | None, place: _Place) -> str | None:
    if not url or not url.strip():
        return database.url if database else None
    url = _clean_url(url)
    from relstep.databases import engine_name

    try:
        engine = engine_name(url)
    except ConfigError as exc:
        raise ConfigError(f"{place.where}: record.url: {exc}") from None
    if engine != "sqlite":
        _check_server_url(url, "record.url", place.where, place.cwd)
    return place.resolve(url)


def _record_table(name: str, where: str) -> str:
    from relstep.records import split_table_name

    try:
        split_table_name(name)
    except RelstepError as exc:
        raise ConfigError(f"{where}: record.table: {exc}") from None
    return name


def _backup_root(base: Path, value: str) -> Path:
    """Absolute and normalised, with the folders above it resolved but not backup_root itself.

    Resolving it too would turn a backup_root that is a symlink (say, to /) into its target, and
    the snapshots would go there; unresolved, it reaches ``snapshot.ensure_root`` as the symlink
    it is and is refused.
    """
    path = Path(os.path.normpath(base / value))
    return path if path == path.parent else path.parent.resolve() / path.name


def load_config(
    explicit: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    keep: str | int | None = None,
) -> Config:
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    file = find_config_file(explicit, environ, cwd)
    where = str(file) if file else "relstep.yml"
    raw = _read_yaml(file) if file else {}
    expanded = expand_variables(raw, environ, where)

    from pydantic import ValidationError

    try:
        parsed = _models().model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, where)) from None

    base = file.parent if file else cwd
    code_dirs = [base / rel for rel in (parsed.code or {}).values()] if parsed.code is not None else [
        base / name for name in DEFAULT_CODE_DIRS]
    migrations_path = (base / parsed.migrations.path).resolve() if parsed.migrations.path else None
    place = _Place(where, base, cwd, tuple(code_dirs), migrations_path)
    databases = _databases(parsed, environ, place)
    database = databases[0] if databases else None

    if parsed.code is None:
        code = {name: base / name for name in DEFAULT_CODE_DIRS if (base / name).is_dir()}
    else:
        code = {}
        for name, rel in parsed.code.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ConfigError(f"{where}: code: name {name!r} must be letters, digits, '-', '_' or '.'")
            code[name] = (base / rel).resolve()

    from relstep import migrations as migration_tools

    tool = parsed.migrations.tool
    if tool not in migration_tools.CHOICES:
        raise ConfigError(f"{where}: migrations.tool {tool!r} is not one of {', '.join(migration_tools.CHOICES)}")

    record_url = _record_url(parsed.record.url, database, place)
    backup_root = _backup_root(base, parsed.backup_root)
    retention = resolve_retention(keep, environ, parsed.retention, where)
    offsite = _offsite(parsed.offsite, raw, retention, where)
    config = Config(
        base_dir=base,
        file=file,
        backup_root=backup_root,
        retention=retention,
        tag_prefix=parsed.tag_prefix,
        database=database,
        code=code,
        code_exclude=tuple(parsed.code_exclude) if parsed.code_exclude is not None else DEFAULT_CODE_EXCLUDE,
        environment=dict(parsed.environment) if parsed.environment is not None else dict(DEFAULT_ENVIRONMENT),
        environment_is_default=parsed.environment is None,
        migrations=MigrationsConfig(tool=tool, path=migrations_path),
        record=RecordConfig(url=record_url, table=_record_table(parsed.record.table, where)),
        raw=raw,
        databases=databases,
        offsite=offsite,
        notify=_notify(parsed.notify, where),
        project=parsed.project,
        encryption=_encryption(parsed.encryption, base, where, offsite),
    )
    _register_url_passwords(config)
    return config


def _register_url_passwords(config: Config) -> None:
    """Mask every database password from the start, whichever command runs and whatever fails.

    The backup used to register only database.url's, and only as urllib reads it: a record.url
    password, or one holding an unencoded '/', reached `relstep record`'s messages in clear.
    """
    from relstep.databases import url_passwords
    from relstep.masking import register_secret

    urls = [db.url for db in config.all_databases] + ([config.record.url] if config.record.url else [])
    for url in urls:
        for secret in url_passwords(url):
            register_secret(secret)
