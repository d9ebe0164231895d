"""`relstep diff` on real snapshots of each engine: a migration, changed rows, changed code, environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relstep.manifest import Manifest
from tests.apps import ENGINES, make_app
from tests.helpers import clean_env, relstep

PRISMA_TABLE = """CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, finished_at TIMESTAMP NULL,
    migration_name VARCHAR(255) NOT NULL, logs TEXT NULL, rolled_back_at TIMESTAMP NULL,
    started_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, applied_steps_count INTEGER NOT NULL DEFAULT 0)"""
NEW_MIGRATION = "20260301000000_add_tags"


def _sql(url: str, *statements: str) -> None:
    """Run statements; ``{Post}`` and ``{Tag}`` become the names quoted as the engine quotes them."""
    from sqlalchemy import text

    from relstep.databases import create_engine

    engine = create_engine(url)
    quote = engine.dialect.identifier_preparer.quote_identifier
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement.format(Post=quote("Post"), Tag=quote("Tag"))))
    finally:
        engine.dispose()


def _newest_posts(url: str) -> list[int]:
    from sqlalchemy import text

    from relstep.databases import create_engine

    engine = create_engine(url)
    post = engine.dialect.identifier_preparer.quote_identifier("Post")
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(f"SELECT id FROM {post} ORDER BY id DESC LIMIT 3"))]
    finally:
        engine.dispose()


def _migrate(url: str) -> None:
    """What a release does: one migration (a new table with rows) and three posts fewer."""
    doomed = ", ".join(str(i) for i in _newest_posts(url))
    _sql(url,
         "CREATE TABLE {Tag} (id INTEGER PRIMARY KEY, label VARCHAR(50) NOT NULL)",
         "INSERT INTO {Tag} (id, label) VALUES (1, 'a'), (2, 'b')",
         f"DELETE FROM {{Post}} WHERE id IN ({doomed})",
         f"INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at) VALUES "
         f"('m3', '{'c' * 64}', CURRENT_TIMESTAMP, '{NEW_MIGRATION}', CURRENT_TIMESTAMP)")


@pytest.fixture(params=ENGINES)
def two_releases(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(app, snapshot of 1.0.0, snapshot of 1.1.0) across a migration, row and code changes."""
    app, url = make_app(tmp_path, request, request.param, migrations={"tool": "prisma"},
                        environment={"runtime": "cat runtime.txt"})
    _sql(url, PRISMA_TABLE)
    (app / "runtime.txt").write_text("node v20.1.0\n")
    (app / "backend" / "changed.js").write_text("one\n")
    (app / "frontend" / "old.txt").write_text("going\n")
    first = relstep("backup", "--version", "1.0.0", "--type", "release", cwd=app)
    assert first.code == 0, first.err
    _migrate(url)
    (app / "runtime.txt").write_text("node v22.3.0\n")
    (app / "backend" / "changed.js").write_text("two\n")
    (app / "backend" / "added.js").write_text("new\n")
    (app / "frontend" / "old.txt").unlink()
    second = relstep("backup", "--version", "1.1.0", "--type", "release", cwd=app)
    assert second.code == 0, second.err
    return app, Path(first.out.strip()), Path(second.out.strip())


