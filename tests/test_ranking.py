"""One order of results: the run's best, a strategy's ranking, the saved model and the report agree."""

from __future__ import annotations

import math
import random

import numpy as np

from cerebros_service.reporting.run_data import RunData
from cerebros_service.search.records import TrialRecord, takes_lead
from cerebros_service.settings import SearchSettings, Standing, outranks, standing_key
from cerebros_service.strategies import make_strategy


def _record(trial: int, value: float | None, loss: float | None, metric: str = "val_accuracy") -> TrialRecord:
    history = {metric: [value]} if loss is None else {metric: [value], "val_loss": [loss]}
    return TrialRecord(trial=trial, generation=0, status="completed" if value is not None else "failed",
                       architecture={}, metric=metric, value=value, best_epoch=1, epochs_run=1,
                       duration_s=0.1, first_epoch_s=0.1, params=10, history=history)


def test_a_better_value_wins_whatever_the_loss():
    assert outranks(Standing(0.9, 5.0, 3), Standing(0.8, 0.1, 0), "max")
    assert outranks(Standing(50.0, None, 3), Standing(60.0, None, 0), "min")
    assert not outranks(Standing(0.8, 0.1, 0), Standing(0.9, 5.0, 3), "max")


def test_a_tie_on_the_value_goes_to_the_lower_loss_then_the_earlier_trial():
    assert outranks(Standing(0.9, 0.2, 7), Standing(0.9, 0.3, 2), "max")
    assert not outranks(Standing(0.9, 0.3, 2), Standing(0.9, 0.2, 7), "max")
    assert outranks(Standing(0.9, 0.2, 2), Standing(0.9, 0.2, 7), "max")
    assert not outranks(Standing(0.9, 0.2, 7), Standing(0.9, 0.2, 2), "max")
    # a missing loss counts as the worst loss: a known one wins the tie
    assert outranks(Standing(0.9, 0.5, 7), Standing(0.9, None, 2), "max")
    assert not outranks(Standing(0.9, 0.2, 2), Standing(0.9, 0.2, 2), "max")  # nothing outranks itself


def test_a_missing_or_non_finite_value_never_leads():
    for value in (None, math.nan, math.inf):
        assert not outranks(Standing(value, 0.1, 0), None, "max")
        assert not outranks(Standing(value, 0.1, 0), Standing(0.1, 9.0, 9), "max")
    assert outranks(Standing(0.1, 9.0, 9), Standing(math.nan, 0.1, 0), "max")
    assert outranks(Standing(0.1, None, 0), None, "min")


def test_the_order_is_total_so_arrival_order_never_matters():
    rng = random.Random(3)
    standings = [Standing(rng.choice([0.8, 0.9, None]), rng.choice([0.2, 0.3, None]), trial) for trial in range(40)]
    leader = None
    for standing in rng.sample(standings, len(standings)):
        if outranks(standing, leader, "max"):
            leader = standing
    assert leader == min(standings, key=lambda s: standing_key(s, "max"))
    tied = [s for s in standings if s.value == 0.9]
    surest = min(s.loss for s in tied if s.loss is not None)
    assert leader == next(s for s in tied if s.loss == surest)  # the earliest of the surest best


def test_a_trial_stands_by_its_value_and_number_not_its_loss():
    # the lowest loss among tied trials picked worse test models (docs/benchmarks.md)
    assert _record(4, 0.9, 0.25).standing() == Standing(0.9, None, 4)
    assert _record(4, 0.3, None, metric="val_loss").standing() == Standing(0.3, None, 4)


def test_the_runs_best_is_the_strategys_first_and_the_reports_first():
    records = [_record(0, 0.9, 0.40), _record(1, 0.8, 0.10), _record(2, 0.9, 0.30),
               _record(3, None, None), _record(4, 0.9, 0.30)]
    best = None
    for record in records:
        if takes_lead(record, best, "max"):
            best = record
    assert best.trial == 0  # as good as 2 and 4, and earlier
    strategy = make_strategy("random", SearchSettings(), 4, 2, np.random.default_rng(0), direction="max")
    assert [r.trial for r in strategy.ranked(records)] == [0, 2, 4, 1]
    report = RunData(run_id="r", run={"direction": "max"}, trials=[r.as_dict() for r in records],
                     generations=[], best=None, events=[])
    assert [t["trial"] for t in report.ranked()] == [0, 2, 4, 1]
    arrived = None
    for record in reversed(records):  # the same best, whatever the order trials end in
        if takes_lead(record, arrived, "max"):
            arrived = record
    assert arrived.trial == 0
