"""Candidates in, TrialRecords out: sequentially (one Keras model after another) or fused.

``train_population`` is a top-level function over plain, picklable data, so an
executor can hand a slice of the candidate list (or one fused chunk) to a worker
process. Both trainers share the scoring (scoring.py: one definition of every
metric, computed on the validation split after each epoch) and the best-epoch
bookkeeping (tracking.py), start each candidate from the same numpy-drawn weights
(build.initial_weights) and see the training rows in the same order (one data
seed per call), so a trial's value does not depend on how it was trained beyond
floating-point rounding.

A failing candidate becomes a failed record and the others go on. A value that
stops being finite after good epochs ends that candidate keeping its best epoch.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..data.dataset import Dataset
from ..settings import Direction, ExecutionSettings, Standing, Task, TrainSettings, outranks
from .build import build_model, count_params, initial_weights
from .device import compute_precision, graph_optimizer_off
from .optimizer import make_training_optimizer, trial_training
from .records import Candidate, TrialRecord, takes_lead
from .space import check_architecture
from .scoring import score_population
from .tracking import EpochTracker

log = logging.getLogger(__name__)

ERROR_CHARS = 500  # keep error strings readable in events and results
SCORE_BATCH = 8192  # rows per forward pass when scoring
# Training rows scored each epoch for the "loss" history. A fused chunk predicts them
# with every candidate's padded weights: 512 were two thirds of the rows scored
# (digits 40 x 20 on 2 cores: scoring 2.5 -> 1.7 s of a 17 s search with 128).
TRAIN_SCORE_ROWS = 128

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

    @property
    def output_units(self) -> int:
        return int(self.n_classes) if self.task == "multiclass" else 1

    @functools.cached_property
    def scoring_rows(self) -> np.ndarray:
        """What each epoch scores, in one array: the validation rows, then up to
        TRAIN_SCORE_ROWS training rows (for the "loss" history)."""
        return np.concatenate([self.x_val, self.x_train[:TRAIN_SCORE_ROWS]])

    def targets(self, y: np.ndarray) -> np.ndarray:
        # One column for single-output heads, so the loss never broadcasts (n,) against (n, 1).
        return y if self.task == "multiclass" else y.reshape(-1, 1)


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


@dataclass(frozen=True)
class StopCheck:
    """When running training must end: a ``time.monotonic()`` deadline and/or a cancel flag."""

    deadline: float | None = None
    should_stop: Callable[[], bool] | None = None

    def reason(self) -> str | None:
        if self.should_stop is not None and self.should_stop():
            return "cancelled"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "max_time_seconds"
        return None


def train_population(
    candidates: list[Candidate],
    data: TrainingData,
    training: TrainSettings,
    metric: str,
    direction: Direction,
    *,
    execution: ExecutionSettings = ExecutionSettings(),
    data_seed: int = 0,
    stop: StopCheck = StopCheck(),
    save_dir: str | None = None,
    save_threshold: Standing | None = None,
    keep_weights: bool = False,
    on_record: Callable[[TrialRecord], None] | None = None,
) -> list[TrialRecord]:
    """Train every candidate; return one record per candidate that started, in trial order.

    With ``save_dir``, a completed trial that outranks ``save_threshold`` (and every
    trial of this call before it) is saved as ``save_dir/trial-NNNN.keras`` and its
    record carries ``model_path``. With ``keep_weights`` each completed record holds
    its best epoch's weights (``record.weights``). ``on_record`` sees each record as
    soon as its trial (or its fused chunk) ends. No candidate starts once ``stop``
    says so; running ones end at the next batch, keeping their best epoch.
    """
    sink = RecordSink(ModelSaver(data, training, direction, save_dir, save_threshold), keep_weights, on_record)
    for unit in plan_work(candidates, data, training, execution):
        sink.take_all(train_unit(unit, data, training, metric, direction, execution=execution,
                                 data_seed=data_seed, stop=stop))
    return sink.in_trial_order()


class RecordSink:
    """Where a trainer's finished records go: saved when they lead, stripped of weights unless
    kept, handed to ``on_record`` at once. Every trainer (local or distributed) uses one."""

    def __init__(self, saver: ModelSaver, keep_weights: bool, on_record: Callable[[TrialRecord], None] | None):
        self.saver, self.keep_weights, self.on_record = saver, keep_weights, on_record
        self.records: list[TrialRecord] = []

    def take(self, record: TrialRecord) -> None:
        self.take_all([record])

    def take_all(self, records: list[TrialRecord]) -> None:
        """A unit's records, which finished together: only their leader can be worth a model file."""
        leader = None
        for record in records:
            if record.weights is not None and takes_lead(record, leader, self.saver.direction):
                leader = record
        for record in records:
            if record is leader:
                record = self.saver.offer(record)
            if not self.keep_weights and record.weights is not None:
                record = _without_weights(record)
            self.records.append(record)
            if self.on_record is not None:
                self.on_record(record)

    def in_trial_order(self) -> list[TrialRecord]:
        return sorted(self.records, key=lambda r: r.trial)


