"""MANIFEST.json as typed models: what loads, what is refused (one line, never a traceback), what is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relstep import __version__
from relstep.errors import InputError, ManifestError, ManifestTooNew
from relstep.manifest import FORMAT, Manifest
from tests.helpers import relstep, sqlite_app

SHA = "ab" * 32


def written(tmp_path: Path, data: Any) -> Path:
    snap = tmp_path / "20261201T000000Z"
    snap.mkdir(exist_ok=True)
    (snap / "MANIFEST.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return snap


def good(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": 1, "name": "20261201T000000Z", "version": "2.0.3", "deployment_type": "release",
        "created_at": "2026-12-01T00:00:00+00:00", "project": "github.com/acme/shop",
        "databases": {"main": {"engine": "sqlite", "path": "databases/main", "row_counts": {"User": 3}}},
        "code": {"backend": {"source": "/srv/app/backend", "files": 1, "symlinks": {"current": "x"},
                             "executables": ["bin/start"]}},
        "files": {"VERSION.txt": {"size": 6, "sha256": SHA}},
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_a_manifest_loads_into_typed_fields(tmp_path: Path) -> None:
    m = Manifest.load(written(tmp_path, good()))
    assert (m.version, m.deployment_type, m.project, m.format) == ("2.0.3", "release", "github.com/acme/shop", 1)
    assert m.databases is not None and m.databases["main"].row_counts == {"User": 3}
    assert m.databases["main"].row_counts_consistent is True and m.databases["main"].extra is None
    assert m.files["VERSION.txt"].size == 6 and m.size == 6
    assert m.code["backend"].executables == ["bin/start"]
    assert m.created is not None and m.created.isoformat() == "2026-12-01T00:00:00+00:00"


def test_an_old_manifest_without_the_newer_fields_still_loads(tmp_path: Path) -> None:
    old = {"version": "1.0.0", "deployment_type": "patch", "files": {}}   # no format, project, created_at...
    m = Manifest.load(written(tmp_path, old))
    assert (m.format, m.project, m.created_at, m.databases, m.code) == (FORMAT, None, None, None, {})


def test_unknown_fields_of_the_same_format_are_kept_where_that_is_safe(tmp_path: Path) -> None:
    data = good(fingerprint={"User": "abc"})
    data["databases"]["main"]["fingerprint"] = {"User": "def"}
    data["code"]["backend"]["left_out"] = [{"path": "big.iso", "reason": "too large"}]
    m = Manifest.load(written(tmp_path, data))
    again = json.loads(m.to_json())
    assert again["fingerprint"] == {"User": "abc"}
    assert again["databases"]["main"]["fingerprint"] == {"User": "def"}
    assert again["code"]["backend"]["left_out"] == [{"path": "big.iso", "reason": "too large"}]
    # A file entry is what integrity checks trust: an unknown key there could change how to read the bytes.
    data["files"]["VERSION.txt"]["codec"] = "age"
    with pytest.raises(ManifestError, match=r"files\.VERSION\.txt\.codec is not a field relstep knows$"):
        Manifest.load(written(tmp_path, data))


def test_a_newer_format_is_refused_naming_both_numbers(tmp_path: Path) -> None:
    snap = written(tmp_path, good(format=FORMAT + 1, files="whatever a newer relstep writes"))
    with pytest.raises(ManifestTooNew) as caught:
        Manifest.load(snap)
    assert caught.value.message == (
        f"{snap}/MANIFEST.json is manifest format {FORMAT + 1}, but this relstep ({__version__}) reads format "
        f"{FORMAT} at most; upgrade relstep to read this snapshot")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("data", "problem"), [
    ("{ not json", "cannot read {m}: it is not JSON (Expecting property name enclosed in double quotes: "
                   "line 1 column 3 (char 2))"),
    ("[1, 2]", "{m} is not a relstep manifest: it is not a JSON object"),
    (good(version=None), "{m} is not a relstep manifest: it has no version"),
    (good(version=""), "{m} is not a relstep manifest: version: string should have at least 1 character"),
    (good(files=["VERSION.txt"]), "{m} is not a relstep manifest: files is not a mapping"),
    (good(files={"VERSION.txt": "6 bytes"}), "{m} is not a relstep manifest: files.VERSION.txt is not a mapping"),
    (good(files={"VERSION.txt": {"size": "6", "sha256": SHA}}),
     "{m} is not a relstep manifest: files.VERSION.txt.size is not an integer"),
    (good(files={"VERSION.txt": {"size": 6}}), "{m} is not a relstep manifest: files.VERSION.txt has no sha256"),
    (good(files={"../../etc/passwd": {"size": 6, "sha256": SHA}}),
     "{m} is not a relstep manifest: files lists an unsafe path '../../etc/passwd'"),
    (good(format="1"), "{m} is not a relstep manifest: format is not an integer"),
    (good(databases={"main": {"engine": "sqlite", "path": "/etc"}}),
     "{m} is not a relstep manifest: databases.main.path: unsafe path '/etc'"),
    (good(created_at="yesterday"), "{m} is not a relstep manifest: created_at: not an ISO 8601 time: 'yesterday'"),
])
def test_a_malformed_manifest_is_one_line_naming_the_first_problem(tmp_path: Path, data: Any, problem: str) -> None:
    snap = written(tmp_path, data)
    with pytest.raises(ManifestError) as caught:
        Manifest.load(snap)
    assert caught.value.message == problem.format(m=snap / "MANIFEST.json")
    assert caught.value.exit_code == 2


def test_a_folder_without_a_manifest_is_not_a_snapshot(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is not a relstep snapshot \(no MANIFEST.json\)$"):
        Manifest.load(tmp_path)


def test_a_backup_writes_a_manifest_that_loads_back_unchanged(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    snap = Path(ran.out.strip())
    text = (snap / "MANIFEST.json").read_text()
    m = Manifest.load(snap)
    assert m.to_json() == text                      # what the backup wrote is exactly the model
    assert m.project == "app" and m.name == snap.name and m.created_at is not None
    assert m.databases is not None and m.databases["main"].engine == "sqlite"
    assert m.size == sum(p.stat().st_size for p in snap.rglob("*") if p.is_file() and p.name != "MANIFEST.json")


def test_list_show_verify_and_restore_give_one_line_for_a_malformed_manifest(tmp_path: Path) -> None:
    app = sqlite_app(tmp_path)
    ran = relstep("backup", "--version", "1.0.0", cwd=app)
    assert ran.code == 0, ran.err
    snap = Path(ran.out.strip())
    data = json.loads((snap / "MANIFEST.json").read_text())
    data["files"]["VERSION.txt"] = "not an object"
    (snap / "MANIFEST.json").write_text(json.dumps(data))
    where = f"{snap}/MANIFEST.json is not a relstep manifest: files.VERSION.txt is not a mapping"

    listed = relstep("list", cwd=app)
    assert listed.code == 0 and "Traceback" not in listed.err, listed.err
    assert listed.out.splitlines()[1].split()[:3] == [snap.name, "?", "?"]
    assert relstep("list", "--json", cwd=app).out.count(where) == 1

    for args, code, phase in ((("show", snap.name), 2, "input"), (("verify", snap.name), 8, "verify"),
                              (("restore", snap.name, "--yes"), 2, "input")):
        ran = relstep(*args, cwd=app, input="")
        assert (ran.code, "Traceback" in ran.err) == (code, False), ran.err
        assert ran.err.strip().splitlines() == [ran.last_err]
        assert ran.last_err.startswith(f"relstep: {phase} failed: ") and where in ran.last_err, ran.err
