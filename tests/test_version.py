from __future__ import annotations

from pathlib import Path

import pytest

from relstep.errors import VersionError
from relstep.version import infer_deployment_type, parse_version, resolve_release
from tests.helpers import git, init_repo

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`


def resolve(tmp_path: Path, flag: str | None = None, kind: str | None = None, **env: str):
    return resolve_release(flag, kind, tmp_path, "v", environ=env)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "f").write_text("x")
    init_repo(tmp_path)
    return tmp_path


def test_flag_wins_over_everything(repo: Path) -> None:
    git("tag", "v9.9.9", cwd=repo)
    release = resolve(repo, "v1.2.3", RELSTEP_VERSION="2.0.0", CI_COMMIT_TAG="v3.0.0")
    assert (release.version, release.source) == ("1.2.3", "--version")


@pytest.mark.parametrize(
    ("env", "expected", "source"),
    [
        ({"RELSTEP_VERSION": "2.0.1", "CI_COMMIT_TAG": "v3.0.0"}, "2.0.1", "RELSTEP_VERSION"),
        ({"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v4.0.84"}, "4.0.84", "GITHUB_REF_NAME"),
        ({"CI_COMMIT_TAG": "v1.2.3-rc.1+build.5"}, "1.2.3-rc.1+build.5", "CI_COMMIT_TAG"),
    ],
)
def test_environment_sources(repo: Path, env: dict[str, str], expected: str, source: str) -> None:
    release = resolve(repo, **env)
    assert (release.version, release.source) == (expected, source)


def test_github_branch_ref_is_not_a_version_source(repo: Path) -> None:
    git("tag", "v1.4.0", cwd=repo)
    release = resolve(repo, GITHUB_REF_TYPE="branch", GITHUB_REF_NAME="main")
    assert (release.version, release.source) == ("1.4.0", "git tag v1.4.0")


def test_lightweight_and_annotated_tags_highest_wins(repo: Path) -> None:
    git("tag", "v1.9.0", cwd=repo)
    git("tag", "-a", "v1.10.0", "-m", "annotated", cwd=repo)
    git("tag", "v1.10.0-rc.1", cwd=repo)
    git("tag", "not-a-version", cwd=repo)
    release = resolve(repo)
    assert (release.version, release.deployment_type, release.source) == ("1.10.0", "release", "git tag v1.10.0")


def test_tag_on_older_commit_is_ignored(repo: Path) -> None:
    git("tag", "v1.0.0", cwd=repo)
    git("commit", "-q", "--allow-empty", "-m", "next", cwd=repo)
    with pytest.raises(VersionError, match=r"^no tag points at HEAD; tag the release \(git tag v1.2.3\)"):
        resolve(repo)


def test_only_foreign_tags_at_head(repo: Path) -> None:
    git("tag", "latest", cwd=repo)
    with pytest.raises(VersionError, match=r"no tag at HEAD looks like vMAJOR.MINOR.PATCH \(found latest\)"):
        resolve(repo)


def test_not_a_git_repository(tmp_path: Path) -> None:
    with pytest.raises(VersionError, match="is not a git repository; pass --version 1.2.3 or set RELSTEP_VERSION"):
        resolve(tmp_path)


def test_shallow_clone_without_tags_names_fetch_depth(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    git("commit", "-q", "--allow-empty", "-m", "two", cwd=repo)
    git("tag", "v1.0.0", "HEAD~1", cwd=repo)
    clone = tmp_path_factory.mktemp("clone") / "c"
    git("clone", "-q", "--depth", "1", "--no-tags", f"file://{repo}", str(clone), cwd=repo)
    with pytest.raises(VersionError, match="shallow clone; fetch tags .*fetch-depth: 0"):
        resolve(clone)


@pytest.mark.parametrize(
    "bad", ["latest", "1.2", "v1.2.3;rm -rf /", "../../x", "1.2.3.4", "01.2.3", "v", "1.2.3-", "1" * 300 + ".0.0"]
)
def test_bad_versions_are_refused_with_a_fix(tmp_path: Path, bad: str) -> None:
    with pytest.raises(VersionError, match=r"is not a version; use MAJOR.MINOR.PATCH such as v1.2.3") as info:
        resolve(tmp_path, bad)
    assert info.value.exit_code == 2
    assert len(str(info.value)) < 200


def test_explicitly_empty_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(VersionError, match="^--version is empty"):
        resolve(tmp_path, "")
    with pytest.raises(VersionError, match="^RELSTEP_VERSION is empty"):
        resolve(tmp_path, RELSTEP_VERSION="")


def test_prefix_is_stripped_only_as_prefix() -> None:
    assert parse_version("v4.0.84", "x", "v") == "4.0.84"
    assert parse_version("4.0.84", "x", "v") == "4.0.84"
    assert parse_version("release-2.1.0", "x", "release-") == "2.1.0"
    with pytest.raises(VersionError):
        parse_version("x4.0.84", "x", "v")


@pytest.mark.parametrize(("version", "kind"), [("1.0.0", "release"), ("2.3.0", "release"), ("2.3.1", "patch"),
                                              ("1.0.0-rc.1", "release"), ("0.0.7", "patch")])
def test_deployment_type_inferred_from_patch(version: str, kind: str) -> None:
    assert infer_deployment_type(version) == kind


def test_deployment_type_flag_and_env(tmp_path: Path) -> None:
    assert resolve(tmp_path, "1.2.3", "release").deployment_type == "release"
    assert resolve(tmp_path, "1.2.0", RELSTEP_DEPLOYMENT_TYPE="patch").deployment_type == "patch"
    with pytest.raises(VersionError, match="^--type must be release or patch, got 'hotfix'$"):
        resolve(tmp_path, "1.2.3", "hotfix")
    with pytest.raises(VersionError, match="^RELSTEP_DEPLOYMENT_TYPE must be release or patch, got ''$"):
        resolve(tmp_path, "1.2.3", RELSTEP_DEPLOYMENT_TYPE="")
