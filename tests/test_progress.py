"""Progress: plain timestamped lines in CI (never a control character), rich on a terminal, silent by default."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import pytest

from relstep import progress
from tests.helpers import clean_env, relstep, sqlite_app

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ relstep: \S")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")    # everything but the newline


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ci_output_is_timestamped_lines_without_control_characters(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    (app / "backend" / "weird\x1b[31mname.js").write_text("// a file name with an escape sequence\n")
    # Not a TTY (captured) and an interval of 0, so every step of every task is reported.
    ran = relstep("run", "--version", "1.0.0", cwd=app, env=clean_env(CI="true", RELSTEP_PROGRESS_INTERVAL="0"))
    assert ran.code == 0, ran.err
    progress_lines = [line for line in ran.err.splitlines() if LINE.match(line)]
    assert any("dumping database main: done" in line for line in progress_lines), ran.err
    assert any(re.search(r"archiving code backend: done, 3 files, \d+ B in ", line) for line in progress_lines)
    assert not CONTROL.search(ran.err), repr(ran.err)
    assert not CONTROL.search(ran.out)
    assert ran.out.startswith("relstep run: 1.0.0 (release)\n")      # stdout keeps the summary only


def test_quick_runs_print_no_progress_by_default(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    ran = relstep("backup", "--version", "1.0.0", cwd=app, env=clean_env(CI="true"))
    assert ran.code == 0 and ran.err == ""


def test_choice_of_reporter() -> None:
    assert type(progress.choose(FakeTTY(), {})) is progress.RichReporter
    assert type(progress.choose(FakeTTY(), {"CI": "true"})) is progress.PlainReporter
    assert type(progress.choose(io.StringIO(), {})) is progress.PlainReporter
    assert type(progress.choose(FakeTTY(), {"RELSTEP_PROGRESS": "off"})) is progress.Reporter
    assert type(progress.choose(io.StringIO(), {"RELSTEP_PROGRESS": "rich"})) is progress.RichReporter


def test_plain_reporter_throttles_by_interval() -> None:
    now = [100.0]
    out = io.StringIO()
    reporter = progress.PlainReporter(out, interval=10, clock=lambda: now[0])
    previous = progress.install(reporter)
    try:
        with progress.task("uploading x", unit="bytes", total=3 * 1024 * 1024) as task:
            task.started = now[0]
            task.advance(1024)                 # 0 s in: quiet
            now[0] += 11
            task.advance(1024 * 1024)          # 11 s in: one line
            now[0] += 5
            task.advance(1024)                 # 5 s after the last line: quiet
            now[0] += 6
            task.advance(1024)                 # 11 s after it: a line
    finally:
        progress.install(previous)
    lines = out.getvalue().splitlines()
    assert [line.split(" relstep: ", 1)[1] for line in lines] == [
        "uploading x: 1.0 MiB of 3.0 MiB", "uploading x: 1.0 MiB of 3.0 MiB",
        "uploading x: done, 1.0 MiB of 3.0 MiB in 22.0 s"]
    assert all(LINE.match(line) for line in lines)


def test_rich_reporter_on_a_terminal_and_threads() -> None:
    out = FakeTTY()
    previous = progress.install(progress.RichReporter(out))
    try:
        with progress.task("archiving code backend", unit="files") as task:
            workers = [threading.Thread(target=lambda: [task.advance(1, 10) for _ in range(100)]) for _ in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            assert task.completed == 400 and task.bytes == 4000
    finally:
        progress.install(previous)
    assert progress.current() is previous


def test_polling_reports_a_growing_folder(tmp_path: Path) -> None:
    out = io.StringIO()
    previous = progress.install(progress.PlainReporter(out, interval=0))
    try:
        with progress.task("dumping database main") as task, \
                progress.polling(task, lambda: sum(p.stat().st_size for p in tmp_path.iterdir()), every=0.01):
            (tmp_path / "a").write_bytes(b"x" * 2048)
            threading.Event().wait(0.1)
    finally:
        progress.install(previous)
    assert "dumping database main: done, 2.0 KiB" in out.getvalue()


@pytest.mark.parametrize(("size", "shown"), [(None, "0 B"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                             (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3072.0 TiB")])
def test_human_bytes(size: int | None, shown: str) -> None:
    from relstep.fsutil import human_bytes

    assert human_bytes(size) == shown
