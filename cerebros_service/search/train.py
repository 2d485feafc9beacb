"""Candidates in, TrialRecords out.

``train_candidates`` is a top-level function over plain, picklable data so that a
later version can hand slices of the candidate list to worker processes. It trains
one candidate after another here; a failing candidate becomes a failed record and
the next one runs.

Best-epoch bookkeeping is our own (``EpochTracker``): the reported value,
the reported epoch and the weights left in the model (and saved) all come from the
same epoch, whether training stopped early, hit the deadline or ran all epochs.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..data.dataset import Dataset
from .build import build_model
from .records import Candidate, TrialRecord
from ..settings import Direction, Task, TrainSettings, is_better

ERROR_CHARS = 500  # keep error strings readable in events and results


@dataclass(frozen=True, eq=False)
class TrainingData:
    """float32 train/validation arrays and the training-set statistics the model bakes in."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: Task
    n_classes: int | None
    feature_mean: np.ndarray
    feature_var: np.ndarray
    target_mean: float
    target_std: float

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])


def make_training_data(dataset: Dataset, train_idx: np.ndarray, val_idx: np.ndarray) -> TrainingData:
    """Copy the split once, as float32; statistics come from the training part only."""
    x_train = np.ascontiguousarray(dataset.x[train_idx], dtype=np.float32)
    x_val = np.ascontiguousarray(dataset.x[val_idx], dtype=np.float32)
    y_train = np.asarray(dataset.y[train_idx], dtype=np.float32)
    y_val = np.asarray(dataset.y[val_idx], dtype=np.float32)
    mean = x_train.mean(axis=0, dtype=np.float64)
    var = x_train.var(axis=0, dtype=np.float64)
    # A constant feature would be divided by ~0 and blow up on unseen values.
    var = np.where(var < 1e-12, 1.0, var)
    if dataset.task == "regression":
        target_mean = float(y_train.mean(dtype=np.float64))
        target_std = float(y_train.std(dtype=np.float64)) or 1.0
    else:
        target_mean, target_std = 0.0, 1.0
    return TrainingData(x_train, y_train, x_val, y_val, dataset.task, dataset.n_classes,
                        mean.astype(np.float32), var.astype(np.float32), target_mean, target_std)


