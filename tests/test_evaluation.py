"""Held-out scoring: stratified splits, a test part no training or ranking sees, per-class reports, refit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cerebros_service.artifacts import RunDirectory
from cerebros_service.data.dataset import make_dataset, split_indices
from cerebros_service.data.splits import align_test_set, search_splits
from cerebros_service.errors import DatasetError
from cerebros_service.run import plan_evaluation, run_search
from cerebros_service.search.scoring import evaluation_report
from cerebros_service.search.train import train_population
from cerebros_service.settings import EnsembleSettings, EvaluationSettings
from conftest import make_tiny_dataset

IMBALANCED = np.repeat([0, 1, 2], [600, 300, 100])


def _shares(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.bincount(labels[rows], minlength=3)


def test_a_stratified_validation_split_takes_each_class_in_proportion():
    labels = np.random.default_rng(0).permutation(IMBALANCED)
    train, val = split_indices(len(labels), 0.2, seed=3, labels=labels)
    assert len(val) == 200 and len(train) == 800 and not set(train) & set(val)
    assert list(_shares(labels, val)) == [120, 60, 20]
    odd = np.repeat([0, 1, 2], [7, 5, 3])  # shares 1.4, 1.0, 0.6 of 3 rows
    _, val = split_indices(len(odd), 0.2, seed=0, labels=odd)
    assert list(_shares(odd, val)) == [1, 1, 1]  # every class keeps a validation row and a training row


def test_iris_sends_the_same_share_of_every_class_to_validation():
    from cerebros_service.data.builtin import load_builtin

    iris = load_builtin("iris")
    _, val = split_indices(iris.n_samples, 0.2, seed=0, labels=iris.y)
    assert list(np.bincount(iris.y[val])) == [10, 10, 10]


def test_search_splits_hold_out_a_stratified_test_part_first():
    labels = np.random.default_rng(1).permutation(IMBALANCED)
    splits = search_splits(len(labels), labels, validation_split=0.25, test_split=0.2, seed=7)
    parts = [splits.train, splits.validation, splits.test]
    assert sorted(np.concatenate(parts)) == list(range(1000))  # a partition of the rows
    assert [len(p) for p in parts] == [600, 200, 200]
    assert list(_shares(labels, splits.test)) == [120, 60, 20]
    assert list(_shares(labels, splits.validation)) == [120, 60, 20]
    again = search_splits(len(labels), labels, 0.25, 0.2, seed=7)
    assert np.array_equal(again.test, splits.test)  # seeded
    other = search_splits(len(labels), labels, 0.25, 0.2, seed=8)
    assert not np.array_equal(other.test, splits.test)
    regression = search_splits(50, None, 0.2, 0.2, seed=0)
    assert [len(regression.train), len(regression.validation), len(regression.test)] == [32, 8, 10]
    assert not regression.stratified


def test_a_test_split_that_leaves_too_few_rows_names_its_field():
    with pytest.raises(DatasetError) as caught:
        search_splits(10, np.repeat([0, 1, 2, 3, 4], 2), 0.2, 0.5, seed=0)
    assert caught.value.details[0].loc == ("spec", "evaluation", "test_split")


def test_auto_test_split_only_from_200_rows():
    assert EvaluationSettings().resolved_test_split(199) == 0.0
    assert EvaluationSettings().resolved_test_split(200) == 0.2
    assert EvaluationSettings(test_split=0.3).resolved_test_split(50) == 0.3


def _numbered(task: str, n: int):
    """A tiny dataset whose first feature is the row's index, so a trainer's rows can be named."""
    base = make_tiny_dataset(task, n=n)
    x = np.column_stack([np.arange(n, dtype=np.float64), base.x])
    return make_dataset(base.name, x, base.y if task == "regression" else np.asarray(base.class_labels)[base.y],
                        task=task)


def test_the_test_rows_are_never_trained_on_nor_ranked_by(tmp_path, fast_settings):
    import keras

    dataset = _numbered("multiclass", 240)  # >= 200 rows: a 20% test part by default
    seen_rows: set[int] = set()

    def watching_trainer(candidates, data, *args, **kwargs):
        seen_rows.update(data.x_train[:, 0].astype(int).tolist())
        seen_rows.update(data.x_val[:, 0].astype(int).tolist())  # validation ranks the trials
        return train_population(candidates, data, *args, **kwargs)

    settings = fast_settings(max_trials=2, population_size=2)
    run_dir = RunDirectory.create(tmp_path, "held-out")
    outcome = run_search(dataset, settings, run_dir=run_dir, trainer=watching_trainer)

    splits, held_out = plan_evaluation(dataset, settings, None)
    test_rows = set(splits.test.tolist())
    assert len(test_rows) == 48 and held_out.source == "split"
    assert seen_rows == set(splits.train.tolist()) | set(splits.validation.tolist())
    assert not seen_rows & test_rows

    evaluation = outcome.evaluation
    assert (evaluation["test_rows"], evaluation["validation_rows"], evaluation["train_rows"]) == (48, 48, 144)
    assert evaluation["validation"]["accuracy"] == pytest.approx(outcome.best.value, abs=1e-6)
    # the test metric is the saved best model's accuracy on exactly the held-out rows
    model = keras.saving.load_model(outcome.best.model_path)
    test_x = dataset.x[splits.test].astype("float32")
    predicted = np.argmax(model.predict_on_batch(test_x), axis=1)
    assert outcome.test_metric == pytest.approx(np.mean(predicted == dataset.y[splits.test]), abs=1e-6)
    for trial in outcome.trials:  # every trial's value is a validation value
        assert trial.value == pytest.approx(max(v for v in trial.history["val_accuracy"] if v is not None))

    report = evaluation["test"]
    assert {"balanced_accuracy", "macro_f1", "per_class", "accuracy", "loss"} <= set(report)
    assert [c["support"] for c in report["per_class"]] == list(np.bincount(dataset.y[splits.test]))
    run_json = json.load(open(run_dir.file("run.json")))
    assert run_json["test_metric"] == pytest.approx(outcome.test_metric)
    assert run_json["evaluation"]["test"]["macro_f1"] == pytest.approx(report["macro_f1"])
    assert run_json["best_value"] == pytest.approx(outcome.best.value)


def test_a_small_dataset_gets_no_test_split_and_says_so(fast_settings):
    outcome = run_search(make_tiny_dataset("binary"), fast_settings(max_trials=1, population_size=1))
    assert outcome.test_metric is None and outcome.evaluation["test"] is None
    assert outcome.evaluation["test_rows"] == 0 and outcome.evaluation["test_source"] is None
    assert "auc" in outcome.evaluation["validation"]  # per-class view of a binary classifier


def test_a_given_test_set_is_scored_in_the_datas_own_class_codes(fast_settings):
    data = _numbered("binary", 120)
    rng = np.random.default_rng(5)
    labels = np.asarray(data.class_labels)
    test = make_dataset("test", rng.normal(size=(30, data.n_features)), labels[rng.integers(0, 2, size=30)])
    x, y = align_test_set(test, data)
    assert np.array_equal(labels[y], labels[test.y]) and x is test.x

    outcome = run_search(data, fast_settings(max_trials=1, population_size=1), test_set=test)
    assert outcome.evaluation["test_source"] == "given" and outcome.evaluation["test_rows"] == 30
    assert outcome.evaluation["validation_rows"] + outcome.evaluation["train_rows"] == 120  # no split taken
    assert 0.0 <= outcome.test_metric <= 1.0

    wrong_width = make_dataset("test", rng.normal(size=(6, 3)), [0, 1] * 3)
    with pytest.raises(DatasetError) as caught:
        align_test_set(wrong_width, data)
    assert caught.value.details[0].loc == ("spec", "evaluation", "test_dataset")
    unknown = make_dataset("test", rng.normal(size=(6, data.n_features)), [0, 7] * 3)
    with pytest.raises(DatasetError, match="the training data does not have"):
        align_test_set(unknown, data)


def test_refit_trains_the_winner_on_train_and_validation_for_its_best_epochs(tmp_path, fast_settings):
    import keras

    dataset = _numbered("regression", 200)
    # Without the ensemble, the refit is the model whose test the result reports.
    settings = fast_settings(max_trials=1, population_size=1, evaluation=EvaluationSettings(refit=True),
                             ensemble=EnsembleSettings(enabled=False))
    run_dir = RunDirectory.create(tmp_path, "refit")
    outcome = run_search(dataset, settings, run_dir=run_dir)
    refit = outcome.evaluation["refit"]
    assert refit["epochs"] == outcome.best.best_epoch == outcome.evaluation["best_epochs"]
    assert refit["rows"] == outcome.evaluation["train_rows"] + outcome.evaluation["validation_rows"] == 160
    assert outcome.test_metric == pytest.approx(refit["test"]["rmse"])  # the refit model is the one tested
    assert outcome.evaluation["test"]["rmse"] != refit["test"]["rmse"]
    model = keras.saving.load_model(refit["model_path"])
    splits, _ = plan_evaluation(dataset, settings, None)
    predicted = model.predict_on_batch(dataset.x[splits.test].astype("float32"))[:, 0]
    rmse = float(np.sqrt(np.mean((predicted - dataset.y[splits.test]) ** 2)))
    assert rmse == pytest.approx(outcome.test_metric, rel=1e-4)
    assert "refit_model.keras" in outcome.artifacts


def test_the_evaluation_report_adds_per_class_metrics_to_every_score():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([[0.1], [0.4], [0.6], [0.7], [0.8], [0.9], [0.2], [0.95]])
    report = evaluation_report("binary", y, p, 2)
    assert report["rows"] == 8 and report["accuracy"] == pytest.approx(6 / 8)
    assert report["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert report["auc"] == pytest.approx(13 / 15)  # 13 of the 15 (positive, negative) pairs ordered
    regression = evaluation_report("regression", np.array([1.0, 3.0]), np.array([[2.0], [3.0]]), None)
    assert regression == {"rows": 2, "loss": 0.5, "rmse": pytest.approx(np.sqrt(0.5)), "mae": 0.5}
