"""Interleaved A/B of `relstep backup` on bench/'s database between two relstep source trees.

    python bench/fingerprint_ab.py RUNS WITH_TREE WITHOUT_TREE

Used for the fingerprint's cost in RESULTS.md (WITH: this tree; WITHOUT: the commit before it,
e.g. from `git archive`).  Run bench/run.py once first (with --seed 4242) to build the database.
"""

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench

DB = "postgresql://postgres@127.0.0.1:5432/relstep_bench_1000mb_s4242"
APP = Path("/var/tmp/fp-bench/app")
OUT = Path("/var/tmp/fp-bench/ab")
sides = {"with": sys.argv[2], "without": sys.argv[3]}  # relstep source trees, put on PYTHONPATH
results = {k: [] for k in sides}
shutil.rmtree(OUT, ignore_errors=True)
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
    order = ("with", "without") if i % 2 == 0 else ("without", "with")
    for side in order:
        os.environ["PYTHONPATH"] = sides[side]
        cfg = bench.write_config(OUT / f"{side}-{i}.yml", DB, APP, OUT / f"{side}-{i}")
        u = bench.run_relstep(cfg, "backup", "--version", "1.0.0")
        results[side].append(round(u.wall, 2))
        shutil.rmtree(OUT / f"{side}-{i}", ignore_errors=True)
        print(side, i, round(u.wall, 2), round(u.cpu, 2), os.getloadavg(), flush=True)
print(json.dumps({k: {"runs": v, "median": statistics.median(v)} for k, v in results.items()}))
