"""The delivered model: a weighted average of the search's best trials.

Picking the single best of a hundred trials on one small validation split picks the
trial that was luckiest on that split, so its validation score overstates its test
score (a winner's curse). Averaging the best trials' predictions (probabilities for a
classifier, values for a regressor) cancels much of that luck, and it costs no
training: the trials were trained anyway and their best-epoch weights were kept.

Three parts, used in this order by the run loop (run.py):

- ``MemberPool`` keeps the best-epoch weights of the ``capacity`` best trials while the
  search runs, and drops the rest. Best by validation value, then by validation LOSS,
  then the earlier trial: dozens of trials tie on a small split's accuracy, and among
  them the lower loss made the better members (docs/benchmarks.md, "The delivered
  ensemble"). The run's single best keeps the one order of results (no loss).
- ``select_members`` picks the members and their weights from the pool's validation
  predictions, in numpy: ``"average"`` (the best ``size`` by validation, equal weights)
  or ``"greedy"`` (Caruana's selection with replacement on the validation LOSS,
  which does not tie the way accuracy does, warm-started from the best few). A member
  whose predictions are not finite is never picked.
- ``ensemble_model`` nests the members in one standalone Keras model: one input, each
  member's model, ``Rescaling(weight)`` on its output and an ``Add``. Built-in layers
  only, so the saved ``best_model.keras`` loads with no custom objects and exports to ONNX.

Keras is imported inside the functions that build models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..settings import Direction, EnsembleSettings, Standing, Task, standing_key
from .records import TrialRecord
from .scoring import score_population

METHODS = ("average", "greedy")
GREEDY_WARM_START = 3  # greedy begins from this many of the best trials (fewer when size is smaller)


@dataclass(frozen=True)
class Member:
    trial: int
    weight: float

    def as_dict(self) -> dict:
        return {"trial": self.trial, "weight": self.weight}


def member_standing(record: TrialRecord) -> Standing:
    """How a trial stands as a candidate member: value, then validation loss, then the earlier trial."""
    return Standing(record.value, record.at_best_epoch("val_loss"), record.trial)


class MemberPool:
    """The best ``capacity`` completed trials that came back with weights, best first."""

    def __init__(self, capacity: int, direction: Direction):
        self.capacity, self.direction = int(capacity), direction
        self._records: list[TrialRecord] = []

    def offer(self, record: TrialRecord) -> bool:
        """Whether ``record`` joined the pool (it may push the last one out)."""
        if (self.capacity <= 0 or record.status != "completed" or record.weights is None
                or record.value is None or not math.isfinite(record.value)):
            return False
        self._records.append(record)
        self._records.sort(key=lambda r: standing_key(member_standing(r), self.direction))
        del self._records[self.capacity:]  # the weights of the others are released here
        return any(r is record for r in self._records)

    def trials(self) -> set[int]:
        return {r.trial for r in self._records}

    @property
    def records(self) -> list[TrialRecord]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)


def pool_capacity(settings: EnsembleSettings) -> int:
    """How many trials' weights the search keeps for the ensemble (0 when it is off)."""
    return settings.size if settings.enabled else 0


def select_members(task: Task, y_val: np.ndarray, predictions: np.ndarray, *, method: str,
                   size: int) -> list[tuple[int, float]]:
    """``[(pool index, weight)]`` with weights summing to 1, best-ranked member first.

    ``predictions`` is (validation rows, pool, outputs), the pool in ranking order
    (best first). A candidate with any non-finite prediction is never picked; an empty
    list means no candidate was usable.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"ensemble method must be one of {METHODS}, got {method!r}")
    usable = [k for k in range(predictions.shape[1]) if np.isfinite(predictions[:, k, :]).all()]
    if not usable or size < 1:
        return []
    if method == "average":
        chosen = usable[:size]
        return [(k, 1.0 / len(chosen)) for k in chosen]
    return _greedy(task, y_val, predictions, usable, size)


def _greedy(task: Task, y_val: np.ndarray, predictions: np.ndarray, usable: list[int],
            size: int) -> list[tuple[int, float]]:
    """Caruana et al. (2004): start from the best few, then ``size`` times add (with
    replacement) the candidate whose addition gives the lowest validation loss of the
    average. Ties go to the better-ranked candidate, so the result never depends on luck."""
    counts = dict.fromkeys(usable, 0)
    for k in usable[:min(GREEDY_WARM_START, size)]:
        counts[k] += 1
    total = sum(counts.values())
    current = sum(predictions[:, k, :] * n for k, n in counts.items()) / total
    pool = predictions[:, usable, :]
    for _ in range(size - total):
        trial_means = (current[:, None, :] * total + pool) / (total + 1)  # (n, usable, out)
        losses = score_population(task, y_val, trial_means)["loss"]
        losses = np.where(np.isfinite(losses), losses, np.inf)
        best = int(np.argmin(losses))  # argmin: the first (best-ranked) of equal losses
        counts[usable[best]] += 1
        total += 1
        current = trial_means[:, best, :]
    return [(k, n / total) for k, n in counts.items() if n > 0]


def combine(predictions: np.ndarray, chosen: list[tuple[int, float]]) -> np.ndarray:
    """The ensemble's outputs (rows, outputs) from the pool's (rows, pool, outputs)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    return sum(predictions[:, k, :] * w for k, w in chosen)


