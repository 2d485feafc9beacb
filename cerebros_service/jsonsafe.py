"""JSON-safe data: ``json_safe`` and ``dumps``, shared by results, events and artifacts.

``json_safe`` turns anything into dict/list/str/int/float/bool/None with every
float finite (NaN/inf → None): Pythonx's decode raises on NaN and leaves numpy
values opaque, and strict JSON has no NaN either. It is a ``singledispatch``
function, so callers teach it their own types::

    @json_safe.register(Money)
    def _(value): return {"amount": json_safe(value.amount), "currency": value.currency}
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import json
import math
import os
import threading
import uuid
from pathlib import PurePath
from typing import Any

import numpy as np
import orjson

# Containers being converted on this thread: a container met again inside itself is
# a cycle and becomes None instead of a RecursionError.
_active = threading.local()
MAX_JSON_DEPTH = 200


class _Visit:
    """Marks a container as in progress; ``cyclic`` says it already was (or is too deep)."""

    def __init__(self, obj: Any):
        self.key = id(obj)
        self.cyclic = False

    def __enter__(self) -> _Visit:
        ids = _active.__dict__.setdefault("ids", set())
        if self.key in ids or len(ids) >= MAX_JSON_DEPTH:
            self.cyclic = True
        else:
            ids.add(self.key)
        return self

    def __exit__(self, *exc) -> None:
        if not self.cyclic:
            _active.ids.discard(self.key)


@functools.singledispatch
def json_safe(obj: Any) -> Any:
    """Return ``obj`` as plain JSON data (see the module docstring)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        with _Visit(obj) as visit:
            if visit.cyclic:
                return None
            return {f.name: json_safe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    model_dump = getattr(obj, "model_dump", None)  # pydantic models, without importing pydantic
    if callable(model_dump) and not isinstance(obj, type):
        return json_safe(model_dump(mode="python"))
    # Anything else: a readable string beats a crash at the caller's decoder.
    try:
        text = str(obj)
        return str.__str__(text) if isinstance(text, str) else f"<{type(obj).__name__}>"
    except Exception:  # noqa: BLE001 - an object whose __str__ raises still has a type
        return f"<{type(obj).__name__} object>"


@json_safe.register(type(None))
@json_safe.register(bool)
def _(obj):
    return obj


@json_safe.register(str)
def _(obj):
    return str.__str__(obj)  # a plain str, also for str subclasses such as StrEnum


@json_safe.register(int)
def _(obj):
    return int(obj)  # int subclasses (IntEnum handled below) become plain ints


@json_safe.register(float)
def _(obj):
    return float(obj) if math.isfinite(obj) else None


@json_safe.register(decimal.Decimal)
def _(obj):
    return json_safe(float(obj))


@json_safe.register(complex)
def _(obj):
    return str(obj)


@json_safe.register(bytes)
@json_safe.register(bytearray)
@json_safe.register(memoryview)
def _(obj):
    raw = bytes(obj)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Not text: keep every byte, and say how it was encoded.
        return "base64:" + base64.b64encode(raw).decode("ascii")


@json_safe.register(enum.Enum)
def _(obj):
    return json_safe(obj.value)


@json_safe.register(PurePath)
def _(obj):
    return os.fspath(obj)


@json_safe.register(uuid.UUID)
def _(obj):
    return str(obj)


@json_safe.register(dt.datetime)
@json_safe.register(dt.date)
@json_safe.register(dt.time)
def _(obj):
    return obj.isoformat()


@json_safe.register(dt.timedelta)
def _(obj):
    return obj.total_seconds()


@json_safe.register(np.generic)
def _(obj):
    return json_safe(obj.item())


@json_safe.register(np.ndarray)
def _(obj):
    return json_safe(obj.tolist())


@json_safe.register(dict)
def _(obj):
    with _Visit(obj) as visit:
        if visit.cyclic:
            return None
        return {_json_key(key): json_safe(value) for key, value in obj.items()}


@json_safe.register(list)
@json_safe.register(tuple)
def _(obj):
    with _Visit(obj) as visit:
        if visit.cyclic:
            return None
        return [json_safe(item) for item in obj]


@json_safe.register(set)
@json_safe.register(frozenset)
def _(obj):
    with _Visit(obj) as visit:
        if visit.cyclic:
            return None
        items = [json_safe(item) for item in obj]
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    converted = json_safe(key)
    if isinstance(converted, str):
        return converted
    return json.dumps(converted) if converted is not None else "null"


def dumps(obj: Any, *, indent: bool = False) -> bytes:
    """JSON bytes of ``json_safe(obj)``: compact, or indented for files people read."""
    safe = json_safe(obj)
    try:
        return orjson.dumps(safe, option=orjson.OPT_INDENT_2 if indent else None)
    except TypeError:
        # orjson stops at 64-bit integers; Elixir and JSON take bigger ones.
        return json.dumps(safe, allow_nan=False, indent=2 if indent else None,
                          separators=None if indent else (",", ":"), ensure_ascii=False).encode()
