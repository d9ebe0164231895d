"""relstep benchmark: relstep against the naive backup script, on the same generated data.

    python bench/run.py                      # defaults: 1000 MB database, 20,000 code files
    python bench/run.py --size-mb 100 --files 2000 --releases 10 --fake-snapshots 200
    python bench/run.py --json               # one JSON object on stdout

See bench/README.md for what is measured and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datagen  # bench/ is not a package: it must run from a plain checkout

PROBE = Path(__file__).resolve().parent / "probe.py"
LAST_DELETE = "last-delete"
RECENT_DELETE_SECONDS = 360  # ext4 (no journal) skips inodes freed this recently, at a cost
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
ENVIRONMENT_COMMANDS = ("node --version", "npm --version", "pm2 jlist")  # relstep's default list

# The script teams write by hand for "back up before every release": everything
# sequential, one gzip stream per artefact, nothing shared between releases.
BASELINE_SCRIPT = r"""
set -euo pipefail
dest="$1"; db="$2"; app="$3"; shift 3
mkdir -p "$dest"
pg_dump "$db" | gzip > "$dest/db.sql.gz"
for folder in backend frontend; do
  tar czf "$dest/$folder.tar.gz" --exclude=node_modules -C "$app" "$folder"
done
for command in "$@"; do $command; done > "$dest/environment.txt" 2>&1 || true
"""


@dataclass
class Usage:
    wall: float
    cpu: float
    tree_rss_kb: int
    self_rss_kb: int | None = None


@dataclass
class Row:
    metric: str
    unit: str
    relstep: float | None
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.relstep is None or not self.baseline:
            return None
        return self.relstep / self.baseline


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path                      # kept between runs: the generated code tree lives here
    out: Path                       # this run's outputs, under work/runs/
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    trash: list[Path] = field(default_factory=list)

    def discard(self, path: Path) -> None:
        """Delete ``path`` after the last measurement, not now.

        On ext4 without a journal (this VM's root filesystem) the inode allocator skips
        recently freed inodes for one to six minutes, and the skipping costs kernel time:
        creating 20,000 files right after deleting 20,000 others took 15 s instead of 2 s.
        Deleting nothing until every timing is taken keeps that out of the numbers.
        """
        if path.exists():
            target = self.work / "trash" / f"{time.time_ns()}-{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
            self.trash.append(target)

    def empty_trash(self) -> None:
        for path in [*self.trash, *(self.work / "trash").glob("*")]:
            shutil.rmtree(path, ignore_errors=True)
        (self.work / LAST_DELETE).write_text(str(time.time()))

    def warn_if_recent_delete(self) -> None:
        """Say so when this run starts inside the slow-inode window left by the last one's deletes."""
        stamp = self.work / LAST_DELETE
        ago = time.time() - float(stamp.read_text()) if stamp.is_file() else None
        if ago is not None and ago < RECENT_DELETE_SECONDS:
            self.facts["warning"] = f"started {ago:.0f} s after the previous run deleted its outputs"
            self.log(f"WARNING: {self.facts['warning']}; file creation may be slow on ext4 without a journal "
                     f"(wait {RECENT_DELETE_SECONDS - ago:.0f} s for clean numbers)")

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        shown = f"{row.relstep:.3f}" if isinstance(row.relstep, float) else row.relstep
        self.log(f"  {row.metric}: relstep {shown} {row.unit} / baseline {row.baseline} {row.note}")


# --------------------------------------------------------------------------- measuring


def probe(command: list[str], cwd: Path | None = None, relstep_self: bool = False) -> Usage:
    """Run ``command`` in a fresh probe process; fail loudly if it fails (a failed run measures nothing)."""
    argv = [sys.executable, str(PROBE), *(["relstep-self"] if relstep_self else []), *command]
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True)
    data = json.loads(done.stdout)
    if data["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} exited {data['returncode']}: {data['stderr']}")
    return Usage(data["wall"], data["cpu"], data["tree_rss_kb"], data["self_rss_kb"])