def train_candidates(
    candidates: list[Candidate],
    data: TrainingData,
    training: TrainSettings,
    metric: str,
    direction: Direction,
    *,
    deadline: float | None = None,
    save_dir: str | None = None,
    save_threshold: float | None = None,
    on_record: Callable[[TrialRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TrialRecord]:
    """Train each candidate in turn; return one record per candidate that started.

    ``deadline`` is a ``time.monotonic()`` instant: no candidate starts after it and a
    running fit stops at the next batch. With ``save_dir``, a completed trial whose
    value beats ``save_threshold`` (and every earlier trial of this call) is saved as
    ``save_dir/trial-NNNN.keras`` and its record carries ``model_path``.
    ``on_record`` sees each record as soon as its trial ends.
    """
    records: list[TrialRecord] = []
    threshold = save_threshold
    for candidate in candidates:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if should_stop is not None and should_stop():
            break
        path = None if save_dir is None else os.path.join(save_dir, f"trial-{candidate.trial:04d}.keras")
        record = train_one(candidate, data, training, metric, direction, deadline=deadline,
                           save_path=path, save_threshold=threshold, should_stop=should_stop)
        if record.model_path is not None:
            threshold = record.value
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def train_one(
    candidate: Candidate,
    data: TrainingData,
    training: TrainSettings,
    metric: str,
    direction: Direction,
    *,
    deadline: float | None = None,
    save_path: str | None = None,
    save_threshold: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrialRecord:
    import keras

    started = time.monotonic()
    keep = EpochTracker(metric, direction, training.patience, started)
    model = None
    try:
        keras.backend.clear_session()
        keras.utils.set_random_seed(candidate.seed)
        model = build_model(
            candidate.architecture, data.task, data.n_classes,
            feature_mean=data.feature_mean, feature_var=data.feature_var,
            target_mean=data.target_mean, target_std=data.target_std,
            learning_rate=training.learning_rate, weight_decay=training.weight_decay,
        )
        history = model.fit(
            data.x_train, _targets(data.y_train, data.task),
            validation_data=(data.x_val, _targets(data.y_val, data.task)),
            epochs=training.epochs, batch_size=training.batch_size,
            callbacks=[_callback_class()(keep, deadline, should_stop)], verbose=0,
        ).history
    except Exception as exc:  # one broken candidate must not end the search
        return _failed(candidate, metric, started, keep, _describe(exc), model)
    if keep.failure is not None:
        return _failed(candidate, metric, started, keep, keep.failure, model, history)
    if keep.best_value is None:
        reason = (f"Keras reported no {metric!r}; reported: {', '.join(sorted(history)) or 'nothing'}"
                  if history else "training ended before the first epoch")
        return _failed(candidate, metric, started, keep, reason, model, history)

    model_path = None
    if save_path is not None and is_better(keep.best_value, save_threshold, direction):
        try:
            _save_atomically(model, save_path)
            model_path = save_path
        except Exception as exc:  # a model we cannot save still has a valid result
            return _failed(candidate, metric, started, keep, f"saving the model failed: {_describe(exc)}",
                           model, history)
    return TrialRecord(
        trial=candidate.trial, generation=candidate.generation, status="completed",
        architecture=candidate.architecture, metric=metric, value=keep.best_value,
        best_epoch=keep.best_epoch, epochs_run=keep.epochs_run,
        duration_s=time.monotonic() - started, first_epoch_s=keep.first_epoch_s,
        params=int(model.count_params()), history=_clean_history(history), model_path=model_path,
    )


class EpochTracker:
    """Plain-Python bookkeeping of one fit, driven by the Keras adapter below.

    Tracks the best epoch of ``monitor``, asks to stop after ``patience`` epochs
    without gain or at once on a non-finite loss or metric, and keeps the best
    epoch's weights so they can be put back when training ends — however it ends
    (early stop, deadline, or all epochs run).
    """

    def __init__(self, monitor: str, direction: Direction, patience: int, started: float):
        self.monitor, self.direction, self.patience, self.started = monitor, direction, patience, started
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_weights = None
        self.epochs_run = 0
        self.wait = 0
        self.first_epoch_s: float | None = None
        self.failure: str | None = None

    def batch_end(self, batch: int, logs: dict) -> bool:
        """True when training must stop."""
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = f"training loss became {float(loss)} at batch {batch + 1} of epoch {self.epochs_run + 1}"
            return True
        return False

    def epoch_end(self, epoch: int, logs: dict, get_weights: Callable[[], list]) -> bool:
        """True when training must stop."""
        self.epochs_run = epoch + 1
        if self.first_epoch_s is None:
            self.first_epoch_s = time.monotonic() - self.started
        if self.failure is not None:
            return True
        for key in ("loss", "val_loss", self.monitor):
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                self.failure = f"{key} became {float(value)} at epoch {epoch + 1}"
                return True
        value = logs.get(self.monitor)
        if value is None:
            return False
        if is_better(float(value), self.best_value, self.direction):
            self.best_value, self.best_epoch, self.wait = float(value), epoch + 1, 0
            self.best_weights = get_weights()
            return False
        self.wait += 1
        return self.wait >= self.patience


@functools.cache
def _callback_class():
    import keras

    class TrackerCallback(keras.callbacks.Callback):
        """Feeds Keras events to an EpochTracker; stops at the deadline; restores the best weights."""

        def __init__(self, tracker: EpochTracker, deadline: float | None, should_stop=None):
            super().__init__()
            self.tracker, self.deadline, self.should_stop = tracker, deadline, should_stop

        def on_train_batch_end(self, batch, logs=None):
            if self.tracker.batch_end(batch, logs or {}):
                self.model.stop_training = True
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.model.stop_training = True
            elif self.should_stop is not None and self.should_stop():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if self.tracker.epoch_end(epoch, logs or {}, self.model.get_weights):
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.tracker.best_weights is not None:
                self.model.set_weights(self.tracker.best_weights)

    return TrackerCallback


def _targets(y: np.ndarray, task: Task) -> np.ndarray:
    # One column for single-output heads, so the loss never broadcasts (n,) against (n, 1).
    return y if task == "multiclass" else y.reshape(-1, 1)


def _save_atomically(model, path: str) -> None:
    tmp = path[: -len(".keras")] + ".tmp.keras"  # Keras insists on the suffix
    model.save(tmp)
    os.replace(tmp, path)


def _clean_history(history: dict) -> dict:
    return {key: [float(v) if math.isfinite(float(v)) else None for v in values]
            for key, values in history.items()}


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def _failed(candidate: Candidate, metric: str, started: float, keep, error: str,
            model=None, history: dict | None = None) -> TrialRecord:
    params = None
    if model is not None:
        try:
            params = int(model.count_params())
        except Exception:  # an unbuilt model has no parameter count; that is fine
            params = None
    return TrialRecord(
        trial=candidate.trial, generation=candidate.generation, status="failed",
        architecture=candidate.architecture, metric=metric, value=None, best_epoch=None,
        epochs_run=keep.epochs_run, duration_s=time.monotonic() - started,
        first_epoch_s=keep.first_epoch_s, params=params, error=error,
        history=_clean_history(history or {}),
    )
