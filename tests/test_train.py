"""Training one candidate after another: best-epoch weights, failures isolated, deadline."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cerebros_service.data.dataset import split_indices
from cerebros_service.search.metrics import output_units
from cerebros_service.search.records import Candidate
from cerebros_service.search.space import sample_architecture
from cerebros_service.search.train import EpochTracker, make_training_data, train_candidates
from conftest import make_tiny_dataset, tiny_space, tiny_training


def _data(task):
    dataset = make_tiny_dataset(task)
    train_idx, val_idx = split_indices(dataset.n_samples, 0.25, seed=0)
    return make_training_data(dataset, train_idx, val_idx)


def _candidate(data, trial=0, seed=0):
    arch = sample_architecture(tiny_space(), data.input_dim, output_units(data.task, data.n_classes),
                               np.random.default_rng(seed))
    return Candidate(trial=trial, generation=0, architecture=arch, seed=1000 + trial)


def _evaluate(path, data, metric):
    import keras

    model = keras.saving.load_model(path)
    y_val = data.y_val if data.task == "multiclass" else data.y_val.reshape(-1, 1)
    return model.evaluate(data.x_val, y_val, batch_size=32, verbose=0, return_dict=True)[metric.removeprefix("val_")]


# --------------------------------------------------------------------------- pure bookkeeping

def test_tracker_keeps_the_best_epoch_and_stops_after_patience():
    tracker = EpochTracker("val_rmse", "min", patience=2, started=time.monotonic())
    weights = iter(range(100))
    values = [5.0, 3.0, 4.0, 2.5, 2.6, 2.7, 1.0]
    stops = [tracker.epoch_end(e, {"loss": 1.0, "val_rmse": v}, lambda: next(weights)) for e, v in enumerate(values)]
    assert stops == [False, False, False, False, False, True, False]
    assert tracker.best_epoch == 7 and tracker.best_value == 1.0  # (an epoch after the stop, for the test)
    assert tracker.best_weights == 3  # weights taken at the 4 improvements: 5.0, 3.0, 2.5, 1.0
    assert tracker.first_epoch_s is not None and tracker.failure is None


@pytest.mark.parametrize("logs", [{"loss": float("nan"), "val_accuracy": 0.5},
                                  {"loss": 0.3, "val_loss": float("inf"), "val_accuracy": 0.5},
                                  {"loss": 0.3, "val_accuracy": float("nan")}])
def test_tracker_fails_on_non_finite_values(logs):
    tracker = EpochTracker("val_accuracy", "max", patience=5, started=time.monotonic())
    assert tracker.epoch_end(0, logs, lambda: None) is True
    assert "became" in tracker.failure and tracker.best_value is None


# --------------------------------------------------------------------------- real training

@pytest.mark.parametrize("task, metric, direction", [("multiclass", "val_accuracy", "max"),
                                                      ("regression", "val_rmse", "min")])
def test_saved_weights_reproduce_the_reported_metric(tmp_path, task, metric, direction):
    data = _data(task)
    # A large learning rate and short patience make training stop early, after the best
    # epoch: the kept weights must be the best epoch's, not the last one's.
    training = tiny_training(epochs=25, patience=2, learning_rate=0.05)
    [record] = train_candidates([_candidate(data)], data, training, metric, direction,
                                save_dir=str(tmp_path), save_threshold=None)
    assert record.status == "completed", record.error
    history = record.history[metric]
    assert len(history) == record.epochs_run
    best = max(history) if direction == "max" else min(history)
    assert record.value == pytest.approx(best, rel=1e-6)
    assert history[record.best_epoch - 1] == pytest.approx(record.value, rel=1e-6)
    assert record.epochs_run < 25 and record.best_epoch == record.epochs_run - 2  # early stop happened
    assert record.model_path and record.model_path.startswith(str(tmp_path))
    assert _evaluate(record.model_path, data, metric) == pytest.approx(record.value, rel=1e-4, abs=1e-5)
    assert 0 < record.first_epoch_s <= record.duration_s
    assert record.params and record.params > 0


def test_a_failing_trial_is_recorded_and_the_next_one_runs():
    data = _data("binary")
    broken = _candidate(data, trial=0)
    broken.architecture["levels"][0]["units"][0]["neurons"] = 0  # rejected by the builder
    good = _candidate(data, trial=1, seed=1)
    seen = []
    records = train_candidates([broken, good], data, tiny_training(), "val_auc", "max", on_record=seen.append)
    assert [r.status for r in records] == ["failed", "completed"]
    assert "neurons" in records[0].error and records[0].value is None
    assert records[1].value is not None and 0.0 <= records[1].value <= 1.0
    assert seen == records


def test_nan_loss_fails_the_trial_and_the_next_trial_still_runs():
    data = _data("regression")
    # An absurd learning rate drives the weights to ~1e30: the loss overflows to inf/NaN.
    training = tiny_training(learning_rate=1e30, epochs=3)
    records = train_candidates([_candidate(data, 0), _candidate(data, 1, seed=1)], data, training,
                               "val_rmse", "min")
    assert len(records) == 2
    for record in records:
        assert record.status == "failed" and record.value is None
        assert "nan" in record.error.lower() or "inf" in record.error.lower()
        assert all(v is None or np.isfinite(v) for values in record.history.values() for v in values)


def test_deadline_stops_training_inside_fit_and_no_new_trial_starts(tmp_path):
    data = _data("binary")
    training = tiny_training(epochs=10_000, patience=10_000)
    started = time.monotonic()
    records = train_candidates([_candidate(data, 0), _candidate(data, 1)], data, training, "val_accuracy", "max",
                               deadline=started + 1.0, save_dir=str(tmp_path), save_threshold=1.5)
    elapsed = time.monotonic() - started
    assert len(records) == 1
    [record] = records
    assert record.status == "completed" and record.epochs_run < 10_000
    assert elapsed < 60
    assert record.model_path is None  # did not beat the (impossible) threshold
    assert list(tmp_path.iterdir()) == []


def test_no_trial_starts_after_the_deadline():
    data = _data("binary")
    records = train_candidates([_candidate(data)], data, tiny_training(), "val_accuracy", "max",
                               deadline=time.monotonic() - 1.0)
    assert records == []
