"""Property fuzz of normalize + validate over Pythonx-shaped input.

Whatever arrives — bytes or str keys, tuples, MapSets, huge ints, NaN, non-UTF-8
binaries, non-string keys, deep nesting, values of the wrong type — the answer is a
plain JSON-safe dict: a valid request or a clear validation error, never an
exception.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cerebros_service import run_nas, validate
from cerebros_service.boundary.normalize import normalize
from cerebros_service.errors import InputError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

SPEC_KEYS = ["dataset_id", "dataset", "task", "search_space", "objective", "training", "strategy"]
OPTS_KEYS = ["run_id", "seed", "budget", "parameters", "artifacts_dir", "data_root", "device"]
NESTED_KEYS = ["layer_sizes", "activations", "min_levels", "max_levels", "min_neurons", "max_neurons",
               "epochs", "batch_size", "learning_rate", "validation_split", "patience", "max_trials",
               "population_size", "max_time_seconds", "mutation_rate", "crossover_rate", "elite_size",
               "source", "name", "path", "target", "x", "y"]
WORDS = ["digits", "iris", "accuracy", "rmse", "loss", "relu", "tanh", "elu", "evolution", "random",
         "auto", "cpu", "regression", "classification", "builtin", "csv", "inline", "run-1", "..", ""]


def as_pythonx(text: str):
    """Elixir strings arrive as UTF-8 bytes; atoms as str."""
    return st.sampled_from([text, text.encode()])


keys = st.one_of(
    st.sampled_from(SPEC_KEYS + OPTS_KEYS + NESTED_KEYS).flatmap(as_pythonx),
    st.text(max_size=8).flatmap(as_pythonx),
    st.binary(max_size=4),  # possibly not UTF-8
    st.integers(-5, 5),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),
)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(-(2**100), 2**100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS).flatmap(as_pythonx),
    st.text(max_size=10).flatmap(as_pythonx),
    st.binary(max_size=6),
)

values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.frozensets(st.one_of(st.integers(-3, 3), st.binary(max_size=3)), max_size=3),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=20,
)


def request_dict(known: list[str]):
    """A dict shaped like a spec/opts: mostly known keys, some garbage."""
    return st.dictionaries(
        st.one_of(st.sampled_from(known).flatmap(as_pythonx), keys),
        st.one_of(values, st.dictionaries(st.sampled_from(NESTED_KEYS).flatmap(as_pythonx), values, max_size=5)),
        max_size=6,
    )


def assert_answer(result: dict) -> None:
    assert isinstance(result, dict)
    json.dumps(result, allow_nan=False)  # plain, finite, serializable
    assert result["status"] in ("valid", "failed")
    if result["status"] == "failed":
        assert result["error_type"] == "validation_error", result
        assert isinstance(result["error"], str) and result["error"]
        assert result["error_details"]
        for detail in result["error_details"]:
            assert detail["loc"] and detail["loc"][0] in ("spec", "opts"), detail
            assert isinstance(detail["message"], str) and detail["message"]


@FUZZ
@given(spec=st.one_of(request_dict(SPEC_KEYS), values), opts=st.one_of(st.none(), request_dict(OPTS_KEYS), values))
def test_validate_always_answers_with_data(spec, opts):
    assert_answer(validate(spec, opts))


@FUZZ
@given(spec=request_dict(SPEC_KEYS), opts=st.one_of(st.none(), request_dict(OPTS_KEYS)))
def test_run_nas_agrees_with_validate_on_invalid_requests(spec, opts):
    checked = validate(spec, opts)
    if checked["status"] == "failed":  # never start a real search from the fuzzer
        result = run_nas(spec, opts)
        assert result["status"] == "failed" and result["error_type"] == "validation_error"
        assert result["error_details"] == checked["error_details"]


@FUZZ
@given(value=values)
def test_normalize_returns_plain_data_or_a_located_error(value):
    try:
        result = normalize(value)
    except InputError as exc:
        assert exc.details and exc.details[0].loc[0] == "spec"
        return
    assert normalize(result) == result  # idempotent: nothing Pythonx-specific is left


@FUZZ
@given(layer_sizes=st.lists(st.integers(-10, 10_000), max_size=5),
       activations=st.lists(st.sampled_from(["relu", "tanh", "elu", "softmax", "nope"]).flatmap(as_pythonx), max_size=3),
       epochs=st.one_of(st.integers(-2, 20), st.floats(), st.text(max_size=3)))
def test_short_form_search_space_is_valid_or_names_the_field(layer_sizes, activations, epochs):
    spec = {b"dataset_id": b"digits", b"search_space": {b"layer_sizes": layer_sizes, b"activations": activations},
            b"training": {b"epochs": epochs}}
    result = validate(spec)
    assert_answer(result)
    if result["status"] == "valid":
        assert result["spec"]["search_space"]["layer_sizes"] == layer_sizes
    else:
        for detail in result["error_details"]:
            assert detail["loc"][:2] in (["spec", "search_space"], ["spec", "training"])


def test_numpy_values_in_unexpected_places_are_reported_not_crashed():
    result = validate({"dataset_id": np.str_("digits"), "training": {"epochs": np.int64(3)}},
                      {"seed": np.float64("nan")})
    assert_answer(result)
