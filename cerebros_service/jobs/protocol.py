"""One request protocol for both Elixir invokers: ``serve`` lines and Pythonx calls.

A request is a dict with an ``op`` and that op's keys; ``handle`` answers one dict
at once (every op is short: a search is only *submitted* here). Jobs push their
events and their end to ``notify`` (see ``runner.py``). Through Pythonx the bridge
calls ``call(request, notify)`` and gets the answer as orjson bytes, decoded once
in Elixir. Bad requests get a ``validation_error`` result naming the key.

| op | keys | answer |
| --- | --- | --- |
| ping | | ``{"status": "ok", "pid", "tensorflow_loaded"}`` |
| validate | spec, opts | ``api.validate`` |
| submit | spec, opts, events | ``{"job_id", "status": "queued", "run_id"}`` or a failed result |
| status / cancel | job_id | the job's status |
| result | job_id, timeout | the result once ended (waiting up to timeout, at most 5 s), else the status |
| jobs | | ``{"status": "ok", "jobs": [...]}`` |
| register_dataset | name, x, y, task, replace, own_files | ``registry.register_dataset`` |
| unregister_dataset | name | ``{"status": "ok", "unregistered": bool}`` |
| list_datasets | | ``{"status": "ok", "datasets": [...]}`` |
| configure | max_concurrent_jobs | ``{"status": "ok", "max_concurrent_jobs"}`` |
| shutdown | timeout | ``{"status": "ok", "cancelled", "unfinished"}`` |
| predict | run, x, opts | ``prediction.predict`` (ONNX here), or ``{"job_id", "status": "queued"}`` (Keras) |

Files a request names (``{"npy": path}`` arrays) must lie under the operator's data
root (``operator_config.data_root()``); a request cannot name another root. Arrays
(``x``, ``y``) may also be ``{"data": bytes, "dtype", "shape"}`` buffers (Pythonx).

``predict`` never loads TensorFlow in this process (the BEAM's, through Pythonx): a
run it would answer with ``best_model.onnx`` is predicted here at once; one that
needs the Keras model (no ONNX file, or ``opts.engine: "keras"``) is predicted in a
worker process of the job runner's process executor, as a job whose end is pushed
to ``notify`` like a search's (``{"job_id", "done": result}``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

from ..boundary.normalize import normalize
from ..boundary.results import failure_result
from ..errors import ErrorDetail, InputError, ServiceError

log = logging.getLogger(__name__)

# op -> (required keys, optional keys)
OPS: dict[str, tuple[set[str], set[str]]] = {
    "ping": (set(), set()),
    "validate": ({"spec"}, {"opts"}),
    "submit": ({"spec"}, {"opts", "events"}),
    "status": ({"job_id"}, set()),
    "result": ({"job_id"}, {"timeout"}),
    "cancel": ({"job_id"}, set()),
    "jobs": (set(), set()),
    "register_dataset": ({"name", "x", "y"}, {"task", "replace", "own_files"}),
    "unregister_dataset": ({"name"}, set()),
    "list_datasets": (set(), set()),
    "configure": (set(), {"max_concurrent_jobs"}),
    "shutdown": (set(), {"timeout"}),
    "predict": ({"run", "x"}, {"opts"}),
}


def _invalid(message: str, loc: tuple) -> dict:
    return failure_result(InputError(message, [ErrorDetail(loc, message)]), None)


def check_request(request: Any, extra_keys: set[str] = frozenset()) -> tuple[str | None, dict | None]:
    """(op, None) for a well-formed request, else (None, failed result)."""
    if not isinstance(request, dict):
        return None, _invalid(f"a request must be an object with an \"op\", got {type(request).__name__}", ())
    op = request.get("op")
    if op not in OPS:
        return None, _invalid(f"op must be one of {', '.join(map(repr, OPS))}, got {op!r}", ("op",))
    required, optional = OPS[op]
    unknown = sorted(set(request) - required - optional - extra_keys - {"op"}, key=str)
    if unknown:
        return None, _invalid(f"unknown key(s) for op {op!r}: {', '.join(map(str, unknown))}; allowed: "
                              f"{', '.join(sorted(required | optional))}", (unknown[0],))
    missing = sorted(required - set(request))
    if missing:
        return None, _invalid(f"op {op!r} needs {', '.join(map(repr, missing))}", (missing[0],))
    for flag in ("events", "replace", "own_files"):
        if flag in request and not isinstance(request[flag], bool):
            return None, _invalid(f"{flag} must be true or false, got {request[flag]!r}", (flag,))
    timeout = request.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        return None, _invalid(f"timeout must be a number of seconds >= 0, got {timeout!r}", ("timeout",))
    return op, None


def handle(request: Any, notify: Any = None) -> dict:
    """Answer one request (see the table above); never raises."""
    op, failure = check_request(request)
    if failure is not None:
        return failure
    try:
        return _HANDLERS[op](request, notify)
    except ServiceError as exc:
        return failure_result(exc, None)
    except Exception as exc:  # noqa: BLE001 - every request gets an answer
        log.exception("op %r failed with an internal error", op)
        return failure_result(exc, None)


def call(request: Any, notify: Any = None) -> bytes:
    """``handle`` for Pythonx: keys and op arrive as bytes, the answer leaves as JSON bytes."""
    import orjson

    from ..jsonsafe import dumps

    if isinstance(request, bytes):  # the request as JSON text: one object to hand over, not a tree
        try:
            request = orjson.loads(request)
        except orjson.JSONDecodeError as exc:
            return dumps(_invalid(f"the request is not valid JSON: {exc}", ()))
    if isinstance(request, dict):
        try:
            request = {normalize(key, root="request"): value for key, value in request.items()}
            if isinstance(request.get("op"), bytes):
                request["op"] = normalize(request["op"], root="op")
        except ServiceError as exc:
            return dumps(failure_result(exc, None))
    return dumps(handle(request, notify))


# --------------------------------------------------------------------------- ops


def _runner():
    from . import default_runner

    return default_runner()


def _ping(request: dict, notify: Any) -> dict:
    return {"status": "ok", "pid": os.getpid(), "tensorflow_loaded": "tensorflow" in sys.modules}


def _validate(request: dict, notify: Any) -> dict:
    from ..api import validate

    return validate(request["spec"], request.get("opts"))


def _submit(request: dict, notify: Any) -> dict:
    target = notify
    if notify is not None and not request.get("events", False):
        target = _only_done(notify)
    return _runner().submit(request["spec"], request.get("opts"), target)


def _only_done(notify: Any) -> Callable[[dict], None]:
    from .runner import pythonx_sender

    send = notify if callable(notify) else pythonx_sender(notify)

    def done_only(message: dict) -> None:
        if "done" in message:
            send(message)

    return done_only


def _status(request: dict, notify: Any) -> dict:
    return _runner().status(request["job_id"])


def _result(request: dict, notify: Any) -> dict:
    return _runner().result(request["job_id"], min(float(request.get("timeout") or 0.0), 5.0))


def _cancel(request: dict, notify: Any) -> dict:
    return _runner().cancel(request["job_id"])


def _jobs(request: dict, notify: Any) -> dict:
    return {"status": "ok", "jobs": _runner().jobs()}


def _register(request: dict, notify: Any) -> dict:
    from ..data.registry import register_dataset

    x, y = (_confined(request[key], key) for key in ("x", "y"))
    return register_dataset(request["name"], x, y, request.get("task", "auto"),
                            replace=request.get("replace", False), own_files=request.get("own_files", False))


def _confined(value: Any, loc: str) -> Any:
    """An ``{"npy": path}`` array must lie under the operator's data root, like csv/npz
    sources; without a data root it is a dataset_error at ``[loc, "npy"]``."""
    if not (isinstance(value, dict) and len(value) == 1):
        return value
    ((key, path),) = value.items()
    if normalize(key, root=loc) != "npy":
        return value
    from ..data.files import resolve_under_root
    from ..operator_config import data_root

    return {"npy": str(resolve_under_root(normalize(path, root=loc), data_root(), (loc, "npy")))}


def _predict(request: dict, notify: Any) -> dict:
    from ..prediction import engine_for, predict

    run, opts = normalize(request["run"], root="run"), normalize(request.get("opts"), root="opts")
    x = _array_or_value(request["x"], "x")
    if engine_for(run, opts) != "keras":  # ONNX, or a refusal: nothing loads TensorFlow here
        return predict(run, x, opts)
    return _runner().submit_predict(run, x, opts, notify)


def _array_or_value(value: Any, loc: str) -> Any:
    """A ``{"data", "dtype", "shape"}`` buffer or an ``{"npy": path}`` file (under the data
    root) as a numpy array in memory; any other ``x`` (rows, records, a source) as it is."""
    if not isinstance(value, dict):
        return value
    keys = {normalize(key, root=loc) for key in value}
    if keys != {"npy"} and keys != {"data", "dtype", "shape"}:
        return value
    import numpy as np

    from ..data.registry import array_from

    array = array_from(_confined(value, loc), loc)
    # A file's rows in memory: the caller may delete the file once this request is answered.
    return np.array(array) if isinstance(array, np.memmap) else array


def _unregister(request: dict, notify: Any) -> dict:
    from ..data.registry import unregister_dataset

    return {"status": "ok", "unregistered": unregister_dataset(request["name"])}


def _list_datasets(request: dict, notify: Any) -> dict:
    from ..data.registry import list_datasets

    return {"status": "ok", "datasets": list_datasets()}


def _configure(request: dict, notify: Any) -> dict:
    from . import configure

    return configure(max_concurrent_jobs=request.get("max_concurrent_jobs"))


def _shutdown(request: dict, notify: Any) -> dict:
    return _runner().shutdown(float(request.get("timeout", 10.0)))


_HANDLERS: dict[str, Callable[[dict, Any], dict]] = {
    "ping": _ping, "validate": _validate, "submit": _submit, "status": _status, "result": _result,
    "cancel": _cancel, "jobs": _jobs, "register_dataset": _register, "unregister_dataset": _unregister,
    "list_datasets": _list_datasets, "configure": _configure, "shutdown": _shutdown, "predict": _predict,
}
