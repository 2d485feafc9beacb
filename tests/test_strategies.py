"""One contract suite that every strategy in STRATEGIES must pass (no training: fake outcomes)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from cerebros_service.search.records import TrialRecord
from cerebros_service.settings import SearchSettings, SpaceSettings
from cerebros_service.search.space import check_architecture
from cerebros_service.strategies import STRATEGIES, Proposal, Strategy, as_proposal, make_strategy
from conftest import tiny_space

INPUT_DIM, OUTPUT_UNITS = 5, 3


def _settings(name: str, **overrides) -> SearchSettings:
    values = dict(strategy=name, population_size=6, elite_size=2, mutation_rate=0.3,
                  crossover_rate=0.5, space=tiny_space())
    values.update(overrides)
    return SearchSettings(**values)


def _strategy(name: str, seed: int = 0, direction: str = "max", **overrides) -> Strategy:
    return make_strategy(name, _settings(name, **overrides), INPUT_DIM, OUTPUT_UNITS,
                         np.random.default_rng(seed), direction)


def _architectures(asked: list) -> list[dict]:
    """The architectures of what a strategy asked for (dicts or Proposals)."""
    return [as_proposal(item).architecture for item in asked]


def _tell_outcomes(strategy: Strategy, asked: list, first_trial: int, generation: int,
                   rng: np.random.Generator, tag_failed: bool = False) -> list[TrialRecord]:
    """Fake a generation: every third trial fails, the rest score a seeded random value."""
    records = []
    for i, item in enumerate(asked):
        proposal = as_proposal(item)
        arch = proposal.architecture
        trial = first_trial + i
        failed = trial % 3 == 0
        if failed and tag_failed:
            arch = _tagged(arch, "failed")
        elif tag_failed:
            arch = _tagged(arch, "ok")
        records.append(TrialRecord(
            trial=trial, generation=generation, status="failed" if failed else "completed",
            architecture=arch, metric="val_accuracy", value=None if failed else float(rng.random()),
            best_epoch=None if failed else 1, epochs_run=1, duration_s=0.1, first_epoch_s=0.1, params=10,
            error="boom" if failed else None, parent_trial=proposal.parent_trial,
        ))
    strategy.tell(records)
    return records


def _tagged(arch: dict, tag: str) -> dict:
    """Mark every unit: operators copy unit dicts, so a child shows which parent it came from."""
    arch = copy.deepcopy(arch)
    for level in arch["levels"][:-1]:
        for unit in level["units"]:
            unit["tag"] = tag
    return arch


def _run_generations(strategy: Strategy, generations: int = 3, n: int = 6, tag_failed: bool = False):
    rng = np.random.default_rng(99)
    asked, trial = [], 0
    for generation in range(generations):
        architectures = strategy.ask(n)
        asked.append(architectures)
        _tell_outcomes(strategy, architectures, trial, generation, rng, tag_failed)
        trial += len(architectures)
    return asked


@pytest.fixture(params=sorted(STRATEGIES))
def name(request):
    return request.param


def test_ask_returns_the_number_asked_for(name):
    strategy = _strategy(name)
    assert strategy.ask(0) == []
    assert len(strategy.ask(4)) == 4  # a fresh generation is as big as asked


def test_ask_never_returns_more_than_asked_nor_nothing(name):
    strategy = _strategy(name)
    rng = np.random.default_rng(5)
    trial = 0
    for generation, n in enumerate((6, 5, 1, 4, 3, 6)):
        asked = strategy.ask(n)
        assert 1 <= len(asked) <= n
        for item in asked:
            assert isinstance(item, (dict, Proposal))
        _tell_outcomes(strategy, asked, trial, generation, rng)
        trial += len(asked)


def test_same_seed_asks_for_the_same_architectures(name):
    assert _run_generations(_strategy(name, seed=3)) == _run_generations(_strategy(name, seed=3))
    assert _run_generations(_strategy(name, seed=3)) != _run_generations(_strategy(name, seed=4))


def test_every_asked_architecture_is_valid_and_in_the_space(name):
    space = tiny_space()
    for asked in _run_generations(_strategy(name), generations=4):
        for arch in _architectures(asked):
            check_architecture(arch, space)
            assert arch["input_dim"] == INPUT_DIM
            assert arch["levels"][-1]["units"][0]["neurons"] == OUTPUT_UNITS


@pytest.mark.parametrize("direction", ["max", "min"])
def test_failed_and_non_finite_trials_are_never_parents(name, direction):
    strategy = _strategy(name, direction=direction)
    rng = np.random.default_rng(0)
    trial = 0
    for generation in range(4):
        asked = strategy.ask(6)
        architectures = _architectures(asked)
        for arch in architectures:  # nothing inherited from a failed or NaN trial
            tags = {unit.get("tag") for level in arch["levels"] for unit in level["units"]}
            assert "failed" not in tags
        told = {r.trial: r for r in strategy.records}
        for proposal in map(as_proposal, asked):  # nothing continues a failed or NaN trial
            if proposal.parent_trial is not None:
                parent = told[proposal.parent_trial]
                assert parent.status == "completed" and math.isfinite(parent.value)
        # Failed trials carry a value that would win if anything looked at it.
        bait = 1e9 if direction == "max" else -1e9
        records = []
        for i, arch in enumerate(architectures):
            kind = ("failed", "nan", "ok")[i % 3]
            value = {"failed": bait, "nan": math.nan, "ok": float(rng.random())}[kind]
            records.append(TrialRecord(
                trial=trial + i, generation=generation,
                status="failed" if kind == "failed" else "completed",
                architecture=_tagged(arch, "ok" if kind == "ok" else "failed"), metric="val_accuracy",
                value=value, best_epoch=1, epochs_run=1, duration_s=0.1, first_epoch_s=0.1, params=1,
            ))
        strategy.tell(records)
        trial += len(architectures)


def test_a_run_of_only_failures_still_asks_for_valid_architectures(name):
    strategy = _strategy(name)
    failed = [TrialRecord(trial=i, generation=0, status="failed", architecture=arch, metric="val_accuracy",
                          value=None, best_epoch=None, epochs_run=0, duration_s=0.1, first_epoch_s=None,
                          params=None, error="x") for i, arch in enumerate(_architectures(strategy.ask(3)))]
    strategy.tell(failed)
    asked = strategy.ask(3)
    assert asked and all(as_proposal(item).parent_trial is None for item in asked)
    for arch in _architectures(asked):
        check_architecture(arch, tiny_space())


def test_unknown_strategy_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="random"):
        make_strategy("annealing", SearchSettings(), 3, 1, np.random.default_rng(0))


# --------------------------------------------------------------------------- evolution specifics

def test_evolution_breeds_from_the_best_completed_trials():
    strategy = _strategy("evolution", mutation_rate=0.0, crossover_rate=0.0)
    first = strategy.ask(6)
    rng = np.random.default_rng(0)
    _tell_outcomes(strategy, first, 0, 0, rng, tag_failed=True)
    pool = strategy.selection_pool()
    assert pool and all(r.status == "completed" for r in pool)
    assert [r.value for r in pool] == sorted((r.value for r in pool), reverse=True)
    children = strategy.ask(6)
    # Every child descends from a tagged completed parent (no crossover, forced single mutation).
    for child in children:
        tags = {unit.get("tag") for level in child["levels"][:-1] for unit in level["units"]}
        assert "ok" in tags or tags == {None}
        assert "failed" not in tags
    assert any("ok" in {u.get("tag") for lv in c["levels"] for u in lv["units"]} for c in children)


def test_evolution_keeps_elites_in_the_pool_across_generations():
    strategy = _strategy("evolution", elite_size=1)
    rng = np.random.default_rng(1)
    records = _tell_outcomes(strategy, strategy.ask(6), 0, 0, rng)
    champion = max((r for r in records if r.status == "completed"), key=lambda r: r.value)
    worse = [TrialRecord(trial=10 + i, generation=1, status="completed", architecture=arch,
                         metric="val_accuracy", value=-1.0, best_epoch=1, epochs_run=1, duration_s=0.1,
                         first_epoch_s=0.1, params=1) for i, arch in enumerate(strategy.ask(3))]
    strategy.tell(worse)
    pool = strategy.selection_pool()
    assert pool[0].trial == champion.trial  # the elite survives its generation
    assert {r.trial for r in pool} == {champion.trial} | {r.trial for r in worse}


# --------------------------------------------------------------------------- does evolution climb?

def _size_fitness(arch: dict) -> float:
    """A synthetic task where bigger and deeper is known to be better: neurons times depth."""
    hidden = arch["levels"][:-1]
    return float(sum(unit["neurons"] for level in hidden for unit in level["units"]) * len(hidden))


def _search_by_fitness(name: str, seed: int, generations: int = 8, n: int = 8) -> list[list[float]]:
    space = SpaceSettings(min_levels=1, max_levels=4, min_units_per_level=1, max_units_per_level=3,
                          min_neurons=4, max_neurons=64)
    strategy = make_strategy(name, SearchSettings(strategy=name, space=space),  # the service's GA defaults
                             INPUT_DIM, OUTPUT_UNITS, np.random.default_rng(seed), "max")
    fitness, trial = [], 0
    for generation in range(generations):
        asked = _architectures(strategy.ask(n))
        values = [_size_fitness(arch) for arch in asked]
        strategy.tell([TrialRecord(trial=trial + i, generation=generation, status="completed", architecture=arch,
                                   metric="val_accuracy", value=value, best_epoch=1, epochs_run=1,
                                   duration_s=0.1, first_epoch_s=0.1, params=1)
                       for i, (arch, value) in enumerate(zip(asked, values))])
        fitness.append(values)
        trial += len(asked)
    return fitness


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_evolution_climbs_where_bigger_and_deeper_is_better(seed):
    evolved = _search_by_fitness("evolution", seed)
    drawn = _search_by_fitness("random", seed)
    late = lambda history: float(np.mean(history[-3:]))  # noqa: E731 - the last three generations
    assert late(evolved) > 1.5 * float(np.mean(evolved[0]))  # it climbed from its random start
    assert late(evolved) > 1.5 * late(drawn)  # and beats drawing at random for as long
    # a typical late child beats three in four random architectures
    assert float(np.median(evolved[-1])) > float(np.percentile(np.concatenate(drawn), 75))
