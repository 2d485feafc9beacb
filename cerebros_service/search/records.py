"""Immutable records of what a search did: one per trial, one for the whole run.

Records hold plain data only (architectures are dicts, floats are finite or None)
so they pickle, cross process boundaries, and serialize without surprises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ..settings import Direction, Standing, outranks, trial_standing

TrialStatus = Literal["completed", "failed"]


@dataclass(frozen=True)
class Candidate:
    """One architecture to train, as the run loop hands it to a trainer."""

    trial: int  # 0-based, unique within a run
    generation: int
    architecture: dict
    seed: int  # seeds this trial's initial weights (and its dropout)
    epochs: int | None = None  # this trial's epoch budget; None: the training settings'
    # Weights to start from instead of a fresh draw (layer name -> arrays, build.py's
    # layout): how a successive-halving rung continues a trial of the rung before.
    initial_weights: dict | None = field(default=None, compare=False, repr=False)
    parent_trial: int | None = None  # the trial whose weights ``initial_weights`` are


@dataclass(frozen=True)
class TrialRecord:
    trial: int
    generation: int
    status: TrialStatus
    architecture: dict
    metric: str
    value: float | None  # ranking metric at the best epoch; None when failed
    best_epoch: int | None  # 1-based epoch whose weights were kept
    epochs_run: int
    duration_s: float
    first_epoch_s: float | None  # build + compile + first epoch (tracing) wall time
    params: int | None
    error: str | None = None
    history: dict = field(default_factory=dict)  # history key -> per-epoch floats (None for non-finite)
    model_path: str | None = None  # saved weights of this trial, when the trainer kept them
    # Why training ended: "epochs", "patience", "non_finite" (after good epochs, the
    # best stands), "max_time_seconds" or "cancelled"; None for a trial that never trained.
    stop_reason: str | None = None
    execution: str = "sequential"  # "sequential" | "fused"
    # Fused trials: the chunk trained together (its index in the run, size, wall time).
    # duration_s is then this trial's share of the chunk's wall time, by epochs run.
    chunk: dict | None = None
    parent_trial: int | None = None
    # The best epoch's weights (build.py layout), when the caller asked to keep them;
    # never written to trials.jsonl.
    weights: dict | None = field(default=None, compare=False, repr=False)

    def at_best_epoch(self, key: str) -> float | None:
        """``history[key]`` at the best epoch (None when not recorded or not finite)."""
        values = self.history.get(key) or []
        if self.best_epoch is None or not 0 < self.best_epoch <= len(values):
            return None
        return values[self.best_epoch - 1]

    def standing(self) -> Standing:
        """This trial in the one order of results (settings.trial_standing)."""
        return trial_standing(self.value, self.trial)

    def as_dict(self) -> dict:
        record = asdict(replace(self, weights=None))
        del record["weights"]
        return record


def delivered_model(ensemble: dict | None) -> str:
    """Which model best_model.keras holds: "ensemble" when an ensemble with members was
    delivered (run.py's deliver_ensemble), else "single_best"."""
    return "ensemble" if (ensemble or {}).get("members") else "single_best"


def takes_lead(record: TrialRecord, leader: TrialRecord | None, direction: Direction) -> bool:
    """Whether ``record`` completed and outranks ``leader`` (any completed one does when there is none)."""
    return record.status == "completed" and outranks(
        record.standing(), None if leader is None else leader.standing(), direction)


@dataclass(frozen=True)
class SearchOutcome:
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    metric: str
    direction: Literal["max", "min"]
    population_history: tuple[dict, ...]
    stopped_because: str  # "max_trials" | "max_time_seconds" | ...
    duration_s: float
    artifacts: dict  # artifact name -> absolute path (empty when nothing was written)
    device: str
    # The best model on the held-out test rows (None without any) and the whole evaluation
    # (run.py's evaluate_winner: splits, validation and test reports, refit).
    test_metric: float | None = None
    evaluation: dict = field(default_factory=dict)
    # The delivered ensemble (run.py's deliver_ensemble: members and weights, validation and
    # test reports); None when it is off. ``test_metric`` is then the single best's.
    ensemble: dict | None = None
    # The pooled trials' validation and test outputs (search/ensemble.PoolPredictions), for
    # comparing selection methods on one search; never serialized.
    ensemble_pool: object | None = field(default=None, compare=False, repr=False)

    @property
    def delivered_model(self) -> str:
        return delivered_model(self.ensemble)

    @property
    def completed_trials(self) -> int:
        return sum(1 for t in self.trials if t.status == "completed")

    @property
    def failed_trials(self) -> int:
        return sum(1 for t in self.trials if t.status == "failed")
