"""Results are data: pickle-safe scrubbing and the success/failure result dicts.

The JSON-safe conversion they rely on (``json_safe``, ``dumps``) lives in
``cerebros_service.jsonsafe``, shared with events and artifacts.

``scrub`` returns a copy of a structure with locks, queues, thread-locals and other
handles that cannot be pickled replaced by None.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import io
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

from ..errors import ErrorDetail, ServiceError
from ..jsonsafe import json_safe
from ..operator_config import limit_or_default
from .safe_text import safe_str, type_name

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
    """The ``status: "failed"`` dict for any error (a ServiceError keeps its type and details).

    Never raises, whatever ``error`` is: an exception whose ``__str__`` raises still
    gets a result. At most ``max_error_details`` details are listed; when there were
    more, ``metadata.error_details_total`` says how many.
    """
    try:
        return _failure_result(error, run_id, completed_trials, error_type, metadata)
    except Exception:  # noqa: BLE001 - the last answer must not fail
        return _bare_failure(run_id if isinstance(run_id, str) else None, error_type)


def _failure_result(error, run_id, completed_trials, error_type, metadata) -> dict:
    limit = limit_or_default("max_error_details")
    total = 0
    if isinstance(error, ServiceError):
        kind = error_type or error.error_type
        message = safe_str(error.message, limit=20_000)
        details = [d.as_dict() for d in error.details[:limit]]
        total = error.total_details
    else:
        kind = error_type or "internal_error"
        message = f"internal error ({type_name(error)}): {safe_str(error)}"
        details = []
    if not details:
        details = [ErrorDetail((), message).as_dict()]
    extra = {"error_details_total": total} if total > len(details) else {}
    return json_safe({
        "status": "failed",
        "error": message,
        "error_type": kind,
        "error_details": details,
        "run_id": run_id,
        "completed_trials": completed_trials,
        "metadata": {**(metadata or {}), **extra, "error_type": kind, "timestamp": utc_timestamp()},
    })


def _bare_failure(run_id: str | None, error_type: str | None) -> dict:
    kind = error_type if isinstance(error_type, str) else "internal_error"
    message = "internal error (the error could not be described)"
    return {"status": "failed", "error": message, "error_type": kind,
            "error_details": [{"loc": [], "message": message}], "run_id": run_id,
            "completed_trials": 0, "metadata": {"error_type": kind, "timestamp": utc_timestamp()}}


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
        # successive halving: the trial whose weights this one continued (None: trained afresh)
        "parent_trial": getattr(record, "parent_trial", None),
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
        # The delivered model (best_model.keras) on rows the search never saw (None without
        # a test split); the single best's whole evaluation: splits, validation and test
        # reports with per-class metrics, refit; the ensemble's members and scores.
        "test_metric": getattr(outcome, "test_metric", None),
        "delivered_model": outcome.delivered_model,
        "ensemble": getattr(outcome, "ensemble", None),
        "evaluation": getattr(outcome, "evaluation", None) or None,
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
