"""Results are data: JSON-safe conversion, pickle-safe scrubbing, and the result dicts.

``json_safe`` turns anything into dict/list/str/int/float/bool/None with every
float finite (NaN/inf → None): Pythonx's decode raises on NaN and leaves numpy
values opaque, and strict JSON has no NaN either. It is a ``singledispatch``
function, so callers teach it their own types::

    @json_safe.register(Money)
    def _(value): return {"amount": json_safe(value.amount), "currency": value.currency}

``scrub`` returns a copy of a structure with locks, queues, thread-locals and other
handles that cannot be pickled replaced by None.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import io
import json
import math
import os
import pickle
import queue
import socket
import sys
import threading
import types
import uuid
from pathlib import PurePath
from typing import Any

import numpy as np
import orjson

from ..errors import ErrorDetail, ServiceError

# ---------------------------------------------------------------------------- json_safe

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
    return str(obj)


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


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes of ``json_safe(obj)``."""
    safe = json_safe(obj)
    try:
        return orjson.dumps(safe)
    except TypeError:
        # orjson stops at 64-bit integers; Elixir and JSON take bigger ones.
        return json.dumps(safe, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------------- scrub

_HANDLE_TYPES: tuple[type, ...] = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Semaphore,
    threading.Event,
    threading.Thread,
    threading.local,
    queue.Queue,
    queue.SimpleQueue,
    io.IOBase,
    socket.socket,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.ModuleType,
)
# Leaves that always pickle: checking them would only cost time (big arrays).
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes, decimal.Decimal, enum.Enum,
                 PurePath, uuid.UUID, dt.date, dt.time, dt.timedelta, np.ndarray, np.generic, range)


def _is_handle(obj: Any) -> bool:
    if isinstance(obj, _HANDLE_TYPES):
        return True
    # multiprocessing's locks and queues, without importing multiprocessing.
    module = type(obj).__module__ or ""
    return module.startswith("multiprocessing") and type(obj).__name__ in {
        "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event",
        "Queue", "JoinableQueue", "SimpleQueue", "Pipe", "Connection", "Process", "Pool",
    }


def scrub(obj: Any) -> Any:
    """A copy of ``obj`` that pickles: unpicklable handles and leaves become None.

    Dicts, lists, tuples, sets, dataclasses and plain objects are copied with their
    contents scrubbed; shared references stay shared and cycles are preserved.
    """
    return _Scrubber().scrub(obj)


class _Scrubber:
    def __init__(self) -> None:
        self.memo: dict[int, Any] = {}
        self.in_progress: set[int] = set()  # immutable containers under construction

    def scrub(self, obj: Any) -> Any:
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if key in self.in_progress:
            return None  # a cycle through a tuple/frozenset cannot be rebuilt
        if isinstance(obj, _PLAIN_LEAVES):
            return obj
        if _is_handle(obj):
            return None
        if isinstance(obj, dict):
            copy: dict = {}
            self.memo[key] = copy
            for k, v in obj.items():
                copy[self.scrub(k)] = self.scrub(v)
            return copy
        if isinstance(obj, list):
            copy_list: list = []
            self.memo[key] = copy_list
            copy_list.extend(self.scrub(item) for item in obj)
            return copy_list
        if isinstance(obj, set):
            copy_set: set = set()
            self.memo[key] = copy_set
            copy_set.update(self.scrub(item) for item in obj)
            return copy_set
        if isinstance(obj, (tuple, frozenset)):
            self.in_progress.add(key)
            items = [self.scrub(item) for item in obj]
            self.in_progress.discard(key)
            rebuilt = tuple(items) if isinstance(obj, tuple) else frozenset(items)
            if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
                rebuilt = type(obj)(*items)
            self.memo[key] = rebuilt
            return rebuilt
        if not isinstance(obj, type) and hasattr(obj, "__dict__") and not callable(obj):
            return self._scrub_object(obj, key)
        return self._leaf(obj, key)

    def _scrub_object(self, obj: Any, key: int) -> Any:
        """The instance itself when it pickles; else a copy with its attributes scrubbed."""
        if self._pickles(obj):
            return self._leaf(obj, key, pickles=True)
        if not self._pickles(type(obj)):
            return self._leaf(obj, key, pickles=False)
        try:
            copy = object.__new__(type(obj))
        except TypeError:
            self.memo[key] = None
            return None
        self.memo[key] = copy
        for name, value in vars(obj).items():
            object.__setattr__(copy, name, self.scrub(value))
        return copy

    def _leaf(self, obj: Any, key: int, pickles: bool | None = None) -> Any:
        result = obj if (self._pickles(obj) if pickles is None else pickles) else None
        self.memo[key] = result
        return result

    @staticmethod
    def _pickles(obj: Any) -> bool:
        try:
            pickle.dumps(obj)
            return True
        except Exception:
            return False


