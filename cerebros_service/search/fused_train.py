"""Training fused chunks: how candidates are grouped, and one chunk's fit from start to records.

Chunks hold candidates with the same epoch budget whose architectures the fused
layout expresses (learning rates may differ: see ``rate_scales``); they are filled in trial order up to ``max_fused_candidates`` and
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
from .fused_plan import PaddedSize, from_fused, fusable, make_plan, packs, to_fused, trainable, unit_shapes
from .optimizer import trial_training
from .records import Candidate, TrialRecord
from .tracking import EpochTracker
from .train import (StopCheck, TrainingData, describe, epoch_scores, failed_record, finished_record, fit_epochs,
                    training_batches)


# Bytes a padded parameter costs while its chunk trains: the weight, its gradient, two
# AdamW slots, a best-epoch snapshot, and slack for activations, all float32.
BYTES_PER_PADDED_PARAM = 32


def plan_chunks(candidates: list[Candidate], data: TrainingData, training: TrainSettings,
                execution: ExecutionSettings) -> list[list[Candidate]]:
    """Consecutive groups of candidates to fuse (a group of one trains sequentially).

    On a GPU a chunk also fits in half of the free accelerator memory.
    """
    from ..operator_config import limit_or_default
    from .device import free_accelerator_bytes

    free = free_accelerator_bytes()
    # the operator's cap binds callers that skip the boundary too
    max_params = min(execution.max_fused_params, limit_or_default("max_fused_params"))
    if free is not None:
        max_params = min(max_params, free // 2 // BYTES_PER_PADDED_PARAM)
    chunks: list[list[Candidate]] = []
    open_chunks: dict[int, tuple[list[Candidate], PaddedSize]] = {}  # epoch budget -> chunk filling up
    for candidate in candidates:
        shapes = _shapes(candidate, data)
        if shapes is None or not fusable(candidate.architecture):
            chunks.append([candidate])
            continue
        epochs = candidate.epochs or training.epochs
        current = open_chunks.get(epochs)
        if current is not None:
            members, size = current
            if len(members) < execution.max_fused_candidates and size.total(shapes) <= max_params:
                members.append(candidate)
                size.add(shapes)
                continue
        size = PaddedSize()
        size.add(shapes)
        open_chunks[epochs] = ([candidate], size)
        chunks.append(open_chunks[epochs][0])
    return chunks


def _shapes(candidate: Candidate, data: TrainingData) -> dict | None:
    try:
        return unit_shapes(candidate.architecture, data.output_units)
    except Exception:  # a broken architecture: the trainer reports it on its own
        return None


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
    """Train ``chunk`` as one fused model; one record per candidate (best-epoch weights attached).

    When most candidates have stopped and enough epochs remain, the chunk is rebuilt
    with only the ones still training (*compacted*), their weights and optimizer
    state carried over, if the epochs saved pay for the new trace (measured on this
    chunk's own first and later epochs).
    """
    started = time.monotonic()
    trackers = [EpochTracker(metric, direction, training.patience, started) for _ in chunk]
    progress = _ChunkProgress(len(chunk))
    phases = 0
    try:
        with compute_precision(training.mixed_precision):
            members, carried, first_epoch = list(range(len(chunk))), None, 0
            while members:
                phases += 1
                outcome = _fit_phase([chunk[i] for i in members], members, data, training, trackers, progress,
                                     execution, data_seed, stop, first_epoch, carried)
                if outcome is None:
                    break
                members, carried, first_epoch = outcome
    except Exception as exc:  # the whole chunk failed (e.g. out of memory): say so for each trial
        wall = time.monotonic() - started
        info = {"index": chunk_index, "size": len(chunk), "wall_s": wall}
        return [failed_record(c, metric, started, t, describe(exc), execution="fused",
                              duration_s=wall / len(chunk), chunk=info) for c, t in zip(chunk, trackers)]
    wall = time.monotonic() - started
    info = {"index": chunk_index, "size": len(chunk), "wall_s": wall, "padded_params": progress.padded_params,
            "phases": phases}
    total_epochs = sum(t.epochs_run for t in trackers) or 1
    records = []
    for index, (candidate, tracker) in enumerate(zip(chunk, trackers)):
        tracker.stop(progress.outside_stop or "epochs")
        records.append(finished_record(candidate, metric, started, tracker, progress.best[index], "fused",
                                       duration_s=wall * tracker.epochs_run / total_epochs, chunk=info))
    return records


class _ChunkProgress:
    """What outlives one phase of a chunk: best-epoch weights per candidate, epoch timings, stops."""

    def __init__(self, size: int):
        self.best: list[dict | None] = [None] * size
        self.outside_stop: str | None = None
        self.padded_params = 0


def _fit_phase(chunk, members, data, training, trackers, progress, execution, data_seed, stop, first_epoch,
               carried):
    """One fit of the candidates ``members`` (indices into the chunk) from ``first_epoch`` on.

    Returns None when the chunk is done, or (members still training, their carried
    state, the next epoch) when it should continue compacted.
    """
    import keras

    keras.backend.clear_session()
    plan = make_plan([c.architecture for c in chunk], data.output_units)
    progress.padded_params = max(progress.padded_params, plan.padded_params())
    if carried is None:
        starting = [c.initial_weights or initial_weights(c.architecture, data.output_units, c.seed) for c in chunk]
    else:
        starting = carried["weights"]
    model = make_fused_model(
        plan, data.task, feature_mean=data.feature_mean, feature_var=data.feature_var,
        target_mean=data.target_mean, target_std=data.target_std, training=training, seed=chunk[0].seed,
        jit_compile=execution.jit_compile, steps_per_execution=execution.steps_per_execution,
        rate_scales=rate_scales(plan, chunk, starting, training),
    )
    if carried is None:
        model.set_arrays(to_fused(plan, starting))
    else:
        _restore(model, plan, carried)
    epochs = chunk[0].epochs or training.epochs
    monitor = _ChunkMonitor(model, plan, [trackers[i] for i in members], members, data, stop, progress,
                            epochs, training.patience, compact=execution.compact)
    fit_epochs(model, training_batches(data, training.batch_size, data_seed, first_epoch=first_epoch), epochs,
               monitor, first_epoch=first_epoch, steps_per_execution=execution.steps_per_execution)
    if not monitor.compact_now:
        return None
    still = [position for position, on in enumerate(monitor.active) if on]
    return [members[p] for p in still], _carry(model, plan, still), monitor.last_epoch + 1


def rate_scales(plan, chunk: list[Candidate], weights: list[dict], training: TrainSettings) -> list[np.ndarray] | None:
    """Per pack, each parameter's learning rate over ``training``'s: how one optimizer trains
    candidates that drew different rates (fused.py stores such a parameter divided by its
    scale, so Adam's step, which does not depend on the gradient's size, moves the real
    weight by scale x rate). None when every candidate trains at ``training``'s rate."""
    rates = [trial_training(training, c.architecture).learning_rate / training.learning_rate for c in chunk]
    if all(rate == 1.0 for rate in rates):
        return None
    filled = [{layer: [np.full(np.shape(a), rate, np.float32) for a in arrays] for layer, arrays in w.items()}
              for w, rate in zip(weights, rates)]
    arrays = to_fused(plan, filled, identity=False)
    # padding belongs to no candidate: 1 keeps it as it is (it is divided by its scale)
    return [np.where(flat > 0, flat, 1.0).astype(np.float32) for flat in (p.pack(arrays) for p in packs(plan))]


def _carry(model, plan, positions: list[int]) -> dict:
    """Weights and optimizer slots of the candidates at ``positions``, in standalone layout."""
    arrays = model.get_arrays()
    slots = _optimizer_slots(model)
    carried = {"weights": [from_fused(plan, arrays, p) for p in positions], "iterations": None, "slots": {}}
    if slots is not None:
        blank = {n: np.zeros(a.shape, np.float32) for n, a in arrays.items() if not trainable(n)}
        for kind, variables in slots.items():
            merged = {**blank, **model.get_packed(variables)}
            carried["slots"][kind] = [from_fused(plan, merged, p) for p in positions]
        carried["iterations"] = keras_numpy(model.optimizer.iterations)
    return carried


def _restore(model, plan, carried: dict) -> None:
    model.set_arrays(to_fused(plan, carried["weights"]))
    if carried["iterations"] is None:
        return  # the optimizer starts afresh
    slots = _optimizer_slots(model)  # the optimizer is built with the model
    if slots is None:
        return
    for kind, per_candidate in carried["slots"].items():
        model.set_packed(slots[kind], to_fused(plan, per_candidate, identity=False))
    model.optimizer.iterations.assign(carried["iterations"])


def _optimizer_slots(model) -> dict[str, list] | None:
    """{"momentum": [variable per pack], "velocity": [...]} of the (built) AdamW, or None
    when its variables are not named as this Keras names them (then the state is not carried)."""
    optimizer = model.optimizer
    if not optimizer.built:
        return None
    by_name = {v.name: v for v in optimizer.variables}
    slots: dict[str, list] = {"momentum": [], "velocity": []}
    for variable in model.packed:
        for kind in slots:
            slot = by_name.get(f"{variable.path.replace('/', '_')}_{kind}")
            if slot is None:
                return None
            slots[kind].append(slot)
    return slots


def keras_numpy(value) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


class _ChunkMonitor:
    """After each epoch: score every candidate, snapshot the improved ones, freeze the stopped
    ones, and decide whether to compact the chunk."""

    def __init__(self, model, plan, trackers: list[EpochTracker], members: list[int], data: TrainingData,
                 stop: StopCheck, progress: _ChunkProgress, epochs: int, patience: int, compact: bool):
        self.model, self.plan, self.trackers, self.members = model, plan, trackers, members
        self.data, self.stop, self.progress = data, stop, progress
        self.epochs, self.patience, self.compact = epochs, patience, compact
        self.active = np.ones(len(trackers), dtype=np.float32)
        self.epoch_times: list[float] = []
        self.started = time.monotonic()
        self.compact_now = False
        self.last_epoch = -1

    def batch_end(self) -> bool:
        reason = self.stop.reason()
        if reason is not None:
            self.progress.outside_stop = reason
            return True
        return False

    def epoch_end(self, epoch: int) -> bool:
        self.last_epoch = epoch
        task = self.data.task
        scores = epoch_scores(self.data, lambda x: to_probabilities(task, self.model.predict_on_batch(x)))
        improved = []
        for position, tracker in enumerate(self.trackers):
            if not self.active[position]:
                continue
            logs = {key: float(values[position]) for key, values in scores.items()}
            if tracker.epoch_end(epoch, logs):
                improved.append(position)
        if improved:
            arrays = self.model.get_arrays()
            for position in improved:
                self.progress.best[self.members[position]] = from_fused(self.plan, arrays, position)
        stopped = [i for i, t in enumerate(self.trackers) if t.stopped and self.active[i]]
        if stopped:
            self.active[stopped] = 0.0
            self.model.set_active(self.active)
        now = time.monotonic()
        self.epoch_times.append(now - self.started)
        self.started = now
        if not self.active.any():
            return True
        self.compact_now = self.compact and self._compaction_pays(epoch)
        return self.compact_now

    def _compaction_pays(self, epoch: int) -> bool:
        """Compact when at most half the candidates still train and the epochs they will
        probably still run, at the cost saved per epoch, outweigh one more trace."""
        share = float(self.active.mean())
        if share > 0.5 or len(self.epoch_times) < 2:
            return False
        later = float(np.median(self.epoch_times[1:]))
        trace = max(self.epoch_times[0] - later, 0.0)
        remaining = min(self.epochs - (epoch + 1), 2 * self.patience)
        return remaining * later * (1.0 - share) > 1.5 * trace + later
