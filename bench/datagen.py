"""Reproducible benchmark data: a PostgreSQL database and an application code tree.

Everything is derived from one integer seed, so two runs with the same arguments
measure the same bytes.  The database is generated server-side
(``INSERT ... SELECT ... FROM generate_series``) because pushing a gigabyte of
rows through a client would take longer than the benchmark itself; its
pseudo-random values come from ``md5(seed || row number)`` rather than
``random()``, so they do not depend on the order in which PostgreSQL happens to
produce rows.  Both data sets are cached (the database by name plus a
``bench_meta`` row, the tree by a marker file) and rebuilt only when the
parameters change.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

# Rows per generation "unit".  The number of units is fixed by the requested size (not by
# watching pg_database_size grow), so the same seed and size always give the same rows.
# MB_PER_UNIT was measured on PostgreSQL 15 (tables, TOAST and indexes, after VACUUM).
UNIT_EVENTS = 30_000
UNIT_ORDERS = 6_000
UNIT_CUSTOMERS = 1_000
UNIT_DOCUMENTS = 300
MB_PER_UNIT = 11.0
EMPTY_DATABASE_MB = 8.0   # what a new PostgreSQL 15 database occupies before any row
UNITS_PER_CALL = 5

SCHEMA = """
CREATE TABLE bench_meta (params jsonb NOT NULL);
CREATE TABLE customers (
    id integer PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    password text NOT NULL,
    profile jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    amount_cents integer NOT NULL,
    status text NOT NULL,
    items jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE documents (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    filename text NOT NULL,
    content bytea NOT NULL
);
-- The large, append-only table: an audit/event log, as most production databases have.
CREATE TABLE events (
    id bigint PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    customer_id integer NOT NULL,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    message text NOT NULL
);
CREATE INDEX events_customer_idx ON events (customer_id);
"""

# One unit of rows, numbered from the unit's offset.  h(n) is a reproducible 32-hex-digit
# hash of the seed, the table and the row number; text is built from a small vocabulary,
# so it compresses about as well as real application text does.
UNIT_SQL = """
INSERT INTO customers
SELECT g,
       format('user%s@example.test', g),
       initcap((ARRAY['ada','alan','grace','linus','barbara','ken','dennis','margaret'])[1 + g % 8]) || ' '
         || initcap(substr(md5('{seed}c' || g), 1, 8)),
       '$2b$12$' || md5('{seed}p' || g) || md5('{seed}q' || g),
       jsonb_build_object('plan', (ARRAY['free','pro','team','enterprise'])[1 + g % 4],
                          'locale', (ARRAY['en','de','fr','ja','pt'])[1 + g % 5],
                          'newsletter', g % 3 = 0, 'referrer', substr(md5('{seed}r' || g), 1, 12)),
       timestamptz '2020-01-01' + make_interval(secs => g * 97)
FROM generate_series({c0}, {c1}) g;

INSERT INTO orders
SELECT g,
       1 + (('x' || substr(md5('{seed}o' || g), 1, 7))::bit(28)::int % {c1}),
       (('x' || substr(md5('{seed}a' || g), 1, 6))::bit(24)::int % 50000) + 100,
       (ARRAY['paid','shipped','refunded','pending','cancelled'])[1 + g % 5],
       jsonb_build_array(
         jsonb_build_object('sku', 'SKU-' || substr(md5('{seed}s' || g), 1, 6), 'qty', 1 + g % 4),
         jsonb_build_object('sku', 'SKU-' || substr(md5('{seed}t' || g), 1, 6), 'qty', 1 + g % 2)),
       timestamptz '2021-01-01' + make_interval(secs => g * 31)
FROM generate_series({o0}, {o1}) g;

INSERT INTO documents
SELECT g,
       1 + g % {c1},
       format('invoice-%s.pdf', g),
       -- about 8 KB of high-entropy bytes: already-compressed payloads (PDFs, images)
       decode(repeat(md5('{seed}d' || g), 1) || (SELECT string_agg(md5('{seed}d' || g || ':' || i), '')
                                                 FROM generate_series(1, 255) i), 'hex')
FROM generate_series({d0}, {d1}) g;

INSERT INTO events
SELECT g,
       timestamptz '2022-01-01' + make_interval(secs => g * 3),
       1 + g % {c1},
       (ARRAY['login','logout','view','click','purchase','search','error','export'])[1 + g % 8],
       jsonb_build_object('ip', format('10.%s.%s.%s', g % 251, g % 241, g % 239),
                          'ua', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)','Mozilla/5.0 (Macintosh)',
                                       'curl/8.5.0','okhttp/4.12'])[1 + g % 4],
                          'path', '/api/v1/' || (ARRAY['orders','users','search','cart'])[1 + g % 4]
                                  || '/' || (g % 9973),
                          'ms', g % 977, 'trace', substr(md5('{seed}e' || g), 1, 16)),
       (ARRAY['request completed','cache miss for key','user updated profile','payment authorised',
              'retrying upstream call','rate limit close for tenant'])[1 + g % 6]
         || ' ' || substr(md5('{seed}m' || g), 1, 10 + g % 20)
