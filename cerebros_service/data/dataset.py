"""The one shape every data source produces: features, targets and what the task is.

A Dataset keeps the caller's arrays as they are (no copy) so that big arrays sent
once from Elixir or Python are not duplicated before training; the search makes
its float32 train/validation copies once, at its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import DatasetError, ErrorDetail
from ..settings import Task
from .validation import check_class_counts, check_features, check_regression_span, check_targets

TaskRequest = Literal["auto", "classification", "binary", "multiclass", "regression"]

# An integer-valued target with at most this many distinct values is taken as classes.
MAX_AUTO_CLASSES = 20


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x: np.ndarray  # 2-D (samples, features), numeric
    y: np.ndarray  # 1-D: class index 0..k-1 for classification, float for regression
    task: Task
    class_labels: tuple | None = None  # original label of each class index
    feature_names: tuple[str, ...] | None = None

    @property
    def n_samples(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int | None:
        return None if self.class_labels is None else len(self.class_labels)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
        }


def make_dataset(
    name: str,
    x,
    y,
    task: TaskRequest = "auto",
    feature_names: tuple[str, ...] | None = None,
    *,
    loc: tuple = (),
    quote_values: bool = True,
) -> Dataset:
    """Check shapes and values (``data/validation.py``), settle the task, and encode class labels.

    ``x`` is kept without copying when it already is a 2-D real-valued ndarray.
    Raises DatasetError naming what is wrong; its details' locs start with ``loc``
    (``("spec", "dataset")`` for a request's data). ``quote_values=False`` keeps
    cell values and labels out of the messages (data read from a file).
    """
    x_arr = x if isinstance(x, np.ndarray) else _as_array(x, "x")
    y_arr = y if isinstance(y, np.ndarray) else _as_array(y, "y")
    if x_arr.ndim == 1:
        x_arr = x_arr.reshape(-1, 1)
    if x_arr.ndim != 2:
        raise DatasetError(f"dataset {name!r}: x must be 2-D (samples, features), got shape {x_arr.shape}",
                           [ErrorDetail(loc + ("x",), f"must be 2-D (samples, features), got shape {x_arr.shape}")])
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        y_arr = y_arr.reshape(-1)
    if y_arr.ndim != 1:
        raise DatasetError(f"dataset {name!r}: y must be 1-D (one target per sample), got shape {y_arr.shape}",
                           [ErrorDetail(loc + ("y",), f"must be 1-D (one target per sample), got shape {y_arr.shape}")])
    if x_arr.shape[0] != y_arr.shape[0]:
        raise DatasetError(
            f"dataset {name!r}: x has {x_arr.shape[0]} samples but y has {y_arr.shape[0]}",
            [ErrorDetail(loc + ("y",), f"has {y_arr.shape[0]} values for {x_arr.shape[0]} rows of x")])
    if x_arr.shape[0] < 4:
        raise DatasetError(f"dataset {name!r}: needs at least 4 samples, got {x_arr.shape[0]}",
                           [ErrorDetail(loc + ("x",), f"needs at least 4 rows, got {x_arr.shape[0]}")])
    if feature_names is not None and len(feature_names) != x_arr.shape[1]:
        raise DatasetError(
            f"dataset {name!r}: {len(feature_names)} feature names for {x_arr.shape[1]} features"
        )
    x_arr = check_features(x_arr, name=name, feature_names=feature_names, loc=loc, quote_values=quote_values)
    y_arr = check_targets(y_arr, name=name, loc=loc)

    settled = _settle_task(name, y_arr, task)
    if settled == "regression":
        if not np.issubdtype(y_arr.dtype, np.number):
            raise DatasetError(f"dataset {name!r}: regression needs a numeric y, got dtype {y_arr.dtype}",
                               [ErrorDetail(loc + ("y",), f"must be numeric for regression, got {y_arr.dtype}")])
        check_regression_span(y_arr, name=name, loc=loc, quote_values=quote_values)
        return Dataset(name, x_arr, y_arr, "regression", None, feature_names)

    labels, codes, counts = np.unique(y_arr, return_inverse=True, return_counts=True)
    if len(labels) < 2:
        raise DatasetError(f"dataset {name!r}: classification needs at least 2 classes, got {len(labels)}",
                           [ErrorDetail(loc + ("y",), f"holds {len(labels)} class(es); need at least 2")])
    if settled == "binary" and len(labels) != 2:
        raise DatasetError(f"dataset {name!r}: binary classification needs 2 classes, got {len(labels)}",
                           [ErrorDetail(loc + ("y",), f"holds {len(labels)} classes; binary needs exactly 2")])
    check_class_counts(labels, counts, name=name, loc=loc, quote_values=quote_values)
    task_kind: Task = "binary" if len(labels) == 2 else "multiclass"
    already_codes = np.issubdtype(y_arr.dtype, np.integer) and np.array_equal(labels, np.arange(len(labels)))
    y_codes = y_arr if already_codes else codes.reshape(-1).astype(np.int64)
    class_labels = tuple(label.item() if hasattr(label, "item") else label for label in labels)
    return Dataset(name, x_arr, y_codes, task_kind, class_labels, feature_names)


def split_indices(n_samples: int, validation_split: float, seed: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split: (train indices, validation indices), both non-empty and sorted.

    With ``labels`` (class codes, classification) it is stratified: each class sends
    its share of rows to validation (at least one when it has two), keeping one for
    training (data/splits.py). Without, a plain shuffle. ``round(n * validation_split)``
    rows go to validation either way (at least 1, at most n - 1).
    """
    from .splits import shuffled_split, stratified_split

    if not 0.0 < validation_split < 1.0:
        raise DatasetError(f"validation_split must be in (0, 1), got {validation_split}")
    if labels is None:
        return shuffled_split(n_samples, validation_split, seed)
    return stratified_split(labels, validation_split, seed, keep_per_class=1, take_per_class=1)


def _as_array(values, what: str) -> np.ndarray:
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{what} is not a rectangular array: {exc}") from exc


def _settle_task(name: str, y: np.ndarray, task: TaskRequest) -> str:
    if task in ("binary", "multiclass", "regression"):
        return task
    if task == "classification":
        return "multiclass"  # refined to binary by the class count
    if not np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_:
        return "multiclass"
    if np.issubdtype(y.dtype, np.integer):
        return "multiclass" if len(np.unique(y)) <= MAX_AUTO_CLASSES else "regression"
    y64 = y.astype(np.float64, copy=False)
    if not np.isfinite(y64).all():
        raise DatasetError(f"dataset {name!r}: y holds NaN or infinite values")
    integral = np.array_equal(y64, np.round(y64))
    return "multiclass" if integral and len(np.unique(y64)) <= MAX_AUTO_CLASSES else "regression"
