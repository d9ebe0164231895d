"""The release's version and deployment type, from flags, CI variables or the git tag at HEAD."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from relstep.errors import VersionError

DEPLOYMENT_TYPES = ("release", "patch")
# A version is a label in paths, records and CI outputs; bound it so a runaway tag cannot be one.
MAX_VERSION_LENGTH = 100


@dataclass(frozen=True)
class Release:
    version: str
    deployment_type: str
    source: str              # where the version came from, e.g. "--version", "CI_COMMIT_TAG", "git tag v1.2.3"


def parse_version(value: str, source: str, tag_prefix: str = "v") -> str:
    """Strip the tag prefix and insist on MAJOR.MINOR.PATCH[-pre][+build]."""
    import semver

    if value == "":
        raise VersionError(f"{source} is empty; give a version such as 1.2.3 (or a tag such as {tag_prefix}1.2.3)")
    text = value[len(tag_prefix):] if tag_prefix and value.startswith(tag_prefix) else value
    shown = value if len(value) <= 60 else value[:60] + "..."
    if len(text) > MAX_VERSION_LENGTH or not semver.Version.is_valid(text):
        raise VersionError(
            f"{source} {shown!r} is not a version; use MAJOR.MINOR.PATCH such as "
            f"{tag_prefix}1.2.3 or {tag_prefix}1.2.3-rc.1"
        )
    return text


def _tags_at_head(repo_dir: Path) -> tuple[list[str], bool] | None:
    """Tags pointing at HEAD (annotated or lightweight) and whether the clone is shallow; None outside git."""
    import git

    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
        tags = repo.git.tag("--points-at", "HEAD").split()
        shallow = repo.git.rev_parse("--is-shallow-repository").strip() == "true"
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    except git.GitCommandError as exc:
        # An empty repository has no HEAD to point at.
        if "HEAD" in str(exc) or "malformed" in str(exc):
            return [], False
        raise VersionError(f"git failed while reading tags: {exc.stderr.strip() or exc}") from exc
    return tags, shallow


def version_from_git(repo_dir: Path, tag_prefix: str) -> tuple[str, str]:
    import semver

    found = _tags_at_head(repo_dir)
    if found is None:
        raise VersionError(
            f"no version given and {repo_dir} is not a git repository; pass --version 1.2.3 or set RELSTEP_VERSION"
        )
    tags, shallow = found
    candidates: list[tuple[semver.Version, str]] = []
    for tag in tags:
        try:
            candidates.append((semver.Version.parse(parse_version(tag, "tag", tag_prefix)), tag))
        except VersionError:
            continue
    if candidates:
        best, tag = max(candidates, key=lambda c: c[0])
        return str(best), f"git tag {tag}"
    if shallow:
        raise VersionError(
            "no version tag points at HEAD and this is a shallow clone; fetch tags "
            "(actions/checkout with fetch-depth: 0, or GIT_DEPTH: 0 in GitLab) or pass --version"
        )
    if tags:
        raise VersionError(
            f"no tag at HEAD looks like {tag_prefix}MAJOR.MINOR.PATCH (found {', '.join(tags[:5])}); "
            f"tag the release (git tag {tag_prefix}1.2.3) or pass --version"
        )
    raise VersionError(
        f"no tag points at HEAD; tag the release (git tag {tag_prefix}1.2.3) or pass --version / set RELSTEP_VERSION"
    )


def resolve_version(flag: str | None, environ: Mapping[str, str], repo_dir: Path, tag_prefix: str) -> tuple[str, str]:
    if flag is not None:
        return parse_version(flag, "--version", tag_prefix), "--version"
    if "RELSTEP_VERSION" in environ:
        return parse_version(environ["RELSTEP_VERSION"], "RELSTEP_VERSION", tag_prefix), "RELSTEP_VERSION"
    if environ.get("GITHUB_REF_TYPE") == "tag" and environ.get("GITHUB_REF_NAME"):
        return parse_version(environ["GITHUB_REF_NAME"], "GITHUB_REF_NAME", tag_prefix), "GITHUB_REF_NAME"
    if environ.get("CI_COMMIT_TAG"):
        return parse_version(environ["CI_COMMIT_TAG"], "CI_COMMIT_TAG", tag_prefix), "CI_COMMIT_TAG"
    return version_from_git(repo_dir, tag_prefix)


def infer_deployment_type(version: str) -> str:
    import semver

    return "release" if semver.Version.parse(version).patch == 0 else "patch"


def resolve_deployment_type(flag: str | None, environ: Mapping[str, str], version: str) -> str:
    for value, source in ((flag, "--type"), (environ.get("RELSTEP_DEPLOYMENT_TYPE"), "RELSTEP_DEPLOYMENT_TYPE")):
        if value is not None:
            if value not in DEPLOYMENT_TYPES:
                raise VersionError(f"{source} must be release or patch, got {value!r}")
            return value
    return infer_deployment_type(version)


def resolve_release(
    version_flag: str | None,
    type_flag: str | None,
    repo_dir: Path,
    tag_prefix: str = "v",
    environ: Mapping[str, str] | None = None,
) -> Release:
    environ = os.environ if environ is None else environ
    version, source = resolve_version(version_flag, environ, repo_dir, tag_prefix)
    return Release(version, resolve_deployment_type(type_flag, environ, version), source)
