"""The one masking function everything that leaves relstep passes through.

Masking happens *before* writing: the environment capture, the manifest, log lines, CLI output,
alerts and CI outputs all call into this module.  Secrets are found four ways, in this order:

1. **Structure.**  A URL's password (``scheme://user:PASSWORD@host``, up to the last ``@`` of the
   URL) and the value of every ``name=value`` pair whose name looks secret (URL query parameters
   such as ``?password=`` or ``&sslpassword=``, libpq conninfo, dotenv and shell lines,
   ``--token=`` options) or quoted JSON pair (``"DB_PASS": "..."``).
2. **Name.**  In structured data (``mask_data``) a value stored under a secret-looking key loses
   its value whatever it is.
3. **Shape.**  Values that look like credentials are found by ``detect-secrets``' regex plugins
   (cloud keys, payment keys, VCS tokens, JWTs, private keys, chat and mail API keys); a whole
   captured value that is a long, high-entropy base64 token is masked too (``mask_data`` only).
4. **Registration.**  Values known to be secret (database passwords, the webhook URL, secret
   environment variables) are masked as whole tokens wherever they appear.

Masking never replaces a short password as a substring: structure masks the password where it
stands, and registered values are masked only as whole tokens (not touching a letter or digit)
and only from ``MIN_SECRET_LENGTH`` characters on.  A one-letter password ``p`` turns
``postgresql://postgres:p@host`` into ``postgresql://postgres:***@host``, nothing else.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MASK = "***"

#: Registered values shorter than this are not masked as free text (structure still masks them):
#: a value of one to three characters is found inside too much ordinary text.
MIN_SECRET_LENGTH = 4
#: Values of secret-named variables found by sweeping the whole process environment must be this
#: long to be masked as free text: desktop and CI sessions set short words under such names
#: (XDG_SESSION_CLASS=user), and masking "user" everywhere would garble every message.
ENVIRONMENT_MIN_LENGTH = 8
#: A whole captured value is masked for its entropy alone only from this length on.
HIGH_ENTROPY_MIN_LENGTH = 20

_SECRET_NAME = re.compile(
    # AUTHOR (GIT_AUTHOR_NAME), AUTHORITY (XAUTHORITY) and SSH_AUTH_SOCK name people and paths.
    r"PASS|PWD|SECRET|TOKEN|KEY|CREDENTIAL|AUTH(?!OR|_SOCK)|DSN|COOKIE|SESSION|PRIVATE|SIGNATURE",
    re.IGNORECASE,
)
# PWD and OLDPWD, spelt so (the shell's variables), are working directories, not passwords; a
# lower-case "pwd" (ODBC, URL parameters) is one.  Azure SAS URLs sign with "sig".
_NOT_SECRET_NAMES = frozenset({"PWD", "OLDPWD"})
_SECRET_EXACT_NAMES = frozenset({"SIG"})

# Characters that end a token in free text: whitespace, quotes and angle brackets.
_END = "\\s\"'<>`"
_URL_USERINFO = re.compile(
    rf"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^{_END}:/@]*:)(?P<secret>[^{_END}]*)(?P<tail>@[^{_END}@]*)"
)
# A whole string that is one URL: its password runs to the last '@', whatever it holds (an
# unencoded '/', '#', '?' or quote is read by the drivers as part of the password).
_WHOLE_URL_USERINFO = re.compile(r"\A(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>.*)(?P<tail>@[^@]*)\Z",
                                 re.DOTALL)
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)="
    rf"(?P<secret>\"[^\"]*\"|'[^']*'|[^{_END}&;]+)"
)
_SENTENCE_PUNCTUATION = ".,:;!?)]}"
_QUERY_PAIR = re.compile(r"(?:^|(?<=[&;]))(?P<name>[^=&;]+)=(?P<secret>[^&;]*)")
_JSON_PAIR = re.compile(r"\"(?P<name>[^\"\\]{1,200})\"\s*:\s*\"(?P<secret>(?:[^\"\\]|\\.)*)\"")
# A found shape runs on to the end of its token: detect-secrets' patterns match a key's known
# prefix and minimum length (Stripe's first 24 characters, a JWT without its signature).
_TOKEN_TAIL = re.compile(r"[A-Za-z0-9_\-+/=.]*")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----")
# detect-secrets plugins left out: URL userinfo is masked by structure (to the last '@', which
# the plugin does not do), and a public IP address is not a credential.
_UNUSED_PLUGINS = frozenset({"BasicAuthDetector", "IPPublicDetector"})

_lock = threading.Lock()
_registered: set[str] = set()


def looks_secret(name: str) -> bool:
    """Whether a variable, key or parameter called ``name`` holds a secret."""
    if name in _NOT_SECRET_NAMES:
        return False
    return name.upper() in _SECRET_EXACT_NAMES or bool(_SECRET_NAME.search(name))


def register_secret(value: str | None) -> None:
    """Mask this exact value, as a whole token, wherever it later appears in text."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    from urllib.parse import quote, unquote

    with _lock:
        # URLs carry the password percent-encoded too.
        _registered.update(v for v in (value, quote(value, safe=""), unquote(value)) if len(v) >= MIN_SECRET_LENGTH)
    _registered_pattern.cache_clear()