# --------------------------------------------------------------------------- Keras


def member_model(arch: dict, weights: dict, data, trial: int):
    """One trial's standalone model, renamed so that several nest in one model."""
    import keras

    from .build import build_model

    model = build_model(arch, data.task, data.n_classes, feature_mean=data.feature_mean,
                        feature_var=data.feature_var, target_mean=data.target_mean,
                        target_std=data.target_std, weights=weights, compile=False)
    return keras.Model(model.inputs[0], model.outputs[0], name=f"trial_{trial}")


def member_outputs(models: list, x: np.ndarray) -> np.ndarray:
    """(rows, members, outputs): each member's outputs on ``x``, called eagerly (one
    small forward pass each; tracing a predict function per member would cost more)."""
    from keras import ops

    x = np.asarray(x, dtype=np.float32)
    return np.stack([np.asarray(ops.convert_to_numpy(model(x, training=False)), dtype=np.float64)
                     for model in models], axis=1)


def ensemble_model(models: list, weights: list[float], input_dim: int):
    """One standalone model: ``features`` → every member → weighted sum of their outputs."""
    import keras

    inputs = keras.Input(shape=(int(input_dim),), name="features")
    scaled = [keras.layers.Rescaling(float(w), name=f"weight_{model.name}")(model(inputs))
              for model, w in zip(models, weights)]
    outputs = scaled[0] if len(scaled) == 1 else keras.layers.Add(name="average")(scaled)
    return keras.Model(inputs, outputs, name="cerebros_ensemble")


# --------------------------------------------------------------------------- after the search


@dataclass(frozen=True, eq=False)
class PoolPredictions:
    """The pool's outputs on the validation rows and the held-out test rows (None without
    any), pool in ranking order: what each selection method is judged by (the
    strategy benchmark scores every method on the same search from these)."""

    task: Task
    trials: tuple[int, ...]
    validation: np.ndarray  # (validation rows, pool, outputs)
    test: np.ndarray | None  # (test rows, pool, outputs)
    y_validation: np.ndarray
    y_test: np.ndarray | None


@dataclass(frozen=True, eq=False)
class Ensemble:
    members: tuple[Member, ...]
    model: object  # the Keras model, ready to save
    validation_outputs: np.ndarray
    test_outputs: np.ndarray | None
    pool: PoolPredictions


def build_ensemble(records: list[TrialRecord], data, held_out_x: np.ndarray | None,
                   settings: EnsembleSettings, held_out_y: np.ndarray | None = None) -> Ensemble | None:
    """Select among ``records`` (the pool, best first, each with its weights) on the
    validation rows and nest the chosen in one model; None when no member is usable."""
    import keras

    keras.backend.clear_session()
    models = [member_model(r.architecture, r.weights, data, r.trial) for r in records]
    validation = member_outputs(models, data.x_val)
    test = None if held_out_x is None else member_outputs(models, held_out_x)
    chosen = select_members(data.task, data.y_val, validation, method=settings.method, size=settings.size)
    if not chosen:
        return None
    pool = PoolPredictions(data.task, tuple(r.trial for r in records), validation, test, data.y_val, held_out_y)
    model = ensemble_model([models[k] for k, _ in chosen], [w for _, w in chosen], data.input_dim)
    return Ensemble(members=tuple(Member(records[k].trial, float(w)) for k, w in chosen), model=model,
                    validation_outputs=combine(validation, chosen),
                    test_outputs=None if test is None else combine(test, chosen), pool=pool)
