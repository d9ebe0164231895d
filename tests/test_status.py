"""`relstep status` on real snapshots of each engine: each threshold fails with exit 11, alerts and pings."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.helpers import relstep, sqlite_app, write_config
from tests.servers import Webhook, webhook  # noqa: F401 - the receiver fixture

HEALTH_EXIT = 11


def _backup(app: Path, version: str, record: bool = True) -> Path:
    ran = relstep("backup", "--version", version, "--type", "release", cwd=app)
    assert ran.code == 0, ran.err
    path = Path(ran.out.strip())
    if record:
        recorded = relstep("record", "--snapshot", path.name, cwd=app)
        assert recorded.code == 0, recorded.err
    return path


def _paths(hook: Webhook) -> list[str]:
    return [r["path"] for r in hook.requests]


def test_status_fails_each_threshold_alerts_and_pings(engine_app: tuple[Path, str],
                                                      webhook: Webhook) -> None:  # noqa: F811
    app, url = engine_app
    base = webhook.url.split("/hooks/")[0]
    write_config(app, {"database": {"url": url}, "migrations": {"tool": "auto"},
                       "notify": {"webhook": webhook.url, "ping_url": f"{base}/ping/check-key"}})
    first = _backup(app, "1.0.0")
    (app / "backend" / "big.bin").write_bytes(os.urandom(1 << 20))
    second = _backup(app, "1.1.0")

    healthy = relstep("status", "--max-age", "1d", "--min-size-ratio", "0.5", "--json", cwd=app)
    assert healthy.code == 0, healthy.err
    data = json.loads(healthy.out)
    assert (data["healthy"], data["problems"], data["kept"], data["retention"]) == (True, [], 2, 30)
    assert (data["newest"]["name"], data["newest"]["version"], data["newest"]["recorded"]) == (
        second.name, "1.1.0", True)
    assert _paths(webhook) == ["/ping/check-key"]   # a heartbeat, no alert
    webhook.requests.clear()

    # Too old: every snapshot is older than 0 seconds.
    old = relstep("status", "--max-age", "0s", cwd=app)
    assert old.code == HEALTH_EXIT
    assert old.last_err == (f"relstep: status failed: the newest snapshot {second.name} is "
                            f"{old.out.split(', ')[1].removesuffix(' old')} old, older than --max-age 0s")
    assert _paths(webhook) == ["/hooks/T000/B000/planted-webhook-token", "/ping/check-key/fail"]
    assert webhook.requests[0]["body"]["text"].startswith("relstep: status failed for ")
    webhook.requests.clear()

    # Too small: the 1 MiB file is gone from the next one.
    (app / "backend" / "big.bin").unlink()
    third = _backup(app, "1.2.0")
    small = relstep("status", "--min-size-ratio", "0.5", cwd=app)
    assert small.code == HEALTH_EXIT
    assert "less than --min-size-ratio 0.5" in small.last_err
    assert small.last_err.startswith(f"relstep: status failed: the newest snapshot {third.name} (")
    assert _paths(webhook)[-1] == "/ping/check-key/fail"
    assert relstep("status", "--max-age", "1d", cwd=app).code == 0   # the size alone is not checked

    # Verified: status shows each snapshot's last result.
    assert relstep("verify", third.name, cwd=app).code == 0
    # Unrecorded.
    fourth = _backup(app, "1.3.0", record=False)
    unrecorded = relstep("status", "--max-age", "1d", cwd=app)
    assert unrecorded.code == HEALTH_EXIT
    assert unrecorded.last_err == (f"relstep: status failed: the newest snapshot {fourth.name} is not recorded; "
                                   f"run `relstep record --snapshot {fourth.name}` if its deploy went out")
    assert relstep("record", "--snapshot", fourth.name, cwd=app).code == 0

    # Failed its last verify: one byte changed in the snapshot.
    with open(fourth / "VERSION.txt", "ab") as out:
        out.write(b"x")
    assert relstep("verify", fourth.name, cwd=app).code == 8
    failed = relstep("status", "--max-age", "1d", "--json", cwd=app)
    assert failed.code == HEALTH_EXIT
    problems = json.loads(failed.out)["problems"]
    assert len(problems) == 1 and problems[0].startswith(f"the newest snapshot {fourth.name} failed its last verify (")
    assert problems[0].endswith(f"run `relstep verify {fourth.name}`")
    by_name = {s["name"]: s for s in json.loads(failed.out)["snapshots"]}
    assert by_name[third.name]["verified"]["ok"] is True
    assert by_name[fourth.name]["verified"]["ok"] is False
    assert by_name[first.name]["verified"] is None
    assert not any(p.name.startswith(".relstep-verify") for p in fourth.iterdir())   # never inside a snapshot
    # Verify records again after the file is repaired: its last result is what counts.
    with open(fourth / "VERSION.txt", "r+b") as out:
        out.truncate(len(b"1.3.0\n"))
    assert relstep("verify", fourth.name, cwd=app).code == 0

    # A recorded release whose snapshot was deleted by hand is reported; the one prune removed is not.
    shutil.rmtree(second)
    assert relstep("prune", "--keep", "2", cwd=app).code == 0
    assert not first.exists()
    gone = relstep("status", "--max-age", "1d", "--json", cwd=app)
    assert gone.code == HEALTH_EXIT
    body = json.loads(gone.out)
    assert [v["name"] for v in body["vanished"]] == [second.name]
    assert body["problems"] == [f"recorded release 1.1.0 points at {second.name}, which is gone from backup_root "
                                "although relstep did not prune it (deleted by hand?)"]


def test_status_without_thresholds_reports_and_exits_0(engine_app: tuple[Path, str]) -> None:
    app, _url = engine_app
    snap = _backup(app, "2.0.0", record=False)
    assert relstep("pin", snap.name, "--reason", "before the data migration", cwd=app).code == 0
    ran = relstep("status", cwd=app)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0].startswith(f"newest:   {snap.name} (2.0.0), ")
    assert lines[0].endswith(" old, recorded: no")
    assert lines[2] == "kept:     0 of retention 30, plus 1 pinned"
    assert lines[3] == f"  {snap.name}  2.0.0  never verified, pinned: before the data migration"
    assert lines[-1] == f"PROBLEM: the newest snapshot {snap.name} is not recorded; run `relstep record --snapshot " \
        f"{snap.name}` if its deploy went out"
    bad = relstep("status", "--max-age", "soon", cwd=app)
    assert bad.code == 2
    assert bad.last_err == ("relstep: input failed: --max-age 'soon' is not a duration; "
                            "give e.g. 26h, 2d, 90m or 1h30m")


NOT_A_DURATION = "is not a duration; give e.g. 26h, 2d, 90m or 1h30m"
NOT_A_RATIO = "is not a ratio more than 0 and at most 1; give e.g. 0.5"


def test_threshold_edge_inputs_are_one_line_errors_exit_2_or_accepted(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    write_config(app, {"database": {"url": "sqlite:///app.db"}, "migrations": {"tool": "prisma"}})
    snap = _backup(app, "1.0.0")
    too_long = "is longer than 100 years; give e.g. 26h, 2d or 90m"
    refused = [
        *(("--max-age", value, NOT_A_DURATION) for value in ("-1h", "nan", "inf", "garbage", "", "1e3", "1h30", "h",
                                                             "101y")),
        # A float that overflows to inf would never fail: a bound instead of a silently dead check.
        *(("--max-age", value, too_long) for value in ("9" * 400, "5300w")),
        # 1e-400 is 0 once parsed.
        *(("--min-size-ratio", value, NOT_A_RATIO) for value in ("0", "-1", "nan", "inf", "1.5", "garbage", "",
                                                                "1e-400")),
    ]
    for option, value, why in refused:
        ran = relstep("status", option, value, cwd=app)
        assert (ran.code, ran.err.splitlines()) == (2, [f"relstep: input failed: {option} {value!r} {why}"]), value
    for accepted in ("1h30m", "1d 12h", "2d", "90", "0.5w", "1.5h"):
        ran = relstep("status", "--max-age", accepted, "--min-size-ratio", "1", cwd=app)
        assert (ran.code, ran.err) == (0, ""), (accepted, ran.err)
    # 0 is accepted and fails at once (every snapshot is older): a way to try the alert route.
    zero = relstep("status", "--max-age", "0", cwd=app)
    assert zero.code == HEALTH_EXIT
    assert zero.last_err.startswith(f"relstep: status failed: the newest snapshot {snap.name} is ")
    assert zero.last_err.endswith(" old, older than --max-age 0s")
