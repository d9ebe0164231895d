"""Every value relstep writes for a CI passes through relstep.masking.mask_text."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from relstep import ci
from relstep.result import PhaseResult, RunResult

from .ci_support import PLANTED_SECRET

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`


def leaky_result(secret: str) -> RunResult:
    url = f"postgresql://app:{secret}@db.internal/app"
    return RunResult(
        version="1.0.0",
        deployment_type="release",
        snapshot=f"/backups/{secret}/20261124T010423Z",
        schema_revision=f"rev-{secret}",
        phases=[PhaseResult("backup", False, 0.1, f"pg_dump {url} failed", exit_code=3)],
        failed_phase="backup",
        error=f"could not connect to {url}",
        exit_code=3,
    )


def everything_written(tmp_path: Path, result: RunResult) -> str:
    env = {
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_ACTIONS": "true",
        "RELSTEP_DOTENV": str(tmp_path / "relstep.env"),
    }
    stream = io.StringIO()
    ci.report(result, env, stream=stream)
    files = "".join(p.read_text() for p in sorted(tmp_path.iterdir()))
    return files + stream.getvalue()


def test_masking_falls_back_to_identity_without_the_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import relstep.masking` raise ModuleNotFoundError.
    monkeypatch.setitem(sys.modules, "relstep.masking", None)
    written = everything_written(tmp_path, leaky_result("plain-value"))
    assert "rev-plain-value" in written


def test_every_writer_routes_through_mask_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("relstep.masking")
    fake.mask_text = lambda text: text.replace("TOPSECRET", "***")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "relstep.masking", fake)
    written = everything_written(tmp_path, leaky_result("TOPSECRET"))
    assert "TOPSECRET" not in written
    assert written.count("***") >= 8  # outputs, summary cells and facts, dotenv, annotation


@pytest.fixture
def real_masking() -> Iterator[types.ModuleType]:
    masking = pytest.importorskip("relstep.masking", reason="relstep.masking (the core's) is not there yet")
    yield masking
    if hasattr(masking, "clear_registered"):
        masking.clear_registered()


def test_secrets_registered_with_relstep_masking_never_reach_ci_files(
    tmp_path: Path, real_masking: types.ModuleType
) -> None:
    real_masking.register_secret(PLANTED_SECRET)
    written = everything_written(tmp_path, leaky_result(PLANTED_SECRET))
    assert PLANTED_SECRET not in written
    assert "rev-***" in written


def test_url_passwords_are_masked_by_the_real_module(tmp_path: Path, real_masking: types.ModuleType) -> None:
    del real_masking  # only needed so the test skips while the module does not exist
    written = everything_written(tmp_path, leaky_result("UrlPw-31337"))
    assert "postgresql://app:***@db.internal/app" in written
    assert "could not connect to postgresql://app:UrlPw-31337@" not in written
