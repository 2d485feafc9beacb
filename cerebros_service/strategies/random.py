"""Cerebros random search: every architecture is a fresh draw from the space."""

from __future__ import annotations

from ..search.space import sample_architecture
from ._base import Strategy


class RandomStrategy(Strategy):
    def ask(self, n: int) -> list[dict]:
        return [sample_architecture(self.space, self.input_dim, self.output_units, self.rng)
                for _ in range(n)]
