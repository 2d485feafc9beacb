"""CSV/NPZ loading under a data root, the dataset registry, and zero-copy data paths."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from cerebros_service import list_datasets, register_dataset, unregister_dataset
from cerebros_service.api import load_dataset
from cerebros_service.boundary.schema import check_request
from cerebros_service.data.files import load_csv, load_npz, resolve_under_root
from cerebros_service.data.registry import get_dataset
from cerebros_service.errors import DatasetError

CSV_TEXT = "a,b,label,c\n1,2,cat,3\n4,5,dog,6\n7,8,cat,9\n1.5,2.5,dog,-1\n\n"


@pytest.fixture
def root(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pets.csv").write_text(CSV_TEXT)
    return data


# --------------------------------------------------------------------------- CSV


def test_csv_with_a_named_string_target(root):
    dataset = load_csv("pets.csv", "label", data_root=root)
    assert dataset.feature_names == ("a", "b", "c")
    assert dataset.x.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1.5, 2.5, -1]]
    assert dataset.task == "binary" and dataset.class_labels == ("cat", "dog")
    assert dataset.y.tolist() == [0, 1, 0, 1]


def test_csv_target_by_index_and_negative_index(root):
    (root / "nums.csv").write_text("x1,x2,y\n1,2,0.5\n2,3,1.5\n3,4,2.25\n4,5,3.0\n")
    by_index = load_csv("nums.csv", 2, data_root=root, task="regression")
    from_end = load_csv("nums.csv", -1, data_root=root)
    assert by_index.task == from_end.task == "regression"
    assert from_end.y.tolist() == [0.5, 1.5, 2.25, 3.0]
    assert load_csv("pets.csv", 2, data_root=root).feature_names == ("a", "b", "c")


def test_csv_errors_say_what_is_wrong(root):
    with pytest.raises(DatasetError, match="no column named 'kind'; columns: a, b, label, c"):
        load_csv("pets.csv", "kind", data_root=root)
    with pytest.raises(DatasetError, match="index 9 is out of range"):
        load_csv("pets.csv", 9, data_root=root)
    with pytest.raises(DatasetError, match="does not exist"):
        load_csv("missing.csv", "label", data_root=root)
    (root / "bad.csv").write_text("a,b,y\n1,2,0\n3,oops,1\n")
    with pytest.raises(DatasetError, match=r"row 3, column 'b' is not a number") as caught:
        load_csv("bad.csv", "y", data_root=root)
    assert "oops" not in caught.value.message  # a cell's content is never quoted
    (root / "empty_cell.csv").write_text("a,b,y\n1,,0\n")
    with pytest.raises(DatasetError, match=r"row 2, column 'b' is an empty cell"):
        load_csv("empty_cell.csv", "y", data_root=root)
    (root / "ragged.csv").write_text("a,b,y\n1,2,0\n3,1\n")
    with pytest.raises(DatasetError, match="row 3 has 2 cells but the header has 3"):
        load_csv("ragged.csv", "y", data_root=root)
    (root / "no_target.csv").write_text("a,y\n1,0\n2,\n")
    with pytest.raises(DatasetError, match="row 3, target column 'y' is empty"):
        load_csv("no_target.csv", "y", data_root=root)


# --------------------------------------------------------------------------- NPZ


def test_npz_round_trip_and_missing_arrays(root):
    x = np.random.default_rng(0).normal(size=(8, 3))
    y = np.array([0, 1] * 4)
    np.savez(root / "data.npz", x=x, y=y)
    dataset = load_npz("data.npz", data_root=root)
    assert np.array_equal(dataset.x, x) and dataset.task == "binary"
    np.savez(root / "partial.npz", x=x)
    with pytest.raises(DatasetError, match=r"missing array\(s\) y; the archive holds x"):
        load_npz("partial.npz", data_root=root)
    (root / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_npz("junk.npz", data_root=root)


def test_npz_refuses_pickled_objects(root):
    np.savez(root / "objects.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    with pytest.raises(DatasetError):
        load_npz("objects.npz", data_root=root)


# --------------------------------------------------------------------------- confinement


def test_paths_cannot_escape_the_data_root(root, tmp_path):
    (tmp_path / "secret.csv").write_text(CSV_TEXT)
    for path in ("../secret.csv", str(tmp_path / "secret.csv"), "sub/../../secret.csv", "/etc/passwd"):
        with pytest.raises(DatasetError, match="outside the data root"):
            resolve_under_root(path, root)


def test_symlink_pointing_out_of_the_root_is_rejected(root, tmp_path):
    (tmp_path / "secret.csv").write_text(CSV_TEXT)
    os.symlink(tmp_path / "secret.csv", root / "link.csv")
    with pytest.raises(DatasetError, match="outside the data root"):
        load_csv("link.csv", "label", data_root=root)
    os.symlink(tmp_path, root / "dirlink")
    with pytest.raises(DatasetError, match="outside the data root"):
        load_csv("dirlink/secret.csv", "label", data_root=root)


def test_paths_inside_the_root_are_fine(root):
    (root / "sub").mkdir()
    (root / "sub" / "p.csv").write_text(CSV_TEXT)
    os.symlink(root / "sub" / "p.csv", root / "inner_link.csv")
    assert resolve_under_root("sub/../sub/p.csv", root) == (root / "sub" / "p.csv").resolve()
    assert resolve_under_root(str(root / "pets.csv"), root) == (root / "pets.csv").resolve()
    assert load_csv("inner_link.csv", "label", data_root=root).n_samples == 4


def test_spec_csv_source_reads_under_the_operators_data_root(root, monkeypatch):
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(root))
    spec, opts = check_request(
        {"dataset": {"source": "csv", "path": "pets.csv", "target": "label"}, "task": "classification"}, {})
    assert load_dataset(spec, opts).class_labels == ("cat", "dog")
    spec, opts = check_request({"dataset": {"source": "csv", "path": "../x.csv", "target": 0}}, {})
    with pytest.raises(DatasetError, match="outside the data root"):
        load_dataset(spec, opts)


# --------------------------------------------------------------------------- registry


def test_register_list_get_unregister(registered):
    x = np.random.default_rng(1).normal(size=(20, 4))
    y = np.arange(20) % 3
    result = registered("my_data", x, y)
    assert result == {"status": "registered", "replaced": False, "name": "my_data", "task": "multiclass",
                      "n_samples": 20, "n_features": 4, "n_classes": 3, "source": "registered",
                      "nbytes": x.nbytes + y.nbytes}
    assert [d["name"] for d in list_datasets()] == ["my_data"]
    assert get_dataset("my_data").x is x  # held, not copied
    assert unregister_dataset(b"my_data") is True  # a Pythonx binary works as a name
    assert get_dataset("my_data") is None and list_datasets() == []
    assert unregister_dataset("my_data") is False


def test_registered_names_never_shadow_silently(registered):
    x, y = np.zeros((6, 2)), np.array([0, 1] * 3)
    builtin = registered("digits", x, y)
    assert builtin["status"] == "failed" and builtin["error_type"] == "dataset_error"
    assert "built-in" in builtin["error"]
    assert registered("mine", x, y)["status"] == "registered"
    again = registered("mine", x, y)
    assert again["status"] == "failed" and "already registered" in again["error"]
    replaced = registered("mine", x, np.array([1, 0] * 3), replace=True)
    assert replaced["status"] == "registered" and replaced["replaced"] is True


def test_register_reports_bad_input_instead_of_raising(registered):
    assert registered("bad name!", np.zeros((6, 2)), np.zeros(6))["status"] == "failed"
    assert registered("short", np.zeros((6, 2)), np.zeros(5))["error_type"] == "dataset_error"
    assert registered("task", np.zeros((6, 2)), np.zeros(6), task="clustering")["status"] == "failed"
    assert registered("nonutf8", [[1.0]] * 6, [b"\xff"] * 6)["error_type"] == "validation_error"


def test_register_accepts_pythonx_lists_and_binaries(registered):
    rows = [[float(i), float(i % 2)] for i in range(8)]
    result = registered(b"from_elixir", rows, [b"yes", b"no"] * 4, task=b"classification")
    assert result["status"] == "registered" and result["task"] == "binary"
    assert get_dataset("from_elixir").class_labels == ("no", "yes")


def test_registry_is_thread_safe(registered):
    x, y = np.zeros((6, 2)), np.array([0, 1] * 3)
    results: list[dict] = []

    def register(i):
        results.append(registered(f"t{i}", x, y))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r["status"] == "registered" for r in results)
    assert sorted(d["name"] for d in list_datasets()) == sorted(f"t{i}" for i in range(16))


# --------------------------------------------------------------------------- zero copy


def test_numpy_arrays_reach_the_dataset_without_a_copy():
    x = np.random.default_rng(2).normal(size=(50, 5))
    y = (np.arange(50) % 2).astype(np.int64)
    spec, opts = check_request({"dataset": {"source": "arrays", "x": x, "y": y}}, {})
    dataset = load_dataset(spec, opts)
    assert dataset.x is x and np.shares_memory(dataset.x, x)
    assert np.shares_memory(dataset.y, y)


def test_registered_arrays_reach_the_dataset_without_a_copy(registered):
    x = np.random.default_rng(3).normal(size=(30, 2))
    registered("shared", x, np.arange(30) % 2)
    spec, opts = check_request({"dataset_id": "shared", "task": "classification"}, {})
    assert np.shares_memory(load_dataset(spec, opts).x, x)
