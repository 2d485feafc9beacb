"""run_nas end to end: the calling application's request as Pythonx sends it, events, failures."""

from __future__ import annotations

import ast
import csv
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import cerebros_service
from cerebros_service import run_nas

RECORDING = Path(__file__).parent / "data" / "pythonx-encoding.tsv"

SUCCESS_KEYS = {"status", "run_id", "best_model", "best_architecture", "best_metric", "test_metric", "evaluation",
                "delivered_model", "ensemble", "metric",
                "direction", "completed_trials", "failed_trials", "population_history", "trials",
                "artifacts", "metadata", "after_run"}
FAILURE_KEYS = {"status", "error", "error_type", "error_details", "run_id", "completed_trials", "metadata"}


@pytest.fixture(autouse=True)
def _operator_roots(tmp_path, monkeypatch):
    """Each test's tmp_path is the operator's artifacts root (opts.artifacts_dir may name it)."""
    monkeypatch.delenv("CEREBROS_ARTIFACTS_DIR", raising=False)
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))


def recorded(case: str):
    """The exact Python value Pythonx produced for a recorded case (bytes everywhere)."""
    with open(RECORDING, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["case"] == case:
                return ast.literal_eval(row["python_repr_or_elixir_decoded"])
    raise KeyError(case)


def assert_plain(value) -> None:
    assert type(value) in (dict, list, str, int, float, bool, type(None)), type(value)
    if isinstance(value, float):
        assert math.isfinite(value)
    if isinstance(value, dict):
        assert all(type(k) is str for k in value)
        for item in value.values():
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)


@pytest.fixture
def fake_pythonx(monkeypatch):
    """Stands in for the module that exists only inside a Pythonx interpreter."""
    module = types.ModuleType("pythonx")
    module.sent = []
    module.send_tagged_object = lambda pid, tag, obj: module.sent.append((pid, tag, obj))
    monkeypatch.setitem(sys.modules, "pythonx", module)
    return module


def test_thunderline_request_as_pythonx_sends_it(tmp_path, fake_pythonx):
    spec = recorded("thunderline_spec")
    opts = recorded("thunderline_opts")
    assert isinstance(next(iter(spec)), bytes)  # really the Pythonx shape
    # A tiny training budget on top of the recorded request (bytes keys, like Pythonx's).
    spec[b"training"] = {b"epochs": 1, b"batch_size": 64}
    spec[b"search_space"][b"layer_sizes"] = [8, 16]
    opts[b"budget"].update({b"max_trials": 2, b"population_size": 2})
    opts[b"artifacts_dir"] = str(tmp_path).encode()
    pid = object()  # a pythonx.PID stand-in: any object
    opts[b"notify"] = pid

    result = run_nas(spec, opts)

    assert result["status"] == "success", result
    assert set(result) == SUCCESS_KEYS
    json.dumps(result, allow_nan=False)
    assert_plain(result)
    assert result["run_id"] == "run-42"
    assert result["best_architecture"] == result["best_model"]
    assert result["best_architecture"]["fitness"] == result["best_metric"]
    assert 0.0 <= result["best_metric"] <= 1.0
    assert (result["metric"], result["direction"]) == ("val_accuracy", "max")
    assert result["completed_trials"] + result["failed_trials"] == 2 == len(result["trials"])
    for level in result["best_architecture"]["levels"][:-1]:
        for unit in level["units"]:
            assert unit["neurons"] in (8, 16) and unit["activation"] in ("relu", "tanh")
    history = result["population_history"]
    assert history and set(history[0]) == {"generation", "best_fitness", "mean_fitness", "std_fitness",
                                           "population_size"}
    artifacts = result["artifacts"]
    for name in ("best_model", "best_architecture", "population_history", "trials", "run", "run_dir"):
        assert Path(artifacts[name]).is_absolute() and Path(artifacts[name]).exists(), name
    assert Path(artifacts["run_dir"]).parent == tmp_path
    metadata = result["metadata"]
    assert metadata["dataset_id"] == "digits" and metadata["objective"] == "accuracy"
    assert metadata["ga_params"] == {"population_size": 2, "mutation_rate": 0.1, "crossover_rate": 0.7,
                                     "elite_size": 2, "max_trials": 2, "max_time_seconds": 300}
    assert metadata["seed"] == 0 and metadata["timestamp"].endswith("Z")
    assert metadata["duration_s"] > 0 and metadata["device"]
    assert metadata["versions"]["tensorflow"] and metadata["versions"]["cerebros-service"]

    # notify: every event went to the PID, tagged, carrying the run_id, as plain data
    assert fake_pythonx.sent
    assert all(sent_pid is pid and tag == "cerebros_event" for sent_pid, tag, _ in fake_pythonx.sent)
    events = [event for _, _, event in fake_pythonx.sent]
    assert {event["type"] for event in events} == {"trial", "generation"}
    assert all(event["run_id"] == "run-42" for event in events)
    for event in events:
        assert_plain(event)


