"""predict(run, x, opts): the user's labels and units, every input form, clear failures, the model cache."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import required
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cerebros_service
from cerebros_service.prediction import clear_model_cache, model_cache_info


def keras_outputs(run_dir, x) -> np.ndarray:
    import keras

    model = keras.saving.load_model(run_dir / "best_model.keras", compile=False)
    return np.asarray(model.predict(np.asarray(x, dtype="float32"), verbose=0))


def test_classification_speaks_the_users_labels(labelled_run, after_root):
    x = labelled_run["x"][::10]
    answer = cerebros_service.predict("iris-labelled", x.tolist())
    assert answer["status"] == "success" and answer["run_id"] == "iris-labelled"
    assert answer["task"] == "multiclass" and answer["n_samples"] == len(x)
    assert answer["classes"] == ["setosa", "versicolor", "virginica"]
    probabilities = np.array(answer["probabilities"])
    assert probabilities.shape == (len(x), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the saved Keras model's numbers (to the ONNX export's verified 1e-4), labels from their argmax
    np.testing.assert_allclose(probabilities, keras_outputs(labelled_run["run_dir"], x), atol=1e-4)
    assert answer["predictions"] == [answer["classes"][i] for i in probabilities.argmax(axis=1)]
    json.dumps(answer, allow_nan=False)


def test_both_engines_agree_and_keras_is_exact(labelled_run, after_root):
    x = labelled_run["x"][::7].tolist()
    by_keras = cerebros_service.predict("iris-labelled", x, {"engine": "keras"})
    assert by_keras["engine"] == "keras"
    np.testing.assert_allclose(by_keras["probabilities"], keras_outputs(labelled_run["run_dir"], x), atol=1e-6)
    by_default = cerebros_service.predict("iris-labelled", x)
    expected_engine = "onnx" if importlib.util.find_spec("onnxruntime") else "keras"
    assert by_default["engine"] == expected_engine
    np.testing.assert_allclose(by_default["probabilities"], by_keras["probabilities"], atol=1e-4)
    assert by_default["predictions"] == by_keras["predictions"]


def test_the_onnx_engine_never_imports_tensorflow(labelled_run, after_root):
    required("onnxruntime")
    code = ("import sys, cerebros_service\n"
            "answer = cerebros_service.predict('iris-labelled', [[5.1, 3.5, 1.4, 0.2]], {'engine': 'onnx'})\n"
            "print(answer['status'], answer['predictions'][0], 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CEREBROS_ARTIFACTS_ROOT": str(after_root)})
    assert done.stdout.split() == ["success", "setosa", "False", "False"], done.stderr[-2000:]


def test_the_onnx_engine_needs_an_onnx_model(labelled_run, after_root):
    copy = after_root / "keras-only"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(labelled_run["run_dir"], copy)
    (copy / "best_model.onnx").unlink()
    try:
        assert cerebros_service.predict("keras-only", [[5.1, 3.5, 1.4, 0.2]])["engine"] == "keras"
        refused = cerebros_service.predict("keras-only", [[5.1, 3.5, 1.4, 0.2]], {"engine": "onnx"})
        assert refused["error_details"][0]["loc"] == ["opts", "engine"] and "no best_model.onnx" in refused["error"]
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_regression_predicts_in_the_targets_units(regression_run, after_root):
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    answer = cerebros_service.predict(regression_run["run_dir"], data.data[:20])
    assert answer["status"] == "success" and answer["task"] == "regression"
    assert "classes" not in answer and "probabilities" not in answer
    predictions = np.array(answer["predictions"])
    np.testing.assert_allclose(predictions, keras_outputs(regression_run["run_dir"], data.data[:20]).ravel(),
                               rtol=1e-4)
    # the model rescales to the target: the disease-progression scale (25..346), not a standardized one
    assert 25 < predictions.mean() < 346


def test_every_input_form_gives_the_same_answer(labelled_run, after_root, tmp_path, monkeypatch):
    x = labelled_run["x"][:6]
    names = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
    # ("a,b,c,d" below are not these names: the CSV's columns go by position, the target dropped)
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    # a CSV with the target column and the features in another order: matched by name when
    # the run recorded feature names; inline data has none, so columns go by position
    (tmp_path / "rows.csv").write_text("a,b,c,d,species\n" + "".join(
        ",".join(map(str, row)) + ",setosa\n" for row in x))
    np.savez(tmp_path / "rows.npz", x=x)
    cerebros_service.register_dataset("after-predict-rows", x, np.array([0, 1, 2, 0, 1, 2]), replace=True)
    try:
        forms = {
            "rows": x.tolist(),
            "numpy": x,
            "inline": {"source": "inline", "x": x.tolist()},
            "arrays": {"source": "arrays", "x": x},
            "csv": {"source": "csv", "path": "rows.csv", "target": "species"},
            "npz": {"source": "npz", "path": "rows.npz"},
            "registered": {"source": "registered", "name": "after-predict-rows"},
        }
        answers = {name: cerebros_service.predict("iris-labelled", form) for name, form in forms.items()}
    finally:
        cerebros_service.unregister_dataset("after-predict-rows")
    reference = answers["rows"]
    for name, answer in answers.items():
        assert answer["status"] == "success", (name, answer)
        assert answer["predictions"] == reference["predictions"], name
        np.testing.assert_allclose(answer["probabilities"], reference["probabilities"], atol=1e-6, err_msg=name)
    # records need feature names, which inline training data does not have
    records = cerebros_service.predict("iris-labelled", [dict(zip(names, row)) for row in x.tolist()])
    assert records["status"] == "failed" and "no feature names" in records["error"]


def test_records_and_csv_columns_are_matched_by_feature_name(regression_run, after_root, tmp_path, monkeypatch):
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    names = list(data.feature_names)
    rows = data.data[:4]
    by_rows = cerebros_service.predict("diabetes-regression", rows.tolist())
    records = [dict(reversed(list(zip(names, row)))) for row in rows.tolist()]  # keys in another order
    assert cerebros_service.predict("diabetes-regression", records)["predictions"] == by_rows["predictions"]

    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    shuffled = names[::-1]
    lines = ["id," + ",".join(shuffled)] + [
        f"{i}," + ",".join(str(dict(zip(names, row))[n]) for n in shuffled) for i, row in enumerate(rows.tolist())]
    (tmp_path / "diabetes.csv").write_text("\n".join(lines) + "\n")
    by_csv = cerebros_service.predict("diabetes-regression", {"source": "csv", "path": "diabetes.csv"})
    np.testing.assert_allclose(by_csv["predictions"], by_rows["predictions"], rtol=1e-6)

    typo = cerebros_service.predict("diabetes-regression", [{**records[0], "bmj": 0.1}])
    assert typo["error_details"][0]["loc"] == ["x", 0, "bmj"]
    assert "is not a feature of this model; its features: 'age', 'sex'" in typo["error_details"][0]["message"]


@pytest.mark.parametrize("x, loc, words", [
    ([[1.0, 2.0, 3.0]], ["x", 0], "the model takes 4"),
    ([[1.0, 2.0, 3.0, "a"]], ["x", 0, 3], "must be a number"),
    ([[1.0, 2.0, float("nan"), 4.0]], ["x", 0, 2], "finite"),
    ([1.0, 2.0, 3.0, 4.0], ["x", 0], "wrap a single sample"),
    ([], ["x"], "no samples"),
    (np.zeros((2, 5)), ["x"], "takes 4"),
    (np.array([["a", "b", "c", "d"]]), ["x"], "real numbers"),
    ({"source": "parquet", "path": "x"}, ["x", "source"], "must be one of"),
    ({"source": "csv"}, ["x", "path"], "is required"),
    ({"source": "inline", "x": [[1, 2, 3, 4]], "extra": 1}, ["x", "extra"], "not a key"),
    ({"source": "csv", "path": "../../etc/passwd"}, None, "outside the data root"),
    ("just text", ["x"], "must be a list of rows"),
])
def test_bad_input_gets_a_failed_result_naming_where(labelled_run, after_root, tmp_path, monkeypatch, x, loc, words):
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    answer = cerebros_service.predict("iris-labelled", x)
    assert answer["status"] == "failed" and answer["error_type"] in ("validation_error", "dataset_error")
    assert words in answer["error"], answer["error"]
    if loc is not None:
        assert answer["error_details"][0]["loc"] == loc
    json.dumps(answer, allow_nan=False)


def test_runs_are_found_only_under_the_artifacts_root(labelled_run, after_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    os.symlink(outside, after_root / "linked-out")
    try:
        cases = {
            "no-such-run": "no run 'no-such-run'",
            "iris-labeled": "did you mean 'iris-labelled'",
            "../iris-labelled": "not a run folder under the artifacts root",
            str(outside): "not a run folder under the artifacts root",
            "linked-out": "not a run folder under the artifacts root",
            "": "empty",
        }
        for run, words in cases.items():
            answer = cerebros_service.predict(run, [[1, 2, 3, 4]])
            assert answer["status"] == "failed" and answer["error_type"] == "validation_error", run
            assert words in answer["error"], (run, answer["error"])
            assert answer["error_details"][0]["loc"] == ["run"]
        assert cerebros_service.predict(42, [[1, 2, 3, 4]])["error_type"] == "validation_error"
        # a run folder given by its path works when it is under the root
        assert cerebros_service.predict(str(labelled_run["run_dir"]), [[5.1, 3.5, 1.4, 0.2]])["status"] == "success"
    finally:
        (after_root / "linked-out").unlink()


def test_bad_opts_and_a_run_without_a_model(labelled_run, after_root):
    typo = cerebros_service.predict("iris-labelled", [[5.1, 3.5, 1.4, 0.2]], {"probability": False})
    assert typo["error_details"][0]["loc"] == ["opts", "probability"] and "did you mean 'probabilities'" in typo["error"]
    lean = cerebros_service.predict("iris-labelled", [[5.1, 3.5, 1.4, 0.2]], {"probabilities": False})
    assert "probabilities" not in lean and lean["predictions"] in (["setosa"], ["versicolor"], ["virginica"])

    empty = after_root / "no-model"
    empty.mkdir(exist_ok=True)
    (empty / "run.json").write_text(json.dumps({"status": "failed"}))
    answer = cerebros_service.predict("no-model", [[1, 2, 3, 4]])
    assert answer["status"] == "failed" and "has no best_model.keras" in answer["error"]


def test_the_model_is_loaded_once_and_again_when_its_file_changes(labelled_run, after_root):
    row = [[6.3, 2.9, 5.6, 1.8]]
    for engine in ("keras", "auto"):
        clear_model_cache()
        first = cerebros_service.predict("iris-labelled", row, {"engine": engine})
        second = cerebros_service.predict("iris-labelled", row, {"engine": engine})
        assert first == second
        info = model_cache_info()
        assert (info["misses"], info["hits"]) == (1, 1), engine
        model = labelled_run["run_dir"] / f"best_model.{'onnx' if first['engine'] == 'onnx' else 'keras'}"
        stat = model.stat()
        os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # "replaced"
        assert cerebros_service.predict("iris-labelled", row, {"engine": engine})["predictions"] == first["predictions"]
        assert model_cache_info()["misses"] == 2, engine


def test_predict_never_raises_on_garbage(after_root):
    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

    for run, x, opts in [(None, None, None), (Hostile(), [[1]], None), ("x", Hostile(), Hostile()),
                         (b"\xff", [[1]], None), ({"a": 1}, {"b": 2}, [1])]:
        answer = cerebros_service.predict(run, x, opts)
        assert answer["status"] == "failed"
        json.dumps(answer, allow_nan=False)


def test_binary_and_older_runs_decode_to_labels():
    from cerebros_service.prediction import decode_outputs

    binary = decode_outputs(np.array([[0.2], [0.9]], dtype=np.float32),
                            {"task": "binary", "class_labels": ["no", "yes"]}, True)
    assert binary["predictions"] == ["no", "yes"] and binary["classes"] == ["no", "yes"]
    np.testing.assert_allclose(binary["probabilities"], [[0.8, 0.2], [0.1, 0.9]], atol=1e-6)
    assert decode_outputs(np.array([[0.1, 0.7, 0.2]]), {"task": "multiclass", "class_labels": [0, 1, 2]},
                          False) == {"predictions": [1], "classes": [0, 1, 2]}


def test_a_run_from_before_labels_were_recorded_predicts_class_indices(labelled_run, after_root):
    copy = after_root / "before-labels"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(labelled_run["run_dir"], copy)
    run = json.loads((copy / "run.json").read_text())
    del run["dataset"]["class_labels"], run["dataset"]["feature_names"]
    (copy / "run.json").write_text(json.dumps(run))
    try:
        answer = cerebros_service.predict("before-labels", labelled_run["x"][:2])
        assert answer["classes"] == [0, 1, 2] and answer["predictions"][0] in (0, 1, 2)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=json_values | st.sampled_from(["iris-labelled", "../x", ""]), x=json_values, opts=json_values)
def test_predict_answers_any_request_with_a_result(labelled_run, after_root, run, x, opts):
    answer = cerebros_service.predict(run, x, opts)
    assert answer["status"] in ("success", "failed")
    json.dumps(answer, allow_nan=False)