FROM generate_series({e0}, {e1}) g;
"""


@dataclass(frozen=True)
class DatabaseParams:
    size_mb: int
    seed: int
    version: int = 1  # bump when the generator changes, so cached databases are rebuilt


def psql(url: str, sql: str, *, quiet: bool = True) -> str:
    """Run SQL through psql (no client library needed for generation); return its stdout."""
    done = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-qAt", url],
        input=sql, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _unit_sql(seed: int, u: int) -> str:
    return UNIT_SQL.format(
        seed=seed,
        c0=u * UNIT_CUSTOMERS + 1, c1=(u + 1) * UNIT_CUSTOMERS,
        o0=u * UNIT_ORDERS + 1, o1=(u + 1) * UNIT_ORDERS,
        d0=u * UNIT_DOCUMENTS + 1, d1=(u + 1) * UNIT_DOCUMENTS,
        e0=u * UNIT_EVENTS + 1, e1=(u + 1) * UNIT_EVENTS,
    )


def database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


def database_size(url: str) -> int:
    return int(psql(url, "SELECT pg_database_size(current_database());"))


def ensure_database(admin_url: str, name: str, params: DatabaseParams, log: Callable[[str], None]) -> str:
    """The URL of database ``name`` holding the data for ``params``, generating it if needed."""
    url = database_url(admin_url, name)
    wanted = json.dumps(asdict(params), sort_keys=True)
    exists = psql(admin_url, f"SELECT 1 FROM pg_database WHERE datname = '{name}';") == "1"
    if exists:
        try:
            have = psql(url, "SELECT params::text FROM bench_meta;")
        except RuntimeError:
            have = ""
        if have and json.loads(have) == json.loads(wanted):
            return url
        psql(admin_url, f'DROP DATABASE "{name}" WITH (FORCE);')
    log(f"generating database {name} (~{params.size_mb} MB, seed {params.seed})")
    psql(admin_url, f'CREATE DATABASE "{name}";')
    psql(url, SCHEMA)
    units = max(0, round((params.size_mb - EMPTY_DATABASE_MB) / MB_PER_UNIT))  # 0: schema only
    # A few units per psql call: one process start per ~10 MB would dominate small sizes.
    for first in range(0, units, UNITS_PER_CALL):
        batch = range(first, min(units, first + UNITS_PER_CALL))
        psql(url, "SET synchronous_commit = off;\n" + "".join(_unit_sql(params.seed, u) for u in batch))
        log(f"  {batch.stop}/{units} units")
    psql(url, f"VACUUM ANALYZE; INSERT INTO bench_meta VALUES ('{wanted}');")
    return url


def drop_database(admin_url: str, name: str) -> None:
    psql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')


# --------------------------------------------------------------------------- code tree

# Identifiers and keywords that source files are made of; a file is a header naming it
# plus a slice of a seeded pseudo-source corpus, so files differ from one another (no
# accidental deduplication) yet compress like real code (about 4-5x with gzip).
_WORDS = (
    "const let function return import export from default class extends async await if else for while "
    "new this null undefined true false try catch throw switch case break continue typeof interface type "
    "props state user order item value result error request response config logger handler service "
    "router query params payload options data index count total items list map filter reduce push length"
).split()
CORPUS_BYTES = 4 * 1024 * 1024
FILES_PER_DIR = 20
EXCLUDED_SHARE = 0.15      # node_modules files, per code folder, relative to its own files
BINARY_SHARE = 0.04        # images and fonts: incompressible, larger than source files


@dataclass(frozen=True)
class TreeParams:
    files: int
    seed: int
    mean_file_kb: float = 10.0
    version: int = 1


def _corpus(rng: random.Random) -> bytes:
    lines = []
    size = 0
    while size < CORPUS_BYTES:
        indent = "  " * rng.randint(0, 4)
        words = rng.choices(_WORDS, k=rng.randint(2, 12))
        line = indent + " ".join(words) + rng.choice((";", " {", "", ",", " }", ")")) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()


def _file_size(rng: random.Random, mean: float) -> int:
    # Log-normal like real repositories: many small files, a long tail of big ones.
    # E[lognormal(mu, 1.0)] = exp(mu + 0.5), so mu is chosen to hit the requested mean.
    import math

    mu = math.log(mean) - 0.5
    return max(40, min(int(rng.lognormvariate(mu, 1.0)), 2 * 1024 * 1024))


def _layout(rng: random.Random, root: str, count: int) -> list[str]:
    """``count`` relative paths under ``root``, FILES_PER_DIR to a folder, two or three levels deep."""
    paths = []
    exts = (".ts", ".tsx", ".js", ".json", ".css", ".md", ".py", ".sql")
    for i in range(count):
        d = i // FILES_PER_DIR
        folder = f"{root}/src/mod{d // 40:02d}/pkg{d % 40:02d}"
        paths.append(f"{folder}/f{i % FILES_PER_DIR:02d}_{rng.randrange(1 << 20):05x}{rng.choice(exts)}")
    return paths


def write_file(path: Path, rng: random.Random, corpus: bytes, size: int, binary: bool, tag: str) -> int:
    if binary:
        body = rng.randbytes(size)
    else:
        start = rng.randrange(0, len(corpus) - size) if size < len(corpus) else 0
        body = f"// {tag}\n".encode() + corpus[start:start + size]
    path.write_bytes(body)
    return len(body)


def tree_files(root: Path, exclude: tuple[str, ...] = ("node_modules",)) -> list[Path]:
    """Regular files under root outside excluded folders, in a stable order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude)
        found += [Path(dirpath) / f for f in sorted(filenames)]
    return found


