"""The fake engine with one bug: its restore loses the last row of every table.

The contract suite must fail it (test_contract.py::test_the_contract_fails_an_engine_that_loses_rows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relstep.databases.base import DumpInfo, DumpPlan, Inspect
from tests.databases import fake_engine
from tests.databases.fake_engine import (  # noqa: F401  (the rest of the Engine protocol, unchanged)
    check_files,
    fingerprint,
    is_empty,
    row_counts,
    scratch_database,
    server_version,
    tool_versions,
)

NAME = "fakelossy"


def dump(url: str, dest_dir: Path, plan: DumpPlan, inspect: Inspect | None = None) -> DumpInfo:
    info = fake_engine.dump(url, dest_dir, plan, inspect)
    info.engine = NAME
    return info


def restore(db_dir: Path, url: str, extra: Mapping[str, Any] | None = None) -> None:
    fake_engine.restore(db_dir, url, extra)
    path = fake_engine._path(url)
    data = json.loads(path.read_text())
    data["tables"] = {t: rows[:-1] for t, rows in data["tables"].items()}
    path.write_text(json.dumps(data))