@dataclass(frozen=True)
class WorkUnit:
    """What trains at once: a fused chunk (``chunk_index`` set) or candidates one after another."""

    candidates: tuple[Candidate, ...]
    chunk_index: int | None = None

    @property
    def trials(self) -> list[int]:
        return [c.trial for c in self.candidates]


def plan_work(candidates: list[Candidate], data: TrainingData, training: TrainSettings,
              execution: ExecutionSettings) -> list[WorkUnit]:
    """The units ``train_population`` trains, in order: in fused mode its chunks, then every
    candidate that trains alone (broken or oversized ones, which fail there, and chunks
    of one) in trial order. Executors that spread units over workers plan with this too,
    so a distributed run trains exactly what a local one would."""
    if execution.mode != "fused" or len(candidates) <= 1:
        return [WorkUnit((c,)) for c in candidates]
    from .fused_train import plan_chunks

    alone = {c.trial for c in candidates if not _valid(c.architecture) or _too_large(c)}
    sequential = [c for c in candidates if c.trial in alone]
    units = []
    for index, chunk in enumerate(plan_chunks([c for c in candidates if c.trial not in alone], data, training,
                                              execution)):
        if len(chunk) == 1:
            sequential.extend(chunk)
        else:
            units.append(WorkUnit(tuple(chunk), index))
    return units + [WorkUnit((c,)) for c in sorted(sequential, key=lambda c: c.trial)]


def train_unit(unit: WorkUnit, data: TrainingData, training: TrainSettings, metric: str, direction: Direction,
               *, execution: ExecutionSettings, data_seed: int, stop: StopCheck) -> list[TrialRecord]:
    """Train one unit (a top-level function over plain data: what a worker runs). Nothing
    starts once ``stop`` says so."""
    if stop.reason() is not None:
        return []
    with graph_optimizer_off():
        if unit.chunk_index is not None:
            from .fused_train import train_chunk

            return train_chunk(list(unit.candidates), data, training, metric, direction, execution=execution,
                               data_seed=data_seed, stop=stop, chunk_index=unit.chunk_index)
        records = []
        for candidate in unit.candidates:
            if stop.reason() is not None:
                break
            records.append(train_one(candidate, data, training, metric, direction, data_seed=data_seed,
                                     stop=stop))
        return records


def _valid(arch: dict) -> bool:
    try:
        check_architecture(arch)
        return True
    except (ValueError, TypeError, KeyError, IndexError):
        return False


def _too_large(candidate: Candidate) -> str | None:
    """Why a candidate must not be built at all: more parameters than the operator allows."""
    from ..operator_config import limit_or_default

    params, limit = _params(candidate), limit_or_default("max_candidate_params")
    if params is not None and params > limit:
        return (f"the architecture has {params:,} parameters, more than the operator's limit "
                f"max_candidate_params ({limit:,})")
    return None


