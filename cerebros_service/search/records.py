"""Immutable records of what a search did: one per trial, one for the whole run.

Records hold plain data only (architectures are dicts, floats are finite or None)
so they pickle, cross process boundaries, and serialize without surprises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

TrialStatus = Literal["completed", "failed"]


@dataclass(frozen=True)
class Candidate:
    """One architecture to train: what a strategy asks for."""

    trial: int  # 0-based, unique within a run
    generation: int
    architecture: dict
    seed: int  # seeds weight init and shuffling for this trial only


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

    def as_dict(self) -> dict:
        return asdict(self)


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

    @property
    def completed_trials(self) -> int:
        return sum(1 for t in self.trials if t.status == "completed")

    @property
    def failed_trials(self) -> int:
        return sum(1 for t in self.trials if t.status == "failed")
