"""Interleaved A/B(/C...) of `relstep backup` on bench/'s database between relstep source trees.

    python bench/fingerprint_ab.py RUNS NAME=TREE NAME=TREE ... [--size-mb 1000] [--seed 4242] [--files 2000]

Each TREE is a relstep source tree put on PYTHONPATH (e.g. this checkout, and `git archive` of
another commit unpacked somewhere).  Every round runs each tree once, in a rotating order, so
that no side always runs on the other's warmed caches; the machine's load average is printed
with every run.  The database (`relstep_bench_<size>mb_s<seed>`) and a code tree of `--files`
files are generated once, as bench/run.py does.  Used for the fingerprint's cost in RESULTS.md.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datagen
import run as bench

parser = argparse.ArgumentParser()
parser.add_argument("runs", type=int)
parser.add_argument("sides", nargs="+", help="NAME=TREE")
parser.add_argument("--size-mb", type=int, default=1000)
parser.add_argument("--seed", type=int, default=4242)
parser.add_argument("--files", type=int, default=2000)
parser.add_argument("--pg", default=os.environ.get("RELSTEP_BENCH_PG", bench.DEFAULT_PG))
parser.add_argument("--work", type=Path, default=Path("/var/tmp/fp-bench"))
args = parser.parse_args()

sides = dict(side.split("=", 1) for side in args.sides)
name = f"relstep_bench_{args.size_mb}mb_s{args.seed}"
db = datagen.ensure_database(args.pg, name, datagen.DatabaseParams(size_mb=args.size_mb, seed=args.seed), print)
app = args.work / "app"
datagen.ensure_tree(app, datagen.TreeParams(files=args.files, seed=args.seed), print)
out = args.work / "ab"
shutil.rmtree(out, ignore_errors=True)
results: dict[str, list[float]] = {k: [] for k in sides}
names = list(sides)
for i in range(args.runs):
    for side in names[i % len(names):] + names[: i % len(names)]:
        os.environ["PYTHONPATH"] = sides[side]
        cfg = bench.write_config(out / f"{side}-{i}.yml", db, app, out / f"{side}-{i}")
        u = bench.run_relstep(cfg, "backup", "--version", "1.0.0")
        results[side].append(round(u.wall, 2))
        shutil.rmtree(out / f"{side}-{i}", ignore_errors=True)
        print(side, i, round(u.wall, 2), round(u.cpu, 2), os.getloadavg(), flush=True)
summary = {k: {"runs": v, "median": statistics.median(v)} for k, v in results.items()}
base = summary[names[-1]]["median"]
for k in names:
    summary[k]["ratio_to_" + names[-1]] = round(summary[k]["median"] / base, 3)
print(json.dumps(summary))
