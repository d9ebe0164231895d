"""How relstep reads credentials out of database URLs, without a server (`pytest -m unit`)."""

from __future__ import annotations

import pytest

from relstep.databases import command_line_url, sqlalchemy_url, url_passwords, with_database
from relstep.errors import InputError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("url", "user", "password"), [
    ("postgresql://app@db/app?password=a%2Fb%40c", "app", "a/b@c"),
    ("postgresql://db/app?user=app&password=pw&sslmode=require", "app", "pw"),
    ("postgresql://app:old@db/app?password=new", "app", "new"),           # the query wins, as in libpq
    ("mysql://app@db/app?passwd=pw", "app", "pw"),                         # PyMySQL's spelling
    ("mysql://app@db/app?password=one&password=two", "app", "two"),       # the last one, as the drivers read it
    ("mysql://app:Zq8/x+Rk2w9pLm4v==@db:3306/app", "app", "Zq8/x+Rk2w9pLm4v=="),
])
def test_a_query_user_or_password_becomes_the_urls_own(url: str, user: str, password: str) -> None:
    parsed = sqlalchemy_url(url)
    assert (parsed.username, parsed.password) == (user, password)
    assert not {"user", "password", "passwd"} & set(parsed.query)


def test_postgres_has_no_passwd_parameter() -> None:
    """libpq knows no `passwd`: it stays a parameter (libpq refuses it), not a password."""
    assert sqlalchemy_url("postgresql://app@db/app?passwd=pw").password is None


@pytest.mark.parametrize("url", [
    "postgresql://app:Zq8/x+Rk2w9pLm4v==@127.0.0.1:5432/app",
    "postgres://app:a%20b%3Fc%23d%25e@db/app?sslmode=require",
    "mysql://app@[::1]:3306/app?password=a%2Fb&ssl_ca=/etc/ca.pem",
])
def test_another_database_on_the_same_server_keeps_every_credential(url: str) -> None:
    before, after = sqlalchemy_url(url), sqlalchemy_url(with_database(url, "relstep_scratch_1"))
    assert after.database == "relstep_scratch_1"
    assert (after.username, after.password, after.host, after.port, dict(after.query)) == (
        before.username, before.password, before.host, before.port, dict(before.query))
    assert sqlalchemy_url(with_database(url, "")).database is None


def test_every_reading_of_a_password_is_a_secret() -> None:
    found = url_passwords("postgresql://app:Zq8/x+Rk2w9@db/app?sslpassword=key-pass-1")
    assert {"Zq8/x+Rk2w9", "key-pass-1"} <= set(found)


def test_a_command_line_url_is_trimmed_and_an_unreadable_one_is_bad_input() -> None:
    assert command_line_url(" postgresql://app@db/app\n", "--database-url", "restore") == "postgresql://app@db/app"
    with pytest.raises(InputError, match=r"^--scratch-url postgresql://app:\*\*\*@db:x/app has a port"):
        command_line_url("postgresql://app:secret-1@db:x/app", "--scratch-url", "verify")
    with pytest.raises(InputError, match=r"^--database-url: unsupported database URL scheme oracle://"):
        command_line_url("oracle://db/app", "--database-url", "restore")
