"""Registry: URL scheme -> engine module.  Adding an engine = one module + one line here."""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from urllib.parse import urlsplit

from relstep.errors import ConfigError

# scheme (before any "+driver") -> module name in this package
ENGINES: dict[str, str] = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
    "file": "sqlite",  # Prisma's SQLite URLs: file:./dev.db
}

# The SQLAlchemy driver each engine is reached through.
DRIVERS: dict[str, str] = {
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
}


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.split("+", 1)[0].lower()


def engine_name(url: str) -> str:
    """The engine module name for a URL, or a ConfigError naming the supported schemes."""
    scheme = scheme_of(url)
    if scheme not in ENGINES:
        supported = ", ".join(sorted(f"{s}://" for s in ENGINES if s != "file"))
        raise ConfigError(
            f"unsupported database URL scheme {scheme + '://' if scheme else '(none)'}; use one of {supported}"
        )
    return ENGINES[scheme]


def engine_for(url: str) -> ModuleType:
    return importlib.import_module(f"relstep.databases.{engine_name(url)}")


def sqlalchemy_url(url: str):  # -> sqlalchemy.engine.URL
    """Parse a relstep database URL into a SQLAlchemy URL with relstep's driver.

    Prisma-style extras that drivers reject (``?schema=``, ``connection_limit``...)
    are dropped; ``file:`` SQLite URLs become ``sqlite:///``.
    """
    from sqlalchemy.engine import make_url

    name = engine_name(url)
    if name == "sqlite" and scheme_of(url) == "file":
        path = url.split(":", 1)[1]
        if path.startswith("//"):
            path = urlsplit(url).path
        url = "sqlite:///" + path
    parsed = make_url(url)
    keep = {k: v for k, v in parsed.query.items() if k not in PRISMA_ONLY_PARAMS}
    return parsed.set(drivername=DRIVERS[name], query=keep)


PRISMA_ONLY_PARAMS = {
    "schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout", "statement_cache_size",
}


def create_engine(url: str, **kwargs):  # -> sqlalchemy.engine.Engine
    from sqlalchemy import create_engine as sa_create_engine
    from sqlalchemy.pool import NullPool

    return sa_create_engine(sqlalchemy_url(url), poolclass=NullPool, **kwargs)


def url_password(url: str) -> str | None:
    """The password in a database URL (to register with the masking filter), or None."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs.

    Everything between ``scheme://user:`` and the last ``@`` goes: a password may hold an
    unencoded ``/``, ``#``, ``?`` or ``@`` (base64 passwords do), which urllib then reads as the
    start of the path while SQLAlchemy and the drivers still take it as the password.
    """
    found = _CREDENTIALS.match(url)
    return found.group("head") + "***" + found.group("tail") if found else url


_CREDENTIALS = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>.*)(?P<tail>@[^@]*)$", re.DOTALL)


def url_passwords(url: str) -> list[str]:
    """Every string a URL's password may be read as (by urllib, by SQLAlchemy, up to the last '@').

    The readings differ when the password holds unencoded URL characters; all of them, and the
    pieces an '@' splits them into, are secret (for ``relstep.masking.register_secret``).
    """
    readings: list[str] = []
    found = _CREDENTIALS.match(url)
    if found:
        readings.append(found.group("pw"))
    try:
        readings.append(urlsplit(url).password or "")
    except ValueError:
        pass
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        readings.append(make_url(url).password or "")
    except (ArgumentError, ValueError):
        readings.append("")  # SQLAlchemy cannot read the URL at all, so it reads no password either
    pieces = [piece for reading in readings for piece in reading.split("@")]
    return [r for r in dict.fromkeys([*readings, *pieces]) if r]
