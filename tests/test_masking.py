"""relstep.masking: secrets masked by structure, name, shape and registration, and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from relstep import masking
from relstep.masking import mask_data, mask_text, mask_url, register_environment_secrets, register_secret
from tests.helpers import ROOT, clean_env

# Shapes from the providers' documentation (Stripe's, AWS's and jwt.io's examples).
STRIPE_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXq81extra"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACD\n"
               "-----END OPENSSH PRIVATE KEY-----")


@pytest.fixture(autouse=True)
def nothing_registered() -> Iterator[None]:
    masking.clear_registered()
    yield
    masking.clear_registered()


def test_a_one_letter_password_is_masked_where_it_stands_and_nowhere_else() -> None:
    register_secret("p")
    text = "cannot connect to postgresql://postgres:p@127.0.0.1:5432/app: password rejected"
    assert mask_text(text) == "cannot connect to postgresql://postgres:***@127.0.0.1:5432/app: password rejected"


def test_registered_secrets_are_masked_as_whole_tokens_only() -> None:
    register_secret("pass")
    assert mask_text("compass password passage pass pass@host 'pass' pass_1") == \
        "compass password passage *** ***@host '***' ***_1"


def test_registered_secrets_are_masked_percent_encoded_too() -> None:
    register_secret("a b/c+d")
    assert mask_text("x a%20b%2Fc%2Bd y a b/c+d") == "x *** y ***"


def test_the_url_password_runs_to_the_last_at_sign() -> None:
    assert mask_text("url postgresql://app:Zq8/x+R@k2w@db:5432/app end") == "url postgresql://app:***@db:5432/app end"
    assert mask_text('{"url": "redis://:s3cr3t@cache:6379/0", "next": "a@b"}') == \
        '{"url": "redis://:***@cache:6379/0", "next": "a@b"}'
    assert mask_text("mysql://root@db/app and mail a@b.example") == "mysql://root@db/app and mail a@b.example"


@pytest.mark.parametrize("name", ["password", "sslpassword", "pass", "pwd", "secret", "client_secret", "token",
                                  "access_token", "access_key", "api_key", "auth", "sig", "X-Amz-Signature",
                                  "X-Amz-Credential", "sessionid"])
def test_credential_query_parameters_are_masked(name: str) -> None:
    url = f"postgresql://app@db:5432/app?sslmode=require&{name}=v4lue&application_name=web"
    masked = f"postgresql://app@db:5432/app?sslmode=require&{name}=***&application_name=web"
    assert mask_text(f"failed: {url} refused") == f"failed: {masked} refused"
    assert mask_url(url) == masked


def test_a_whole_url_is_read_as_a_url() -> None:
    # A password holding a quote or a '#', as the drivers read it, goes whole.
    assert mask_url('mysql://u:p"w#1@h:3306/db?password=a"b#c&ssl=true') == "mysql://u:***@h:3306/db?password=***&ssl=true"
    assert mask_url("sqlite:///srv/app/prisma/dev.db") == "sqlite:///srv/app/prisma/dev.db"


@pytest.mark.parametrize("name", ["DB_PASS", "SMTP_PASS", "PGPASS", "PGPASSWORD", "DB_PWD", "JWT_SECRET",
                                  "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
                                  "OAUTH_CLIENT", "SENTRY_DSN", "SESSION_COOKIE", "RAILS_MASTER_KEY",
                                  "PRIVATE_REGISTRY", "NEXTAUTH_URL", "sslpassword"])
def test_secret_looking_names(name: str) -> None:
    assert masking.looks_secret(name)
    assert mask_text(f"export {name}=v4lue-1; next") == f"export {name}=***; next"
    assert mask_text(f'{{"{name}": "v4lue-1", "PORT": "3000"}}') == f'{{"{name}": "***", "PORT": "3000"}}'


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "XAUTHORITY", "SSH_AUTH_SOCK", "GIT_AUTHOR_NAME", "PORT",
                                  "NODE_ENV", "DATABASE_URL", "sslmode"])
def test_names_that_do_not_look_secret(name: str) -> None:
    assert not masking.looks_secret(name)
    assert mask_text(f"{name}=value-1") == f"{name}=value-1"


def test_quoted_and_option_values_keep_their_quotes() -> None:
    assert mask_text("SMTP_PASS=\"a b c\" --db-password=x1 token='t t'") == \
        "SMTP_PASS=\"***\" --db-password=*** token='***'"


@pytest.mark.parametrize(("text", "masked"), [
    (f"billing key {STRIPE_KEY}.", "billing key ***."),
    (f"AWS {AWS_KEY} used", "AWS *** used"),
    (f"token {GITHUB_TOKEN}", "token ***"),
    (f"Bearer {JWT} expired", "Bearer *** expired"),
    (f"key:\n{PRIVATE_KEY}\nafter", "key:\n***\nafter"),
    ("hook https://hooks.slack.com/services/T0001/B0002/XXXXyyyyZZZZ failed", "hook *** failed"),
])
def test_values_shaped_like_credentials_are_masked_whole(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_a_private_key_cut_short_is_masked_to_the_end() -> None:
    assert mask_text("-----BEGIN RSA PRIVATE KEY-----\nMIIEow") == "***"


@pytest.mark.parametrize("text", [
    "commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "id 2f1c9a7e-1b2c-4d5e-8f90-0123456789ab on 203.0.113.7",
    "snapshot /srv/app/backups/releases/20261201T201500Z-v1.2.3",
    "relstep: backup failed: pg_dump exited with code 1; see above",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert mask_text(text) == text


def test_mask_data_masks_by_name_shape_and_entropy() -> None:
    data = {"pm2_env": {"DB_PASS": "x", "SENTRY_DSN": "https://k3y@o1.ingest.sentry.io/2", "PORT": 3000,
                        "PAYMENTS": STRIPE_KEY, "RANDOM": "Yk3vQ9zT7bW1nR5xL8pD2sF6hJ0cM4gA",
                        "commit": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
                        "cwd": "/srv/app/releases/Yk3vQ9zT7bW1nR5xL8pD2sF6hJ0cM4gA",
                        "auth": {"user": "app", "scopes": ["read"]}, "KEY_COUNT": 0}}
    assert mask_data(data) == {"pm2_env": {
        "DB_PASS": "***", "SENTRY_DSN": "***", "PORT": 3000, "PAYMENTS": "***", "RANDOM": "***",
        "commit": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "cwd": "/srv/app/releases/Yk3vQ9zT7bW1nR5xL8pD2sF6hJ0cM4gA",
        "auth": {"user": "app", "scopes": ["read"]}, "KEY_COUNT": "***"}}


def test_the_environment_sweep_registers_long_secret_values_and_url_secrets_only() -> None:
    register_environment_secrets({
        "XDG_SESSION_CLASS": "user",              # a short word under a secret-looking name
        "API_TOKEN": "tok-1234567890",
        "GNOME_KEYRING_CONTROL": "/run/user/1000/keyring",
        "REPLICA": "mysql://app@db/app?password=replica-pw&ssl=1",
        "OTHER": "postgresql://app:other-pw@db/app",
    })
    assert mask_text("user tok-1234567890 /run/user/1000/keyring replica-pw other-pw") == \
        "user *** /run/user/1000/keyring *** ***"


def test_detect_secrets_works_offline_and_relstep_help_does_not_load_it() -> None:
    code = ("import sys; from relstep.masking import mask_text; "
            f"print(mask_text('k {STRIPE_KEY}')); print('detect_secrets' in sys.modules)")
    unshare = shutil.which("unshare")
    # A network namespace of its own has no interface but loopback: nothing can be fetched.
    offline = [unshare, "--map-root-user", "--net"] if unshare and _can_unshare(unshare) else []
    done = subprocess.run([*offline, sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(),
                          cwd=ROOT, check=True)
    assert done.stdout.split("\n")[:2] == ["k ***", "True"]
    helped = subprocess.run([sys.executable, "-X", "importtime", "-m", "relstep", "--help"], capture_output=True,
                            text=True, env=clean_env(), cwd=ROOT, check=True)
    assert "detect_secrets" not in helped.stderr


def _can_unshare(unshare: str) -> bool:
    return subprocess.run([unshare, "--map-root-user", "--net", "true"], capture_output=True, check=False,
                          env={"PATH": os.environ.get("PATH", "")}).returncode == 0


def test_punctuation_after_a_masked_value_stays_in_the_sentence() -> None:
    assert mask_text("cannot connect at mysql://app@h:1/app?password=Qp-4d1e: connection refused") == \
        "cannot connect at mysql://app@h:1/app?password=***: connection refused"
    assert mask_text("(see DB_PASS=abc1), then retry.") == "(see DB_PASS=***), then retry."
    # Read as a URL, the value runs to the next '&', its last characters included.
    assert mask_url("mysql://app@h/app?password=ends-with.:") == "mysql://app@h/app?password=***"


def test_a_connection_password_is_masked_as_a_whole_token_and_a_short_one_by_structure_only() -> None:
    """Engines mask their connection's password in what servers and tools say (mask_known): a
    one-letter password used to turn "check the password" into "check the ***assword"."""
    from relstep.masking import mask_known

    sentence = "authentication failed at postgresql://app:p@db:5432/app; check the password"
    assert mask_known(sentence, "p") == "authentication failed at postgresql://app:***@db:5432/app; check the password"
    told = "role app with password Zq8/x+Rk2w9 (or Zq8%2Fx%2BRk2w9) in Zq8/x+Rk2w9pass"
    assert mask_known(told, "Zq8/x+Rk2w9") == "role app with password *** (or ***) in Zq8/x+Rk2w9pass"
