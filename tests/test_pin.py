"""Pins: a pinned snapshot survives `prune --keep 1` and an off-site prune, on each engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

from relstep import pins
from tests.helpers import relstep, write_config


def _backup(app: Path, version: str) -> Path:
    ran = relstep("backup", "--version", version, "--type", "release", cwd=app)
    assert ran.code == 0, ran.err
    return Path(ran.out.strip())


def test_a_pinned_snapshot_survives_local_and_offsite_prune_and_does_not_count(
        engine_app: tuple[Path, str], tmp_path: Path) -> None:
    app, url = engine_app
    remote = tmp_path / "remote"
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"},
                       "offsite": {"url": f"file://{remote}", "keep": 1}})
    first = _backup(app, "1.0.0")
    pinned = relstep("pin", "1.0.0", "--reason", "audit 2026", "--json", cwd=app)
    assert pinned.code == 0, pinned.err
    assert json.loads(pinned.out)["pinned"] == first.name
    second, third = _backup(app, "1.1.0"), _backup(app, "1.2.0")

    # Off-site, keep 1: each push prunes the remote; the pinned copy stays and is not the "one".
    for snap in (first, second, third):
        ran = relstep("offsite", "--snapshot", snap.name, cwd=app)
        assert ran.code == 0, ran.err
    assert sorted(p.name for p in remote.iterdir()) == sorted([first.name, third.name])

    listed = relstep("list", cwd=app)
    header, *rows = listed.out.splitlines()
    assert header.split()[-1] == "PINNED"
    assert [row.split()[0] for row in rows if row.endswith("audit 2026")] == [first.name]

    pruned = relstep("prune", "--keep", "1", "--json", cwd=app)
    assert pruned.code == 0, pruned.err
    data = json.loads(pruned.out)
    assert data["removed"] == [str(second)]
    assert sorted(data["kept"]) == sorted([str(first), str(third)])
    assert f"pinned, never pruned: {first.name}" in data["notes"]
    assert sorted(p.name for p in app.joinpath("backups/releases").iterdir() if not p.name.startswith(".")) == \
        sorted([first.name, third.name])

    # Unpinned, it counts again and the next prune removes it.
    assert relstep("unpin", first.name, cwd=app).out.strip() == f"unpinned {first.name}"
    again = relstep("prune", "--keep", "1", "--json", cwd=app)
    assert json.loads(again.out)["removed"] == [str(first)]
    not_pinned = relstep("unpin", first.name, cwd=app)
    assert not_pinned.code == 2


def test_pins_are_replaced_whole_so_a_crash_mid_write_leaves_the_old_pins(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    root.mkdir()
    pins.pin(root, "20260101T000000Z", "keep", "1.0.0")
    before = (root / pins.FILENAME).read_bytes()
    # A crash between writing the temporary file and the rename: the temporary is left, the pins are whole.
    (root / f"{pins.FILENAME}.abc.tmp").write_bytes(b'{"pins": {"20260101T0')
    assert (root / pins.FILENAME).read_bytes() == before
    assert pins.names(root) == {"20260101T000000Z"}
    pins.pin(root, "20260102T000000Z", None, "1.1.0")
    assert pins.names(root) == {"20260101T000000Z", "20260102T000000Z"}
    assert oct(os.stat(root / pins.FILENAME).st_mode & 0o777) == "0o600"
    assert pins.unpin(root, "20260101T000000Z") is not None
    assert pins.names(root) == {"20260102T000000Z"}
