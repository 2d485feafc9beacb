"""Request validation: the short and native search-space forms, error paths and messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cerebros_service import run_nas, validate
from cerebros_service.boundary.normalize import normalize
from cerebros_service.boundary.schema import build_settings, check_request
from cerebros_service.errors import InputError
from cerebros_service.settings import SearchSettings, SpaceSettings


def problems(result: dict) -> dict[str, str]:
    """{"spec.training.epochs": message, …} of a failed result."""
    assert result["status"] == "failed", result
    out = {}
    for detail in result["error_details"]:
        out[".".join(str(part) for part in detail["loc"])] = detail["message"]
    return out


def test_short_form_maps_onto_the_native_space():
    spec, opts = check_request(
        normalize({b"dataset_id": b"digits",
                   b"search_space": {b"layer_sizes": [32, 64, 128], b"activations": [b"relu", b"tanh"]}}),
        normalize({b"run_id": b"run-42"}, root="opts"),
    )
    space = spec.search_space.to_settings()
    assert space.neuron_choices == (32, 64, 128)
    assert (space.min_neurons, space.max_neurons) == (32, 128)
    assert space.activations == ("relu", "tanh")
    assert space.min_levels == SpaceSettings.min_levels  # the rest keeps the native defaults

    settings = build_settings(spec, opts, "val_accuracy")
    assert isinstance(settings, SearchSettings)
    assert settings.strategy == "random"  # the default: evolution did not beat it (docs/search.md)
    # no population given: derived, min(max_trials, 10) for random
    assert (settings.max_trials, settings.population_size) == (10, 10)
    # asked for, evolution's population is derived so that it breeds (10 trials // 3 generations)
    evolution = build_settings(spec.model_copy(update={"strategy": "evolution"}), opts, "val_accuracy")
    assert (evolution.strategy, evolution.population_size) == ("evolution", 3)
    assert (settings.mutation_rate, settings.crossover_rate, settings.elite_size) == (0.1, 0.7, 2)


def test_native_form_is_taken_as_is():
    native = {"min_levels": 2, "max_levels": 4, "min_units_per_level": 1, "max_units_per_level": 2,
              "min_neurons": 4, "max_neurons": 16, "activations": ["elu", "gelu"],
              "lateral_probability": 0.5, "dropout": 0.1}
    spec, _ = check_request({"dataset_id": "iris", "search_space": native}, {})
    space = spec.search_space.to_settings()
    for key, value in native.items():
        assert getattr(space, key) == (tuple(value) if isinstance(value, list) else value)
    assert space.neuron_choices is None


def test_three_mistakes_give_one_failed_result_naming_all_three_paths():
    result = validate(
        {"dataset_id": "digits", "training": {"epochs": 0}, "search_space": {"activations": ["relu", "nope"]}},
        {"parameters": {"mutation_rate": 1.5}},
    )
    found = problems(result)
    assert set(found) == {"spec.training.epochs", "spec.search_space.activations.1",
                          "opts.parameters.mutation_rate"}
    assert found["opts.parameters.mutation_rate"] == "must be in [0, 1], got 1.5"
    assert found["spec.training.epochs"] == "must be in [1, 10000], got 0"
    assert "'relu'" in found["spec.search_space.activations.1"]  # lists what is allowed
    assert result["error_type"] == "validation_error"
    for path in ("spec.training.epochs", "spec.search_space.activations[1]", "opts.parameters.mutation_rate"):
        assert path in result["error"]
    # run_nas gives the same answer, without starting a search
    assert problems(run_nas(*_same_three_mistakes())) == found


def _same_three_mistakes():
    return ({"dataset_id": "digits", "training": {"epochs": 0}, "search_space": {"activations": ["relu", "nope"]}},
            {"parameters": {"mutation_rate": 1.5}})


def test_unknown_keys_are_rejected_with_a_suggestion_at_every_level():
    found = problems(validate({"dataset_id": "iris", "trainig": {}, "training": {"epoch": 3}},
                              {"budget": {"max_trial": 3}, 7: "x"}))
    assert "did you mean 'training'" in found["spec.trainig"]
    assert "did you mean 'epochs'" in found["spec.training.epoch"]
    assert "allowed: epochs, batch_size" in found["spec.training.epoch"]
    assert "did you mean 'max_trials'" in found["opts.budget.max_trial"]
    assert "keys must be strings" in found["opts.7"]


def test_min_above_max_is_reported_on_the_max_field():
    found = problems(validate({"dataset_id": "iris",
                               "search_space": {"min_levels": 3, "max_levels": 2, "min_neurons": 9, "max_neurons": 8}}))
    assert found == {
        "spec.search_space.max_levels": "must be at least min_levels (3), got 2",
        "spec.search_space.max_neurons": "must be at least min_neurons (9), got 8",
    }


def test_layer_sizes_and_neuron_choices_together_are_ambiguous():
    found = problems(validate({"dataset_id": "iris", "search_space": {"layer_sizes": [8], "neuron_choices": [16]}}))
    assert list(found) == ["spec.search_space.layer_sizes"]


@pytest.mark.parametrize("spec, path", [
    ({}, "spec.dataset_id"),
    ({"dataset_id": "iris", "dataset": {"source": "builtin", "name": "iris"}}, "spec.dataset_id"),
    ({"dataset_id": "irsi"}, "spec.dataset_id"),
    ({"dataset": {"source": "zip", "path": "a"}}, "spec.dataset.source"),
    ({"dataset": {"path": "a.csv"}}, "spec.dataset.source"),
    ({"dataset": {"source": "csv", "path": "a.csv"}}, "spec.dataset.target"),
    ({"dataset": {"source": "csv", "path": "a.csv", "target": True}}, "spec.dataset.target"),
    ({"dataset": {"source": "inline", "x": [[1, 2], [3]], "y": [0, 1]}}, "spec.dataset.x.1"),
    ({"dataset": {"source": "inline", "x": [[1, "a"]], "y": [0]}}, "spec.dataset.x.0.1"),
    ({"dataset": {"source": "arrays", "x": [[1.0]], "y": np.zeros(1)}}, "spec.dataset.x"),
])
def test_data_source_mistakes_point_at_the_field(spec, path):
    assert path in problems(validate(spec))


def test_unknown_dataset_id_suggests_a_close_name():
    assert "did you mean 'iris'" in problems(validate({"dataset_id": "irsi"}))["spec.dataset_id"]


def test_objective_must_fit_a_task_given_up_front():
    found = problems(validate({"dataset_id": "diabetes", "task": "regression", "objective": "accuracy"}))
    assert "needs a classification task" in found["spec.objective"]
    assert "unknown objective" in problems(validate({"dataset_id": "iris", "objective": "f1"}))["spec.objective"]
    for objective in ("accuracy", "val_accuracy", "loss", "auc"):
        assert validate({"dataset_id": "iris", "objective": objective})["status"] == "valid"


def test_objective_that_does_not_fit_the_loaded_data_is_a_validation_error(monkeypatch, tmp_path):
    # diabetes is a regression task: known only once the data is loaded.
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path / "never"))
    result = run_nas({"dataset_id": "diabetes", "objective": "accuracy"}, {})
    assert result["error_type"] == "validation_error"
    assert "regression" in problems(result)["spec.objective"]
    assert not (tmp_path / "never").exists()  # refused before any run folder was made


def test_validation_is_strict_about_types_and_numbers():
    found = problems(validate(
        {"dataset_id": "iris", "training": {"epochs": "5", "learning_rate": float("nan"), "batch_size": True}},
        {"seed": 2**100, "budget": {"max_time_seconds": -1}, "on_event": "not callable"},
    ))
    assert found["spec.training.epochs"].startswith("must be an integer, got '5'")
    assert "finite" in found["spec.training.learning_rate"]
    assert found["spec.training.batch_size"].startswith("must be an integer, got True")
    assert "must be in [0, 4294967295]" in found["opts.seed"]
    assert found["opts.budget.max_time_seconds"] == "must be greater than 0, got -1"
    assert "callable" in found["opts.on_event"]


@pytest.mark.parametrize("run_id", ["..", ".", "a/b", "", "x" * 129, "caf\u00e9", "a b"])
def test_run_id_must_be_a_safe_folder_name(run_id):
    assert "opts.run_id" in problems(validate({"dataset_id": "iris"}, {"run_id": run_id}))


def test_run_id_is_generated_when_absent_and_kept_when_given():
    first = validate({"dataset_id": "iris"})["opts"]["run_id"]
    second = validate({"dataset_id": "iris"})["opts"]["run_id"]
    assert first != second and first.startswith("run-")
    assert validate({"dataset_id": "iris"}, {"run_id": "A-b_c.1"})["opts"]["run_id"] == "A-b_c.1"


def test_directories_default_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CEREBROS_ARTIFACTS_DIR", raising=False)
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    opts = validate({"dataset_id": "iris"})["opts"]
    assert opts["artifacts_dir"] == str((tmp_path / "runs").resolve())
    assert opts["data_root"] == str(tmp_path.resolve())
    monkeypatch.delenv("CEREBROS_ARTIFACTS_ROOT")
    monkeypatch.delenv("CEREBROS_DATA_ROOT")
    monkeypatch.chdir(tmp_path)
    opts = validate({"dataset_id": "iris"})["opts"]
    assert opts["artifacts_dir"] == str((tmp_path / "cerebros_runs").resolve())
    assert opts["data_root"] is None  # no data root: no file can be read


def test_elite_size_cannot_exceed_the_population():
    found = problems(validate({"dataset_id": "iris"}, {"budget": {"population_size": 3}, "parameters": {"elite_size": 4}}))
    assert found == {"opts.parameters.elite_size": "must not exceed budget.population_size (3), got 4"}


def test_valid_answer_is_json_and_keeps_arrays_out_of_it():
    x = np.zeros((10, 3))
    result = validate({"dataset": {"source": "arrays", "x": x, "y": np.arange(10) % 2}},
                      {"on_event": print, "notify": object()})
    assert result["status"] == "valid"
    assert result["spec"]["dataset"]["x"] == {"shape": [10, 3], "dtype": "float64"}
    assert "on_event" not in result["opts"] and "notify" not in result["opts"]
    json.dumps(result, allow_nan=False)


def test_spec_and_opts_of_the_wrong_type():
    found = problems(validate("digits", [1, 2]))
    assert set(found) == {"spec", "opts"}
    assert "object" in found["spec"]


def test_validation_does_not_import_tensorflow():
    code = ("import sys, cerebros_service as c\n"
            "r = c.validate({'dataset_id': 'digits', 'search_space': {'layer_sizes': [8]}})\n"
            "assert r['status'] == 'valid', r\n"
            "r = c.validate({'dataset_id': 'nope'})\n"
            "assert r['status'] == 'failed', r\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_check_request_raises_input_error_with_every_detail():
    with pytest.raises(InputError) as caught:
        check_request({"dataset_id": 5}, {"device": "tpu"})
    assert [d.loc for d in caught.value.details] == [("spec", "dataset_id"), ("opts", "device")]
    assert "must be one of 'auto', 'cpu' or 'gpu', got 'tpu'" in caught.value.message


def test_default_elite_shrinks_to_a_tiny_population():
    spec, opts = check_request({"dataset_id": "iris"}, {"budget": {"population_size": 1}})
    assert build_settings(spec, opts, "val_accuracy").elite_size == 1


def test_searched_learning_rates_are_taken_checked_and_give_way_to_a_fixed_rate():
    spec, opts = check_request({"dataset_id": "iris", "search_space": {"learning_rates": [0.001, 0.01, 0.001]}}, {})
    assert build_settings(spec, opts, "val_accuracy").space.learning_rates == (0.001, 0.01)  # repeats dropped
    found = problems(validate({"dataset_id": "iris", "search_space": {"learning_rates": [0.001, 0, 20]}}))
    assert set(found) == {"spec.search_space.learning_rates.1", "spec.search_space.learning_rates.2"}
    assert "spec.search_space.learning_rates" in problems(validate({"dataset_id": "iris",
                                                                    "search_space": {"learning_rates": []}}))
    # A request that fixes training.learning_rate trains every trial at it, whatever the default space searches,
    fixed, opts = check_request({"dataset_id": "iris", "training": {"learning_rate": 0.003}}, {})
    settings = build_settings(fixed, opts, "val_accuracy")
    assert (settings.space.learning_rates, settings.training.learning_rate) == (None, 0.003)
    # unless it also names the rates to search.
    both, opts = check_request({"dataset_id": "iris", "training": {"learning_rate": 0.003},
                                "search_space": {"learning_rates": [0.002, 0.004]}}, {})
    assert build_settings(both, opts, "val_accuracy").space.learning_rates == (0.002, 0.004)
    default, opts = check_request({"dataset_id": "iris"}, {})
    assert build_settings(default, opts, "val_accuracy").space.learning_rates == SpaceSettings.learning_rates
