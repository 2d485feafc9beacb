"""normalize(): golden tests from a recording of real Pythonx values, and its edge cases."""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path

import numpy as np
import pytest

from cerebros_service.boundary.normalize import MAX_DEPTH, normalize, render_loc
from cerebros_service.jsonsafe import json_safe
from cerebros_service.errors import InputError

RECORDING = Path(__file__).parent / "data" / "pythonx-encoding.tsv"


def recording_rows() -> list[dict]:
    with open(RECORDING, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


class Raises:
    """An expected InputError pointing at ``loc``."""

    def __init__(self, *loc):
        self.loc = loc


ENCODE_ROWS = [row for row in recording_rows() if row["case"] != "decode"]
DECODE_ROWS = [row for row in recording_rows() if row["case"] == "decode"]

# What normalize must make of each value Pythonx hands to Python (Elixir → Python).
# An InputError entry names the loc the error must point at.
EXPECTED = {
    "thunderline_spec": {
        "dataset_id": "digits",
        "objective": "accuracy",
        "search_space": {"activations": ["relu", "tanh"], "layer_sizes": [32, 64, 128]},
    },
    "thunderline_opts": {
        "budget": {"max_time_seconds": 300, "max_trials": 10, "population_size": 20},
        "parameters": {"crossover_rate": 0.7, "elite_size": 2, "mutation_rate": 0.1},
        "run_id": "run-42",
    },
    "atom_keys_and_values": {
        "dataset_id": "digits", "flags": ["a", True, False, None], "objective": "val_accuracy",
    },
    # The MapSet {b'y', b'x'} becomes a list in sorted order, whatever PYTHONHASHSEED was.
    "tuple_and_mapset": {"pair": ["a", 1], "shape": [8, 8], "tags": ["x", "y"]},
    "numbers": {"big": 123456789012345678901234567890, "charlist": [97, 98], "f": 1.5e-07, "neg": -3},
    "unicode_and_binary": Raises("spec", "raw"),  # <<0, 255, 128>> is not UTF-8 text
    "nested_lists": [[1, "a"], {"k": ["v", {"deep": "z"}]}],
    "nil": None,
    "mixed_key_types": {1: "int key", "atom": "atom key", (1, 2): "tuple key", "str": "binary key"},
}

# What json_safe must make of each Python value so Pythonx.decode gives the Elixir
# term in the recording (Python → Elixir): the third column, as Python data.
DECODE_EXPECTED = {
    "{'a': 1, 'b': [1.5, None, True], 'c': (1, 'x'), 's': {1,2}}": {
        "a": 1, "b": [1.5, None, True], "c": [1, "x"], "s": [1, 2]},
    "b'bytes'": "bytes",
    "float('nan')": None,  # decode raises on NaN: it must never get there
    "__import__('numpy').int64(3)": 3,  # opaque Pythonx.Object unless converted
    "__import__('numpy').float32(0.5)": 0.5,
    # Decoded to %{"a" => 2}: one value silently lost. normalize refuses it up front.
    "{'a': 1, b'a': 2}": Raises("spec", "a"),
}


def contains_pythonx_only_types(value) -> bool:
    if isinstance(value, (bytes, tuple, set, frozenset)):
        return True
    if isinstance(value, dict):
        return any(contains_pythonx_only_types(k) and not isinstance(k, tuple) for k in value) or any(
            contains_pythonx_only_types(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_pythonx_only_types(v) for v in value)
    return False


def test_every_recorded_case_has_an_expectation():
    assert {row["case"] for row in ENCODE_ROWS} == set(EXPECTED)
    assert {row["python_type_or_code"] for row in DECODE_ROWS} == set(DECODE_EXPECTED)


@pytest.mark.parametrize("row", ENCODE_ROWS, ids=lambda row: row["case"])
def test_golden_pythonx_value(row):
    value = ast.literal_eval(row["python_repr_or_elixir_decoded"])
    assert type(value).__name__ == row["python_type_or_code"]
    expected = EXPECTED[row["case"]]
    if isinstance(expected, Raises):
        with pytest.raises(InputError) as caught:
            normalize(value)
        assert caught.value.details[0].loc == expected.loc
        assert "UTF-8" in caught.value.details[0].message
        return
    result = normalize(value)
    assert result == expected
    assert not contains_pythonx_only_types(result)


@pytest.mark.parametrize("row", DECODE_ROWS, ids=lambda row: row["python_type_or_code"])
def test_golden_values_sent_back_are_decodable(row):
    value = eval(row["python_type_or_code"], {"__builtins__": {"float": float, "__import__": __import__}})
    expected = DECODE_EXPECTED[row["python_type_or_code"]]
    if isinstance(expected, Raises):
        with pytest.raises(InputError) as caught:
            normalize(value)
        assert caught.value.details[0].loc == expected.loc
        assert "twice" in caught.value.details[0].message
        return
    safe = json_safe(value)
    assert safe == expected
    assert type(safe) in (dict, list, str, int, float, type(None))
    assert not (isinstance(safe, float) and not math.isfinite(safe))


def test_duplicate_key_nested_names_its_path():
    with pytest.raises(InputError) as caught:
        normalize({b"training": {b"epochs": 1, "epochs": 2}})
    assert caught.value.details[0].loc == ("spec", "training", "epochs")


def test_utf8_text_is_decoded_at_any_depth():
    value = {b"name": b"caf\xc3\xa9 \xe2\x98\x95", b"deep": [[{b"k": (b"\xe2\x98\x95",)}]], b"empty": b""}
    assert normalize(value) == {"name": "café ☕", "deep": [[{"k": ["☕"]}]], "empty": ""}


def test_error_names_the_path_of_non_utf8_bytes():
    spec = {b"search_space": {b"activations": [b"relu", b"\xff\xfe"]}}
    with pytest.raises(InputError) as caught:
        normalize(spec)
    detail = caught.value.details[0]
    assert detail.loc == ("spec", "search_space", "activations", 1)
    assert render_loc(detail.loc) == "spec.search_space.activations[1]"
    assert "spec.search_space.activations[1]" in caught.value.message


def test_non_utf8_dict_key_is_reported():
    with pytest.raises(InputError) as caught:
        normalize({b"ok": {b"\xff": 1}}, root="opts")
    assert caught.value.details[0].loc[:2] == ("opts", "ok")


def test_numpy_arrays_and_objects_pass_through_as_the_same_object():
    array = np.arange(12.0).reshape(3, 4)
    marker = object()
    callback = print
    result = normalize({b"x": array, b"pid": marker, b"on_event": callback, b"t": (array,)})
    assert result["x"] is array
    assert result["pid"] is marker
    assert result["on_event"] is callback
    assert result["t"][0] is array


def test_very_deep_nesting_is_a_clear_error_not_a_recursion_error():
    value: list = []
    for _ in range(50_000):
        value = [value]
    with pytest.raises(InputError) as caught:
        normalize({b"search_space": value})
    assert f"more than {MAX_DEPTH} levels" in caught.value.details[0].message
    assert caught.value.details[0].loc[:2] == ("spec", "search_space")


def test_nesting_up_to_the_limit_is_fine():
    value: list = [1]
    for _ in range(MAX_DEPTH - 2):
        value = [value]
    assert normalize(value) == value


def test_sets_become_sorted_lists_and_unsortable_sets_still_get_an_order():
    assert normalize({3, 1, 2}) == [1, 2, 3]
    assert normalize(frozenset({b"b", b"a"})) == ["a", "b"]
    mixed = normalize({1, "a", (2, 3)})
    assert sorted(map(repr, mixed)) == sorted(map(repr, [1, "a", [2, 3]]))
    assert normalize({1, "a", (2, 3)}) == mixed  # the same order every time


def test_non_string_keys_are_kept_for_validation_to_report():
    assert normalize({1: b"a", (1, 2): b"b"}) == {1: "a", (1, 2): "b"}


def test_scalars_are_unchanged():
    for value in (None, True, 0, -3, 2**100, 1.5, "text"):
        assert normalize(value) == value