def disk_usage(root: Path, seen: set[tuple[int, int]] | None = None, under: str | None = None) -> int:
    """Bytes of disk blocks under ``root``, like ``du``: a hard-linked inode counts once.

    ``seen`` carries inodes across calls; ``under`` keeps only paths with that component
    (``"code"``: the code trees of snapshots).
    """
    seen = set() if seen is None else seen
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        inside = under is None or under in Path(dirpath).relative_to(root).parts
        names = [*dirnames, *filenames] if inside else [d for d in dirnames if d == under]
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total


def median_usage(runs: list[Usage]) -> Usage:
    """The run with the median wall time (its CPU and RSS belong to the same run)."""
    ordered = sorted(runs, key=lambda u: u.wall)
    return ordered[(len(ordered) - 1) // 2]


# --------------------------------------------------------------------------- set-up


def relstep_exe() -> str:
    found = shutil.which("relstep") or str(Path(sys.executable).with_name("relstep"))
    if not Path(found).exists():
        raise SystemExit("relstep is not installed in this Python; run `pip install -e .` first")
    return found


def environment_commands() -> list[str]:
    return [c for c in ENVIRONMENT_COMMANDS if shutil.which(c.split()[0])]


def write_config(path: Path, db_url: str, app: Path, backup_root: Path) -> Path:
    """A relstep.yml with absolute paths, as a deploy job would have."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({  # JSON is YAML
        "backup_root": str(backup_root),
        "database": {"url": db_url},
        "code": {"backend": str(app / "backend"), "frontend": str(app / "frontend")},
    }, indent=2))
    return path


def database(bench: Bench, size_mb: int) -> str:
    name = f"relstep_bench_{size_mb}mb_s{bench.args.seed}"
    params = datagen.DatabaseParams(size_mb=size_mb, seed=bench.args.seed)
    return datagen.ensure_database(bench.args.pg, name, params, bench.log)


def app_tree(bench: Bench) -> Path:
    app = bench.work / "app"
    params = datagen.TreeParams(files=bench.args.files, seed=bench.args.seed)
    if not datagen.tree_is_current(app, params):
        bench.discard(app)
    datagen.ensure_tree(app, params, bench.log)
    return app


def timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def run_baseline(dest: Path, db_url: str, app: Path) -> Usage:
    return probe(["bash", "-c", BASELINE_SCRIPT, "baseline", str(dest), db_url, str(app), *environment_commands()])


def run_relstep(config: Path, *args: str) -> Usage:
    return probe(["--config", str(config), *args], cwd=config.parent, relstep_self=True)


# --------------------------------------------------------------------------- experiments


def exp_help(bench: Bench) -> None:
    exe = relstep_exe()
    runs = [probe([exe, "--help"]).wall for _ in range(bench.args.help_runs)]
    floor = [probe([sys.executable, "-c", "pass"]).wall for _ in range(bench.args.help_runs)]
    bench.add(Row("relstep --help start-up", "s", statistics.median(runs), target="<= 0.25 s",
                  met=statistics.median(runs) <= 0.25,
                  note=f"median of {len(runs)}; a bare `python -c pass` takes {statistics.median(floor):.3f} s"))


def exp_backup(bench: Bench) -> Path:
    """relstep backup vs the baseline at the full size; returns relstep's snapshot for later experiments."""
    size = bench.args.size_mb
    db_url = database(bench, size)
    app = app_tree(bench)
    bench.facts["database_bytes"] = datagen.database_size(db_url)
    bench.facts["code_bytes"] = sum(f.stat().st_size for f in datagen.tree_files(app) if not f.is_symlink())
    out = bench.out / "backup"
    ours: list[Usage] = []
    theirs: list[Usage] = []
    for i in range(bench.args.repeat):
        # Alternate the order so neither side always runs on the other's warmed caches.
        order = ("baseline", "relstep") if i % 2 == 0 else ("relstep", "baseline")
        for side in order:
            if side == "baseline":
                theirs.append(run_baseline(out / f"baseline-{i}" / timestamp(), db_url, app))
            else:
                # A new, empty backup_root per run: the first release, with nothing to share.
                config = write_config(out / f"relstep-{i}.yml", db_url, app, out / f"relstep-{i}")
                ours.append(run_relstep(config, "backup", "--version", "1.0.0"))
    mine, base = median_usage(ours), median_usage(theirs)
    ours_bytes, base_bytes = disk_usage(out / "relstep-0"), disk_usage(out / "baseline-0")
    label = f"({size} MB database, {bench.args.files} files)"
    bench.add(Row(f"backup wall time {label}", "s", mine.wall, base.wall, "<= 0.6x baseline",
                  mine.wall <= 0.6 * base.wall, f"median of {bench.args.repeat}"))
    bench.add(Row("backup CPU time (user+sys, child processes included)", "s", mine.cpu, base.cpu))
    bench.add(Row("backup peak RSS: relstep process / largest baseline process", "MB",
                  mine.self_rss_kb / 1024, base.tree_rss_kb / 1024, "<= 150 MB", mine.self_rss_kb / 1024 <= 150))
    bench.add(Row("backup peak RSS: largest process of the whole tree", "MB",
                  mine.tree_rss_kb / 1024, base.tree_rss_kb / 1024))
    bench.add(Row("backup bytes written (disk blocks)", "MB", ours_bytes / 2**20, base_bytes / 2**20))
    bench.facts["backup_self_rss_kb"] = mine.self_rss_kb
    return next(p for p in (out / "relstep-0").iterdir() if not p.name.startswith("."))


def exp_rss_flat(bench: Bench) -> None:
    """relstep's own peak RSS at a smaller database: it must not grow with the data."""
    small = bench.args.small_size_mb
    db_url = database(bench, small)
    app = app_tree(bench)
    out = bench.out / "backup-small"
    config = write_config(out / "relstep.yml", db_url, app, out / "relstep-backups")
    mine = run_relstep(config, "backup", "--version", "1.0.0")
    big = bench.facts.get("backup_self_rss_kb")
    growth = (big / mine.self_rss_kb - 1) if big else None
    bench.add(Row(f"relstep peak RSS at {small} MB vs {bench.args.size_mb} MB database", "MB",
                  mine.self_rss_kb / 1024, big / 1024 if big else None, "< 10% more at the full size",
                  growth is not None and growth < 0.10,
                  f"growth {growth:+.1%}" if growth is not None else "run with backup to compare"))


def exp_churn(bench: Bench) -> None:
    """N releases in a row with 1% of the code files changed between them: bytes on disk."""
    n = bench.args.releases
    db_url = database(bench, 0)  # schema only: this experiment is about code
    source = app_tree(bench)
    out = bench.out / "churn"
    out.mkdir(parents=True)
    app = out / "app"
    subprocess.run(["cp", "-a", str(source), str(app)], check=True)
    config = write_config(out / "relstep.yml", db_url, app, out / "relstep-backups")
    changed = 0
    relstep_seconds = []
    for release in range(1, n + 1):
        if release > 1:
            changed += datagen.churn(app, release)
        run_baseline(out / "baseline-backups" / f"{timestamp()}-r{release:02d}", db_url, app)
        relstep_seconds.append(run_relstep(config, "backup", "--version", f"1.0.{release}").wall)
    snapshots = sorted(p for p in (out / "relstep-backups").iterdir() if not p.name.startswith("."))
    first_code = disk_usage(snapshots[0] / "code")
    first_all = disk_usage(snapshots[0])
    ours_code = disk_usage(out / "relstep-backups", under="code")
    ours_all = disk_usage(out / "relstep-backups")
    base_all = disk_usage(out / "baseline-backups")
    base_first = disk_usage(sorted((out / "baseline-backups").iterdir())[0])
    bench.facts["churn"] = {"releases": n, "files_changed": changed, "first_snapshot_bytes": first_all,
                            "first_code_bytes": first_code, "relstep_code_bytes": ours_code,
                            "relstep_bytes": ours_all, "baseline_bytes": base_all,
                            "relstep_backup_seconds_median": statistics.median(relstep_seconds)}
    bench.add(Row(f"{n} releases, 1% churn: code trees on disk / one release's code", "x",
                  ours_code / first_code, base_all / base_first, "<= 1.5x", ours_code / first_code <= 1.5,
                  f"relstep {ours_code / 2**20:.0f} MB vs one release {first_code / 2**20:.0f} MB; "
                  f"baseline column: its {n} archives / one archive"))
    bench.add(Row(f"{n} releases, 1% churn: whole snapshots on disk / one release's code", "x",
                  ours_all / first_code, base_all / first_code, "",
                  None, f"relstep {ours_all / 2**20:.0f} MB (manifests included), baseline {base_all / 2**20:.0f} MB"))
    bench.add(Row(f"{n} releases, 1% churn: total bytes on disk", "MB", ours_all / 2**20, base_all / 2**20))
    # `list` reads every manifest; here each lists every code file, unlike the fake ones below.
    listed = run_relstep(config, "list")
    bench.add(Row(f"list of {n} real snapshots ({bench.args.files}-file manifests)", "s", listed.wall,
                  note="informational: the target is for 1,000 snapshots below"))
    run_relstep(config, "prune", "--keep", "3")


def _fake_snapshots(root: Path, count: int) -> None:
    """``count`` small finished snapshots, one hour apart, as relstep would have left them."""
    import hashlib

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for i in range(count):
        created = start + timedelta(hours=i)
        name = created.strftime("%Y%m%dT%H%M%SZ")
        snap = root / name
        snap.mkdir(parents=True)
        version = f"1.{i // 100}.{i % 100}"
        texts = {"VERSION.txt": version + "\n", "DEPLOYMENT_TYPE.txt": "release\n" if i % 100 == 0 else "patch\n"}
        for rel, text in texts.items():
            (snap / rel).write_text(text)
        manifest = {
            "format": 1, "name": name, "version": version, "deployment_type": texts["DEPLOYMENT_TYPE.txt"].strip(),
            "created_at": created.isoformat(timespec="seconds"), "relstep_version": "0.1.0",
            "engine": "postgresql", "row_counts": {}, "schema_revision": None, "migration_tool": None,
            "databases": {}, "code": {},
            "files": {rel: {"size": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}
                      for rel, text in texts.items()},
        }
        (snap / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
        stamp = created.timestamp()
        os.utime(snap, (stamp, stamp))


def exp_list_prune(bench: Bench) -> None:
    n = bench.args.fake_snapshots
    db_url = database(bench, 0)  # list and prune read the ReleaseRecord table, as in production
    out = bench.out / "many"
    root = out / "root"
    _fake_snapshots(root, n)
    config = write_config(out / "relstep.yml", db_url, out / "app", root)
    listed = run_relstep(config, "list")
    dry = run_relstep(config, "prune", "--keep", "30", "--dry-run")
    pruned = run_relstep(config, "prune", "--keep", "30")
    left = len([p for p in root.iterdir() if not p.name.startswith(".")])
    bench.add(Row(f"list of {n} snapshots", "s", listed.wall, target="<= 1 s", met=listed.wall <= 1.0))
    bench.add(Row(f"prune --dry-run of {n} snapshots", "s", dry.wall, target="<= 1 s", met=dry.wall <= 1.0))
    bench.add(Row(f"prune of {n} snapshots to 30 (removes {n - 30})", "s", pruned.wall, target="<= 1 s",
                  met=pruned.wall <= 1.0, note=f"{left} left"))


def _fresh_database(bench: Bench, name: str) -> str:
    datagen.drop_database(bench.args.pg, name)
    datagen.psql(bench.args.pg, f'CREATE DATABASE "{name}";')
    return datagen.database_url(bench.args.pg, name)


def _row_counts(url: str) -> dict[str, int]:
    tables = datagen.psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1;").split()
    return {t: int(datagen.psql(url, f'SELECT count(*) FROM "{t}";')) for t in tables}


def exp_restore(bench: Bench, snapshot: Path) -> None:
    """relstep restore (staged, proven, swapped in) against `pg_restore -j2` of the same kind of dump.

    Two targets: an empty database, and a busy one (holding the source's data already, so relstep
    also takes its safety snapshot and keeps the replaced database).  The baseline loads a
    `pg_dump -Fd` dump of the source into an empty database with `pg_restore -j2`.
    """
    source = database(bench, bench.args.size_mb)
    out = bench.out / "restore"
    out.mkdir(parents=True)
    dump_dir = out / "pg_dump"
    subprocess.run(["pg_dump", "--format=directory", "--jobs=2", "--compress=1", f"--file={dump_dir}", source],
                   check=True)
    config = bench.out / "backup" / "relstep-0.yml"
    theirs: list[Usage] = []
    empty: list[Usage] = []
    busy: list[Usage] = []
    for _ in range(bench.args.repeat):
        plain = _fresh_database(bench, "relstep_bench_restore_pg")
        theirs.append(probe(["pg_restore", "--jobs=2", "--exit-on-error", f"--dbname={plain}", str(dump_dir)]))
        ours_url = _fresh_database(bench, "relstep_bench_restore_relstep")
        empty.append(run_relstep(config, "restore", str(snapshot), "--database-url", ours_url, "--yes"))
        # The same database again: now it is busy (not empty), as production is.
        busy.append(run_relstep(config, "restore", str(snapshot), "--database-url", ours_url, "--yes"))
    base = median_usage(theirs)
    same = _row_counts(plain) == _row_counts(ours_url) == _row_counts(source)
    note = "row counts equal" if same else "ROW COUNTS DIFFER"
    for label, runs in (("an empty", empty), ("a busy", busy)):
        mine = median_usage(runs)
        bench.add(Row(f"restore into {label} database: relstep vs pg_restore -j2", "s", mine.wall, base.wall,
                      "<= 1.2x", mine.wall <= 1.2 * base.wall, f"median of {len(runs)}; {note}"))
    for name in ("relstep_bench_restore_pg", "relstep_bench_restore_relstep"):
        datagen.drop_database(bench.args.pg, name)
    for kept in datagen.psql(bench.args.pg, "SELECT datname FROM pg_database WHERE datname LIKE "
                                            "'relstep_bench_restore_relstep_before_restore_%';").split():
        datagen.drop_database(bench.args.pg, kept)


def exp_verify(bench: Bench, snapshot: Path) -> None:
    manifest = json.loads((snapshot / "MANIFEST.json").read_text())
    sums = bench.out / "SHA256SUMS"
    sums.write_text("".join(f"{meta['sha256']}  {rel}\n" for rel, meta in manifest["files"].items()))
    base = median_usage([probe(["sha256sum", "--quiet", "--check", str(sums)], cwd=snapshot)
                         for _ in range(bench.args.repeat)])
    sums.unlink()
    config = bench.out / "backup" / "relstep-0.yml"
    mine = median_usage([run_relstep(config, "verify", str(snapshot)) for _ in range(bench.args.repeat)])
    bench.add(Row("verify vs sha256sum --check of the same files", "s", mine.wall, base.wall, "<= 1.3x",
                  mine.wall <= 1.3 * base.wall, "relstep verify: checksums, then every dump file decompressed"))
    # The checksum level alone, which is the work sha256sum does (verify also decompresses
    # every file of the dump to prove pg_restore could read it).
    code = ("import json, sys; from pathlib import Path; from relstep import verify; p = Path(sys.argv[1]); "
            "problems = verify.check_files(p, json.loads((p / 'MANIFEST.json').read_text()))[0]; "
            "sys.exit(1 if problems else 0)")
    level1 = median_usage([probe([sys.executable, "-c", code, str(snapshot)]) for _ in range(bench.args.repeat)])
    bench.add(Row("verify, checksum level only (relstep.verify.check_files) vs sha256sum", "s", level1.wall,
                  base.wall, note="informational: the part of verify that sha256sum also does"))


def exp_encryption(bench: Bench) -> None:
    """relstep backup of the same data and code, plain and encrypted to one age key: a SQLite database
    of random hex rows, and the generated PostgreSQL database (plain: `pg_dump -Fd -j2 -Z1`;
    encrypted: one `pg_dump -Fc -Z0` stream through zstd and age, docs/encryption.md)."""
    import sqlite3

    import pyrage

    db = bench.work / f"encryption-{bench.args.encryption_mb}mb.sqlite3"
    if not db.exists():
        rows = bench.args.encryption_mb * (1 << 20) // 110
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
            conn.executemany("INSERT INTO events (payload) VALUES (?)", ((os.urandom(48).hex(),) for _ in range(rows)))
    public = str(pyrage.x25519.Identity.generate().to_public())
    mine, base = _encrypted_and_plain(bench, "sqlite", f"sqlite:///{db}", public)
    bench.add(Row(f"backup encrypted vs plain ({bench.args.encryption_mb} MB SQLite + code)", "s", mine, base,
                  "<= 1.1x", mine <= 1.1 * base, "same data; age through pyrage, one helper thread per file"))
    size = bench.args.encryption_pg_mb
    pg_url = database(bench, size)
    mine, base = _encrypted_and_plain(bench, "postgres", pg_url, public)
    bench.add(Row(f"backup encrypted vs plain ({size} MB PostgreSQL + code)", "s", mine, base, "<= 1.1x",
                  mine <= 1.1 * base, "plain: pg_dump -Fd -j2 -Z1; encrypted: pg_dump -Fc -Z0, then zstd -3 "
                  f"(2 threads) and age; median of {bench.args.repeat}, sides alternated"))


def _encrypted_and_plain(bench: Bench, label: str, url: str, public: str) -> tuple[float, float]:
    """(encrypted, plain) median wall time of `relstep backup` of ``url`` and the code tree."""
    app = app_tree(bench)
    usage: dict[str, list[Usage]] = {"plain": [], "encrypted": []}
    for i in range(bench.args.repeat):
        # Alternate the order so neither side always runs on the other's warmed caches.
        for kind in (("plain", "encrypted") if i % 2 == 0 else ("encrypted", "plain")):
            root = bench.out / f"encryption-{label}-{kind}-{i}"
            config = write_config(root / "relstep.yml", url, app, root / "snapshots")
            settings = json.loads(config.read_text())
            settings["migrations"] = {"tool": "none"}
            if kind == "encrypted":
                settings["encryption"] = {"recipients": [public]}
            config.write_text(json.dumps(settings, indent=2))
            usage[kind].append(run_relstep(config, "backup", "--version", f"1.0.{i}"))
    return median_usage(usage["encrypted"]).wall, median_usage(usage["plain"]).wall


# --------------------------------------------------------------------------- output


def machine_facts(bench: Bench) -> dict[str, Any]:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {
        "nproc": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()),
        "memory_gb": round(mem_kb / 2**20, 1),
        "postgresql": datagen.psql(bench.args.pg, "SHOW server_version;"),
        "pg_dump": subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "filesystem": filesystem_of(bench.work),
        "relstep": relstep_source(),
    }


def relstep_source() -> dict[str, Any]:
    """Which relstep the runs measure: the package the relstep command imports, and its commit."""
    found = subprocess.run([sys.executable, "-c", "import relstep, os; print(os.path.dirname(relstep.__file__))"],
                           capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    root = Path(found).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()

    return {"package": found, "commit": git("rev-parse", "HEAD") or None,
            "modified_files": len(git("status", "--porcelain", "--untracked-files=no").splitlines())}


def filesystem_of(path: Path) -> str:
    """The type and options of the mount holding ``path`` (``stat -f`` says only "ext2/ext3" for ext4)."""
    best = ("", "unknown", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        _device, mount, kind, options, *_ = line.split()
        if str(path).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best[0]):
            best = (mount, kind, options)
    return f"{best[1]} on {best[0]} ({best[2]})"


def render(bench: Bench) -> str:
    def num(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"

    header = ("metric", "unit", "relstep", "baseline", "relstep/baseline", "target", "met", "note")
    lines = [
        (r.metric, r.unit, num(r.relstep), num(r.baseline), num(r.ratio), r.target or "-",
         {True: "yes", False: "NO", None: "-"}[r.met], r.note)
        for r in bench.rows
    ]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


EXPERIMENTS = ("help", "list", "backup", "rss", "restore", "verify", "churn", "encryption")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1000, help="database size on disk (default 1000)")
    parser.add_argument("--small-size-mb", type=int, default=250, help="second size for the RSS check (250)")
    parser.add_argument("--files", type=int, default=20_000, help="code files outside node_modules (20000)")
    parser.add_argument("--encryption-mb", type=int, default=200, help="SQLite database of the encryption run (200)")
    parser.add_argument("--encryption-pg-mb", type=int, default=500,
                        help="PostgreSQL database of the encryption run (500)")
    parser.add_argument("--releases", type=int, default=30, help="consecutive releases for the churn test (30)")
    parser.add_argument("--fake-snapshots", type=int, default=1000, help="snapshots for list/prune (1000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="backup, restore and verify runs per side; the median is kept (1)")
    parser.add_argument("--help-runs", type=int, default=10, help="`relstep --help` runs (10)")
    parser.add_argument("--seed", type=int, default=42, help="data generation seed (42)")
    parser.add_argument("--pg", default=os.environ.get("RELSTEP_BENCH_PG", DEFAULT_PG),
                        help=f"admin URL of the PostgreSQL server to use (default {DEFAULT_PG})")
    default_work = Path(os.environ.get("RELSTEP_BENCH_DIR", "/var/tmp/relstep-bench"))
    parser.add_argument("--work", type=Path, default=default_work,
                        help="scratch folder, kept between runs to cache the code tree (/var/tmp/relstep-bench)")
    parser.add_argument("--only", default=",".join(EXPERIMENTS),
                        help=f"comma-separated experiments to run, from {','.join(EXPERIMENTS)} (all)")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="leave this run's snapshots and archives in WORK/trash for inspection")
    parser.add_argument("--json-file", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    wanted = set(args.only.split(","))
    unknown = wanted - set(EXPERIMENTS)
    if unknown:
        raise SystemExit(f"unknown experiments: {', '.join(sorted(unknown))}")
    args.work.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    previous_runs = list((work / "runs").glob("*"))
    bench = Bench(args, work, work / "runs" / timestamp())
    bench.out.mkdir(parents=True)
    bench.warn_if_recent_delete()
    bench.facts["machine"] = machine_facts(bench)
    bench.facts["load_before"] = os.getloadavg()
    started = time.monotonic()
    if "help" in wanted:
        exp_help(bench)
    snapshot = exp_backup(bench) if wanted & {"backup", "restore", "verify"} else None
    if "rss" in wanted:
        exp_rss_flat(bench)
    if "restore" in wanted and snapshot:
        exp_restore(bench, snapshot)
    if "verify" in wanted and snapshot:
        exp_verify(bench, snapshot)
    if "churn" in wanted:
        exp_churn(bench)
    if "encryption" in wanted:
        exp_encryption(bench)
    if "list" in wanted:  # last: its prune deletes 970 snapshots (see Bench.discard)
        exp_list_prune(bench)
    bench.facts["load_after"] = os.getloadavg()
    # Everything measured: now delete this run's outputs and anything older.
    for path in [*previous_runs, bench.out]:
        bench.discard(path)
    if not args.keep_outputs:
        bench.empty_trash()
    bench.facts["seconds"] = round(time.monotonic() - started, 1)
    document = json.dumps({"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                           "facts": bench.facts,
                           "rows": [{**asdict(r), "ratio": r.ratio} for r in bench.rows]}, indent=2)
    if args.json_file:
        args.json_file.write_text(document + "\n")
    if args.json:
        print(document)
    else:
        print(render(bench))
        print()
        print(json.dumps(bench.facts["machine"]))
        print(f"load average before {bench.facts['load_before']}, after {bench.facts['load_after']}; "
              f"{bench.facts['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
