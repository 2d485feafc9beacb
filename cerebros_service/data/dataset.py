"""The one shape every data source produces: features, targets and what the task is.

A Dataset keeps the caller's arrays as they are (no copy) so that big arrays sent
once from Elixir or Python are not duplicated before training; the search makes
its float32 train/validation copies once, at its start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import DatasetError
from ..settings import Task

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
) -> Dataset:
    """Check shapes and types, settle the task, and encode class labels.

    ``x`` is kept without copying when it already is a 2-D numeric ndarray.
    Raises DatasetError naming what is wrong.
    """
    x_arr = x if isinstance(x, np.ndarray) else _as_array(x, "x")
    y_arr = y if isinstance(y, np.ndarray) else _as_array(y, "y")
    if x_arr.ndim == 1:
        x_arr = x_arr.reshape(-1, 1)
    if x_arr.ndim != 2:
        raise DatasetError(f"dataset {name!r}: x must be 2-D (samples, features), got shape {x_arr.shape}")
    if y_arr.ndim == 2 and y_arr.shape[1] == 1:
        y_arr = y_arr.reshape(-1)
    if y_arr.ndim != 1:
        raise DatasetError(f"dataset {name!r}: y must be 1-D (one target per sample), got shape {y_arr.shape}")
    if x_arr.shape[0] != y_arr.shape[0]:
        raise DatasetError(
            f"dataset {name!r}: x has {x_arr.shape[0]} samples but y has {y_arr.shape[0]}"
        )
    if x_arr.shape[0] < 4:
        raise DatasetError(f"dataset {name!r}: needs at least 4 samples, got {x_arr.shape[0]}")
    if not (np.issubdtype(x_arr.dtype, np.number) or x_arr.dtype == np.bool_):
        raise DatasetError(f"dataset {name!r}: x must be numeric, got dtype {x_arr.dtype}")
    if np.issubdtype(x_arr.dtype, np.floating) and not np.isfinite(x_arr).all():
        raise DatasetError(f"dataset {name!r}: x holds NaN or infinite values")
    if feature_names is not None and len(feature_names) != x_arr.shape[1]:
        raise DatasetError(
            f"dataset {name!r}: {len(feature_names)} feature names for {x_arr.shape[1]} features"
        )

    settled = _settle_task(name, y_arr, task)
    if settled == "regression":
        if not np.issubdtype(y_arr.dtype, np.number):
            raise DatasetError(f"dataset {name!r}: regression needs a numeric y, got dtype {y_arr.dtype}")
        if not np.isfinite(y_arr.astype(np.float64, copy=False)).all():
            raise DatasetError(f"dataset {name!r}: y holds NaN or infinite values")
        return Dataset(name, x_arr, y_arr, "regression", None, feature_names)

    labels, codes = np.unique(y_arr, return_inverse=True)
    if len(labels) < 2:
        raise DatasetError(f"dataset {name!r}: classification needs at least 2 classes, got {len(labels)}")
    if settled == "binary" and len(labels) != 2:
        raise DatasetError(f"dataset {name!r}: binary classification needs 2 classes, got {len(labels)}")
    task_kind: Task = "binary" if len(labels) == 2 else "multiclass"
    already_codes = np.issubdtype(y_arr.dtype, np.integer) and np.array_equal(labels, np.arange(len(labels)))
    y_codes = y_arr if already_codes else codes.astype(np.int64)
    class_labels = tuple(label.item() if hasattr(label, "item") else label for label in labels)
    return Dataset(name, x_arr, y_codes, task_kind, class_labels, feature_names)


def split_indices(n_samples: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle split: (train indices, validation indices), both non-empty."""
    if not 0.0 < validation_split < 1.0:
        raise DatasetError(f"validation_split must be in (0, 1), got {validation_split}")
    order = np.random.default_rng(seed).permutation(n_samples)
    n_val = min(max(1, int(round(n_samples * validation_split))), n_samples - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


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
