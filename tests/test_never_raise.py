"""run_nas, validate, register_dataset and failure_result never raise (issue 11, item 7),
whatever Python object they are handed: even ones whose __str__, __repr__, __eq__,
__hash__, __iter__ or __bool__ raise."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cerebros_service import register_dataset, run_nas, unregister_dataset, validate
from cerebros_service.boundary.results import failure_result


class Hostile:
    """Every protocol a caller's object can break, broken."""

    def _boom(self, *args, **kwargs):
        raise RuntimeError("hostile")

    __str__ = __repr__ = __eq__ = __hash__ = __iter__ = __bool__ = __len__ = __format__ = _boom
    __lt__ = __gt__ = __float__ = __int__ = __index__ = _boom


class KeyLikeRunId:
    """Hashes like "run_id" but cannot be compared: dict.get("run_id") on its dict raises."""

    def __hash__(self):
        return hash("run_id")

    def __eq__(self, other):
        raise RuntimeError("hostile key")

    __repr__ = Hostile._boom


class HostileDict(dict):
    items = keys = values = get = __iter__ = __getitem__ = __contains__ = Hostile._boom


class HostileList(list):
    __iter__ = __len__ = __getitem__ = Hostile._boom


class HostileStr(str):
    __eq__ = __hash__ = __str__ = __repr__ = Hostile._boom


class UnprintableError(Exception):
    __str__ = __repr__ = Hostile._boom


def _raise_unprintable(*args, **kwargs):
    raise UnprintableError()


class UnprintableDict(dict):
    """Reading it raises an exception that cannot be printed either."""

    items = keys = get = __iter__ = staticmethod(_raise_unprintable)


class UnprintableArray:
    """numpy's conversion of it raises an exception that cannot be printed."""

    __array__ = staticmethod(_raise_unprintable)


H = Hostile()

REQUESTS = [
    (H, H),
    ({"dataset_id": H}, {"run_id": H}),
    ({"dataset_id": "iris"}, {KeyLikeRunId(): 1}),
    ({KeyLikeRunId(): 1}, None),
    (HostileDict(dataset_id="iris"), HostileDict(run_id="r")),
    ({"dataset_id": "iris", "search_space": {"activations": HostileList(["relu"])}}, None),
    ({"dataset_id": HostileStr("iris"), "task": HostileStr("auto")}, {"run_id": HostileStr("r"), "device": H}),
    ({"dataset_id": "iris", "task": H, "strategy": H, "training": {"epochs": H, "learning_rate": H}},
     {"seed": H, "budget": {"max_trials": H}, "notify": H, "on_event": H, "data_root": H, "artifacts_dir": H}),
    ({"dataset": {"source": "inline", "x": [[H]] * 4, "y": [H] * 4}}, {}),
    ({"dataset": {"source": "arrays", "x": H, "y": H}}, {}),
    ({"dataset": {"source": H}}, {}),
    ({"dataset": {"source": "csv", "path": H, "target": H}}, {}),
    ({(1, 2): H}, {(KeyLikeRunId(),): 2}),
    ({"dataset_id": "iris", "search_space": {KeyLikeRunId(): 1}}, {"budget": {frozenset([1]): 1}}),
    (UnprintableDict(dataset_id="iris"), UnprintableDict(run_id="r")),
    ({"dataset_id": "iris", "training": UnprintableDict()}, {"budget": UnprintableDict()}),
]


def assert_answer(result) -> None:
    assert isinstance(result, dict) and result["status"] == "failed", result
    assert isinstance(result["error"], str) and result["error"]
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("spec, opts", REQUESTS)
def test_validate_and_run_nas_answer_any_object(spec, opts, monkeypatch):
    # pydantic-core reports a discriminator whose __hash__ raises as "unraisable" (a line on
    # stderr) and answers with a validation error: noise, not an escape. pytest's own hook
    # cannot print such an object, so it is swapped out here.
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    for call in (validate, run_nas):
        result = call(spec, opts)
        assert_answer(result)
        assert result["error_type"] == "validation_error", result  # the caller's mistake, not a bug
        assert result["run_id"] is None


@pytest.mark.parametrize("args, kwargs", [
    ((H, H, H), {}),
    (("name", H, H), {}),
    (("name", [[1.0]] * 6, [0, 1] * 3, H), {}),
    (("name", [[1.0]] * 6, [0, 1] * 3), {"replace": H}),
    ((HostileStr("name"), np.zeros((6, 2)), np.array([0, 1] * 3)), {}),
    (("name", HostileList([[1.0]]), [0]), {}),
    (("name", np.zeros((6, 2)), HostileDict()), {}),
    (("name", UnprintableArray(), [0, 1] * 3), {}),
    ((UnprintableDict(), np.zeros((6, 2)), np.array([0, 1] * 3)), {}),
])
def test_register_dataset_answers_any_object(args, kwargs):
    try:
        result = register_dataset(*args, **kwargs)
        assert isinstance(result, dict) and result["status"] in ("registered", "failed"), result
        json.dumps(result, allow_nan=False)
    finally:
        unregister_dataset("name")


@pytest.mark.parametrize("error", [UnprintableError(), RuntimeError(H), ValueError(10**5000)])
def test_failure_result_describes_any_exception(error):
    result = failure_result(error, "r1")
    assert_answer(result)
    assert result["error_type"] == "internal_error" and result["run_id"] == "r1"
    assert result["error"].startswith(f"internal error ({type(error).__name__}): ")


def test_failure_result_survives_a_hostile_run_id_and_metadata():
    result = failure_result(UnprintableError(), H, metadata={"x": H})
    assert_answer(result)
