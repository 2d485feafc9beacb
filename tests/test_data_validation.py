"""Bad data is refused, not trained on (issue 11, items 3 and 4).

Every source (inline, arrays, CSV, NPZ, the registry, built-ins) goes through the
one validation in data/validation.py; each refusal is a dataset_error (or, for a
request that is wrong on its face, a validation_error) naming where.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from cerebros_service import register_dataset, run_nas, unregister_dataset, validate
from cerebros_service.data.dataset import make_dataset
from cerebros_service.errors import DatasetError


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(data))
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path / "runs"))
    return data


def refused(result: dict, error_type: str = "dataset_error") -> dict:
    assert result["status"] == "failed" and result["error_type"] == error_type, result
    return result


def good_x(n: int = 12, width: int = 2) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, width))


# --------------------------------------------------------------------------- the cases


def test_nan_labels_with_an_explicit_task_are_refused_not_made_a_class(registered):
    y = np.array([0.0, 1.0, np.nan] * 4)
    result = refused(registered("nan_labels", good_x(), y, task="classification"))
    assert result["error_details"][0]["loc"] == ["y", 2]
    assert "y row 2 is NaN (4 such row(s))" in result["error"]
    arrays = run_nas({"dataset": {"source": "arrays", "x": good_x(), "y": y}, "task": "multiclass"})
    assert refused(arrays)["error_details"][0]["loc"] == ["spec", "dataset", "y", 2]


def test_complex_features_are_refused_not_cut_to_their_real_part(registered):
    x = good_x() + 1j
    result = refused(registered("complex_x", x, np.arange(12) % 2))
    assert "x must hold real numbers" in result["error"] and "complex" in result["error"]
    y = refused(registered("complex_y", good_x(), np.arange(12) % 2 + 0j))
    assert "complex" in y["error"] and y["error_details"][0]["loc"] == ["y"]


def test_data_without_a_feature_is_refused(registered):
    result = refused(registered("no_features", np.zeros((12, 0)), np.arange(12) % 2))
    assert "x has no feature column" in result["error"]
    inline = validate({"dataset": {"source": "inline", "x": [[]] * 4, "y": [0, 1, 0, 1]}})
    assert refused(inline, "validation_error")["error_details"][0]["loc"] == ["spec", "dataset", "x", 0]


def test_features_whose_float32_variance_overflows_are_refused(registered):
    # The case: features near 1e30 made the saved model predict a constant.
    x = good_x()
    x[:, 1] *= 1e30
    result = refused(registered("spread", x, np.arange(12) % 2))
    assert "x column 1 spans" in result["error"] and "rescale it" in result["error"]
    named = refused(run_nas({"dataset": {"source": "arrays", "x": x, "y": np.arange(12) % 2}}))
    assert named["error_details"][0]["loc"] == ["spec", "dataset", "x"]


def test_a_feature_beyond_float32s_range_names_its_row_and_column(registered):
    x = good_x()
    x[5, 1] = 1e39
    result = refused(registered("beyond", x, np.arange(12) % 2))
    assert result["error_details"][0]["loc"] == ["x", 5, 1]
    assert "x row 5, column 1 is 1e+39, beyond float32's range" in result["error"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_row_and_column(registered, bad):
    x = good_x()
    x[3, 0] = bad
    result = refused(registered("non_finite", x, np.arange(12) % 2))
    assert result["error_details"][0]["loc"] == ["x", 3, 0]


def test_regression_targets_that_overflow_float32_losses_are_refused(registered):
    y = np.random.default_rng(1).normal(size=12) * 1e30
    result = refused(registered("huge_targets", good_x(), y, task="regression"))
    assert "rescale y" in result["error"] and "learning_rate" not in result["error"]


def test_a_class_with_one_row_is_refused(registered):
    y = np.array(["a"] * 6 + ["b"] * 5 + ["lonely"])
    result = refused(registered("lonely", good_x(), y))
    assert "class 'lonely' has 1 row(s)" in result["error"]
    assert result["error_details"][0]["loc"] == ["y"]


def test_too_few_rows_for_the_validation_split_is_refused_before_training(monkeypatch, tmp_path):
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    x = good_x(6)
    y = np.array([0, 0, 1, 1, 2, 2])
    result = refused(run_nas({"dataset": {"source": "arrays", "x": x, "y": y},
                              "training": {"validation_split": 0.2}}, {"run_id": "split"}))
    assert result["error_details"][0]["loc"] == ["spec", "training", "validation_split"]
    assert "5 training and 1 validation rows" in result["error"]
    assert not (tmp_path / "split").exists()


# --------------------------------------------------------------------------- caller mistakes


def test_an_npy_file_given_as_npz_is_a_dataset_error(roots):
    np.save(roots / "one.npy", np.zeros(4))
    os.replace(roots / "one.npy", roots / "one.npz")
    result = refused(run_nas({"dataset": {"source": "npz", "path": "one.npz"}}))
    assert "is a .npy file (one array), not an .npz archive" in result["error"]
    assert result["error_details"][0]["loc"] == ["spec", "dataset", "path"]


def test_an_empty_or_truncated_npz_is_a_dataset_error(roots):
    (roots / "empty.npz").write_bytes(b"")
    np.savez(roots / "whole.npz", x=good_x(), y=np.arange(12) % 2)
    raw = (roots / "whole.npz").read_bytes()
    (roots / "half.npz").write_bytes(raw[: len(raw) // 2])
    (roots / "tail_cut.npz").write_bytes(raw[:-30])
    for name in ("empty.npz", "half.npz", "tail_cut.npz"):
        result = refused(run_nas({"dataset": {"source": "npz", "path": name}}))
        assert result["error_details"][0]["loc"] == ["spec", "dataset", "path"], name
    assert run_nas({"dataset": {"source": "npz", "path": "empty.npz"}})["error"].endswith("is empty, not an .npz archive")


def test_a_symlink_loop_and_a_nul_byte_in_a_path_are_dataset_errors(roots):
    os.symlink(roots / "a.csv", roots / "b.csv")
    os.symlink(roots / "b.csv", roots / "a.csv")
    for path in ("a.csv", "x\0.csv"):
        result = refused(run_nas({"dataset": {"source": "csv", "path": path, "target": 0}}))
        assert result["error_details"][0]["loc"] == ["spec", "dataset", "path"]


def test_an_int_too_large_for_any_float_is_a_located_error(registered):
    huge = 10**5000
    spec = validate({"dataset_id": "iris", "training": {"epochs": huge, "learning_rate": huge}},
                    {"seed": huge})
    found = {tuple(d["loc"]): d["message"] for d in refused(spec, "validation_error")["error_details"]}
    assert "an integer of about 5000 digits" in found[("spec", "training", "epochs")]
    assert found[("spec", "training", "learning_rate")].startswith("must be a number a 64-bit float can hold")
    assert ("opts", "seed") in found
    inline_x = refused(validate({"dataset": {"source": "inline", "x": [[huge]] * 4, "y": [0, 1, 0, 1]}}),
                       "validation_error")
    assert inline_x["error_details"][0]["loc"] == ["spec", "dataset", "x", 0, 0]
    inline_y = refused(validate({"dataset": {"source": "inline", "x": [[1.0]] * 4, "y": [huge, 1, 0, 1]}}),
                       "validation_error")
    assert inline_y["error_details"][0]["loc"] == ["spec", "dataset", "y", 0]
    from_lists = refused(registered("huge", [[1.0], [huge], [2.0], [3.0]], [0, 1, 0, 1]))
    assert from_lists["error_details"][0]["loc"] == ["x", 1, 0]
    assert "an integer too large for a 64-bit float" in from_lists["error"]
    labels = refused(registered("huge_y", [[1.0], [2.0], [3.0], [4.0]], [huge, 1, huge, 1]))
    assert labels["error_details"][0]["loc"] == ["y", 0]


def test_none_and_objects_in_lists_are_located(registered):
    result = refused(registered("holes", [[1.0, 2.0], [None, 1.0], [2.0, 3.0], [4.0, 5.0]], [0, 1, 0, 1]))
    assert result["error_details"][0]["loc"] == ["x", 1, 0] and "None" in result["error"]
    labels = refused(registered("none_y", good_x(4), [0, None, 0, 1]))
    assert labels["error_details"][0]["loc"] == ["y", 1]


def test_inline_labels_must_be_finite(roots):
    spec = {"dataset": {"source": "inline", "x": [[1.0], [2.0], [3.0], [4.0]], "y": [0.0, float("nan"), 1.0, 1.0]}}
    assert refused(validate(spec), "validation_error")["error_details"][0]["loc"] == ["spec", "dataset", "y", 1]


# --------------------------------------------------------------------------- one validation for every source


@pytest.mark.parametrize("source", ["inline", "arrays", "csv", "npz", "registry"])
def test_every_source_refuses_a_feature_float32_cannot_normalize(roots, registered, source):
    x = np.array([[1e30, 1.0], [-1e30, 2.0], [0.0, 3.0], [5.0, 4.0]] * 2)
    y = np.array([0, 1] * 4)
    if source == "registry":
        result = registered("spread_src", x, y)
    else:
        dataset = {
            "inline": {"source": "inline", "x": x.tolist(), "y": y.tolist()},
            "arrays": {"source": "arrays", "x": x, "y": y},
            "csv": {"source": "csv", "path": "s.csv", "target": "y"},
            "npz": {"source": "npz", "path": "s.npz"},
        }[source]
        (roots / "s.csv").write_text("a,b,y\n" + "".join(f"{float(r[0])!r},{float(r[1])!r},{t}\n" for r, t in zip(x, y)))
        np.savez(roots / "s.npz", x=x, y=y)
        result = run_nas({"dataset": dataset})
    assert "spans" in refused(result)["error"]


def test_valid_data_is_kept_as_it_is():
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    for features in (x, x.astype(np.int64), x > 5, x.astype(np.uint8)):
        dataset = make_dataset("ok", features, np.arange(12) % 3)
        assert dataset.x is features  # no copy of the caller's array
    assert make_dataset("ints", x, np.arange(12) * 10.0, task="regression").task == "regression"
    with pytest.raises(DatasetError, match="x must hold real numbers"):
        make_dataset("text", np.array([["a", "b"]] * 4), np.array([0, 1, 0, 1]))


def test_the_engine_can_check_every_class_reached_both_splits():
    from cerebros_service.data.validation import check_split_classes

    check_split_classes(np.array([0, 1, 2, 2]), np.array([2, 1, 0]), 3)
    with pytest.raises(DatasetError, match="the validation split holds no row of 1 of the 3 classes") as caught:
        check_split_classes(np.array([0, 1, 2]), np.array([0, 1]), 3)
    assert caught.value.details[0].loc == ("spec", "training", "validation_split")
