"""The ask/tell contract every search strategy follows.

The run loop asks for architectures, trains them, and tells the strategy what
happened. A strategy decides; it never trains, and it draws randomness only from
the Generator it was given, so the same seed asks for the same architectures.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from ..search.records import TrialRecord
from ..settings import SearchSettings, ranking_key


class Strategy(ABC):
    def __init__(self, settings: SearchSettings, input_dim: int, output_units: int,
                 rng: np.random.Generator, *, direction: str = "max"):
        if direction not in ("max", "min"):
            raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
        self.settings = settings
        self.direction = direction  # which way the ranking metric is better
        self.space = settings.space
        self.input_dim = int(input_dim)
        self.output_units = int(output_units)
        self.rng = rng
        self.records: list[TrialRecord] = []  # everything told so far, in order

    @abstractmethod
    def ask(self, n: int) -> list[dict]:
        """Return ``n`` architectures (plain dicts that pass ``check_architecture``)."""

    def tell(self, records: list[TrialRecord]) -> None:
        """Learn the outcome of trials that were asked for (failed ones included)."""
        self.records.extend(records)

    def ranked(self, records: list[TrialRecord]) -> list[TrialRecord]:
        """Completed trials with a finite value, best first (ties: earlier trial). Failed trials never rank."""
        direction = self.direction
        usable = [r for r in records
                  if r.status == "completed" and r.value is not None and math.isfinite(r.value)]
        return sorted(usable, key=lambda r: (ranking_key(r.value, direction), r.trial))
