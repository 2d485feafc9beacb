"""Successive halving: rungs, the promoted fraction, and promoted trials continuing from their weights."""

from __future__ import annotations

import numpy as np

from cerebros_service.run import run_search
from cerebros_service.search.records import TrialRecord
from cerebros_service.search.train import train_population
from cerebros_service.settings import (
    HalvingSettings, SearchSettings, bracket_trials, derived_population_size, promoted_count, rung_epochs,
)
from cerebros_service.strategies import make_strategy
from conftest import make_tiny_dataset, tiny_space, tiny_training


def test_rungs_grow_by_the_reduction_factor_up_to_the_epoch_budget():
    assert rung_epochs(20, HalvingSettings()) == [3, 7, 20]
    assert rung_epochs(27, HalvingSettings(reduction_factor=3, min_epochs=1)) == [1, 3, 9, 27]
    assert rung_epochs(20, HalvingSettings(reduction_factor=2, min_epochs=5)) == [5, 10, 20]
    assert rung_epochs(1, HalvingSettings()) == [1]
    assert [promoted_count(n, 3) for n in (1, 2, 3, 9, 20)] == [1, 1, 1, 3, 6]
    assert bracket_trials(9, 3, 3) == 9 + 3 + 1
    # the derived first rung is the largest whose whole bracket fits the trials
    assert derived_population_size("halving", 13, HalvingSettings(), 20) == 9
    assert derived_population_size("halving", 12, HalvingSettings(), 20) == 8  # 8 + 2 + 1


def _record(trial, generation, proposal, value):
    return TrialRecord(trial=trial, generation=generation, status="completed" if value is not None else "failed",
                       architecture=proposal.architecture, metric="val_accuracy", value=value,
                       best_epoch=1 if value is not None else None, epochs_run=proposal.epochs or 1,
                       duration_s=0.1, first_epoch_s=0.1, params=1, parent_trial=proposal.parent_trial)


def test_the_best_fraction_is_promoted_with_the_next_rungs_extra_epochs():
    settings = SearchSettings(strategy="halving", population_size=9, space=tiny_space(),
                              training=tiny_training(epochs=9), halving=HalvingSettings(reduction_factor=3))
    strategy = make_strategy("halving", settings, 5, 3, np.random.default_rng(0), "max")
    assert strategy.rungs == [1, 3, 9]
    rung0 = strategy.ask(9)
    assert [p.epochs for p in rung0] == [1] * 9 and all(p.parent_trial is None for p in rung0)
    assert strategy.generation_info() == {"bracket": 0, "rung": 0, "rung_epochs": 1}
    values = [0.5, 0.9, None, 0.7, 0.95, 0.1, 0.8, 0.6, 0.3]  # trial 2 failed
    strategy.tell([_record(i, 0, p, v) for i, (p, v) in enumerate(zip(rung0, values))])

    rung1 = strategy.ask(9)
    assert [p.parent_trial for p in rung1] == [4, 1, 6]  # the best third, best first
    assert [p.epochs for p in rung1] == [2, 2, 2]  # from 1 epoch to 3
    assert [p.architecture for p in rung1] == [rung0[i].architecture for i in (4, 1, 6)]
    assert strategy.generation_info()["rung"] == 1
    strategy.tell([_record(9 + i, 1, p, v) for i, (p, v) in enumerate(zip(rung1, [0.91, 0.97, 0.2]))])

    rung2 = strategy.ask(9)
    assert [(p.parent_trial, p.epochs) for p in rung2] == [(10, 6)]  # 9 - 3 more epochs
    strategy.tell([_record(12, 2, rung2[0], 0.98)])

    bracket1 = strategy.ask(5)  # the last rung is done: a new bracket of fresh candidates
    assert len(bracket1) == 5 and all(p.parent_trial is None and p.epochs == 1 for p in bracket1)
    assert strategy.generation_info() == {"bracket": 1, "rung": 0, "rung_epochs": 1}


def test_a_rung_without_a_completed_trial_opens_a_new_bracket():
    settings = SearchSettings(strategy="halving", space=tiny_space(), training=tiny_training(epochs=9))
    strategy = make_strategy("halving", settings, 5, 3, np.random.default_rng(1), "max")
    rung0 = strategy.ask(3)
    strategy.tell([_record(i, 0, p, None) for i, p in enumerate(rung0)])
    again = strategy.ask(3)
    assert len(again) == 3 and all(p.parent_trial is None for p in again)


def test_promoted_trials_continue_from_their_parents_best_weights(fast_settings):
    """A whole search: 6 -> 2 over epochs [1, 3]; every promoted candidate starts from exactly
    the weights its parent trial ended with (its best epoch), for the extra epochs."""
    seen: dict[int, dict] = {}  # trial -> its candidate and record

    def spying_trainer(candidates, *args, **kwargs):
        records = train_population(candidates, *args, **kwargs)
        for candidate, record in zip(candidates, records):
            seen[candidate.trial] = {"candidate": candidate, "record": record}
        return records

    settings = fast_settings(strategy="halving", max_trials=8, population_size=6,
                             training={"epochs": 3, "patience": 10})
    outcome = run_search(make_tiny_dataset("multiclass"), settings, trainer=spying_trainer)

    assert [(h["rung"], h["population_size"], h["rung_epochs"]) for h in outcome.population_history] == [
        (0, 6, 1), (1, 2, 3)]
    by_trial = {t.trial: t for t in outcome.trials}
    rung1 = [t for t in outcome.trials if t.generation == 1]
    parents = sorted((by_trial[t] for t in range(6) if by_trial[t].status == "completed"),
                     key=lambda r: (-r.value, r.trial))[:2]
    assert {t.parent_trial for t in rung1} == {p.trial for p in parents}
    continued = [t for t in outcome.trials if t.parent_trial is not None]
    assert len(continued) == 2 and all(t.execution == "fused" for t in continued)
    for trial in continued:
        candidate = seen[trial.trial]["candidate"]
        parent_weights = seen[trial.parent_trial]["record"].weights
        assert candidate.epochs == 2  # from 1 epoch to 3
        assert candidate.initial_weights is not None and set(candidate.initial_weights) == set(parent_weights)
        for layer, arrays in parent_weights.items():
            for mine, theirs in zip(candidate.initial_weights[layer], arrays):
                np.testing.assert_array_equal(mine, theirs)
        assert trial.architecture == by_trial[trial.parent_trial].architecture
    # the refit (if asked) counts the epochs of the whole line: parent's best epochs plus its own
    assert outcome.evaluation["best_epochs"] >= outcome.best.best_epoch


def test_a_rung_trains_as_one_fused_chunk_for_its_own_budget(fast_settings):
    # A rung's candidates share its epoch budget, so the fused trainer takes them together.
    settings = fast_settings(strategy="halving", max_trials=3, population_size=3,
                             training={"epochs": 20, "patience": 10})
    outcome = run_search(make_tiny_dataset("binary"), settings)
    assert len(outcome.trials) == 3 and all(t.execution == "fused" and t.chunk["size"] == 3
                                            for t in outcome.trials)
    assert [t.epochs_run for t in outcome.trials] == [3, 3, 3]  # the first rung of [3, 7, 20]
