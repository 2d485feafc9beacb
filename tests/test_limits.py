"""Operator-set size limits (issue 11, item 6): files, NPZ members, CSV lines, cells,
parameters per candidate, error details; and the parameter bound they rest on."""

from __future__ import annotations

import json
import time
import zipfile

import numpy as np
import pytest

from cerebros_service import validate
from cerebros_service.data.files import load_csv, load_npz
from cerebros_service.errors import DatasetError
from cerebros_service.operator_config import DEFAULT_LIMITS, Limits, configure, current_limits
from cerebros_service.search.capacity import max_candidate_params
from cerebros_service.settings import SpaceSettings


@pytest.fixture
def root(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(data))
    return data


# --------------------------------------------------------------------------- settings


def test_limits_have_safe_defaults_and_come_from_the_environment(monkeypatch):
    assert current_limits() == DEFAULT_LIMITS == Limits()
    assert DEFAULT_LIMITS.max_candidate_params <= DEFAULT_LIMITS.max_fused_params
    monkeypatch.setenv("CEREBROS_MAX_FILE_BYTES", "1_000")
    monkeypatch.setenv("CEREBROS_MAX_FUSED_PARAMS", " 123 ")
    assert current_limits().max_file_bytes == 1000
    assert current_limits().max_fused_params == 123  # the engine's per-chunk cap


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1.5"])
def test_a_bad_limit_value_is_a_clear_failure_not_a_crash(monkeypatch, raw):
    monkeypatch.setenv("CEREBROS_MAX_CELLS", raw)
    result = validate({"dataset_id": "iris"})
    assert result["status"] == "failed" and result["error_type"] == "internal_error"
    assert "CEREBROS_MAX_CELLS must be a positive integer" in result["error"]


def test_configure_sets_limits_and_refuses_unknown_ones(monkeypatch):
    monkeypatch.setenv("CEREBROS_MAX_ERROR_DETAILS", "50")  # restored after the test
    answer = configure(limits={"max_error_details": 7})
    assert answer["status"] == "configured" and answer["limits"]["max_error_details"] == 7
    assert current_limits().max_error_details == 7
    refused = configure(limits={"max_everything": 1})
    assert refused["status"] == "failed" and "unknown limit 'max_everything'" in refused["error"]
    assert configure(limits={"max_cells": -1})["status"] == "failed"


# --------------------------------------------------------------------------- files


def test_a_file_over_max_file_bytes_is_refused_before_reading(root, monkeypatch):
    (root / "big.csv").write_text("a,y\n" + "1,0\n2,1\n" * 100)
    monkeypatch.setenv("CEREBROS_MAX_FILE_BYTES", "100")
    with pytest.raises(DatasetError, match=r"big.csv: 804 bytes, more than this service's limit of 100 "
                                           r"\(CEREBROS_MAX_FILE_BYTES\)"):
        load_csv("big.csv", "y", data_root=root)


def test_an_npz_zip_bomb_is_refused_from_its_declared_size_before_unpacking(root, monkeypatch):
    # 64 MB of zeros compress to about 64 KB: the member's header says what it unpacks to.
    np.savez_compressed(root / "bomb.npz", x=np.zeros((8_000_000, 1)), y=np.zeros(8_000_000))
    assert (root / "bomb.npz").stat().st_size < 1_000_000
    monkeypatch.setenv("CEREBROS_MAX_NPZ_MEMBER_BYTES", str(1_000_000))
    monkeypatch.setattr(np.lib.format, "read_array", _must_not_read)
    with pytest.raises(DatasetError, match=r"array x unpacks to 64,000,128 bytes, more than this service's "
                                           r"limit of 1,000,000 \(CEREBROS_MAX_NPZ_MEMBER_BYTES\)"):
        load_npz("bomb.npz", data_root=root)


def test_an_npz_member_whose_header_overstates_its_data_is_refused(root):
    x = np.lib.format
    with zipfile.ZipFile(root / "liar.npz", "w") as archive:
        for key, shape in (("x", (10_000, 1000)), ("y", (10_000,))):
            with archive.open(f"{key}.npy", "w") as member:
                x.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": shape})
                member.write(b"\0" * 64)  # far less than the header promises
    with pytest.raises(DatasetError, match="array x is truncated"):
        load_npz("liar.npz", data_root=root)


def test_an_npz_over_max_cells_is_refused_from_its_header(root, monkeypatch):
    np.savez(root / "wide.npz", x=np.zeros((100, 50)), y=np.arange(100) % 2)
    monkeypatch.setenv("CEREBROS_MAX_CELLS", "1000")
    monkeypatch.setattr(np.lib.format, "read_array", _must_not_read)
    with pytest.raises(DatasetError, match=r"array x holds 5,000 values, more than this service's limit of 1,000"):
        load_npz("wide.npz", data_root=root)