def _without_weights(record: TrialRecord) -> TrialRecord:
    from dataclasses import replace

    return replace(record, weights=None)


class ModelSaver:
    """Saves a record's model when it outranks everything offered so far in this call and the
    threshold (the run's best from earlier calls)."""

    def __init__(self, data, training, direction, save_dir, threshold: Standing | None):
        self.data, self.training, self.direction = data, training, direction
        self.save_dir, self.leader = save_dir, threshold

    def offer(self, record: TrialRecord) -> TrialRecord:
        from dataclasses import replace

        if (self.save_dir is None or record.status != "completed" or record.weights is None
                or not outranks(record.standing(), self.leader, self.direction)):
            return record
        path = os.path.join(self.save_dir, f"trial-{record.trial:04d}.keras")
        try:
            save_model(record.architecture, record.weights, self.data, self.training, path)
        except Exception as exc:  # a model we cannot save still has a valid result, but no file
            return replace(record, status="failed", value=None,
                           error=f"saving the model failed: {describe(exc)}")
        self.leader = record.standing()
        return replace(record, model_path=path)


def save_model(arch: dict, weights: dict, data: TrainingData, training: TrainSettings, path: str) -> None:
    """The standalone Keras model of ``arch`` with ``weights``, saved atomically at ``path``."""
    model = standalone_model(arch, weights, data, training)
    # A built optimizer saves all its (fresh) slots, so loading the file warns of nothing.
    model.optimizer.build(model.trainable_variables)
    save_atomically(model, path)


def save_atomically(model, path: str) -> None:
    """``model.save(path)`` through a temp file and a rename: a reader never sees half a file."""
    tmp = path[: -len(".keras")] + ".tmp.keras"  # Keras insists on the suffix
    model.save(tmp)
    os.replace(tmp, path)


def standalone_model(arch: dict, weights: dict | None, data: TrainingData, training: TrainSettings,
                     *, metrics: bool = True, optimizer=None):
    return build_model(
        arch, data.task, data.n_classes,
        feature_mean=data.feature_mean, feature_var=data.feature_var,
        target_mean=data.target_mean, target_std=data.target_std,
        training=training, weights=weights, metrics=metrics, optimizer=optimizer,
    )


# --------------------------------------------------------------------------- sequential


def train_one(
    candidate: Candidate,
    data: TrainingData,
    training: TrainSettings,
    metric: str,
    direction: Direction,
    *,
    data_seed: int = 0,
    stop: StopCheck = StopCheck(),
) -> TrialRecord:
    """One candidate as an ordinary Keras model; the record keeps its best epoch's weights."""
    import keras

    started = time.monotonic()
    tracker = EpochTracker(metric, direction, training.patience, started)
    arch = candidate.architecture
    training = trial_training(training, arch)
    refusal = _too_large(candidate)
    if refusal is not None:
        return failed_record(candidate, metric, started, tracker, refusal)
    try:
        keras.backend.clear_session()
        weights = candidate.initial_weights or initial_weights(arch, data.output_units, candidate.seed)
        with compute_precision(training.mixed_precision):
            # No compiled metrics: every epoch is scored by scoring.py, and Keras' would be
            # traced into the train step and updated (and reset) at every batch for nothing.
            model = standalone_model(arch, weights, data, training, metrics=False,
                                     optimizer=make_training_optimizer(training))
        # Built before fit, not inside its first traced step (TensorFlow would trace it twice).
        model.optimizer.build(model.trainable_variables)
        monitor = _SequentialMonitor(tracker, data, stop)
        keras.utils.set_random_seed(candidate.seed)  # dropout, when a unit has it
        fit_epochs(model, training_batches(data, training.batch_size, data_seed),
                   candidate.epochs or training.epochs, monitor)
    except Exception as exc:  # one broken candidate must not end the search
        return failed_record(candidate, metric, started, tracker, describe(exc))
    tracker.stop(monitor.outside_stop or "epochs")
    return finished_record(candidate, metric, started, tracker, monitor.best_weights, "sequential")