# ---------------------------------------------------------------------------- results


def utc_timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def failure_result(
    error: BaseException,
    run_id: str | None,
    completed_trials: int = 0,
    *,
    error_type: str | None = None,
    metadata: dict | None = None,
) -> dict:
    """The ``status: "failed"`` dict for any error (a ServiceError keeps its type and details)."""
    if isinstance(error, ServiceError):
        kind = error_type or error.error_type
        message = error.message
        details = [d.as_dict() for d in error.details]
    else:
        kind = error_type or "internal_error"
        message = f"internal error ({type(error).__name__}): {error}"
        details = []
    if not details:
        details = [ErrorDetail((), message).as_dict()]
    return json_safe({
        "status": "failed",
        "error": message,
        "error_type": kind,
        "error_details": details,
        "run_id": run_id,
        "completed_trials": completed_trials,
        "metadata": {**(metadata or {}), "error_type": kind, "timestamp": utc_timestamp()},
    })


def trial_summary(record) -> dict:
    """One entry per trial: what was tried and how it did (full records: trials.jsonl).

    ``levels``/``neurons``/``activations`` cover every level, the output level last,
    as in trial events.
    """
    levels = record.architecture.get("levels", [])
    units = [level.get("units", []) for level in levels]
    return {
        "trial": record.trial,
        "generation": record.generation,
        "status": record.status,
        "value": record.value,
        "best_epoch": record.best_epoch,
        "epochs_run": record.epochs_run,
        "params": record.params,
        "duration_s": record.duration_s,
        "levels": [len(level_units) for level_units in units],
        "neurons": [[unit.get("neurons") for unit in level_units] for level_units in units],
        "activations": [[unit.get("activation") for unit in level_units] for level_units in units],
        "error": record.error,
    }


def success_result(outcome, *, run_id: str, metadata: dict) -> dict:
    """The ``status: "success"`` dict from a SearchOutcome whose ``best`` is set."""
    best = outcome.best
    best_metric = best.value
    architecture = {**best.architecture, "fitness": best_metric}
    return json_safe({
        "status": "success",
        "run_id": run_id,
        # The calling application reads best_model (older) or best_architecture (newer).
        "best_model": dict(architecture),
        "best_architecture": architecture,
        "best_metric": best_metric,
        "metric": outcome.metric,
        "direction": outcome.direction,
        "completed_trials": outcome.completed_trials,
        "failed_trials": outcome.failed_trials,
        "population_history": list(outcome.population_history),
        "trials": [trial_summary(record) for record in outcome.trials],
        "artifacts": artifact_paths(outcome.artifacts),
        "metadata": {**metadata, "duration_s": outcome.duration_s, "device": outcome.device,
                     "stopped_because": outcome.stopped_because},
    })


def artifact_paths(files: dict) -> dict:
    """``{"best_model.keras": path}`` → ``{"best_model": path}``: keys callers can spell."""
    return {name.rsplit(".", 1)[0] if "." in name else name: path for name, path in files.items()}


def library_versions() -> dict:
    """Versions from package metadata: no import of TensorFlow just to say which it is."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in ("cerebros-service", "numpy", "tensorflow", "keras", "pydantic"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
