"""Training fused chunks: how candidates are grouped, and one chunk's fit from start to records.

Chunks hold candidates with the same epoch budget whose architectures the fused
layout expresses; they are filled in trial order up to ``max_fused_candidates`` and
``max_fused_params`` (the chunk's *padded* parameters, which bound its memory and
arithmetic). A candidate that fits nowhere with others is trained on its own.
"""

from __future__ import annotations

import time

import numpy as np

from ..settings import Direction, ExecutionSettings, TrainSettings
from .build import initial_weights
from .device import compute_precision
from .fused import make_fused_model, to_probabilities
from .fused_plan import candidate_slices, from_fused, fusable, make_plan, to_fused
from .records import Candidate, TrialRecord
from .tracking import EpochTracker
from .train import StopCheck, training_batches, TrainingData, describe, epoch_scores, failed_record, finished_record


# Bytes a padded parameter costs while its chunk trains: the weight, its gradient, two
# AdamW slots, a best-epoch snapshot, and slack for activations, all float32.
BYTES_PER_PADDED_PARAM = 32


def plan_chunks(candidates: list[Candidate], data: TrainingData, training: TrainSettings,
                execution: ExecutionSettings) -> list[list[Candidate]]:
    """Consecutive groups of candidates to fuse (a group of one trains sequentially).

    On a GPU a chunk also fits in half of the free accelerator memory.
    """
    from .device import free_accelerator_bytes

    free = free_accelerator_bytes()
    max_params = execution.max_fused_params
    if free is not None:
        max_params = min(max_params, free // 2 // BYTES_PER_PADDED_PARAM)
    chunks: list[list[Candidate]] = []
    open_chunks: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        if not fusable(candidate.architecture):
            chunks.append([candidate])
            continue
        epochs = candidate.epochs or training.epochs
        current = open_chunks.get(epochs)
        if current is not None:
            trial = current + [candidate]
            fits = (len(trial) <= execution.max_fused_candidates
                    and _padded_params(trial, data) <= max_params)
            if fits:
                current.append(candidate)
                continue
        current = [candidate]
        open_chunks[epochs] = current
        chunks.append(current)
    return chunks


def _padded_params(chunk: list[Candidate], data: TrainingData) -> int:
    try:
        return make_plan([c.architecture for c in chunk], data.output_units).padded_params()
    except Exception:  # a broken architecture: let the trainer report it on its own
        return 1 << 62


def train_chunk(
    chunk: list[Candidate],
    data: TrainingData,
    training: TrainSettings,
    metric: str,
    direction: Direction,
    *,
    execution: ExecutionSettings,
    data_seed: int,
    stop: StopCheck,
    chunk_index: int = 0,
) -> list[TrialRecord]:
    """Train ``chunk`` as one fused model; one record per candidate (best-epoch weights attached)."""
    started = time.monotonic()
    trackers = [EpochTracker(metric, direction, training.patience, started) for _ in chunk]
    try:
        with compute_precision(training.mixed_precision):
            monitor, plan = _fit_chunk(chunk, data, training, trackers, execution, data_seed, stop)
    except Exception as exc:  # the whole chunk failed (e.g. out of memory): say so for each trial
        wall = time.monotonic() - started
        info = {"index": chunk_index, "size": len(chunk), "wall_s": wall}
        return [failed_record(c, metric, started, t, describe(exc), execution="fused",
                              duration_s=wall / len(chunk), chunk=info) for c, t in zip(chunk, trackers)]
    wall = time.monotonic() - started
    info = {"index": chunk_index, "size": len(chunk), "wall_s": wall, "padded_params": plan.padded_params()}
    total_epochs = sum(t.epochs_run for t in trackers) or 1
    records = []
    for index, (candidate, tracker) in enumerate(zip(chunk, trackers)):
        tracker.stop(monitor.outside_stop or "epochs")
        best = monitor.best[index]
        weights = None if best is None else from_fused(plan, best, index, sliced=True)
        records.append(finished_record(candidate, metric, started, tracker, weights, "fused",
                                       duration_s=wall * tracker.epochs_run / total_epochs, chunk=info))
    return records


def _fit_chunk(chunk: list[Candidate], data: TrainingData, training: TrainSettings,
               trackers: list[EpochTracker], execution: ExecutionSettings, data_seed: int, stop: StopCheck):
    import keras

    keras.backend.clear_session()
    plan = make_plan([c.architecture for c in chunk], data.output_units)
    starting = [c.initial_weights or initial_weights(c.architecture, data.output_units, c.seed) for c in chunk]
    model = make_fused_model(
        plan, data.task, feature_mean=data.feature_mean, feature_var=data.feature_var,
        target_mean=data.target_mean, target_std=data.target_std, training=training, seed=chunk[0].seed,
        jit_compile=execution.jit_compile, steps_per_execution=execution.steps_per_execution,
    )
    model.set_arrays(to_fused(plan, starting))
    monitor = _ChunkMonitor(model, plan, trackers, data, stop)
    # shuffle=False: training_batches orders the rows itself, seeded like the sequential trainer's.
    model.fit(training_batches(data, training.batch_size, data_seed), epochs=chunk[0].epochs or training.epochs,
              shuffle=False, verbose=0, callbacks=[_keras_callback(monitor)])
    return monitor, plan


class _ChunkMonitor:
    """After each epoch: score every candidate, snapshot the improved ones, freeze the stopped ones."""

    def __init__(self, model, plan, trackers: list[EpochTracker], data: TrainingData, stop: StopCheck):
        self.model, self.plan, self.trackers, self.data, self.stop = model, plan, trackers, data, stop
        self.best: list[dict | None] = [None] * len(trackers)
        self.active = np.ones(len(trackers), dtype=np.float32)
        self.outside_stop: str | None = None

    def batch_end(self) -> bool:
        reason = self.stop.reason()
        if reason is not None:
            self.outside_stop = reason
            return True
        return False

    def epoch_end(self, epoch: int) -> bool:
        task = self.data.task
        scores = epoch_scores(self.data, lambda x: to_probabilities(task, self.model.predict_on_batch(x)))
        improved = []
        for index, tracker in enumerate(self.trackers):
            if not self.active[index]:
                continue
            logs = {key: float(values[index]) for key, values in scores.items()}
            if tracker.epoch_end(epoch, logs):
                improved.append(index)
        if improved:
            arrays = self.model.get_arrays()
            for index in improved:
                self.best[index] = candidate_slices(self.plan, arrays, index)
        stopped = [i for i, t in enumerate(self.trackers) if t.stopped and self.active[i]]
        if stopped:
            self.active[stopped] = 0.0
            self.model.set_active(self.active)
        return not self.active.any()


def _keras_callback(monitor: _ChunkMonitor):
    import keras

    class Monitor(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if monitor.batch_end():
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            if monitor.epoch_end(epoch):
                self.model.stop_training = True

    return Monitor()
