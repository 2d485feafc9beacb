"""The winner, measured on rows the search never saw: its held-out test scores and the refit.

The search ranks trials and picks each one's best epoch on the validation split,
so its best validation value is an optimistic estimate. Here the winning model
(its best epoch's weights, as saved) predicts the held-out test rows once, after
the search, and scoring.py scores them: the same metric as the ranking one, plus
every other metric and, for a classifier, the per-class view. With ``refit`` the
winner's architecture is trained again from its own initial weights on the
training and validation rows together, for the epochs that got it its best
validation value, and that model is tested too.

Keras is imported inside the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..data.dataset import Dataset
from ..settings import TrainSettings
from .build import build_model, initial_weights
from .device import graph_optimizer_off
from .scoring import evaluation_report
from .train import TrainingData, make_training_data, save_model

PREDICT_BATCH = 8192


@dataclass(frozen=True, eq=False)
class HeldOut:
    """The test rows: a split of the data, or a set given apart (already in the data's class codes)."""

    x: np.ndarray
    y: np.ndarray
    source: str  # "split" | "given"

    @property
    def rows(self) -> int:
        return int(len(self.x))


def predictor(arch: dict, weights: dict, data: TrainingData):
    """``x -> outputs`` of ``arch`` with ``weights`` on raw features, as its saved model gives them."""
    import keras

    keras.backend.clear_session()
    model = build_model(arch, data.task, data.n_classes, feature_mean=data.feature_mean,
                        feature_var=data.feature_var, target_mean=data.target_mean,
                        target_std=data.target_std, weights=weights, compile=False)
    return lambda x: _predict(model, x)


def saved_predictor(path: str):
    """``x -> outputs`` of a saved model (the best trial's, when no weights came back)."""
    import keras

    model = keras.saving.load_model(path, compile=False)
    return lambda x: _predict(model, x)


def _predict(model, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    with graph_optimizer_off():  # one prediction: optimizing its graph would cost more than it saves
        parts = [np.asarray(model.predict_on_batch(x[start:start + PREDICT_BATCH]))
                 for start in range(0, len(x), PREDICT_BATCH)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 1), np.float32)


def report(data: TrainingData, y: np.ndarray, outputs: np.ndarray) -> dict:
    return evaluation_report(data.task, y, outputs, _n_classes(data))


def _n_classes(data: TrainingData) -> int | None:
    if data.task == "binary":
        return 2
    return data.n_classes if data.task == "multiclass" else None


def refit(arch: dict, *, seed: int, epochs: int, dataset: Dataset, rows: np.ndarray, training: TrainSettings,
          data_seed: int) -> tuple[dict, TrainingData, TrainSettings]:
    """Train ``arch`` from its initial weights (``seed``) on ``rows`` for ``epochs``; no early stop.

    Returns the trained weights (build.py layout), the training data whose statistics
    the model bakes in, and the training settings it ran with (for saving it).
    """
    import keras

    data = make_training_data(dataset, rows, rows[:0])
    training = replace(training, epochs=int(epochs),
                       steps_per_epoch=math.ceil(len(rows) / training.batch_size))
    keras.backend.clear_session()
    model = build_model(arch, data.task, data.n_classes, feature_mean=data.feature_mean,
                        feature_var=data.feature_var, target_mean=data.target_mean,
                        target_std=data.target_std, training=training,
                        weights=initial_weights(arch, data.output_units, seed))
    keras.utils.set_random_seed(data_seed)
    model.fit(data.x_train, data.targets(data.y_train), epochs=int(epochs), batch_size=training.batch_size,
              shuffle=True, verbose=0)
    weights = {layer.name: layer.get_weights() for layer in model.layers
               if layer.weights and layer.name != "normalize"}
    return weights, data, training


def save_refit(arch: dict, weights: dict, data: TrainingData, training: TrainSettings, path: str) -> None:
    save_model(arch, weights, data, training, path)
