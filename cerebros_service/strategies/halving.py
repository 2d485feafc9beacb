"""Successive halving: many candidates trained a few epochs, the best fraction trained on.

A *bracket* starts with a rung of fresh architectures trained ``rungs[0]`` epochs
(settings.rung_epochs: e.g. 3, 7, 20 for 20 epochs and reduction factor 3). After
each rung the best ``1 / reduction_factor`` of it (settings.promoted_count, at
least one) are asked for again, each as a Proposal that **continues from its
parent trial's best-epoch weights** for the epochs up to the next rung's budget:
no candidate restarts. When the last rung (the full epoch budget) is done, or no
trial of a rung completed, the next ask opens a new bracket. Rungs never mix
epoch budgets, so every rung trains as fused chunks.

Each rung's trainings are trials of their own (their records carry
``parent_trial``); ``generation_info`` puts the bracket, the rung and its
cumulative epoch budget into ``population_history``.
"""

from __future__ import annotations

from ..search.records import TrialRecord
from ..settings import promoted_count, rung_epochs
from ._base import Proposal, Strategy


class HalvingStrategy(Strategy):
    continues_trials = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rungs = rung_epochs(self.settings.training.epochs, self.settings.halving)
        self.reduction_factor = self.settings.halving.reduction_factor
        self.bracket = -1
        self.rung: int | None = None  # rung of the generation last asked for
        self._last_rung: list[TrialRecord] = []

    def tell(self, records: list[TrialRecord]) -> None:
        super().tell(records)
        self._last_rung = list(records)

    def ask(self, n: int) -> list[Proposal]:
        if n <= 0:
            return []
        promoted = self._promotions(n)
        if promoted:
            return promoted
        self.bracket += 1
        self.rung = 0
        self._last_rung = []
        return [Proposal(self.fresh(), epochs=self.rungs[0]) for _ in range(n)]

    def _promotions(self, n: int) -> list[Proposal]:
        """The best of the rung just told, continuing to the next rung (none: a new bracket)."""
        if self.rung is None or self.rung + 1 >= len(self.rungs) or not self._last_rung:
            return []
        keep = min(n, promoted_count(len(self._last_rung), self.reduction_factor))
        chosen = self.ranked(self._last_rung)[:keep]
        if not chosen:
            return []
        self.rung += 1
        more_epochs = self.rungs[self.rung] - self.rungs[self.rung - 1]
        return [Proposal(record.architecture, epochs=more_epochs, parent_trial=record.trial)
                for record in chosen]

    def generation_info(self) -> dict:
        if self.rung is None:
            return {}
        return {"bracket": self.bracket, "rung": self.rung, "rung_epochs": self.rungs[self.rung]}