def tree_is_current(app: Path, params: TreeParams) -> bool:
    marker = app / ".bench-tree.json"
    return marker.is_file() and json.loads(marker.read_text()) == asdict(params)


def ensure_tree(app: Path, params: TreeParams, log: Callable[[str], None]) -> None:
    """``app/backend`` and ``app/frontend`` (plus ``node_modules`` in each) for ``params``."""
    if tree_is_current(app, params):
        return
    if app.exists():
        shutil.rmtree(app)
    log(f"generating code tree in {app} ({params.files} files, seed {params.seed})")
    rng = random.Random(params.seed)
    corpus = _corpus(rng)
    total = 0
    for folder, share in (("backend", 0.6), ("frontend", 0.4)):
        count = int(params.files * share)
        for i, rel in enumerate(_layout(rng, folder, count)):
            path = app / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            binary = rng.random() < BINARY_SHARE
            size = _file_size(rng, params.mean_file_kb * 1024 * (3 if binary else 1))
            total += write_file(path, rng, corpus, size, binary, rel)
            if i % 97 == 0:
                path.chmod(0o755)  # a few executables: scripts, bin/ entries
        (app / folder / "bin").mkdir(exist_ok=True)
        (app / folder / "bin" / "current").symlink_to("../src")  # a symlink, as deploy trees have
        modules = app / folder / "node_modules"
        for i in range(int(count * EXCLUDED_SHARE)):
            path = modules / f"dep{i // 50:03d}" / f"index{i % 50:02d}.js"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file(path, rng, corpus, _file_size(rng, 4096), False, str(path))
    (app / ".bench-tree.json").write_text(json.dumps(asdict(params)))
    log(f"  {total / 2**20:.0f} MB of code outside node_modules")


def churn(app: Path, release: int, share: float = 0.01) -> int:
    """Change ``share`` of the code files (deterministically for ``release``); return how many."""
    files = tree_files(app / "backend") + tree_files(app / "frontend")
    files = [f for f in files if not f.is_symlink()]
    rng = random.Random(release * 7919)
    chosen = rng.sample(files, max(1, int(len(files) * share)))
    for path in chosen:
        with open(path, "ab") as f:
            f.write(f"\n// changed in release {release}\n".encode())
    return len(chosen)
