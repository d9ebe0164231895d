"""The one masking step every CI value passes through before it is written anywhere."""

from __future__ import annotations

from collections.abc import Callable


def _identity(text: str) -> str:
    return text


def _masker() -> Callable[[str], str]:
    # Imported lazily, on every call: relstep.masking is owned by the core (it knows which
    # secrets were registered during the run), and a CI writer must still work in a build
    # that does not ship it.  Only the module's absence falls back to no masking; a broken
    # masking module raises, because silently writing secrets would be worse than failing.
    try:
        from relstep.masking import mask_text  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name not in {"relstep.masking"}:
            raise
        return _identity
    return mask_text


def mask(value: object) -> str:
    """``str(value)`` with every known secret masked; ``None`` becomes the empty string."""
    if value is None:
        return ""
    return _masker()(str(value))
