"""Evolutionary search over Cerebros architectures.

Each generation after the first breeds children from a selection pool made of the
completed trials of the last generation plus the ``elite_size`` best trials of the
whole run. Elites are carried over *by reference* and are **not retrained**: they
compete as parents again without spending trials (a retrain would only re-measure
an architecture we already have a value for). Parents are picked by tournament
(size 3); failed trials never enter the pool.

A child is a crossover of two parents' levels (probability ``crossover_rate``) or a
copy of one parent, then mutated: every gene changes with probability
``mutation_rate`` (neurons, activation, add/remove a unit or a level, rewire a
unit; the learning rate, a neighbouring choice, when the space searches it), and
a crossover child trains at its first parent's rate. At least one change is forced when the child would repeat an
architecture already tried. ``repair_architecture`` makes every child valid.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

import numpy as np

from ..search.records import TrialRecord
from ..settings import SpaceSettings
from ..search.space import (
    Node, canonical_key, check_architecture, draw_predecessors, level_sizes,
    repair_architecture, sample_unit,
)
from ._base import Strategy

log = logging.getLogger(__name__)

TOURNAMENT_SIZE = 3
MAX_RETRIES = 8  # redraws before accepting a duplicate child


class EvolutionStrategy(Strategy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_generation: list[TrialRecord] = []
        self._tried: set[str] = set()

    def tell(self, records: list[TrialRecord]) -> None:
        super().tell(records)
        self._last_generation = list(records)

    def ask(self, n: int) -> list[dict]:
        pool = self.selection_pool()
        children = []
        for _ in range(n):
            child = self.fresh() if not pool else self._breed(pool)
            self._tried.add(canonical_key(child))
            children.append(child)
        return children

    def selection_pool(self) -> list[TrialRecord]:
        """Last generation's completed trials plus the run's elites, best first."""
        elites = self.ranked(self.records)[: self.settings.elite_size]
        merged = {r.trial: r for r in self.ranked(self._last_generation) + elites}
        return self.ranked(list(merged.values()))

    def _breed(self, pool: list[TrialRecord]) -> dict:
        child = None
        for _ in range(MAX_RETRIES):
            if len(pool) >= 2 and self.rng.random() < self.settings.crossover_rate:
                first = self._tournament(pool)
                second = self._tournament([r for r in pool if r.trial != first.trial])
                child = crossover(first.architecture, second.architecture, self.space, self.rng)
            else:
                child = copy.deepcopy(self._tournament(pool).architecture)
            child = mutate(child, self.space, self.settings.mutation_rate, self.rng,
                           force=canonical_key(child) in self._tried)
            if canonical_key(child) not in self._tried:
                break
        try:
            check_architecture(child, self.space)
        except ValueError as exc:  # a repair bug must not end a search: draw a fresh one
            log.warning("evolution produced an invalid child (%s); sampling a fresh architecture", exc)
            return self.fresh()
        return child

    def _tournament(self, pool: list[TrialRecord]) -> TrialRecord:
        # The pool is sorted best first, so the lowest index drawn wins.
        picks = self.rng.choice(len(pool), size=min(TOURNAMENT_SIZE, len(pool)), replace=False)
        return pool[int(picks.min())]


# --------------------------------------------------------------------------- operators

def mutate(arch: dict, space: SpaceSettings, rate: float, rng: np.random.Generator,
           force: bool = False) -> dict:
    """Each operator fires with probability ``rate``; with ``force`` the child must differ.

    (An operator can leave the architecture as it was, e.g. a rewire that redraws the
    same predecessors, so "differs" is checked on the result, a few times at most.)
    """
    before = canonical_key(arch)
    child = copy.deepcopy(arch)
    operators = operators_for(space)
    for op in operators:
        if rng.random() < rate:
            op(child, space, rng)
    child = repair_architecture(child, space, rng)
    for _ in range(MAX_RETRIES * len(operators)):
        if not force or canonical_key(child) != before:
            break
        operators[int(rng.integers(len(operators)))](child, space, rng)
        child = repair_architecture(child, space, rng)
    return child


def operators_for(space: SpaceSettings) -> tuple:
    """OPERATORS, and the learning-rate step when the space searches more than one rate
    (kept out otherwise, so a space without it mutates exactly as before)."""
    if space.learning_rates and len(set(space.learning_rates)) > 1:
        return OPERATORS + (_change_learning_rate,)
    return OPERATORS


def crossover(first: dict, second: dict, space: SpaceSettings, rng: np.random.Generator) -> dict:
    """One-point crossover of levels: first's levels before a cut, second's after its cut
    (cuts that keep a parent's depth are preferred).

    Connections inside each part are kept (second's shifted to their new levels);
    the ones across the cut are redrawn by the repair.
    """
    h1, h2 = len(first["levels"]) - 1, len(second["levels"]) - 1
    cuts = [(a, b) for a in range(h1 + 1) for b in range(h2 + 1)
            if space.min_levels <= a + h2 - b <= space.max_levels and (a, b) not in ((0, 0), (h1, h2))]
    if not cuts:
        return copy.deepcopy(first)
    # Prefer cuts that give the child a parent's depth: a cut drawn freely makes the child's
    # depth a fresh draw, which forgets the depth selection found (see the climbing test).
    keeping = [(a, b) for a, b in cuts if a + h2 - b in (h1, h2)]
    cuts = keeping or cuts
    cut1, cut2 = cuts[int(rng.integers(len(cuts)))]
    shift = cut1 - cut2
    levels = (copy.deepcopy(first["levels"][:cut1]) + copy.deepcopy(second["levels"][cut2:h2])
              + [copy.deepcopy(first["levels"][-1])])
    new_output = len(levels) - 1

    def from_first(node: Node) -> Node | None:
        if node[0] == h1:
            return (new_output, 0)
        return node if node[0] < cut1 else None

    def from_second(node: Node) -> Node | None:
        if node[0] == -1:
            return node
        return (node[0] + shift, node[1]) if node[0] >= cut2 else None

    child = {**copy.deepcopy(first), "levels": levels}
    edges = _mapped(first["edges"], from_first) + _mapped(second["edges"], from_second)
    laterals = _mapped(first["laterals"], from_first) + _mapped(second["laterals"], from_second)
    child["edges"] = [list(map(list, e)) for e in dict.fromkeys(edges)]
    child["laterals"] = [list(map(list, e)) for e in dict.fromkeys(laterals)]
    return repair_architecture(child, space, rng)


def _mapped(pairs: list, mapping: Callable[[Node], Node | None]) -> list[tuple[Node, Node]]:
    out = []
    for src, dst in pairs:
        a, b = mapping(tuple(src)), mapping(tuple(dst))
        if a is not None and b is not None:
            out.append((a, b))
    return out


def _remap(arch: dict, mapping: Callable[[Node], Node | None]) -> None:
    arch["edges"] = [list(map(list, e)) for e in _mapped(arch["edges"], mapping)]
    arch["laterals"] = [list(map(list, e)) for e in _mapped(arch["laterals"], mapping)]


def _hidden(arch: dict) -> list[dict]:
    return arch["levels"][:-1]


def _pick_unit(arch: dict, rng: np.random.Generator) -> tuple[int, int] | None:
    sizes = level_sizes(arch)[:-1]
    flat = [(level, unit) for level, n in enumerate(sizes) for unit in range(n)]
    return flat[int(rng.integers(len(flat)))] if flat else None


def _change_neurons(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    picked = _pick_unit(arch, rng)
    if picked is None:
        return False
    level, unit = picked
    spec = arch["levels"][level]["units"][unit]
    before = spec["neurons"]
    for _ in range(MAX_RETRIES):  # a different count, when the space has one
        spec["neurons"] = _nearby_neurons(before, space, rng)
        if spec["neurons"] != before:
            return True
    return False


def _nearby_neurons(current: int, space: SpaceSettings, rng: np.random.Generator) -> int:
    """A step from ``current``: a neighbouring choice, or a scale by up to 2x either way in the
    range. Local steps let selection climb; a fresh draw would forget what was learned."""
    if space.neuron_choices:
        choices = sorted(set(space.neuron_choices))
        here = min(range(len(choices)), key=lambda i: abs(choices[i] - current))
        step = int(rng.choice([-1, 1]))
        return int(choices[min(max(here + step, 0), len(choices) - 1)])
    scaled = current * 2.0 ** rng.uniform(-1.0, 1.0)
    return int(np.clip(round(scaled), space.min_neurons, space.max_neurons))


def _change_activation(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    picked = _pick_unit(arch, rng)
    if len(space.activations) < 2 or picked is None:
        return False
    level, unit = picked
    spec = arch["levels"][level]["units"][unit]
    others = [a for a in space.activations if a != spec["activation"]]
    spec["activation"] = others[int(rng.integers(len(others)))]
    return True


def _change_learning_rate(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    """A neighbouring rate of the space's choices (sorted), as neurons step: locally."""
    choices = sorted(set(space.learning_rates or ()))
    if len(choices) < 2:
        return False
    current = arch.get("learning_rate", choices[0])
    here = min(range(len(choices)), key=lambda i: abs(np.log(choices[i]) - np.log(current)))
    step = int(rng.choice([-1, 1]))
    arch["learning_rate"] = float(choices[min(max(here + step, 0), len(choices) - 1)])
    return arch["learning_rate"] != current


def _add_unit(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    open_levels = [i for i, lv in enumerate(_hidden(arch)) if len(lv["units"]) < space.max_units_per_level]
    if not open_levels:
        return False
    level = open_levels[int(rng.integers(len(open_levels)))]
    arch["levels"][level]["units"].append(sample_unit(space, rng))
    return True  # the repair wires the new unit in


def _remove_unit(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    levels = [i for i, lv in enumerate(_hidden(arch)) if len(lv["units"]) > space.min_units_per_level]
    if not levels:
        return False
    level = levels[int(rng.integers(len(levels)))]
    gone = int(rng.integers(len(arch["levels"][level]["units"])))
    del arch["levels"][level]["units"][gone]
    _remap(arch, lambda n: n if n[0] != level or n[1] < gone else (None if n[1] == gone else (level, n[1] - 1)))
    return True


def _add_level(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    if len(_hidden(arch)) >= space.max_levels:
        return False
    at = int(rng.integers(len(_hidden(arch)) + 1))
    n_units = int(rng.integers(space.min_units_per_level, space.max_units_per_level + 1))
    _remap(arch, lambda n: n if n[0] < at else (n[0] + 1, n[1]))
    arch["levels"].insert(at, {"units": [sample_unit(space, rng) for _ in range(n_units)]})
    return True


def _remove_level(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    if len(_hidden(arch)) <= space.min_levels:
        return False
    at = int(rng.integers(len(_hidden(arch))))
    _remap(arch, lambda n: n if n[0] < at else (None if n[0] == at else (n[0] - 1, n[1])))
    del arch["levels"][at]
    return True


def _rewire(arch: dict, space: SpaceSettings, rng: np.random.Generator) -> bool:
    """Redraw one unit's predecessors (output unit included) from the Cerebros distribution."""
    sizes = level_sizes(arch)
    flat = [(level, unit) for level, n in enumerate(sizes) for unit in range(n)]
    node = flat[int(rng.integers(len(flat)))]
    kept = [e for e in arch["edges"] if tuple(e[1]) != node]
    fresh = draw_predecessors(node, sizes, space, rng)
    arch["edges"] = kept + [[list(s), list(d)] for s, d in sorted(fresh)]
    return True


OPERATORS: tuple[Callable[[dict, SpaceSettings, np.random.Generator], bool], ...] = (
    _change_neurons, _change_activation, _add_unit, _remove_unit, _add_level, _remove_level, _rewire,
)

__all__ = ["EvolutionStrategy", "crossover", "mutate"]
