"""The delivered model is an ensemble of the best trials (search/ensemble.py, run.py's deliver_ensemble)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from conftest import required

from cerebros_service.search.ensemble import MemberPool, combine, select_members
from cerebros_service.search.records import TrialRecord
from cerebros_service.settings import EnsembleSettings

# ----------------------------------------------------------------------------- selection (numpy)


def _stack(*columns) -> np.ndarray:
    """(rows, candidates, 1) from one array of outputs per candidate."""
    return np.stack([np.asarray(c, dtype=np.float64).reshape(-1, 1) for c in columns], axis=1)


def test_average_takes_the_best_ranked_finite_candidates_with_equal_weights():
    y = np.zeros(8)
    predictions = _stack(y + 1, np.full(8, np.nan), y - 1, y + 2, y + 5)
    chosen = select_members("regression", y, predictions, method="average", size=3)
    assert [k for k, _ in chosen] == [0, 2, 3]  # ranking order, the NaN candidate skipped
    assert [w for _, w in chosen] == pytest.approx([1 / 3] * 3)


def test_greedy_adds_with_replacement_the_member_that_lowers_the_validation_loss_most():
    y = np.zeros(8)
    # warm start: the best three (mean error +1); then adding -1 gives +0.5, adding +1 gives +1,
    # adding +3 gives +1.5: the second candidate is picked again.
    predictions = _stack(y + 1, y - 1, y + 3, np.full(8, np.inf))
    chosen = dict(select_members("regression", y, predictions, method="greedy", size=4))
    assert chosen == pytest.approx({0: 0.25, 1: 0.5, 2: 0.25})
    assert sum(chosen.values()) == pytest.approx(1.0)
    np.testing.assert_allclose(combine(predictions[:, :3], list(chosen.items()))[:, 0], 0.5)


def test_greedy_on_the_loss_breaks_ties_of_accuracy_and_equal_losses_go_to_the_better_ranked():
    y = np.array([0, 1, 1, 0, 1, 0])
    sure = np.where(y == 1, 0.9, 0.1)  # every candidate is 100% accurate; losses differ
    unsure = np.where(y == 1, 0.6, 0.4)
    predictions = _stack(unsure, unsure, sure, sure)
    chosen = dict(select_members("binary", y, predictions, method="greedy", size=3 + 5))
    assert chosen[2] > chosen[0] and 3 not in chosen  # the surer twin ranked first gets every pick
    assert sum(chosen.values()) == pytest.approx(1.0)


def test_no_usable_candidate_gives_no_member_and_bad_arguments_are_refused():
    y = np.zeros(4)
    assert select_members("regression", y, _stack(np.full(4, np.nan)), method="average", size=5) == []
    assert select_members("regression", y, _stack(np.full(4, np.nan)), method="greedy", size=5) == []
    with pytest.raises(ValueError, match="method"):
        select_members("regression", y, _stack(y), method="best", size=1)


def test_multiclass_probabilities_are_averaged_and_stay_probabilities():
    y = np.array([0, 1, 2, 1])
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(4, 5))  # (rows, candidates, classes)
    chosen = select_members("multiclass", y, p, method="greedy", size=6)
    np.testing.assert_allclose(combine(p, chosen).sum(axis=1), 1.0)


def _record(trial: int, value, weights=True, status="completed", val_loss=None) -> TrialRecord:
    return TrialRecord(trial=trial, generation=0, status=status, architecture={}, metric="val_accuracy",
                       value=value, best_epoch=1, epochs_run=1, duration_s=0.1, first_epoch_s=0.1, params=1,
                       history={"val_loss": [val_loss]}, weights={"head": [np.zeros(1)]} if weights else None)


def test_the_pool_keeps_the_best_trials_weights_ties_by_validation_loss_then_the_earlier_trial():
    pool = MemberPool(4, "max")
    for record in (_record(0, 0.8), _record(1, 0.9, val_loss=0.3), _record(2, 0.9, val_loss=0.2),
                   _record(3, 0.95), _record(4, None, status="failed"), _record(5, 0.99, weights=False),
                   _record(6, 0.5), _record(7, float("nan")), _record(8, 0.9, val_loss=0.2)):
        pool.offer(record)
    # 2 and 8 tie on value and loss: the earlier first; 1's higher loss puts it after both
    assert [r.trial for r in pool.records] == [3, 2, 8, 1]
    assert MemberPool(0, "max").offer(_record(9, 1.0)) is False


# ----------------------------------------------------------------------------- end to end


def _fresh_process_outputs(model_path, x) -> np.ndarray:
    code = ("import sys, json, numpy as np, keras\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "print(json.dumps(np.asarray(m.predict_on_batch(np.asarray(json.loads(sys.argv[2]), "
            "dtype='float32'))).tolist()))\n")
    done = subprocess.run([sys.executable, "-c", code, str(model_path), json.dumps(np.asarray(x).tolist())],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.asarray(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def ensemble_search(tmp_path_factory):
    """A 6-trial search on a tiny multiclass set with a test split: the ensemble of its best 4."""
    from conftest import make_tiny_dataset, tiny_space, tiny_training

    from cerebros_service.artifacts import RunDirectory
    from cerebros_service.run import plan_evaluation, run_search
    from cerebros_service.settings import EvaluationSettings, SearchSettings

    dataset = make_tiny_dataset("multiclass", n=200)
    settings = SearchSettings(max_trials=6, population_size=6, space=tiny_space(),
                              training=tiny_training(epochs=3), evaluation=EvaluationSettings(test_split=0.2),
                              ensemble=EnsembleSettings(size=4, method="average"))
    run_dir = RunDirectory.create(tmp_path_factory.mktemp("ensemble"), "run")
    outcome = run_search(dataset, settings, run_dir=run_dir)
    _, held_out = plan_evaluation(dataset, settings, None)
    return {"outcome": outcome, "run_dir": run_dir.path, "dataset": dataset, "test_x": held_out.x}


def test_the_saved_ensemble_reproduces_its_members_average_in_a_fresh_process(ensemble_search):
    outcome, run_dir = ensemble_search["outcome"], ensemble_search["run_dir"]
    ensemble = outcome.ensemble
    members = ensemble["members"]
    assert len(members) == 4 and sum(m["weight"] for m in members) == pytest.approx(1.0)
    values = {t.trial: t.value for t in outcome.trials}
    assert values[members[0]["trial"]] == outcome.best.value  # a trial of the best value comes first
    pool = outcome.ensemble_pool
    chosen = [(pool.trials.index(m["trial"]), m["weight"]) for m in members]
    # the members' outputs on the held-out rows, averaged with the members' weights
    expected = combine(pool.test, chosen)
    assert ensemble["test"]["rows"] == len(expected) > 0
    outputs = _fresh_process_outputs(run_dir / "best_model.keras", ensemble_search["test_x"])
    assert outputs.shape == expected.shape == (len(expected), 3)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
    # the delivered model's test score is the ensemble's, the single best's is kept beside it
    assert outcome.test_metric == ensemble["test_metric"]
    assert ensemble["single_best"]["test_metric"] == outcome.evaluation["test_metric"]
    assert (run_dir / "best_single_model.keras").is_file()
    assert outcome.best.model_path == str(run_dir / "best_single_model.keras")
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["delivered_model"] == "ensemble" and run_json["ensemble"]["members"] == members
    assert run_json["test_metric"] == outcome.test_metric


def test_the_saved_ensemble_equals_the_weighted_average_of_its_members(ensemble_search):
    import keras

    outcome, run_dir, dataset = (ensemble_search[k] for k in ("outcome", "run_dir", "dataset"))
    model = keras.saving.load_model(run_dir / "best_model.keras")
    x = dataset.x[:40].astype(np.float32)
    got = np.asarray(model.predict_on_batch(x))
    members = outcome.ensemble["members"]
    parts = [np.asarray(model.get_layer(f"trial_{m['trial']}").predict_on_batch(x)) * m["weight"]
             for m in members]
    np.testing.assert_allclose(got, np.sum(parts, axis=0), atol=1e-5)
    # and the nested single best is the saved single best
    single = keras.saving.load_model(run_dir / "best_single_model.keras")
    np.testing.assert_allclose(np.asarray(model.get_layer(f"trial_{outcome.best.trial}").predict_on_batch(x)),
                               np.asarray(single.predict_on_batch(x)), atol=1e-5)


def test_the_ensemble_exports_to_onnx_with_sample_rows_from_the_nested_normalization(ensemble_search):
    required("tf2onnx")
    import keras

    from cerebros_service import onnx_export

    run_dir, dataset = ensemble_search["run_dir"], ensemble_search["dataset"]
    model = keras.saving.load_model(run_dir / "best_model.keras")
    rows = onnx_export.sample_rows(model, 2000)
    np.testing.assert_allclose(rows.mean(axis=0), dataset.x.mean(axis=0), atol=0.5)  # off-centre data
    record = onnx_export.export_onnx(run_dir)
    assert record["status"] == "done", record
    assert record["max_abs_diff"] <= 1e-4


def test_ensemble_false_delivers_the_single_best_as_before(tiny_dataset, fast_settings, tmp_path):
    from cerebros_service.artifacts import RunDirectory
    from cerebros_service.run import run_search
    from cerebros_service.settings import EvaluationSettings

    settings = fast_settings(max_trials=3, population_size=3, evaluation=EvaluationSettings(test_split=0.2),
                             ensemble=EnsembleSettings(enabled=False))
    run_dir = RunDirectory.create(tmp_path, "run")
    outcome = run_search(tiny_dataset("binary", n=150), settings, run_dir=run_dir)
    assert outcome.ensemble is None and outcome.ensemble_pool is None
    assert outcome.test_metric == outcome.evaluation["test_metric"]
    assert (run_dir.path / "best_model.keras").is_file()
    assert not (run_dir.path / "best_single_model.keras").exists()
    assert json.loads((run_dir.path / "run.json").read_text())["delivered_model"] == "single_best"


def test_a_member_with_non_finite_outputs_is_never_picked(tiny_dataset, fast_settings):
    """A pooled trial whose weights give NaN (as a diverged trial's would) is left out."""
    from cerebros_service.search import ensemble as ensembles
    from cerebros_service.search.train import make_training_data

    dataset = tiny_dataset("regression", n=80)
    data = make_training_data(dataset, np.arange(60), np.arange(60, 80))
    from cerebros_service.search.build import initial_weights
    from cerebros_service.search.space import sample_architecture
    from cerebros_service.settings import SpaceSettings

    rng = np.random.default_rng(0)
    records = []
    for trial in range(3):
        arch = sample_architecture(SpaceSettings(min_levels=1, max_levels=1, max_units_per_level=1,
                                                 min_neurons=4, max_neurons=4), data.input_dim, 1, rng)
        weights = initial_weights(arch, 1, seed=trial)
        if trial == 0:
            weights = {name: [np.full_like(w, np.nan) for w in values] for name, values in weights.items()}
        records.append(replace(_record(trial, 1.0 - trial / 10), architecture=arch, weights=weights))
    built = ensembles.build_ensemble(records, data, None, EnsembleSettings(size=3, method="average"))
    assert [m.trial for m in built.members] == [1, 2]
    assert np.isfinite(built.validation_outputs).all()


def test_the_request_knobs_are_checked_and_reach_the_settings():
    from cerebros_service import validate
    from cerebros_service.boundary.schema import build_settings, check_request

    spec = {"dataset_id": "iris"}
    assert validate(spec, {"ensemble": {"size": 5, "method": "greedy"}})["status"] == "valid"
    bad = validate(spec, {"ensemble": {"size": 0, "method": "best"}})
    assert bad["status"] == "failed" and bad["error_type"] == "validation_error"
    locs = {tuple(d["loc"]) for d in bad["error_details"]}
    assert ("opts", "ensemble", "size") in locs and ("opts", "ensemble", "method") in locs
    checked_spec, opts = check_request(spec, {"ensemble": False})
    assert build_settings(checked_spec, opts, "val_accuracy").ensemble.enabled is False
    checked_spec, opts = check_request(spec, {"ensemble": {"size": 7}})
    assert build_settings(checked_spec, opts, "val_accuracy").ensemble == EnsembleSettings(size=7)
