"""The ask/tell contract every search strategy follows.

The run loop asks for candidates, trains them, and tells the strategy what
happened. A strategy decides; it never trains, and it draws randomness only from
the Generator it was given, so the same seed asks for the same candidates.

``ask`` returns architectures (plain dicts) or ``Proposal``s, which say more: an
epoch budget of their own and a trial to continue from (its best epoch's weights,
which the loop keeps for the generation just told). ``generation_info`` adds a
strategy's own facts to the generation's entry in ``population_history``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..search.records import TrialRecord
from ..search.space import ArchitectureSampler
from ..settings import SearchSettings, standing_key


@dataclass(frozen=True)
class Proposal:
    """One candidate as a strategy wants it trained."""

    architecture: dict
    epochs: int | None = None  # None: the training settings' epochs
    # Continue from this trial's best-epoch weights (a trial of the generation last told).
    parent_trial: int | None = None


def as_proposal(item: dict | Proposal) -> Proposal:
    return item if isinstance(item, Proposal) else Proposal(item)


class Strategy(ABC):
    # True when the strategy's Proposals continue earlier trials: the loop then keeps the
    # best-epoch weights of each generation it trains.
    continues_trials = False

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
        self.sampler = ArchitectureSampler(self.space, self.input_dim, self.output_units, rng)
        self.records: list[TrialRecord] = []  # everything told so far, in order

    @abstractmethod
    def ask(self, n: int) -> list[dict | Proposal]:
        """Return between 1 and ``n`` candidates (``n`` > 0), each an architecture that passes
        ``check_architecture`` or a Proposal holding one; none for ``n`` = 0."""

    def tell(self, records: list[TrialRecord]) -> None:
        """Learn the outcome of trials that were asked for (failed ones included)."""
        self.records.extend(records)

    def generation_info(self) -> dict:
        """Extra facts about the generation last asked for (population_history); none by default."""
        return {}

    def fresh(self) -> dict:
        """A new architecture from the space (Cerebros' moieties: see ArchitectureSampler)."""
        return self.sampler.draw()

    def ranked(self, records: list[TrialRecord]) -> list[TrialRecord]:
        """Completed trials with a finite value, best first, in the one order of results
        (settings.Standing: the run's best is the first). Failed trials never rank."""
        direction = self.direction
        usable = [r for r in records
                  if r.status == "completed" and r.value is not None and math.isfinite(r.value)]
        return sorted(usable, key=lambda r: standing_key(r.standing(), direction))
