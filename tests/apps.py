"""Throwaway apps on each engine: the same small schema, a relstep.yml, a git repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import init_repo, sqlite_app, write_config

ENGINES = ("sqlite", "postgres", "mysql")


def create_schema(url: str, users: int = 10, posts: int = 30) -> None:
    from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, Text

    from relstep.databases import create_engine

    metadata = MetaData()
    user = Table("User", metadata, Column("id", Integer, primary_key=True),
                 Column("email", String(100), nullable=False),
                 Column("password", String(100), nullable=False), Column("passwordHash", String(100)))
    post = Table("Post", metadata, Column("id", Integer, primary_key=True), Column("title", Text, nullable=False),
                 Column("authorId", Integer, ForeignKey("User.id"), nullable=False))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(user.insert(), [{"id": i, "email": f"u{i}@example.com", "password": f"pw-secret-{i}",
                                          "passwordHash": f"hash-secret-{i}"} for i in range(1, users + 1)])
            conn.execute(post.insert(), [{"id": i, "title": f"t{i}", "authorId": 1 + i % users}
                                         for i in range(1, posts + 1)])
    finally:
        engine.dispose()


def engine_url(request: pytest.FixtureRequest, engine: str) -> str | None:
    """A fresh database URL for a server engine (None for SQLite, which uses the example app)."""
    if engine == "sqlite":
        return None
    return request.getfixturevalue({"postgres": "pg_url", "mysql": "mysql_url"}[engine])


def make_app(tmp_path: Path, request: pytest.FixtureRequest, engine: str, **config: object) -> tuple[Path, str]:
    """An app folder (git repo) backed by ``engine``; returns (folder, database URL)."""
    url = engine_url(request, engine)
    if url is None:
        app = sqlite_app(tmp_path)
        url = f"sqlite:///{app / 'app.db'}"
    else:
        app = tmp_path / "app"
        for part in ("backend/src", "frontend/src"):
            (app / part).mkdir(parents=True)
        (app / "backend/src/server.js").write_text("// backend\n")
        (app / "frontend/src/index.html").write_text("<h1>frontend</h1>\n")
        (app / ".gitignore").write_text("backups/\n")
        create_schema(url)
        init_repo(app)
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"}, **config})
    return app, url
