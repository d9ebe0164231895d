"""File names and symlink targets that are not valid UTF-8, kept byte for byte.

Linux names are bytes; Python hands them over as ``str`` with each undecodable
byte as a lone surrogate (``os.fsdecode``).  Such a string cannot go into a JSON
manifest, an S3 key or a UTF-8 terminal, so inside a snapshot the entry gets a
readable stand-in (``caf\\xe9.txt``: the bad bytes spelt out, valid UTF-8) and the
manifest keeps the original bytes in base64 under that stand-in's path.  Restore
turns the stand-in back into the original bytes.
"""

from __future__ import annotations

import base64
import os


def is_utf8(name: str) -> bool:
    """False for a name (or link target) that holds bytes outside UTF-8 (lone surrogates here)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(name: str) -> str:
    """The stand-in: valid UTF-8 with every undecodable byte written as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def stand_in(name: str, taken: set[str]) -> str:
    """A stand-in for ``name`` that no other entry of the same folder (``taken``) already uses."""
    base = candidate = readable(name)
    n = 1
    while candidate in taken:
        n += 1
        candidate = f"{base}~{n}"
    taken.add(candidate)
    return candidate


def to_base64(name: str) -> str:
    return base64.b64encode(os.fsencode(name)).decode("ascii")


def from_base64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)
