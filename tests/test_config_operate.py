"""Config keys for operations: offsite:, notify: (databases: is in test_several_databases.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relstep.config import load_config
from relstep.errors import ConfigError

pytestmark = pytest.mark.unit   # no database server, no CI runner: `pytest -m unit`


def load(tmp_path: Path, text: str, **env: str):
    (tmp_path / "relstep.yml").write_text(text)
    return load_config(None, environ=env, cwd=tmp_path)


def test_offsite_defaults_and_values(tmp_path: Path) -> None:
    config = load(tmp_path, "retention: 9\noffsite:\n  url: s3://bucket/prefix\n")
    assert config.offsite is not None
    assert (config.offsite.url, config.offsite.keep, config.offsite.required) == ("s3://bucket/prefix", 9, False)
    config = load(tmp_path, "offsite:\n  url: sftp://deploy@host:2222/srv/b\n  keep: 5\n  required: true\n",
                  RELEASE_BACKUP_RETENTION_COUNT="3")
    assert config.offsite is not None and (config.offsite.keep, config.offsite.required) == (5, True)
    assert config.retention == 3
    assert load(tmp_path, "retention: 4\n").offsite is None


def test_notify_bare_on_key_and_defaults(tmp_path: Path) -> None:
    # YAML 1.1 reads a bare `on:` as the boolean true; it still means notify.on.
    config = load(tmp_path, "notify:\n  webhook: ${HOOK}\n  on: [failure, success]\n", HOOK="https://h/x")
    assert config.notify is not None
    assert (config.notify.webhook, config.notify.format, config.notify.on) == \
        ("https://h/x", "slack", ("failure", "success"))
    config = load(tmp_path, "notify:\n  webhook: https://h/x\n  format: json\n")
    assert config.notify is not None and config.notify.on == ("failure",) and config.notify.format == "json"


@pytest.mark.parametrize(("text", "message"), [
    ("offsite:\n  keep: 3\n", "offsite.url: field required"),
    ("offsite:\n  url: ftp://h/x\n", "offsite.url scheme ftp:// is not supported; use s3://bucket/prefix"),
    ("offsite:\n  url: s3://b/p\n  keep: 0\n", "offsite.keep must be a whole number from 1 to 100000, got 0"),
    ("offsite:\n  url: s3://b/p\n  required: 'yes'\n", "offsite.required: input should be a valid boolean"),
    ("offsite:\n  url: s3://b/p\n  bucket: x\n", "unknown key 'offsite.bucket'"),
    ("offsite:\n  url: sftp://u:pw-in-clear@h/x\n", "offsite.url holds a password in clear"),
    ("notify:\n  webhook: https://h/x\n  channel: ops\n", "unknown key 'notify.channel'"),
])
def test_bad_offsite_and_notify(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load(tmp_path, text)
    assert info.value.exit_code == 2 and "relstep.yml" in str(info.value)
    assert "pw-in-clear" not in str(info.value)
