"""Every fact relstep knows about each database engine, in one place.

Adding an engine: one module in this package satisfying :class:`~relstep.databases.base.Engine`
plus one :func:`register` call (or one entry below).  config (which URL schemes exist), doctor
(driver, tools, server version), init, backup, verify and restore all ask this registry; no
module outside ``relstep/databases/`` names an engine's tools, driver or quirks.

Engine modules are imported lazily (``relstep --help`` must stay fast), and only once their
Python driver imports: a missing ``psycopg`` is one line saying which extra to install
(:class:`~relstep.databases.base.DriverMissing`), not a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from relstep.databases.base import DatabaseError, DriverMissing, Engine
from relstep.databases.tools import ToolSpec
from relstep.errors import ConfigError, InputError, RelstepError

if TYPE_CHECKING:
    # mypy proves here that each engine module satisfies the Engine protocol.
    from relstep.databases import mysql, postgres, sqlite

    _postgres: Engine = postgres
    _mysql: Engine = mysql
    _sqlite: Engine = sqlite


@dataclass(frozen=True)
class EngineSpec:
    """One engine: how URLs name it, what it needs installed, and where its code lives."""

    key: str                          # the registry key: "postgres", "mysql", "sqlite"
    name: str                         # the engine's NAME in manifests: "postgresql", "mysql", "sqlite"
    label: str                        # for people: "PostgreSQL"
    module: str                       # the module implementing Engine
    schemes: tuple[str, ...]          # URL schemes (before any "+driver"), lower case
    sqlalchemy_driver: str            # the SQLAlchemy dialect+driver relstep connects through
    driver_module: str | None = None  # the Python driver to import (None: in the standard library)
    extra: str | None = None          # the pip extra that installs it: relstep[<extra>]
    dump_tools: tuple[ToolSpec, ...] = ()     # client programs the dump needs, in doctor's order
    restore_tools: tuple[ToolSpec, ...] = ()  # client programs the restore needs
    builtin_dump: str = ""            # what dumps when no tool does (doctor's line), e.g. SQLite's API
    has_server: bool = True           # False: the database is a local file (scratch copies are temp files)
    hidden_schemes: tuple[str, ...] = field(default=())  # accepted but not advertised (Prisma's file:)
    # URL query parameters the driver reads as the user or the password (libpq's ?password=),
    # as (parameter, URL field): ``sqlalchemy_url`` moves them into that field, so the dump tools'
    # environment or option file, the driver and the masking all read the one place.
    credential_params: tuple[tuple[str, str], ...] = ()
    # The driver needs the password as UTF-8 bytes: PyMySQL encodes a str password as Latin-1,
    # which cannot hold '€' and sends other bytes than the server's (UTF-8) account has for 'é'.
    password_as_utf8: bool = False
    # The restore drops and reloads the live database itself (MariaDB's DDL is not transactional):
    # a failure after that point is undone by restoring the safety snapshot, so relstep must be
    # able to read it (its identity, when the safety snapshot is encrypted) before it starts.
    loads_live_in_place: bool = False

    def install_hint(self) -> str:
        hint = f"pip install 'relstep[{self.extra}]'"
        return f"{hint} (the Action: extras: {self.extra})"

    def require_driver(self) -> None:
        """Import the driver, or raise DriverMissing saying which extra installs it."""
        if self.driver_module is None:
            return
        try:
            importlib.import_module(self.driver_module)
        except ImportError as exc:
            raise DriverMissing(f"{self.label} support is not installed; {self.install_hint()}") from exc

    def load(self) -> Engine:
        """The engine module.  Its driver is imported when it first connects (``create_engine``), so
        reading a dump's files (verify) works where the driver is not installed."""
        return cast(Engine, importlib.import_module(self.module))


_PG_CLIENT = "install the PostgreSQL client"
_MARIADB_CLIENT = "install the MariaDB client (mariadb-client)"

ENGINES: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> EngineSpec:
    """Add an engine (or replace the one with the same key); its schemes must be its own."""
    for other in ENGINES.values():
        taken = set(other.schemes) & set(spec.schemes)
        if other.key != spec.key and taken:
            raise ValueError(f"engine {spec.key}: scheme(s) {', '.join(sorted(taken))} belong to {other.key}")
    ENGINES[spec.key] = spec
    return spec


def unregister(key: str) -> None:
    ENGINES.pop(key, None)


register(EngineSpec(
    key="postgres", name="postgresql", label="PostgreSQL", module="relstep.databases.postgres",
    schemes=("postgresql", "postgres"), sqlalchemy_driver="postgresql+psycopg",
    driver_module="psycopg", extra="postgres",
    credential_params=(("user", "username"), ("password", "password")),
    dump_tools=(ToolSpec(("pg_dump",), _PG_CLIENT),),
    # psql: the one-transaction restore, for a role that may not create a staged database.
    restore_tools=(ToolSpec(("pg_restore",), _PG_CLIENT), ToolSpec(("psql",), _PG_CLIENT)),
))
register(EngineSpec(
    key="mysql", name="mysql", label="MariaDB/MySQL", module="relstep.databases.mysql",
    schemes=("mysql", "mariadb"), sqlalchemy_driver="mysql+pymysql",
    driver_module="pymysql", extra="mysql",
    credential_params=(("user", "username"), ("password", "password"), ("passwd", "password")),
    password_as_utf8=True,
    loads_live_in_place=True,
    dump_tools=(ToolSpec(("mariadb-dump", "mysqldump"), _MARIADB_CLIENT),),
    restore_tools=(ToolSpec(("mariadb", "mysql"), _MARIADB_CLIENT),),
))
register(EngineSpec(
    key="sqlite", name="sqlite", label="SQLite", module="relstep.databases.sqlite",
    schemes=("sqlite", "file"), hidden_schemes=("file",),  # Prisma's SQLite URLs: file:./dev.db
    sqlalchemy_driver="sqlite", builtin_dump="built in (SQLite online backup API)", has_server=False,
))


def scheme_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).scheme.split("+", 1)[0].lower()


def spec_for_url(url: str) -> EngineSpec:
    """The engine a URL names, or a ConfigError listing the supported schemes."""
    scheme = scheme_of(url)
    for spec in ENGINES.values():
        if scheme in spec.schemes:
            return spec
    supported = ", ".join(sorted(f"{s}://" for spec in ENGINES.values() for s in spec.schemes
                                 if s not in spec.hidden_schemes))
    raise ConfigError(
        f"unsupported database URL scheme {scheme + '://' if scheme else '(none)'}; use one of {supported}"
    )


def spec_named(name: str) -> EngineSpec:
    """The engine of a manifest's ``engine`` value ("postgresql"), or InputError for an unknown one."""
    for spec in ENGINES.values():
        if name == spec.name:
            return spec
    raise InputError(f"unknown database engine {name!r}; this relstep knows "
                     f"{', '.join(sorted(s.name for s in ENGINES.values()))}")


def engine_for(url: str) -> Engine:
    return spec_for_url(url).load()


def engine_named(name: str) -> Engine:
    return spec_named(name).load()


@contextmanager
def engine_errors(error: type[RelstepError]) -> Iterator[None]:
    """Inside: an engine's DatabaseError leaves as ``error`` (the calling phase's class and exit
    code); a missing driver stays exit 2 but is reported under that phase."""
    try:
        yield
    except DriverMissing as exc:
        raise DriverMissing(exc.message, phase=error.phase) from exc.__cause__
    except DatabaseError as exc:
        raise error(exc.message) from exc
