"""Text about values a caller sent, for error messages: short, and never an exception.

A request can carry megabytes of inline data, integers too long to print
(Python refuses to turn an int of more than 4300 digits into text) and objects
whose ``__repr__`` or ``__str__`` raise. An error message about such a value must
still be written, so these helpers fall back to describing the value's type.
"""

from __future__ import annotations

import reprlib
from typing import Any

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlong = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4
_short.maxlevel = 2

# Below Python's default int→str limit (4300 digits): longer ints are described, not printed.
_MAX_INT_BITS = 14_000


def type_name(value: Any) -> str:
    try:
        return type(value).__name__
    except Exception:  # noqa: BLE001 - a metaclass can make even this raise
        return "object"


def short_repr(value: Any) -> str:
    """A bounded repr of ``value``; a description of it when it cannot be printed."""
    if isinstance(value, int) and not isinstance(value, bool) and _too_long(value):
        return f"<an integer of about {int(abs(value).bit_length() * 0.30103)} digits>"
    try:
        return _short.repr(value)
    except Exception:  # noqa: BLE001 - any caller object may refuse to print
        return f"<{type_name(value)} object>"


def safe_str(value: Any, limit: int = 500) -> str:
    """``str(value)`` cut to ``limit`` characters; a description when str() raises."""
    try:
        text = str(value)
    except Exception:  # noqa: BLE001
        return f"<{type_name(value)} object that cannot be printed>"
    if not isinstance(text, str):
        return f"<{type_name(value)} object>"
    return text if len(text) <= limit else text[:limit] + "…"


def _too_long(value: int) -> bool:
    try:
        return abs(value).bit_length() > _MAX_INT_BITS
    except Exception:  # noqa: BLE001 - an int subclass may override abs()
        return True