def test_diff_lists_exactly_the_migration_rows_code_and_environment_that_changed(
        two_releases: tuple[Path, Path, Path]) -> None:
    app, old, new = two_releases
    before, after = Manifest.load(old), Manifest.load(new)
    db = next(iter(before.databases or {}))
    rows_before = before.databases[db].row_counts if before.databases else {}
    expected_rows = [
        {"database": db, "table": "Post", "before": rows_before["Post"], "after": rows_before["Post"] - 3,
         "delta": -3},
        {"database": db, "table": "Tag", "before": None, "after": 2, "delta": 2},
        {"database": db, "table": "_prisma_migrations", "before": rows_before["_prisma_migrations"],
         "after": rows_before["_prisma_migrations"] + 1, "delta": 1},
    ]

    ran = relstep("diff", "--json", cwd=app)   # default: the newest against the one before it
    assert ran.code == 0, ran.err
    data = json.loads(ran.out)
    assert data["old"] == {"name": old.name, "version": "1.0.0", "created_at": before.created_at,
                           "size": before.size}
    assert data["new"] == {"name": new.name, "version": "1.1.0", "created_at": after.created_at,
                           "size": after.size}
    assert data["size_delta"] == after.size - before.size
    assert data["migrations"] == {"added": [NEW_MIGRATION], "removed": [], "changed": []}
    assert data["rows"] == expected_rows
    assert data["code"] == {"backend": {"added": ["added.js"], "removed": [], "changed": ["changed.js"]},
                            "frontend": {"added": [], "removed": ["old.txt"], "changed": []}}
    assert data["environment"] == {"runtime": {"before": "node v20.1.0", "after": "node v22.3.0"}}
    # No fingerprint on this branch's manifests yet: said per side, never guessed.
    if getattr(before.databases[db], "fingerprint", None) is None:
        assert data["schema_missing"] == [f"no fingerprint in {old.name} (database {db})",
                                          f"no fingerprint in {new.name} (database {db})"]
    else:   # the migration's new table, and nothing removed
        # Names as the engine's fingerprint spells them (public."Tag" on PostgreSQL).
        assert [o for o in data["schema"][db]["added"] if o.startswith("table ")] in (
            [t] for t in ("table Tag", 'table public."Tag"', "table `Tag`", 'table "Tag"'))
        assert data["schema"][db]["removed"] == []

    # The same by version, as text: every change on its own line, nothing else under each heading.
    text = relstep("diff", "1.0.0", "1.1.0", cwd=app)
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert lines[0] == f"changes since 1.0.0 ({old.name}) in 1.1.0 ({new.name})"
    assert lines[lines.index("migrations:") + 1:lines.index("schema:")] == [f"  + {NEW_MIGRATION}"]
    assert lines[lines.index("rows:") + 1:lines.index("code:")] == [
        f"  {r['database']}.{r['table']}: {r['before'] if r['before'] is not None else '-'} -> {r['after']} "
        f"({r['delta']:+d})" for r in expected_rows]
    assert lines[lines.index("code:") + 1:lines.index("environment:")] == [
        "  + backend/added.js", "  ~ backend/changed.js", "  - frontend/old.txt"]
    assert lines[lines.index("environment:") + 1:lines.index("size:")] == [
        "  runtime: node v20.1.0 -> node v22.3.0"]

    md = relstep("diff", old.name, new.name, "--markdown", cwd=app)
    assert md.code == 0, md.err
    assert md.out.startswith(f"### Changes since 1.0.0\n\n`{old.name}` (1.0.0) -> `{new.name}` (1.1.0)\n")
    assert f"**migrations**\n\n- `+ {NEW_MIGRATION}`\n" in md.out
    assert "**code**\n\n- `+ backend/added.js`\n- `~ backend/changed.js`\n- `- frontend/old.txt`\n" in md.out


def test_diff_of_the_same_snapshot_says_no_change_and_one_snapshot_is_refused(
        two_releases: tuple[Path, Path, Path], tmp_path: Path) -> None:
    app, old, _new = two_releases
    same = relstep("diff", old.name, old.name, "--json", cwd=app)
    data = json.loads(same.out)
    assert (data["migrations"], data["rows"], data["code"], data["environment"], data["size_delta"]) == (
        {"added": [], "removed": [], "changed": []}, [], {}, {}, 0)
    both = relstep("diff", "--json", "--markdown", cwd=app)
    assert both.code == 2
    assert both.last_err == "relstep: input failed: --json and --markdown exclude each other; choose one"
    unknown = relstep("diff", "9.9.9", cwd=app, env=clean_env())
    assert unknown.code == 2
    assert "no snapshot named or versioned '9.9.9'" in unknown.last_err
