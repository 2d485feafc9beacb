"""best_model.onnx: written after every successful run, verified against Keras, or removed with the reason."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import required

import cerebros_service
from cerebros_service import onnx_export

onnxruntime = required("onnxruntime")  # the test extra installs the onnx extra
required("tf2onnx")


def onnx_outputs(path, x) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"features": np.asarray(x, dtype=np.float32)})[0]


def test_a_successful_run_writes_a_verified_onnx_model(labelled_run, after_root):
    result, run_dir = labelled_run["result"], labelled_run["run_dir"]
    record = result["after_run"]["onnx"]
    assert record["status"] == "done", record
    assert result["artifacts"]["onnx_model"] == str(run_dir / "best_model.onnx")
    assert record["input"] == "features" and record["output_shape"] == [None, 3]
    assert record["max_abs_diff"] <= record["tolerance"] == 1e-4
    # checked here again, on the real data rather than the export's sample rows
    predicted = cerebros_service.predict(str(run_dir), labelled_run["x"].tolist())
    assert predicted["status"] == "success"
    np.testing.assert_allclose(onnx_outputs(run_dir / "best_model.onnx", labelled_run["x"]),
                               predicted["probabilities"], atol=1e-4)
    assert json.loads((run_dir / "run.json").read_text())["after_run"]["onnx"]["status"] == "done"


def test_regression_exports_in_original_units(regression_run):
    from sklearn.datasets import load_diabetes

    import keras

    run_dir = regression_run["run_dir"]
    x = load_diabetes().data
    expected = keras.saving.load_model(run_dir / "best_model.keras", compile=False).predict(x.astype("float32"), verbose=0)
    got = onnx_outputs(run_dir / "best_model.onnx", x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture
def older_run(labelled_run, after_root):
    """A copy of the labelled run as runs looked before ONNX export existed."""
    copy = after_root / "older-run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(labelled_run["run_dir"], copy)
    (copy / "best_model.onnx").unlink()
    yield copy
    shutil.rmtree(copy, ignore_errors=True)


def test_export_makes_the_file_for_an_older_run(older_run):
    answer = cerebros_service.export("older-run")
    assert answer["status"] == "success" and answer["format"] == "onnx", answer
    assert answer["path"] == str(older_run / "best_model.onnx") and (older_run / "best_model.onnx").is_file()
    assert answer["verification"]["max_abs_diff"] <= 1e-4 and answer["verification"]["verified_rows"] == 64
    assert json.loads((older_run / "run.json").read_text())["after_run"]["onnx"]["status"] == "done"


def test_an_export_that_does_not_match_keras_is_removed(older_run, monkeypatch):
    (older_run / "best_model.onnx").write_bytes(b"stale")  # from an earlier export
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no output can match: the real check must refuse
    answer = cerebros_service.export("older-run")
    assert answer["status"] == "failed" and answer["error_type"] == "export_failed"
    assert "differ from Keras's" in answer["error"]
    assert not (older_run / "best_model.onnx").exists()
    record = json.loads((older_run / "run.json").read_text())["after_run"]["onnx"]
    assert record["status"] == "failed" and "the file was not kept" in record["reason"]


def test_missing_tools_are_a_recorded_skip(older_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the extra were not installed
    record = onnx_export.export_onnx(older_run)
    assert record["status"] == "skipped" and "pip install 'cerebros-service[onnx]'" in record["reason"]
    answer = cerebros_service.export("older-run")
    assert answer["error_type"] == "export_failed" and "skipped" in answer["error"]


def test_export_refuses_bad_requests(labelled_run, after_root):
    assert cerebros_service.export("iris-labelled", "pmml")["error_details"][0]["loc"] == ["format"]
    assert cerebros_service.export("../etc")["error_type"] == "validation_error"
    assert cerebros_service.export(None)["status"] == "failed"