def test_a_pythonx_event_carries_the_reference_pythonx_will_release(fake_pythonx):
    from cerebros_service.events import pythonx_sender

    pythonx_sender(object())({"type": "trial"})
    control = {"type": "trial"}
    fake_pythonx.sent.append((None, None, control))
    del control
    (_, _, sent), (_, _, held) = fake_pythonx.sent
    assert sys.getrefcount(sent) - sys.getrefcount(held) == 1


def test_numpy_arrays_and_on_event_callable(tmp_path, monkeypatch):
    import cerebros_service.run as engine

    seen = {}
    real_run_search = engine.run_search

    def spy(dataset, settings, **kwargs):
        seen["dataset"], seen["settings"] = dataset, settings
        return real_run_search(dataset, settings, **kwargs)

    monkeypatch.setattr(engine, "run_search", spy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    events: list[dict] = []
    result = run_nas(
        {"dataset": {"source": "arrays", "x": x, "y": y}, "strategy": "random",
         "search_space": {"max_levels": 1, "max_units_per_level": 1, "min_neurons": 4, "max_neurons": 8},
         "training": {"epochs": 1}},
        {"seed": 3, "budget": {"max_trials": 2, "population_size": 1}, "parameters": {"elite_size": 0},
         "artifacts_dir": str(tmp_path), "on_event": events.append, "run_id": "arrays"},
    )
    assert result["status"] == "success", result
    assert np.shares_memory(seen["dataset"].x, x)  # zero-copy up to the search
    assert seen["settings"].seed == 3 and seen["settings"].strategy == "random"
    trial_events = [e for e in events if e["type"] == "trial"]
    generation_events = [e for e in events if e["type"] == "generation"]
    assert [e["trial"] for e in trial_events] == [0, 1]
    assert [e["generation"] for e in generation_events] == [0, 1]
    assert all(e["run_id"] == "arrays" for e in events)
    assert result["metadata"]["dataset_id"] == "arrays"


def test_a_broken_listener_does_not_stop_the_search(tmp_path):
    def explode(event):
        raise RuntimeError("listener bug")

    result = run_nas({"dataset_id": "iris", "training": {"epochs": 1},
                      "search_space": {"max_levels": 1, "max_units_per_level": 1}},
                     {"budget": {"max_trials": 1, "population_size": 1}, "parameters": {"elite_size": 0},
                      "artifacts_dir": str(tmp_path), "on_event": explode})
    assert result["status"] == "success"


# --------------------------------------------------------------------------- failures


def assert_failure(result: dict, error_type: str) -> None:
    assert result["status"] == "failed", result
    assert set(result) == FAILURE_KEYS
    assert result["error_type"] == error_type == result["metadata"]["error_type"]
    assert result["error"] and result["error_details"]
    json.dumps(result, allow_nan=False)
    assert_plain(result)


def test_validation_failure_keeps_the_callers_run_id():
    result = run_nas({b"dataset_id": b"digits", b"training": {b"epochs": -1}}, {b"run_id": b"run-7"})
    assert_failure(result, "validation_error")
    assert result["run_id"] == "run-7" and result["completed_trials"] == 0
    assert result["error_details"][0]["loc"] == ["spec", "training", "epochs"]


def test_dataset_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    result = run_nas({"dataset": {"source": "csv", "path": "missing.csv", "target": "y"}},
                     {"data_root": str(tmp_path), "artifacts_dir": str(tmp_path)})
    assert_failure(result, "dataset_error")
    assert "missing.csv" in result["error"]


def test_targets_that_overflow_float32_are_a_dataset_error_not_a_search_failure(tmp_path):
    # Targets near 1e30 square past float32's range: refused before any trial, not trained on.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).tolist()
    y = (rng.normal(size=40) * 1e30).tolist()
    result = run_nas(
        {"dataset": {"source": "inline", "x": x, "y": y}, "task": "regression",
         "training": {"epochs": 1}},
        {"artifacts_dir": str(tmp_path), "run_id": "r1",
         "budget": {"max_trials": 2, "population_size": 2}},
    )
    assert_failure(result, "dataset_error")
    assert "learning_rate" not in result["error"] and "rescale y" in result["error"]
    assert result["error_details"][0]["loc"] == ["spec", "dataset", "y"]
    assert result["run_id"] == "r1" and not (tmp_path / "r1").exists()


def test_every_trial_failing_is_a_search_failure(tmp_path):
    # Sound data, but a learning rate of 10 through exponential units drives every loss to NaN.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).tolist()
    y = (rng.normal(size=40) * 1e3).tolist()
    result = run_nas(
        {"dataset": {"source": "inline", "x": x, "y": y}, "task": "regression",
         "search_space": {"activations": ["exponential"], "min_neurons": 64, "max_neurons": 64},
         "training": {"epochs": 3, "learning_rate": 10}},
        {"artifacts_dir": str(tmp_path), "run_id": "r1",
         "budget": {"max_trials": 2, "population_size": 2}},
    )
    assert_failure(result, "search_failed")
    assert "2 ran" in result["error"] and result["run_id"] == "r1"
    run_dir = tmp_path / "r1"
    assert len((run_dir / "trials.jsonl").read_text().splitlines()) == 2  # nothing done is lost


class _HostileArray(np.ndarray):
    """A caller's array whose indexing breaks in a way no check anticipates."""

    def __getitem__(self, key):
        raise KeyError("hostile indexing")


def test_an_unexpected_exception_becomes_internal_error(tmp_path, caplog):
    x = np.zeros((20, 3), dtype=np.float32).view(_HostileArray)
    y = np.arange(20) % 2
    with caplog.at_level("ERROR"):
        result = run_nas({"dataset": {"source": "arrays", "x": x, "y": y}, "training": {"epochs": 1}},
                         {"artifacts_dir": str(tmp_path), "run_id": "r2"})
    assert_failure(result, "internal_error")
    assert "KeyError" in result["error"] and result["run_id"] == "r2"
    assert "Traceback" in caplog.text


@pytest.mark.parametrize("spec, opts", [
    (None, None), (object(), 42), ("digits", "opts"), ({b"\xff": 1}, {b"run_id": b"\xfe"}),
    ({"dataset_id": ["digits"]}, {"budget": None}), ({"dataset_id": "digits"}, {"on_event": 1}),
])
def test_run_nas_never_raises_on_garbage(spec, opts):
    assert_failure(run_nas(spec, opts), "validation_error")


def test_import_does_not_load_tensorflow_and_exports_the_api():
    code = ("import sys, cerebros_service as c\n"
            "names = [c.run_nas, c.validate, c.register_dataset, c.unregister_dataset, c.list_datasets,"
            " c.json_safe, c.scrub, c.__version__]\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(cerebros_service.__all__) >= {"run_nas", "validate", "register_dataset", "unregister_dataset",
                                             "list_datasets", "json_safe", "scrub", "__version__"}
