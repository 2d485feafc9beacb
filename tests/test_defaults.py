"""Coherent defaults: no default request degenerates, and the boundary's defaults are the engine's."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cerebros_service import validate
from cerebros_service.boundary.schema import SearchSpaceSpec, TrainingSpec, build_settings, check_request
from cerebros_service.settings import (
    MAX_DERIVED_POPULATION, SearchSettings, SpaceSettings, TrainSettings, derived_population_size,
)


def generations(max_trials: int, population: int) -> int:
    return math.ceil(max_trials / population)


@pytest.mark.parametrize("max_trials", [6, 10, 30, 100, 100_000])
def test_a_derived_evolution_population_leaves_at_least_three_generations(max_trials):
    population = derived_population_size("evolution", max_trials)
    assert 2 <= population <= MAX_DERIVED_POPULATION
    assert generations(max_trials, population) >= 3


def test_the_default_request_searches_as_its_strategy_means_to():
    spec, opts = check_request({"dataset_id": "digits"}, {})
    settings = build_settings(spec, opts, "val_accuracy")
    assert settings.strategy == "random"
    assert opts.budget.population_size is None  # not given: derived
    assert settings.population_size == derived_population_size("random", 10) == 10  # one batch of fresh draws
    assert validate({"dataset_id": "digits"})["warnings"] == []


def test_an_evolution_request_with_default_budget_breeds():
    spec, opts = check_request({"dataset_id": "digits", "strategy": "evolution"}, {})
    settings = build_settings(spec, opts, "val_accuracy")
    assert settings.population_size == derived_population_size("evolution", 10)
    assert generations(settings.max_trials, settings.population_size) >= 3
    assert settings.elite_size < settings.population_size  # the default elite shrinks to fit
    assert validate({"dataset_id": "digits", "strategy": "evolution"})["warnings"] == []


def test_ga_parameters_sent_with_another_strategy_get_a_warning():
    # the calling application sends them without a strategy: with the random default they are unused
    opts = {"parameters": {"mutation_rate": 0.1, "crossover_rate": 0.7}}
    [warning] = validate({"dataset_id": "iris"}, opts)["warnings"]
    assert warning["loc"] == ["opts", "parameters"]
    assert "crossover_rate, mutation_rate are read only by strategy" in warning["message"]
    assert '"random"' in warning["message"]
    assert validate({"dataset_id": "iris", "strategy": "evolution"}, opts)["warnings"] == []
    assert validate({"dataset_id": "iris", "strategy": "halving"}, {"parameters": {"min_epochs": 2}})["warnings"] == []


def test_a_population_as_big_as_the_budget_gets_a_warning_for_evolution():
    answer = validate({"dataset_id": "iris", "strategy": "evolution"},
                      {"budget": {"max_trials": 10, "population_size": 20}})
    assert answer["status"] == "valid"
    [warning] = answer["warnings"]
    assert warning["loc"] == ["opts", "budget", "population_size"] and "random search" in warning["message"]
    random = validate({"dataset_id": "iris", "strategy": "random"}, {"budget": {"max_trials": 10, "population_size": 20}})
    assert random["warnings"] == []


def test_a_halving_bracket_that_cannot_finish_gets_a_warning():
    spec = {"dataset_id": "iris", "strategy": "halving", "training": {"epochs": 20}}
    [warning] = validate(spec, {"budget": {"max_trials": 12, "population_size": 9}})["warnings"]
    assert "needs 13 trials" in warning["message"]  # 9 + 3 + 1 over rungs of 3, 7, 20 epochs
    assert validate(spec, {"budget": {"max_trials": 13, "population_size": 9}})["warnings"] == []
    assert validate(spec, {"budget": {"max_trials": 12}})["warnings"] == []  # derived: it fits


def test_the_boundary_defaults_are_the_engines():
    space_fields = {f.name: f.default for f in dataclasses.fields(SpaceSettings)}
    spec_space = SearchSpaceSpec()
    for name, default in space_fields.items():
        if name in ("neuron_choices", "min_neurons", "max_neurons"):  # the spec derives these
            continue
        given = getattr(spec_space, name)
        assert (tuple(given) if isinstance(given, list) else given) == default, name
    assert spec_space.to_settings() == SpaceSettings()
    training = {f.name: f.default for f in dataclasses.fields(TrainSettings) if f.name != "steps_per_epoch"}
    assert TrainingSpec().model_dump() == training
    spec, _ = check_request({"dataset_id": "iris"}, {})
    assert spec.strategy == SearchSettings.strategy
