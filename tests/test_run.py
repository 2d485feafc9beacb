"""The search loop end to end, on tiny data: tasks, strategies, budgets, reproducibility, artifacts."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from cerebros_service.artifacts import RunDirectory
from cerebros_service.data.builtin import BUILTIN_DATASETS, load_builtin
from cerebros_service.errors import DatasetError, SearchFailed
from cerebros_service.run import plan_evaluation, run_search
from cerebros_service.search.device import configure_device
from cerebros_service.search.train import make_training_data
from conftest import make_tiny_dataset

ARTIFACTS = {"best_model.keras", "best_single_model.keras", "best_architecture.json", "trials.jsonl",
             "population_history.json", "run.json"}


def _validation_metric(model_path, dataset, settings, metric):
    """Evaluate a saved model on the search's own validation split."""
    import keras

    splits, _ = plan_evaluation(dataset, settings, None)
    data = make_training_data(dataset, splits.train, splits.validation)
    y_val = data.y_val if data.task == "multiclass" else data.y_val.reshape(-1, 1)
    model = keras.saving.load_model(model_path)
    scores = model.evaluate(data.x_val, y_val, batch_size=settings.training.batch_size, verbose=0, return_dict=True)
    return scores[metric.removeprefix("val_")]


def _assert_finite_or_none(obj):
    if isinstance(obj, float):
        assert math.isfinite(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _assert_finite_or_none(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _assert_finite_or_none(v)


@pytest.mark.parametrize("task, metric", [("binary", "val_accuracy"), ("multiclass", "val_accuracy"),
                                          ("regression", "val_rmse")])
def test_end_to_end_per_task_writes_complete_artifacts(tmp_path, fast_settings, task, metric):
    dataset = make_tiny_dataset(task)
    settings = fast_settings(max_trials=2, population_size=2)
    events = []

    def listener(event):
        events.append(event)
        raise RuntimeError("a broken listener")  # must be logged and ignored

    run_dir = RunDirectory.create(tmp_path, "run")
    outcome = run_search(dataset, settings, run_dir=run_dir, on_event=listener, run_info={"who": "test"})

    assert outcome.metric == metric and outcome.stopped_because == "max_trials"
    assert len(outcome.trials) == 2 and outcome.completed_trials == 2
    assert outcome.best is not None and outcome.best.value is not None
    values = [t.value for t in outcome.trials]
    assert outcome.best.value == (max(values) if outcome.direction == "max" else min(values))
    assert set(outcome.artifacts) == ARTIFACTS
    for path in outcome.artifacts.values():
        assert os.path.isabs(path) and os.path.exists(path)
    # no temp files or model leftovers; .weights holds the ensemble's pooled weights for a resume
    assert sorted(os.listdir(run_dir.path)) == sorted(ARTIFACTS | {".weights"})
    assert sorted(os.listdir(run_dir.path / ".weights")) == ["trial-0000.npz", "trial-0001.npz"]

    lines = [json.loads(line) for line in open(outcome.artifacts["trials.jsonl"])]
    assert [line["trial"] for line in lines] == [0, 1]
    assert [line["value"] for line in lines] == pytest.approx(values)
    for name in ("best_architecture.json", "population_history.json", "run.json"):
        _assert_finite_or_none(json.load(open(outcome.artifacts[name])))
    best_arch = json.load(open(outcome.artifacts["best_architecture.json"]))
    assert best_arch["architecture"] == outcome.best.architecture and best_arch["trial"] == outcome.best.trial
    run_json = json.load(open(outcome.artifacts["run.json"]))
    assert run_json["dataset"]["task"] == task and run_json["run_info"] == {"who": "test"}
    assert run_json["stopped_because"] == "max_trials" and run_json["versions"]["keras"]
    assert run_json["device"] == outcome.device

    assert outcome.best.model_path == outcome.artifacts["best_single_model.keras"]  # best_model: the ensemble
    assert run_json["delivered_model"] == "ensemble" and len(run_json["ensemble"]["members"]) == 2
    reproduced = _validation_metric(outcome.best.model_path, dataset, settings, metric)
    assert reproduced == pytest.approx(outcome.best.value, rel=1e-4, abs=1e-5)

    kinds = [e["type"] for e in events]
    assert kinds == ["trial", "trial", "generation"]
    assert events[-1]["population_size"] == 2 and events[-1]["best_fitness"] == pytest.approx(outcome.best.value)
    assert events[1]["best_so_far"] == pytest.approx(outcome.best.value)
    assert events[0]["architecture"]["levels"][-1] == 1 and "params" in events[0]["architecture"]


def test_evolution_is_reproducible_with_the_same_seed(tmp_path, fast_settings):
    dataset = make_tiny_dataset("multiclass")
    # population 1 keeps it short while still breeding generation 1 from generation 0's outcome
    settings = fast_settings(strategy="evolution", max_trials=2, population_size=1, seed=5)
    first = run_search(dataset, settings, run_dir=RunDirectory.create(tmp_path, "a"))
    second = run_search(dataset, settings, run_dir=RunDirectory.create(tmp_path, "a"))
    assert [t.architecture for t in first.trials] == [t.architecture for t in second.trials]
    assert [t.value for t in first.trials] == pytest.approx([t.value for t in second.trials], abs=1e-5)
    assert [t.generation for t in first.trials] == [0, 1]
    history = first.population_history
    assert [h["generation"] for h in history] == [0, 1] and [h["population_size"] for h in history] == [1, 1]
    assert first.trials[1].architecture != first.trials[0].architecture  # bred, never a repeat
    for stats in history:
        assert set(stats) == {"generation", "best_fitness", "mean_fitness", "std_fitness", "population_size"}
    assert first.artifacts["run.json"].endswith(os.path.join("a", "run.json"))
    assert second.artifacts["run.json"].endswith(os.path.join("a-2", "run.json"))


def test_time_budget_stops_the_search_inside_training(fast_settings):
    settings = fast_settings(max_trials=50, max_time_seconds=1.0, training={"epochs": 10_000, "patience": 10_000})
    outcome = run_search(make_tiny_dataset("binary"), settings)  # no run_dir: nothing written
    assert outcome.stopped_because == "max_time_seconds"
    # the first generation (one fused chunk of population_size) ran; no later one started
    assert len(outcome.trials) == settings.population_size
    assert all(t.epochs_run < 10_000 and t.stop_reason == "max_time_seconds" for t in outcome.trials)
    assert outcome.artifacts == {} and outcome.best.model_path is None


def test_no_completed_trial_raises_search_failed_and_keeps_artifacts(tmp_path, fast_settings):
    settings = fast_settings(max_trials=2, training={"learning_rate": 1e30})
    run_dir = RunDirectory.create(tmp_path, "doomed")
    with pytest.raises(SearchFailed, match="no trial completed") as caught:
        run_search(make_tiny_dataset("regression"), settings, run_dir=run_dir)
    assert "learning_rate" in caught.value.message
    lines = open(run_dir.file("trials.jsonl")).read().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["failed", "failed"]
    run_json = json.load(open(run_dir.file("run.json")))
    assert run_json["status"] == "failed" and run_json["best_trial"] is None
    assert not run_dir.file("best_model.keras").exists()


# --------------------------------------------------------------------------- no training below

def test_run_directory_is_unique_and_writes_atomically(tmp_path):
    dirs = [RunDirectory.create(tmp_path, "x") for _ in range(3)]
    assert [d.path.name for d in dirs] == ["x", "x-2", "x-3"]
    run_dir = dirs[0]
    run_dir.write_json("run.json", {"a": np.float32(1.5), "b": float("nan"), "c": np.arange(2), "d": (np.inf,)})
    run_dir.append_jsonl("trials.jsonl", {"v": np.float64(-np.inf)})
    run_dir.append_jsonl("trials.jsonl", {"v": 2})
    assert json.load(open(run_dir.file("run.json"))) == {"a": 1.5, "b": None, "c": [0, 1], "d": [None]}
    assert [json.loads(x) for x in open(run_dir.file("trials.jsonl"))] == [{"v": None}, {"v": 2}]
    assert sorted(os.listdir(run_dir.path)) == ["run.json", "trials.jsonl"]
    assert set(run_dir.paths()) == {"run.json", "trials.jsonl"}
    with pytest.raises(ValueError, match="plain folder name"):
        RunDirectory.create(tmp_path, "../escape")


def test_builtin_datasets_load_and_unknown_names_are_listed():
    assert {"digits", "breast_cancer", "wine", "iris", "diabetes", "synthetic_classification",
            "synthetic_regression"} == set(BUILTIN_DATASETS)
    assert load_builtin("iris").task == "multiclass" and load_builtin("breast_cancer").task == "binary"
    assert load_builtin("diabetes").task == "regression"
    a, b = load_builtin("synthetic_regression", seed=1), load_builtin("synthetic_regression", seed=1)
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, load_builtin("synthetic_regression", seed=2).x)
    assert load_builtin("synthetic_classification").task == "binary"
    with pytest.raises(DatasetError, match="digits"):
        load_builtin("mnist")


def test_device_description_and_a_missing_gpu():
    description = configure_device("auto")
    assert description.startswith(("cpu", "gpu:")) and "backend" in description
    if description.startswith("cpu"):
        with pytest.raises(SearchFailed, match="no GPU"):
            configure_device("gpu")
    with pytest.raises(ValueError, match="auto"):
        configure_device("tpu")
