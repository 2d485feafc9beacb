"""Built-in datasets: scikit-learn's bundled ones (no download) and seeded synthetic ones."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import DatasetError
from .dataset import Dataset, make_dataset

SYNTHETIC_SAMPLES = 400
SYNTHETIC_FEATURES = 10


def _sklearn(loader_name: str, task: str) -> Callable[[int], Dataset]:
    def load(seed: int) -> Dataset:  # bundled data is fixed; the seed does not apply
        from sklearn import datasets  # imported here: scikit-learn is slow to import

        bunch = getattr(datasets, loader_name)()
        names = tuple(str(n) for n in bunch.feature_names) if hasattr(bunch, "feature_names") else None
        return make_dataset(loader_name.removeprefix("load_"), bunch.data, bunch.target, task=task,
                            feature_names=names)

    return load


def _synthetic_classification(seed: int) -> Dataset:
    """Two classes split by a noisy hyperplane plus a curved term, so depth helps a little."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SYNTHETIC_SAMPLES, SYNTHETIC_FEATURES))
    w = rng.normal(size=SYNTHETIC_FEATURES)
    score = x @ w + 0.5 * x[:, 0] * x[:, 1] + rng.normal(scale=0.5, size=SYNTHETIC_SAMPLES)
    y = (score > np.median(score)).astype(np.int64)
    return make_dataset("synthetic_classification", x, y, task="binary")


def _synthetic_regression(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SYNTHETIC_SAMPLES, SYNTHETIC_FEATURES))
    w = rng.normal(size=SYNTHETIC_FEATURES)
    y = 3.0 * (x @ w) + 2.0 * np.sin(x[:, 0]) + rng.normal(scale=0.3, size=SYNTHETIC_SAMPLES) + 10.0
    return make_dataset("synthetic_regression", x, y, task="regression")


_LOADERS: dict[str, Callable[[int], Dataset]] = {
    "digits": _sklearn("load_digits", "multiclass"),
    "breast_cancer": _sklearn("load_breast_cancer", "binary"),
    "wine": _sklearn("load_wine", "multiclass"),
    "iris": _sklearn("load_iris", "multiclass"),
    "diabetes": _sklearn("load_diabetes", "regression"),
    "synthetic_classification": _synthetic_classification,
    "synthetic_regression": _synthetic_regression,
}

BUILTIN_DATASETS: tuple[str, ...] = tuple(_LOADERS)

# (features, classes or None for regression) of each built-in, so a request can be
# checked against limits without loading the data (a test keeps these true).
BUILTIN_SHAPES: dict[str, tuple[int, int | None]] = {
    "digits": (64, 10),
    "breast_cancer": (30, 2),
    "wine": (13, 3),
    "iris": (4, 3),
    "diabetes": (10, None),
    "synthetic_classification": (SYNTHETIC_FEATURES, 2),
    "synthetic_regression": (SYNTHETIC_FEATURES, None),
}


def load_builtin(name: str, *, seed: int = 0) -> Dataset:
    """Load a built-in dataset by name; ``seed`` drives the synthetic generators only."""
    loader = _LOADERS.get(name)
    if loader is None:
        raise DatasetError(f"unknown built-in dataset {name!r}; known: {', '.join(BUILTIN_DATASETS)}")
    return loader(seed)
