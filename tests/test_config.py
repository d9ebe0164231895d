from __future__ import annotations

from pathlib import Path

import pytest

from relstep.config import DEFAULT_CODE_EXCLUDE, DEFAULT_ENVIRONMENT, load_config
from relstep.errors import ConfigError


def load(tmp_path: Path, text: str | None, keep: str | None = None, **env: str):
    if text is not None:
        (tmp_path / "relstep.yml").write_text(text)
    return load_config(None, environ=env, cwd=tmp_path, keep=keep)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    (tmp_path / "backend").mkdir()
    config = load(tmp_path, None, DATABASE_URL="sqlite:///app.db")
    assert config.file is None
    assert config.backup_root == tmp_path / "backups" / "releases"
    assert config.retention == 30
    assert config.tag_prefix == "v"
    assert config.database is not None
    assert config.database.url == f"sqlite:///{tmp_path / 'app.db'}"
    assert config.database.redact is None
    assert config.code == {"backend": tmp_path / "backend"}
    assert config.code_exclude == DEFAULT_CODE_EXCLUDE
    assert config.environment == DEFAULT_ENVIRONMENT and config.environment_is_default
    assert config.migrations.tool == "auto"
    assert (config.record.url, config.record.table) == (config.database.url, "ReleaseRecord")


def test_full_file_relative_to_its_folder(tmp_path: Path) -> None:
    sub = tmp_path / "deploy"
    sub.mkdir()
    (sub / "relstep.yml").write_text(
        "backup_root: ../bk\nretention: 5\ntag_prefix: release-\n"
        "database:\n  url: postgresql://u:${DB_PW}@db:5432/app\n  redact: ['User.secret*']\n  exclude_tables: [Log]\n"
        "code:\n  api: ../api\ncode_exclude: ['*.tmp']\nenvironment:\n  py: python3 -V\n"
        "migrations:\n  tool: alembic\n  path: ../api/migrations\nrecord:\n  url: sqlite:///records.db\n  table: Rel\n"
    )
    config = load_config(str(sub / "relstep.yml"), environ={"DB_PW": "s3cr3t"}, cwd=tmp_path)
    assert config.base_dir == sub
    assert config.backup_root == tmp_path / "bk"
    assert config.retention == 5
    assert config.tag_prefix == "release-"
    assert config.database.url == "postgresql://u:s3cr3t@db:5432/app"
    assert config.database.redact == ("User.secret*",)
    assert config.database.exclude_tables == ("Log",)
    assert config.code == {"api": tmp_path / "api"}
    assert config.code_exclude == ("*.tmp",)
    assert config.environment == {"py": "python3 -V"} and not config.environment_is_default
    assert config.migrations.tool == "alembic" and config.migrations.path == tmp_path / "api" / "migrations"
    assert config.record.url == f"sqlite:///{sub / 'records.db'}" and config.record.table == "Rel"


def test_relstep_config_env_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "other.yml").write_text("retention: 7\n")
    assert load_config(None, environ={"RELSTEP_CONFIG": "other.yml"}, cwd=tmp_path).retention == 7
    with pytest.raises(ConfigError, match=r"^config file nope.yml not found; pass an existing file"):
        load_config("nope.yml", environ={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retention: 3\nbackup_rot: x\n", r"relstep.yml: unknown key 'backup_rot'; see docs/configuration.md"),
        ("database:\n  urll: x\n", r"relstep.yml: unknown key 'database.urll'"),
        ("retention: 3\ncode: [a, b]\n", r"relstep.yml: code: input should be a valid dictionary"),
        ("tag_prefix: 5\n", r"relstep.yml: tag_prefix: input should be a valid string"),
        ("database:\n  redact: User.password\n", r"relstep.yml: database.redact: input should be a valid list"),
        ("retention: [\n", r"relstep.yml: invalid YAML at line 2, column 1"),
        ("- a\n- b\n", r"the top level must be a mapping of keys, not list"),
        ("backup_root: !!python/object/apply:os.system ['touch pwned']\n", r"invalid YAML.*could not determine"),
        ("database:\n  url: postgresql://${UNSET_VAR_X}@h/db\n",
         r"relstep.yml: database.url uses \$\{UNSET_VAR_X\}, but the environment variable UNSET_VAR_X is not set"),
        ("database:\n  url: oracle://h/db\n", r"unsupported database URL scheme oracle://; use one of"),
        ("migrations:\n  tool: liquibase\n", r"migrations.tool 'liquibase' is not one of auto, prisma"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load(tmp_path, text)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_dollar_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  url: postgresql://u:pa$$word@h/db\n")
    assert config.database.url == "postgresql://u:pa$word@h/db"


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.5", "1e3", "", " ", "100000000000000000000", "+3", "0x10"])
def test_bad_retention_from_env_flag_and_file(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^RELEASE_BACKUP_RETENTION_COUNT must be a whole number from 1 to 100000"):
        load(tmp_path, None, RELEASE_BACKUP_RETENTION_COUNT=bad)
    with pytest.raises(ConfigError, match=r"^--keep must be a whole number"):
        load(tmp_path, None, keep=bad)
    with pytest.raises(ConfigError, match=r"relstep.yml: retention must be a whole number"):
        load(tmp_path, f"retention: '{bad}'\n")


def test_retention_precedence(tmp_path: Path) -> None:
    (tmp_path / "relstep.yml").write_text("retention: 9\n")
    assert load(tmp_path, None).retention == 9
    assert load(tmp_path, None, RELEASE_BACKUP_RETENTION_COUNT="4").retention == 4
    assert load(tmp_path, None, keep="2", RELEASE_BACKUP_RETENTION_COUNT="4").retention == 2
    assert load(tmp_path, "retention: true\n", RELEASE_BACKUP_RETENTION_COUNT="4").retention == 4
    with pytest.raises(ConfigError):
        load(tmp_path, "retention: true\n")


def test_prisma_file_url_is_sqlite_relative_to_config(tmp_path: Path) -> None:
    config = load(tmp_path, "database:\n  url: file:./dev.db\n")
    assert config.database.url == f"sqlite:///{tmp_path / 'dev.db'}"