def _must_not_read(*args, **kwargs):
    raise AssertionError("the array's data was read before its size was checked")


def test_a_csv_line_over_the_limit_is_refused_without_reading_the_rest(root, monkeypatch):
    (root / "one_line.csv").write_bytes(b"a,y\n" + b"1" * 3_000_000 + b",0\n")
    monkeypatch.setenv("CEREBROS_MAX_CSV_LINE_BYTES", str(1_000_000))
    started = time.monotonic()
    with pytest.raises(DatasetError, match=r"line 2 is longer than this service's limit of 1,000,000 bytes "
                                           r"\(CEREBROS_MAX_CSV_LINE_BYTES\)") as caught:
        load_csv("one_line.csv", "y", data_root=root)
    assert time.monotonic() - started < 2
    assert "111" not in caught.value.message


def test_a_csv_over_max_cells_stops_while_reading(root, monkeypatch):
    (root / "rows.csv").write_text("a,b,y\n" + "1,2,0\n3,4,1\n" * 50)
    monkeypatch.setenv("CEREBROS_MAX_CELLS", "20")
    with pytest.raises(DatasetError, match=r"more than 20 values \(rows x features\)"):
        load_csv("rows.csv", "y", data_root=root)


def test_registered_and_inline_data_over_max_cells_is_refused(monkeypatch):
    from cerebros_service import register_dataset

    monkeypatch.setenv("CEREBROS_MAX_CELLS", "100")
    result = register_dataset("too_big", np.zeros((60, 2)), np.arange(60) % 2)
    assert result["error_type"] == "dataset_error"
    assert "60 rows x 2 features = 120 values, more than this service's limit of 100" in result["error"]


# --------------------------------------------------------------------------- parameters


def _full_architecture(space: SpaceSettings, input_dim: int, output_units: int) -> dict:
    """The fully connected architecture at the top of every range, every unit normalized."""
    levels, units, neurons = space.max_levels, space.max_units_per_level, space.max_neurons
    arch_levels = [{"units": [{"neurons": neurons, "activation": "elu", "batchnorm": True}
                              for _ in range(units)]} for _ in range(levels)]
    arch_levels.append({"units": [{"neurons": output_units, "activation": "output"}]})
    nodes = [(-1, 0)] + [(level, unit) for level in range(levels) for unit in range(units)]
    edges = [[list(src), list(dst)] for dst in nodes[1:] for src in nodes if src[0] < dst[0]]
    edges += [[list(src), [levels, 0]] for src in nodes]
    pairs = [(i, j) for i in range(units) for j in range(i + 1, units)][:space.max_laterals_per_level]
    laterals = [[[level, i], [level, j]] for level in range(levels) for i, j in pairs]
    return {"input_dim": input_dim, "levels": arch_levels, "edges": edges, "laterals": laterals, "dropout": 0.0}


def _keras_params(arch: dict, task: str, n_classes: int | None) -> int:
    from cerebros_service.search.build import build_model

    width = arch["input_dim"]
    model = build_model(arch, task, n_classes, feature_mean=np.zeros(width), feature_var=np.ones(width),
                        compile=False)
    return int(model.count_params())


def test_the_bound_is_exactly_the_largest_candidate_keras_builds():
    space = SpaceSettings(min_levels=1, max_levels=3, max_units_per_level=3, min_neurons=2, max_neurons=7,
                          max_laterals_per_level=2)
    arch = _full_architecture(space, input_dim=5, output_units=4)
    from cerebros_service.search.space import check_architecture

    check_architecture(arch, space)
    assert _keras_params(arch, "multiclass", 4) == max_candidate_params(space, 5, 4)


def test_no_sampled_candidate_exceeds_the_bound():
    from cerebros_service.search.space import sample_architecture

    space = SpaceSettings(min_levels=1, max_levels=3, max_units_per_level=3, min_neurons=2, max_neurons=9,
                          predecessor_affinity=8.0, lateral_probability=1.0)
    rng = np.random.default_rng(0)
    bound = max_candidate_params(space, 6, 1)
    for _ in range(40):
        arch = sample_architecture(space, 6, 1, rng)
        for level in arch["levels"][:-1]:
            for unit in level["units"]:
                unit["batchnorm"] = True
        assert _keras_params(arch, "binary", 2) <= bound


