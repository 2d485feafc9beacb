"""Datasets registered by name, so a caller sends big arrays once and refers to them later.

An Elixir caller (through Pythonx) or a Python caller registers ``x``/``y`` and then
uses ``{"dataset_id": name}`` in any number of specs. The registry holds the
caller's arrays as they are (no copy) until ``unregister_dataset`` releases them.

Like ``run_nas``, these functions answer with plain dicts and do not raise for bad
input: an exception would reach Elixir as an opaque error.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

from ..boundary.normalize import normalize
from ..errors import DatasetError, ErrorDetail, ServiceError
from .dataset import Dataset, make_dataset

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
TASKS = ("auto", "classification", "binary", "multiclass", "regression")

_lock = threading.Lock()
_datasets: dict[str, Dataset] = {}


def _builtin_names() -> tuple[str, ...]:
    from .builtin import BUILTIN_DATASETS  # numpy only; scikit-learn loads on use

    return BUILTIN_DATASETS


def register_dataset(name: Any, x: Any, y: Any, task: Any = "auto", *, replace: bool = False) -> dict:
    """Hold ``x``/``y`` under ``name``; returns ``{"status": "registered", …}`` or a failed dict.

    numpy arrays are kept without copying; lists (e.g. from Elixir) are converted once.
    A built-in dataset's name cannot be taken, and a registered name is only
    replaced when ``replace=True``: a name never silently means other data.
    """
    from ..boundary.results import failure_result  # results imports numpy/orjson only

    try:
        name, task = normalize(name, root="name"), normalize(task, root="task")
        _check_name(name)
        if task not in TASKS:
            raise DatasetError(f"task must be one of {', '.join(TASKS)}, got {task!r}",
                               [ErrorDetail(("task",), f"must be one of {', '.join(TASKS)}")])
        x = x if isinstance(x, np.ndarray) else normalize(x, root="x")
        y = y if isinstance(y, np.ndarray) else normalize(y, root="y")
        dataset = make_dataset(name, x, y, task=task)
        with _lock:
            replaced = name in _datasets
            if replaced and not replace:
                raise DatasetError(
                    f"a dataset named {name!r} is already registered; unregister it first "
                    "or pass replace=True",
                    [ErrorDetail(("name",), "is already registered")],
                )
            _datasets[name] = dataset
    except ServiceError as exc:
        return failure_result(exc, None)
    except Exception as exc:  # noqa: BLE001 - a caller across Pythonx must get a dict back
        return failure_result(DatasetError(f"cannot register dataset: {exc}"), None)
    return {"status": "registered", "replaced": replaced, **_describe(dataset)}


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DatasetError(
            f"dataset name must be 1 to 128 letters, digits, '.', '_' or '-', got {name!r}",
            [ErrorDetail(("name",), "must be 1 to 128 letters, digits, '.', '_' or '-'")],
        )
    if name in _builtin_names():
        raise DatasetError(
            f"{name!r} is the name of a built-in dataset; register yours under another name",
            [ErrorDetail(("name",), "is a built-in dataset's name")],
        )


def unregister_dataset(name: Any) -> bool:
    """Release a registered dataset; False when no dataset had that name."""
    try:
        name = normalize(name, root="name")
    except ServiceError:
        return False
    with _lock:
        return _datasets.pop(name, None) is not None if isinstance(name, str) else False


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
