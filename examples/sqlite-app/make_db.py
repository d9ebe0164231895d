"""Create the example's app.db the way `prisma migrate deploy` would, then add sample rows.

Runs with the standard library only: `python make_db.py` (idempotent; --fresh starts over).
"""

import datetime
import hashlib
import sqlite3
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
DB = HERE / "app.db"
MIGRATIONS = HERE / "prisma" / "migrations"

PRISMA_TABLE = """
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id" TEXT PRIMARY KEY NOT NULL, "checksum" TEXT NOT NULL, "finished_at" DATETIME,
    "migration_name" TEXT NOT NULL, "logs" TEXT, "rolled_back_at" DATETIME,
    "started_at" DATETIME NOT NULL DEFAULT current_timestamp, "applied_steps_count" INTEGER UNSIGNED NOT NULL DEFAULT 0
)"""


def apply_migrations(conn: sqlite3.Connection) -> None:
    conn.execute(PRISMA_TABLE)
    done = {r[0] for r in conn.execute('SELECT migration_name FROM "_prisma_migrations"')}
    for folder in sorted(p for p in MIGRATIONS.iterdir() if p.is_dir()):
        if folder.name in done:
            continue
        sql = (folder / "migration.sql").read_bytes()
        conn.executescript(sql.decode())
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        conn.execute(
            'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, started_at, '
            "applied_steps_count) VALUES (?, ?, ?, ?, ?, 1)",
            (str(uuid.uuid4()), hashlib.sha256(sql).hexdigest(), now, folder.name, now),
        )


def seed(conn: sqlite3.Connection) -> None:
    if conn.execute('SELECT count(*) FROM "User"').fetchone()[0]:
        return
    users = [(f"user{i}@example.com", f"plain-password-{i}", f"$2b$12$examplehash{i:04d}") for i in range(1, 26)]
    conn.executemany('INSERT INTO "User" (email, password, passwordHash) VALUES (?, ?, ?)', users)
    posts = [(f"Post {i}", f"Body of post {i}", 1 + i % 25) for i in range(1, 101)]
    conn.executemany('INSERT INTO "Post" (title, body, authorId) VALUES (?, ?, ?)', posts)


if __name__ == "__main__":
    if "--fresh" in sys.argv:
        DB.unlink(missing_ok=True)
    with sqlite3.connect(DB) as connection:
        apply_migrations(connection)
        seed(connection)
    print(f"example database ready: {DB}")
