"""Database engines: the registry (``registry.py``), the contract (``base.py``), one module each.

This module keeps the URL helpers every engine and caller shares; which engine a URL names,
and everything about that engine, is the registry's.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from relstep.databases.registry import ENGINES, EngineSpec, engine_for, engine_named, scheme_of, spec_for_url

__all__ = [
    "ENGINES",
    "EngineSpec",
    "absolute_url",
    "clean_url",
    "command_line_url",
    "create_engine",
    "engine_for",
    "engine_name",
    "engine_named",
    "redact_url",
    "scheme_of",
    "spec_for_url",
    "sqlalchemy_url",
    "url_passwords",
    "url_problem",
    "with_database",
]


def engine_name(url: str) -> str:
    """The registry key of the engine a URL names, or a ConfigError naming the supported schemes."""
    return spec_for_url(url).key


def absolute_url(url: str, base: Path, file_base: Path | None = None) -> str:
    """The URL with a relative SQLite file path made absolute; other URLs unchanged.

    ``sqlite:///`` paths are relative to ``base`` (the config's folder); Prisma's ``file:`` form is
    relative to ``file_base`` when given (the folder of ``schema.prisma``, as Prisma resolves it),
    else to ``base``, and becomes ``sqlite:///``.
    """
    for prefix in ("sqlite:///", "file:"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            if rest.startswith("//"):
                return url
            path_part, sep, query = rest.partition("?")
            folder = file_base if prefix == "file:" and file_base is not None else base
            if path_part and not path_part.startswith("/") and path_part != ":memory:":
                return "sqlite:///" + str((folder / path_part).resolve()) + (sep + query)
            return "sqlite:///" + path_part + (sep + query) if prefix == "file:" else url
    return url


def sqlalchemy_url(url: str):  # -> sqlalchemy.engine.URL
    """Parse a relstep database URL into a SQLAlchemy URL with relstep's driver.

    Prisma-style extras that drivers reject (``?schema=``, ``connection_limit``...)
    are dropped; ``file:`` SQLite URLs become ``sqlite:///``.  A user or password given as a query
    parameter (``?password=``, the engine's ``credential_params``) becomes the URL's own user or
    password: every reader (the driver, the dump tools' environment or option file) takes it from there.
    """
    from sqlalchemy.engine import make_url

    spec = spec_for_url(url)
    if spec.key == "sqlite" and scheme_of(url) == "file":
        path = url.split(":", 1)[1]
        if path.startswith("//"):
            path = urlsplit(url).path
        url = "sqlite:///" + path
    parsed = make_url(url)
    fields: dict[str, str] = {}
    for param, name in spec.credential_params:
        if param in parsed.query:
            value = parsed.query[param]
            # A repeated parameter: the last one counts, as libpq and the drivers read it; and a
            # query credential wins over the userinfo, as it does for libpq and PyMySQL.
            fields[name] = value[-1] if isinstance(value, tuple) else value
    dropped = PRISMA_ONLY_PARAMS | {param for param, _ in spec.credential_params}
    keep = {k: v for k, v in parsed.query.items() if k not in dropped}
    return parsed.set(drivername=spec.sqlalchemy_driver, query=keep, username=fields.get("username", parsed.username),
                      password=fields.get("password", parsed.password))


def with_database(url: str, database: str | None) -> str:
    """The same server, credentials and parameters naming another database (or none: ``""``).

    Built from the URL as the drivers read it, with the user and password percent-encoded anew:
    urllib reads an unencoded '/' or '?' in a password as the start of the path or query, so
    replacing the path of ``urlsplit(url)`` gave a URL whose "port" was a piece of the password
    (and a message that showed it).
    """
    from urllib.parse import quote

    from sqlalchemy.engine import URL, make_url

    parsed = make_url(url)  # the scheme and query as written: sqlalchemy_url reads them again later
    rest = URL.create(parsed.drivername, host=parsed.host, port=parsed.port, database=database or None,
                      query=parsed.query).render_as_string()
    scheme, _, location = rest.partition("://")
    userinfo = ""
    if parsed.username is not None:
        userinfo = quote(parsed.username, safe="")
        if parsed.password is not None:
            userinfo += ":" + quote(str(parsed.password), safe="")
        userinfo += "@"
    return f"{scheme}://{userinfo}{location}"


PRISMA_ONLY_PARAMS = {
    "schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout", "statement_cache_size",
}


def create_engine(url: str, **kwargs):  # -> sqlalchemy.engine.Engine
    from sqlalchemy import create_engine as sa_create_engine
    from sqlalchemy.pool import NullPool

    spec = spec_for_url(url)
    spec.require_driver()  # one line naming the extra, not SQLAlchemy's import error
    parsed = sqlalchemy_url(url)
    if spec.password_as_utf8 and parsed.password is not None:
        # connect_args override what the dialect takes from the URL: the password as bytes.
        kwargs["connect_args"] = {"password": str(parsed.password).encode("utf-8"), **kwargs.get("connect_args", {})}
    return sa_create_engine(parsed, poolclass=NullPool, **kwargs)


def clean_url(url: str) -> str:
    """A URL copied with a trailing newline or padded with spaces (``$(cat file)``, a CI secret)
    is taken trimmed: no database URL begins or ends with whitespace."""
    return url.strip()


_BAD_PORT = ("has a port that is not a number from 1 to 65535; write host:PORT, and percent-encode "
             "':' '/' '@' in the password")


def url_problem(url: str) -> str | None:
    """Why the drivers cannot read this URL (the words after the URL in a message), or None."""
    from relstep.errors import RelstepError

    try:
        port = sqlalchemy_url(url).port
    except RelstepError:
        raise
    except ValueError:  # SQLAlchemy's int() of a port that is not a number
        return _BAD_PORT
    except Exception as exc:  # SQLAlchemy's ArgumentError: a URL it cannot read at all
        return f"is not a valid database URL ({type(exc).__name__})"
    return _BAD_PORT if port is not None and not 0 < port < 65536 else None


def command_line_url(url: str, option: str, phase: str) -> str:
    """A database URL given as a command-line option, read as ``database.url`` is: trimmed, its
    passwords masked from now on, and a URL the drivers cannot read is bad input (exit 2)."""
    from relstep.errors import InputError
    from relstep.masking import register_secret

    url = clean_url(url)
    for secret in url_passwords(url):
        register_secret(secret)
    try:
        spec_for_url(url)
        problem = url_problem(url)
    except InputError as exc:
        raise InputError(f"{option}: {exc.message}", phase=phase) from None
    if problem:
        raise InputError(f"{option} {redact_url(url)} {problem}", phase=phase)
    return url


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
    """Every string a URL's password may be read as (by urllib, by SQLAlchemy, up to the last '@',
    as a query parameter).

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
    if "@" in url:   # SQLAlchemy reads a password only before an '@' (and importing it costs 0.25 s)
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            readings.append(make_url(url).password or "")
        except (ArgumentError, ValueError):
            readings.append("")  # SQLAlchemy cannot read the URL at all, so it reads no password either
    pieces = [piece for reading in readings for piece in reading.split("@")]
    from relstep.masking import url_secrets

    # and the values of credential parameters: ?password=, &sslpassword=, ...
    return [r for r in dict.fromkeys([*readings, *pieces, *url_secrets(url)]) if r]
