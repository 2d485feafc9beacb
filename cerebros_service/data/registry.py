"""Datasets registered by name, so a caller sends big arrays once and refers to them later.

An Elixir caller (through Pythonx) or a Python caller registers ``x``/``y`` and then
uses ``{"dataset_id": name}`` in any number of specs. The registry holds the
caller's arrays as they are (no copy) until ``unregister_dataset`` releases them.

``x`` and ``y`` may be numpy arrays, nested lists, raw bytes described as
``{"data": bytes, "dtype": "float32", "shape": [n, m]}`` (what the Elixir bridge
sends for a binary or an Nx tensor: used through ``np.frombuffer``, not copied), or
``{"npy": path}`` (an ``.npy`` file, opened as a memory map).

Jobs that run in another process (``cerebros_service.jobs``) get the arrays through
``shared_descriptor(name)``: the ``.npy`` file, or one shared-memory copy made at
the first such job and released with the dataset.

Like ``run_nas``, these functions answer with plain dicts and do not raise for bad
input: an exception would reach Elixir as an opaque error.
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any

import numpy as np

from ..boundary.normalize import normalize
from ..boundary.safe_text import short_repr
from ..errors import DatasetError, ErrorDetail, ServiceError
from .dataset import Dataset, make_dataset

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
TASKS = ("auto", "classification", "binary", "multiclass", "regression")

_lock = threading.Lock()
_datasets: dict[str, Dataset] = {}
# name -> {"x"|"y": path} for arrays that are whole .npy files opened as memory maps
_npy_files: dict[str, dict[str, str]] = {}
# name -> {"x"|"y": SharedArray}, made at the first job in another process
_shared: dict[str, dict] = {}


def _builtin_names() -> tuple[str, ...]:
    from .builtin import BUILTIN_DATASETS  # numpy only; scikit-learn loads on use

    return BUILTIN_DATASETS


def register_dataset(name: Any, x: Any, y: Any, task: Any = "auto", *, replace: bool = False,
                     own_files: bool = False) -> dict:
    """Hold ``x``/``y`` under ``name``; returns ``{"status": "registered", …}`` or a failed dict.

    numpy arrays are kept without copying; lists (e.g. from Elixir) are converted once.
    A built-in dataset's name cannot be taken, and a registered name is only
    replaced when ``replace=True``: a name never silently means other data.
    ``own_files=True`` hands the ``{"npy": path}`` files over: they are deleted with
    the dataset, or at once when their data was copied or refused (the subprocess
    bridge writes them for this).
    """
    from ..boundary.results import failure_result  # results imports numpy/orjson only
    from ..jobs.shared_arrays import adopt, remove

    handed_over = [path for path in map(_npy_path, (x, y)) if path] if own_files else []
    try:
        name, task = normalize(name, root="name"), normalize(task, root="task")
        _check_name(name)
        if not isinstance(task, str) or task not in TASKS:
            raise DatasetError(f"task must be one of {', '.join(TASKS)}, got {short_repr(task)}",
                               [ErrorDetail(("task",), f"must be one of {', '.join(TASKS)}")])
        loaded = {"x": _as_array(x, "x"), "y": _as_array(y, "y")}
        dataset = make_dataset(name, loaded["x"], loaded["y"], task=task)
        # An .npy memory map that make_dataset kept as it is can be shared as its file.
        files = {key: os.path.realpath(array.filename) for key, array in loaded.items()
                 if isinstance(array, np.memmap) and array is getattr(dataset, key) and array.filename}
        with _lock:
            replaced = name in _datasets
            if replaced and not replace:
                raise DatasetError(
                    f"a dataset named {name!r} is already registered; unregister it first "
                    "or pass replace=True",
                    [ErrorDetail(("name",), "is already registered")],
                )
            _datasets[name] = dataset
            _npy_files[name] = files
            stale = _shared.pop(name, None)
            _shared[name] = {key: adopt(path) for key, path in files.items() if path in handed_over}
        _release(stale)
        handed_over = [path for path in handed_over if path not in files.values()]
    except ServiceError as exc:
        return failure_result(exc, None)
    except Exception as exc:  # noqa: BLE001 - a caller across Pythonx must get a dict back
        from ..boundary.safe_text import safe_str, type_name  # str(exc) itself may raise

        return failure_result(DatasetError(f"cannot register dataset: {type_name(exc)}: {safe_str(exc)}"), None)
    finally:
        for path in handed_over:  # files whose data is not used as it is (copied, or refused)
            remove(path)
    return {"status": "registered", "replaced": replaced, **_describe(dataset)}


def _npy_path(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        ((key, path),) = value.items()
        if key in ("npy", b"npy") and isinstance(path, (str, bytes)):
            return os.path.realpath(normalize(path, root="npy"))
    return None


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DatasetError(
            f"dataset name must be 1 to 128 letters, digits, '.', '_' or '-', got {short_repr(name)}",
            [ErrorDetail(("name",), "must be 1 to 128 letters, digits, '.', '_' or '-'")],
        )
    if name in _builtin_names():
        raise DatasetError(
            f"{name!r} is the name of a built-in dataset; register yours under another name",
            [ErrorDetail(("name",), "is a built-in dataset's name")],
        )


def array_from(value: Any, loc: str) -> Any:
    """numpy arrays as they are; bytes with dtype and shape through np.frombuffer (no copy);
    an .npy file as a memory map; anything else (lists) normalized for make_dataset.
    DatasetError names the field (``loc``) that is wrong."""
    return _as_array(value, loc)


def _as_array(value: Any, loc: str) -> Any:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, dict):
        fields = {normalize(k, root=loc): v for k, v in value.items()}
        if set(fields) == {"npy"}:
            return _load_npy(normalize(fields["npy"], root=loc), loc)
        if set(fields) == {"data", "dtype", "shape"}:
            return _from_buffer(fields["data"], normalize(fields["dtype"], root=loc),
                                normalize(fields["shape"], root=loc), loc)
        raise DatasetError(
            f"{loc} must be an array, a list, {{\"data\", \"dtype\", \"shape\"}} or {{\"npy\": path}}; "
            f"got an object with keys {sorted(map(str, fields))}",
            [ErrorDetail((loc,), "has unexpected keys")])
    return normalize(value, root=loc)


def _from_buffer(data: Any, dtype_name: Any, shape: Any, loc: str) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetError(f"{loc}.data must be bytes (an Elixir binary), got {type(data).__name__}",
                           [ErrorDetail((loc, "data"), "must be bytes")])
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise DatasetError(
            f"{loc}.dtype must name a numeric numpy dtype (e.g. 'float32', 'int64'), got {dtype_name!r}",
            [ErrorDetail((loc, "dtype"), "must be a numeric dtype")])
    if not (isinstance(shape, list) and shape and all(isinstance(n, int) and not isinstance(n, bool)
                                                      and n >= 0 for n in shape)):
        raise DatasetError(f"{loc}.shape must be a list of sizes such as [5000, 64], got {shape!r}",
                           [ErrorDetail((loc, "shape"), "must be a list of non-negative integers")])
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{loc}.data holds {len(data)} bytes but shape {shape} of {dtype.name} needs {expected}",
            [ErrorDetail((loc, "data"), f"holds {len(data)} bytes, expected {expected}")])
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _load_npy(path: Any, loc: str) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{loc}: cannot open the .npy file {path!r}: {exc}",
                           [ErrorDetail((loc, "npy"), str(exc))]) from None
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"{loc}: {path!r} is not a single .npy array", [ErrorDetail((loc, "npy"), "not .npy")])
    return array


def unregister_dataset(name: Any) -> bool:
    """Release a registered dataset; False when no dataset had that name."""
    try:
        name = normalize(name, root="name")
    except ServiceError:
        return False
    if not isinstance(name, str):
        return False
    with _lock:
        found = _datasets.pop(name, None) is not None
        _npy_files.pop(name, None)
        shared = _shared.pop(name, None)
    _release(shared)
    return found


def _release(shared: dict | None) -> None:
    for array in (shared or {}).values():
        array.release()


def shared_descriptor(name: str) -> dict | None:
    """What a job in another process needs to use registered dataset ``name`` without a
    copy per job (see module docstring); None when ``name`` is not registered."""
    from ..jobs.shared_arrays import share

    with _lock:
        dataset = _datasets.get(name)
        if dataset is None:
            return None
        shared = _shared.setdefault(name, {})
        files = _npy_files.get(name, {})
        for key in ("x", "y"):
            if key not in shared:  # shared once, at the first job in another process
                shared[key] = share(getattr(dataset, key), files.get(key))
    labels = None if dataset.class_labels is None else list(np.asarray(dataset.class_labels).tolist())
    return {
        "name": dataset.name, "task": dataset.task, "class_labels": labels,
        "feature_names": None if dataset.feature_names is None else list(dataset.feature_names),
        "x": shared["x"].descriptor, "y": shared["y"].descriptor,
    }


def attach_shared(descriptor: dict) -> Dataset:
    """In a worker process: register the dataset a ``shared_descriptor`` stands for, mapped
    from the owner's memory or file (no copy), under its name."""
    from ..jobs.shared_arrays import attach

    labels = descriptor["class_labels"]
    names = descriptor["feature_names"]
    dataset = Dataset(descriptor["name"], attach(descriptor["x"]), attach(descriptor["y"]), descriptor["task"],
                      None if labels is None else tuple(labels), None if names is None else tuple(names))
    with _lock:
        _datasets[dataset.name] = dataset
    return dataset


def get_dataset(name: str) -> Dataset | None:
    with _lock:
        return _datasets.get(name)


def list_datasets() -> list[dict]:
    """What is registered now, by name: task, shape, classes and memory held."""
    with _lock:
        datasets = sorted(_datasets.values(), key=lambda d: d.name)
    return [_describe(d) for d in datasets]


def _describe(dataset: Dataset) -> dict:
    return {
        **dataset.describe(),
        "source": "registered",
        "nbytes": int(dataset.x.nbytes + dataset.y.nbytes),
    }
