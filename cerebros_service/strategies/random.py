"""Cerebros random search: every architecture is a fresh draw from the space."""

from __future__ import annotations

from ._base import Strategy


class RandomStrategy(Strategy):
    def ask(self, n: int) -> list[dict]:
        return [self.fresh() for _ in range(n)]