def test_validate_refuses_a_space_too_large_for_the_limit_before_loading_anything():
    # The 2 x 4 x 8192 space: ~3 GB of weights, once accepted and a SIGSEGV later.
    started = time.monotonic()
    result = validate({"dataset_id": "digits", "search_space": {
        "min_levels": 2, "max_levels": 2, "min_units_per_level": 4, "max_units_per_level": 4,
        "layer_sizes": [8192]}})
    assert time.monotonic() - started < 2
    assert result["status"] == "failed" and result["error_type"] == "validation_error"
    (detail,) = result["error_details"]
    assert detail["loc"] == ["spec", "search_space"]
    bound = max_candidate_params(SpaceSettings(min_levels=2, max_levels=2, min_units_per_level=4,
                                               max_units_per_level=4, min_neurons=8192, max_neurons=8192,
                                               neuron_choices=(8192,)), 64, 10)
    assert f"allows candidates of up to {bound:,} parameters (with 64 input feature(s) and 10 output(s))" \
        in detail["message"]
    assert "more than this service's limit of 20,000,000 (CEREBROS_MAX_CANDIDATE_PARAMS)" in detail["message"]
    assert validate({"dataset_id": "digits"})["status"] == "valid"  # the default space fits


def test_the_parameter_limit_is_the_operators(monkeypatch):
    spec = {"dataset_id": "iris", "search_space": {"layer_sizes": [64]}}
    assert validate(spec)["status"] == "valid"
    monkeypatch.setenv("CEREBROS_MAX_CANDIDATE_PARAMS", "1000")
    assert validate(spec)["error_details"][0]["loc"] == ["spec", "search_space"]


def test_a_file_source_is_checked_with_the_width_it_could_at_least_have(monkeypatch):
    monkeypatch.setenv("CEREBROS_MAX_CANDIDATE_PARAMS", "1000")
    huge = {"dataset": {"source": "csv", "path": "x.csv", "target": "y"},
            "search_space": {"max_levels": 3, "max_units_per_level": 3, "layer_sizes": [64]}}
    assert validate(huge)["error_details"][0]["loc"] == ["spec", "search_space"]
    small = {"dataset": {"source": "csv", "path": "x.csv", "target": "y"},
             "search_space": {"max_levels": 1, "max_units_per_level": 1, "layer_sizes": [4]}}
    assert validate(small)["status"] == "valid"


def test_run_checks_the_exact_bound_once_the_data_is_loaded(monkeypatch, tmp_path):
    from cerebros_service import run_nas

    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    x = np.random.default_rng(0).normal(size=(20, 300))
    spec = {"dataset": {"source": "arrays", "x": x, "y": np.arange(20) % 2},
            "search_space": {"max_levels": 1, "max_units_per_level": 1, "layer_sizes": [32]}}
    # 300 features x 32 neurons ≈ 9,800 parameters: over a limit of 5,000 once x is seen.
    monkeypatch.setenv("CEREBROS_MAX_CANDIDATE_PARAMS", "5000")
    result = run_nas(spec, {"run_id": "too-big"})
    assert result["error_type"] == "validation_error"
    assert "(with 300 input feature(s) and 1 output(s))" in result["error"]
    assert not (tmp_path / "too-big").exists()


# --------------------------------------------------------------------------- error details


def test_100000_unknown_keys_answer_fast_and_small():
    spec = {"dataset_id": "iris", **{f"k{i}": 1 for i in range(100_000)}}
    started = time.monotonic()
    result = validate(spec)
    assert time.monotonic() - started < 3
    assert len(json.dumps(result)) < 100_000
    assert result["error_type"] == "validation_error"
    assert len(result["error_details"]) == DEFAULT_LIMITS.max_error_details
    assert result["metadata"]["error_details_total"] == 100_000
    assert result["error"].startswith("Invalid request (100000 problems; the first 50 are listed): ")


def test_max_error_details_is_the_operators(monkeypatch):
    monkeypatch.setenv("CEREBROS_MAX_ERROR_DETAILS", "3")
    result = validate({"dataset_id": "iris", "a": 1, "b": 2, "c": 3, "d": 4}, {"e": 5})
    assert len(result["error_details"]) == 3
    assert result["metadata"]["error_details_total"] == 5
    few = validate({"dataset_id": "iris", "a": 1})
    assert "error_details_total" not in few["metadata"]


def test_a_request_cannot_ask_for_fused_chunks_above_the_operators_cap(monkeypatch):
    over = validate({"dataset_id": "iris"}, {"execution": {"max_fused_params": 10**12}})
    assert over["error_details"][0]["loc"] == ["opts", "execution", "max_fused_params"]
    assert "this service's limit (CEREBROS_MAX_FUSED_PARAMS)" in over["error"]
    monkeypatch.setenv("CEREBROS_MAX_FUSED_PARAMS", "1000")
    assert validate({"dataset_id": "iris"})["opts"]["execution"]["max_fused_params"] == 1000