class _SequentialMonitor:
    """Scores the model after each epoch, keeps the best epoch's weights, stops on time or cancel."""

    def __init__(self, tracker: EpochTracker, data: TrainingData, stop: StopCheck):
        self.tracker, self.data, self.stop = tracker, data, stop
        self.best_weights: dict | None = None
        self.outside_stop: str | None = None
        self.model = None

    def batch_end(self) -> bool:
        reason = self.stop.reason()
        if reason is not None:
            self.outside_stop = reason
            return True
        return False

    def epoch_end(self, epoch: int) -> bool:
        logs = epoch_scores(self.data, lambda x: self.model.predict_on_batch(x)[:, None, :])
        if self.tracker.epoch_end(epoch, {key: float(v[0]) for key, v in logs.items()}):
            self.best_weights = {layer.name: layer.get_weights() for layer in self.model.layers
                                 if layer.weights and layer.name != "normalize"}
        return self.tracker.stopped


def fit_epochs(model, batches, epochs: int, monitor, *, first_epoch: int = 0, steps_per_execution: int = 1) -> None:
    """Train ``model`` on ``batches`` (from ``training_batches``) for epochs ``first_epoch`` to
    ``epochs - 1``, or until the monitor's ``batch_end()`` / ``epoch_end(epoch)`` says stop.

    On TensorFlow, an epoch's batches are stacked and run by one compiled loop
    (step_loop.py), ``batch_end`` asked between its calls, not by ``fit``: on these
    small models fit's own machinery (its epoch iterator over the dataset, callbacks,
    per-epoch set-up) is a large share of the time. Measured on 2 cores (a 40-candidate
    digits chunk): later epochs 1.5-1.8 s with spikes to 2.7 s under fit, 0.95-1.1 s
    with ``train_on_batch``, 0.7-0.75 s in the loop. On JAX fit is the faster (0.65-0.75
    s; ``train_on_batch`` writes the whole state back into the variables after every
    step), so other backends use fit. Either way an epoch cut short by ``batch_end`` is
    still scored by ``epoch_end``.
    """
    import keras

    monitor.model = model
    if keras.backend.backend() != "tensorflow":
        # shuffle=False: Keras would reorder the batches on its own; training_batches does it, seeded.
        model.fit(batches, initial_epoch=first_epoch, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[_keras_callback(monitor)])
        return
    from .step_loop import run_epoch

    for epoch in range(first_epoch, epochs):
        xs, ys = batches.epoch_arrays()
        stopped = run_epoch(model, xs, ys, monitor.batch_end,
                            steps_per_call=steps_per_execution if steps_per_execution > 1 else 0)
        batches.on_epoch_end()
        if monitor.epoch_end(epoch) or stopped:
            return


def _keras_callback(monitor):
    """The Keras side of a trainer's monitor under ``fit``."""
    import keras

    class Monitor(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if monitor.batch_end():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if monitor.epoch_end(epoch):
                self.model.stop_training = True

    return Monitor()


def training_batches(data: TrainingData, batch_size: int, seed: int, first_epoch: int = 0):
    """The training rows as full batches in a seeded order, reshuffled every epoch.

    Every batch has ``batch_size`` rows (the last ``n mod batch_size`` rows of each
    epoch's order are left out of that epoch, different ones each time), so a model is
    traced or compiled for one batch shape only: a ragged last batch would cost a
    second trace per model (seconds on TensorFlow, a second XLA compile on JAX). The
    order depends on ``seed`` alone, so every trainer feeds every candidate the same
    batches; ``first_epoch`` starts at that epoch's order (a fit that continues).
    """
    import keras

    class EpochBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.x, self.y = data.x_train, data.targets(data.y_train)
            self.size = min(batch_size, len(self.x))
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(self.x))
            for _ in range(first_epoch):
                self.order = self.rng.permutation(len(self.x))

        def __len__(self):
            return len(self.x) // self.size

        def __getitem__(self, index):
            rows = self.order[index * self.size:(index + 1) * self.size]
            return self.x[rows], self.y[rows]

        def epoch_arrays(self) -> tuple[np.ndarray, np.ndarray]:
            """This epoch's batches stacked: (steps, batch, ...) features and targets."""
            rows = self.order[:len(self) * self.size].reshape(len(self), self.size)
            return self.x[rows], self.y[rows]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(self.x))

    return EpochBatches()


