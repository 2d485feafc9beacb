"""Search strategies behind one ask/tell interface (see _base.py). One file per strategy."""

from __future__ import annotations

import numpy as np

from ..settings import SearchSettings
from ._base import Proposal, Strategy, as_proposal
from .evolution import EvolutionStrategy
from .halving import HalvingStrategy
from .random import RandomStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    "random": RandomStrategy,
    "evolution": EvolutionStrategy,
    "halving": HalvingStrategy,
}


def make_strategy(name: str, settings: SearchSettings, input_dim: int, output_units: int,
                  rng: np.random.Generator, direction: str = "max") -> Strategy:
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return cls(settings, input_dim, output_units, rng, direction=direction)


__all__ = ["STRATEGIES", "Proposal", "Strategy", "as_proposal", "make_strategy"]