def register_url_secrets(url: str | None) -> None:
    """Register a URL's password and the values of its secret-looking query parameters."""
    for secret in url_secrets(url or ""):
        register_secret(secret)


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its password (as urllib reads it, and up to the last '@') and the
    values of its credential query parameters (``?password=``, ``&sslpassword=``, ...)."""
    from urllib.parse import parse_qsl, urlsplit

    found: list[str] = []
    whole = _WHOLE_URL_USERINFO.match(url)
    if whole:
        found.append(whole.group("secret"))
    try:
        parts = urlsplit(url)
        found.append(parts.password or "")
        query = parts.query
    except ValueError:
        query = url.partition("?")[2]
    found += [value for name, value in parse_qsl(query, keep_blank_values=False) if looks_secret(name)]
    return [s for s in dict.fromkeys(found) if s]


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> None:
    """Register the secrets of the process environment: long values of secret-named variables
    and the secrets of every URL a variable holds."""
    for name, value in (os.environ if environ is None else environ).items():
        # An absolute path is where something lives, not a secret; masking it would hide paths in every log.
        if looks_secret(name) and len(value) >= ENVIRONMENT_MIN_LENGTH and not value.startswith("/"):
            register_secret(value)
        for match in _URL_USERINFO.finditer(value or ""):
            register_url_secrets(match.group(0))
        if "?" in (value or ""):
            register_url_secrets(value)


def clear_registered() -> None:
    with _lock:
        _registered.clear()
    _registered_pattern.cache_clear()


def mask_text(text: str) -> str:
    """``text`` with every secret found by structure, shape or registration replaced by ``***``."""
    if not text:
        return text
    text = _URL_USERINFO.sub(_keep_around_secret, text)
    text = _ASSIGNMENT.sub(_mask_named, text)
    text = _JSON_PAIR.sub(_mask_named, text)
    text = _mask_spans(text, _shape_spans(text))
    pattern = _registered_pattern()
    return pattern.sub(MASK, text) if pattern is not None else text


def mask_known(text: str, secret: str | None) -> str:
    """``text`` with one known secret (a connection's password: as written, percent-encoded or
    decoded) masked as a whole token, and everything :func:`mask_text` finds.

    For text a server or tool sends back about a connection.  As with registered values, a
    secret shorter than ``MIN_SECRET_LENGTH`` is left to structure: masking the password ``p``
    inside every word would garble the message (``check the ***assword``).
    """
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        from urllib.parse import quote, unquote

        forms = sorted({secret, quote(secret, safe=""), unquote(secret)}, key=len, reverse=True)
        text = re.sub("|".join(_whole_token(form) for form in forms), MASK, text)
    return mask_text(text)


def mask_url(url: str) -> str:
    """One URL as it may be shown or stored: password and credential parameters masked.

    Read as a whole URL, not as free text: the password runs to the last '@' and a query
    parameter's value to the next '&', whatever characters they hold.
    """
    url = _WHOLE_URL_USERINFO.sub(_keep_around_secret, url)
    base, question, query = url.partition("?")
    if question:
        url = base + question + _QUERY_PAIR.sub(lambda m: _mask_named(m, in_sentence=False), query)
    return mask_text(url)


def mask_data(value: Any, key: str = "") -> Any:
    """Mask a JSON-like structure: secret-looking keys lose their values, text is masked, and a
    value that is one long high-entropy token is masked for its shape alone."""
    if key and looks_secret(key) and value not in (None, "", [], {}):
        if isinstance(value, (dict, list)):
            return mask_data(value)
        return MASK
    if isinstance(value, Mapping):
        return {k: mask_data(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_data(v) for v in value]
    if isinstance(value, str):
        return MASK if looks_random(value) else mask_text(value)
    return value


def looks_random(value: str) -> bool:
    """A whole value that is one base64-alphabet token with detect-secrets' high-entropy score.

    Hex digests, commit ids and UUIDs stay below the limit (16 symbols give at most 4 bits);
    paths are left alone, they name places.
    """
    if len(value) < HIGH_ENTROPY_MIN_LENGTH or value.startswith(("/", "./", "~")):
        return False
    detector = _entropy_detector()
    if not re.fullmatch(f"[{re.escape(detector.charset)}]+", value):
        return False
    return bool(detector.calculate_shannon_entropy(value) > detector.entropy_limit)


# --------------------------------------------------------------------------- internals


def _keep_around_secret(match: re.Match[str]) -> str:
    if not match.group("secret") or match.group("secret") == MASK:
        return match.group(0)
    return match.group("head") + MASK + match.group("tail")


def _mask_named(match: re.Match[str], in_sentence: bool = True) -> str:
    secret = match.group("secret")
    if not looks_secret(match.group("name")):
        return match.group(0)
    quoted = secret[:1] in ("'", '"') and secret[-1:] == secret[:1] and len(secret) >= 2
    # Unquoted in a sentence, the punctuation after a value belongs to the sentence:
    # "... at mysql://h/db?password=x: connection refused" keeps its colon.
    closing = "" if quoted or not in_sentence else secret[len(secret.rstrip(_SENTENCE_PUNCTUATION)):]
    inner = secret[1:-1] if quoted else secret[: len(secret) - len(closing)]
    if not inner or inner == MASK:
        return match.group(0)
    start, end = match.span("secret")
    offset = match.start(0)
    masked = f"{secret[0]}{MASK}{secret[-1]}" if quoted else MASK + closing
    whole = match.group(0)
    return whole[: start - offset] + masked + whole[end - offset:]


@functools.lru_cache(maxsize=1)
def _registered_pattern() -> re.Pattern[str] | None:
    with _lock:
        secrets = sorted(_registered, key=len, reverse=True)  # longest first: a secret holding another goes whole
    if not secrets:
        return None
    return re.compile("|".join(_whole_token(secret) for secret in secrets))


def _whole_token(secret: str) -> str:
    # A secret edge that is a letter or digit must not touch another one: "pass" is masked in
    # "pass@host" but not in "compass" or "password".
    before = r"(?<![A-Za-z0-9])" if secret[0].isalnum() else ""
    after = r"(?![A-Za-z0-9])" if secret[-1].isalnum() else ""
    return before + re.escape(secret) + after


@functools.lru_cache(maxsize=1)
def _shape_detectors() -> tuple[tuple[Any, tuple[re.Pattern[str], ...], bool], ...]:
    """(plugin, patterns, whether the plugin filters its matches) for every regex plugin used.

    Imported on first use: detect-secrets (and the requests it pulls in) costs a fifth of a
    second, which ``relstep --help`` must not pay.  Its plugins only match text; nothing here
    asks them to verify a secret over the network.
    """
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    detectors: list[tuple[Any, tuple[re.Pattern[str], ...], bool]] = []
    plugins: list[Any] = list(get_mapping_from_secret_type_to_class().values())
    for cls in sorted(plugins, key=lambda c: c.__name__):
        if not issubclass(cls, RegexBasedDetector) or cls.__name__ in _UNUSED_PLUGINS:
            continue
        plugin: Any = cls()
        filters = cls.analyze_string is not RegexBasedDetector.analyze_string
        detectors.append((plugin, tuple(plugin.denylist), filters))
    return tuple(detectors)


@functools.lru_cache(maxsize=1)
def _entropy_detector() -> Any:
    from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString

    return Base64HighEntropyString()


def _shape_spans(text: str) -> Iterator[tuple[int, int]]:
    for plugin, patterns, filters in _shape_detectors():
        accepted = set(plugin.analyze_string(text)) if filters else None
        for pattern in patterns:
            for match in pattern.finditer(text):
                for start, end in _match_spans(match):
                    if accepted is not None and text[start:end] not in accepted:
                        continue
                    if type(plugin).__name__ == "PrivateKeyDetector":
                        yield _pem_block(text, start, end)
                    else:
                        yield start, _token_end(text, end)


def _match_spans(match: re.Match[str]) -> Iterable[tuple[int, int]]:
    """The secret's place in a plugin's match: its non-empty groups, else the match without the
    delimiters some patterns include (Artifactory's leading space or quote)."""
    groups = [match.span(i) for i in range(1, (match.re.groups or 0) + 1) if match.group(i)]
    if groups:
        # Nested groups (npm's) repeat an outer one; the outermost spans are enough.
        return [span for span in groups if not any(o != span and o[0] <= span[0] and span[1] <= o[1] for o in groups)]
    start, end = match.span()
    value = match.group(0)
    start += len(value) - len(value.lstrip(" \t\r\n=:\"'"))
    end -= len(value) - len(value.rstrip(" \t\r\n\"'"))
    return [(start, end)] if end > start else []


def _token_end(text: str, end: int) -> int:
    tail = _TOKEN_TAIL.match(text, end)
    stop = tail.end() if tail else end
    while stop > end and text[stop - 1] == ".":  # a sentence's full stop is not part of the key
        stop -= 1
    return stop


def _pem_block(text: str, start: int, end: int) -> tuple[int, int]:
    """A private key goes whole, from its BEGIN line to its END line (or the end of the text)."""
    begin = text.rfind("-----", max(0, start - 5), start + 1)
    found = _PEM_END.search(text, end)
    return (begin if begin >= 0 else start), (found.end() if found else len(text))


def _mask_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return text
    pieces, last = [], 0
    for start, end in merged:
        pieces += [text[last:start], MASK]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