def epoch_scores(data: TrainingData, predict: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
    """Per-candidate "loss" (on up to TRAIN_SCORE_ROWS training rows) and "val_*" scores.

    ``predict(x)`` returns (n, K, out) outputs as the saved models give them.
    """
    outputs = _predict_all(predict, data.scoring_rows)
    n_val = len(data.x_val)
    val = score_population(data.task, data.y_val, outputs[:n_val])
    train = score_population(data.task, data.y_train[:len(outputs) - n_val], outputs[n_val:])
    return {"loss": train["loss"], **{f"val_{name}": values for name, values in val.items()}}


def _predict_all(predict, x: np.ndarray) -> np.ndarray:
    """Outputs for every row of ``x``, in calls of one shape (the last one padded), so the
    prediction function is traced once."""
    if len(x) <= SCORE_BATCH:
        return np.asarray(predict(x))
    parts = []
    for start in range(0, len(x), SCORE_BATCH):
        part = x[start:start + SCORE_BATCH]
        short = SCORE_BATCH - len(part)
        if short:
            part = np.concatenate([part, np.zeros((short, x.shape[1]), x.dtype)])
        parts.append(np.asarray(predict(part))[:SCORE_BATCH - short])
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- records


def finished_record(candidate: Candidate, metric: str, started: float, tracker: EpochTracker,
                    weights: dict | None, execution: str, *, duration_s: float | None = None,
                    chunk: dict | None = None) -> TrialRecord:
    if tracker.best_value is None:
        reason = tracker.failure or ("training ended before the first epoch" if tracker.epochs_run == 0
                                     else f"no {metric!r} was ever reported")
        return failed_record(candidate, metric, started, tracker, reason, execution=execution,
                             duration_s=duration_s, chunk=chunk)
    return TrialRecord(
        trial=candidate.trial, generation=candidate.generation, status="completed",
        architecture=candidate.architecture, metric=metric, value=tracker.best_value,
        best_epoch=tracker.best_epoch, epochs_run=tracker.epochs_run,
        duration_s=time.monotonic() - started if duration_s is None else duration_s,
        first_epoch_s=tracker.first_epoch_s, params=_params(candidate), history=tracker.history,
        stop_reason=tracker.stop_reason, execution=execution, chunk=chunk,
        parent_trial=candidate.parent_trial, weights=weights,
        error=tracker.non_finite,  # a non-finite value after good epochs: said, not fatal
    )


def failed_record(candidate: Candidate, metric: str, started: float, tracker: EpochTracker, error: str,
                  *, execution: str = "sequential", duration_s: float | None = None,
                  chunk: dict | None = None) -> TrialRecord:
    return TrialRecord(
        trial=candidate.trial, generation=candidate.generation, status="failed",
        architecture=candidate.architecture, metric=metric, value=None, best_epoch=None,
        epochs_run=tracker.epochs_run,
        duration_s=time.monotonic() - started if duration_s is None else duration_s,
        first_epoch_s=tracker.first_epoch_s, params=_params(candidate), error=error,
        history=tracker.history, stop_reason=tracker.stop_reason, execution=execution, chunk=chunk,
        parent_trial=candidate.parent_trial,
    )


def _params(candidate: Candidate) -> int | None:
    try:
        arch = candidate.architecture
        return count_params(arch, int(arch["levels"][-1]["units"][0]["neurons"]))
    except Exception:  # a broken architecture has no parameter count; its error says why
        return None


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


