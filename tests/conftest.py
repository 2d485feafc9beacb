"""Shared pytest fixtures. Each part of the project keeps its fixtures in its own section."""

from __future__ import annotations

import numpy as np
import pytest


# ---------------------------------------------------------------------------
# Search engine (search/, strategies/, run.py): tiny data and fast settings so
# every trial trains in a second or two on a 2-core CPU.
# ---------------------------------------------------------------------------

def make_tiny_dataset(task: str, n: int = 120, features: int = 6, seed: int = 0):
    """A small learnable dataset of the given task kind (numpy only, seeded)."""
    from cerebros_service.data.dataset import make_dataset

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * 3.0 + 5.0  # off-centre: the model must normalize
    score = x[:, 0] - x[:, 1] + 0.5 * x[:, 2]
    if task == "binary":
        y = (score > np.median(score)).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    else:
        y = 20.0 * score + 100.0 + rng.normal(scale=1.0, size=n)
    return make_dataset(f"tiny_{task}", x, y, task=task)


def tiny_space():
    from cerebros_service.settings import SpaceSettings

    return SpaceSettings(min_levels=1, max_levels=2, min_units_per_level=1, max_units_per_level=2,
                         min_neurons=4, max_neurons=12, activations=("elu", "relu"))


def tiny_training(**overrides):
    from cerebros_service.settings import TrainSettings

    values = dict(epochs=2, batch_size=32, learning_rate=0.01, patience=3, validation_split=0.25)
    values.update(overrides)
    return TrainSettings(**values)


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset


@pytest.fixture
def fast_settings():
    """SearchSettings factory: tiny space, 2 epochs; pass overrides as keywords."""
    from cerebros_service.settings import SearchSettings

    def make(training: dict | None = None, **overrides):
        values = dict(max_trials=2, population_size=2, space=tiny_space(),
                      training=tiny_training(**(training or {})))
        values.update(overrides)
        return SearchSettings(**values)

    return make
