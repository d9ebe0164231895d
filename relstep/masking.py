"""The one masking function everything that leaves relstep passes through.

Masking happens *before* writing: the environment capture, the manifest, log
lines, CLI output and CI outputs all call into this module.  Two rules:

* a value stored under a key that looks secret (PASSWORD, SECRET, TOKEN, KEY,
  CREDENTIAL, ...) is replaced by ``***``;
* any text has its URL passwords (``scheme://user:pw@host``) and every
  registered secret value (the database password, secret-looking environment
  variables) replaced by ``***``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

# "PWD" alone is the working directory and "AUTHORITY"/"SSH_AUTH_SOCK" are paths: matching them would
# register every path under the working directory as a secret and garble all output.
SECRET_KEY = re.compile(
    r"PASSWORD|PASSWD|_PWD$|SECRET|TOKEN|KEY|CREDENTIAL|AUTH(?!ORITY|_SOCK)|COOKIE|PRIVATE", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?P<tail>@)")
# Values shorter than this are not masked as free text: masking "1" or "ab"
# everywhere would garble output without protecting anything real.
_MIN_SECRET_LENGTH = 4

_registered: set[str] = set()


def looks_secret(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it later appears in text."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _registered.add(value)
        # URLs carry the password percent-encoded too.
        from urllib.parse import quote, unquote

        _registered.add(quote(value, safe=""))
        _registered.add(unquote(value))


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    """Register the values of environment variables whose names look secret."""
    for key, value in (os.environ if environ is None else environ).items():
        # An absolute path is where something lives, not a secret; masking it would hide paths in every log.
        if looks_secret(key) and not value.startswith("/"):
            register_secret(value)
        for match in _URL_PASSWORD.finditer(value or ""):
            register_secret(match.group("pw"))


def clear_registered() -> None:
    _registered.clear()


def mask_text(text: str) -> str:
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("tail"), text)
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_data(value: Any, key: str = "") -> Any:
    """Mask a JSON-like structure: secret-looking keys lose their values, text is masked."""
    if key and looks_secret(key) and value not in (None, "", [], {}):
        if isinstance(value, (dict, list)):
            return mask_data(value)
        return MASK
    if isinstance(value, Mapping):
        return {k: mask_data(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_data(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
