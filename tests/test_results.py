"""json_safe, scrub, dumps, and the success/failure result dicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import pickle
import queue
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydantic import BaseModel

from cerebros_service import json_safe, scrub
from cerebros_service.boundary.results import failure_result, success_result
from cerebros_service.jsonsafe import dumps
from cerebros_service.errors import DatasetError, ErrorDetail, InputError, SearchFailed
from cerebros_service.search.records import SearchOutcome, TrialRecord

PLAIN = (dict, list, str, int, float, bool, type(None))


def assert_plain(value) -> None:
    """Only dict/list/str/int/float/bool/None, every float finite, every key a str."""
    assert type(value) in PLAIN, type(value)
    if isinstance(value, float):
        assert math.isfinite(value)
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain(item)
    if isinstance(value, list):
        for item in value:
            assert_plain(item)


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: float
    tags: tuple


class Model(BaseModel):
    name: str
    score: float


def test_json_safe_converts_every_supported_type():
    value = {
        "np_int": np.int64(3), "np_float": np.float32(0.5), "np_bool": np.bool_(True),
        "array": np.array([[1.0, np.nan], [np.inf, 2.0]]), "int_array": np.arange(3, dtype=np.int32),
        "enum": Color.RED, "int_enum": Level.HIGH, "path": Path("/tmp/x"),
        "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "day": dt.date(2024, 1, 2),
        "set": {3, 1, 2}, "frozen": frozenset({"b", "a"}), "tuple": (1, (2, 3)),
        "text_bytes": "café".encode(), "raw_bytes": b"\x00\xff",
        "point": Point(1.5, ("a",)), "model": Model(name="m", score=float("nan")),
        "floats": [float("nan"), float("inf"), -float("inf"), 1e308],
        3: "int key", ("a", 1): "tuple key", Color.RED: "enum key",
    }
    safe = json_safe(value)
    assert_plain(safe)
    assert safe["np_int"] == 3 and safe["np_float"] == 0.5 and safe["np_bool"] is True
    assert safe["array"] == [[1.0, None], [None, 2.0]]
    assert safe["int_array"] == [0, 1, 2]
    assert safe["enum"] == "red" and safe["int_enum"] == 3
    assert safe["path"] == "/tmp/x"
    assert safe["when"] == "2024-01-02T03:04:05+00:00" and safe["day"] == "2024-01-02"
    assert safe["set"] == [1, 2, 3] and safe["frozen"] == ["a", "b"]
    assert safe["tuple"] == [1, [2, 3]]
    assert safe["text_bytes"] == "café"
    assert safe["raw_bytes"] == "base64:AP8="
    assert safe["point"] == {"x": 1.5, "tags": ["a"]}
    assert safe["model"] == {"name": "m", "score": None}
    assert safe["floats"] == [None, None, None, 1e308]
    assert safe["3"] == "int key" and safe["red"] == "enum key"
    json.dumps(safe, allow_nan=False)


def test_json_safe_is_extensible_with_register():
    class Money:
        def __init__(self, cents):
            self.cents = cents

    @json_safe.register(Money)
    def _(value):
        return {"cents": json_safe(value.cents)}

    assert json_safe({"price": Money(np.int64(250))}) == {"price": {"cents": 250}}


def test_json_safe_survives_cycles():
    looped: dict = {"name": "a"}
    looped["self"] = looped
    items: list = [1]
    items.append(items)
    assert json_safe(looped) == {"name": "a", "self": None}
    assert json_safe(items) == [1, None]
    shared = [1]
    assert json_safe({"a": shared, "b": shared}) == {"a": [1], "b": [1]}  # sharing is not a cycle


def test_unknown_objects_become_strings():
    class Thing:
        def __str__(self):
            return "a thing"

    assert json_safe(Thing()) == "a thing"


def test_dumps_is_compact_json_and_handles_big_ints():
    assert orjson.loads(dumps({"a": np.float64("nan"), "b": (1, 2)})) == {"a": None, "b": [1, 2]}
    assert json.loads(dumps({"big": 2**100})) == {"big": 2**100}  # beyond orjson's 64 bits


@dataclasses.dataclass
class Config:
    name: str
    lock: object
    values: list


class Holder:
    def __init__(self):
        self.queue = queue.Queue()
        self.label = "h"


def test_scrub_replaces_unpicklable_handles_with_none():
    original_lock = threading.Lock()
    config = {
        "lock": original_lock, "rlock": threading.RLock(), "event": threading.Event(),
        "local": threading.local(), "queue": queue.Queue(), "condition": threading.Condition(),
        "callback": lambda event: None, "array": np.arange(3),
        "nested": [Config("c", threading.Lock(), [1, 2])], "holder": Holder(),
        "tuple": (1, threading.Lock()), "plain": {"a": 1.5},
    }
    config["cycle"] = config
    clean = scrub(config)
    restored = pickle.loads(pickle.dumps(clean))

    for key in ("lock", "rlock", "event", "local", "queue", "condition", "callback"):
        assert clean[key] is None, key
    assert clean["nested"][0].lock is None and clean["nested"][0].values == [1, 2]
    assert clean["holder"].queue is None and clean["holder"].label == "h"
    assert clean["tuple"] == (1, None)
    assert clean["cycle"] is clean  # the cycle is kept, not broken or copied forever
    assert clean["array"] is config["array"]  # plain data is not copied
    assert restored["plain"] == {"a": 1.5}
    assert config["lock"] is original_lock  # the original is left untouched
    assert isinstance(config["nested"][0].lock, type(original_lock))


def test_scrub_drops_instances_of_classes_pickle_cannot_find():
    class Local:  # defined in a function: pickle cannot import it by name
        pass

    assert scrub({"obj": Local(), "keep": 1}) == {"obj": None, "keep": 1}


def test_scrub_keeps_picklable_objects_as_they_are():
    point = Point(1.0, ("a",))
    assert scrub(point) is point
    frozen = dataclasses.make_dataclass("Frozen", [("lock", object)], frozen=True)
    globals()["Frozen"] = frozen  # picklable by reference
    frozen.__module__ = __name__
    copy = scrub(frozen(threading.Lock()))
    assert copy.lock is None
    pickle.dumps(copy)


def _record(trial, value, status="completed"):
    return TrialRecord(
        trial=trial, generation=0, status=status,
        architecture={"input_dim": 4, "levels": [{"units": [{"neurons": np.int64(8), "activation": "elu"}]},
                                                 {"units": [{"neurons": 3, "activation": "output"}]}],
                      "edges": [], "laterals": []},
        metric="val_accuracy", value=value, best_epoch=1, epochs_run=1, duration_s=0.5,
        first_epoch_s=0.4, params=np.int64(59), error=None if status == "completed" else "loss is NaN",
        history={"val_accuracy": [value]},
    )


def test_success_result_has_every_key_and_is_plain_data():
    best = _record(0, np.float32(0.75))
    outcome = SearchOutcome(
        trials=(best, _record(1, None, "failed")), best=best, metric="val_accuracy", direction="max",
        population_history=({"generation": 0, "best_fitness": 0.75, "mean_fitness": float("nan"),
                             "std_fitness": np.float64(0.0), "population_size": 2},),
        stopped_because="max_trials", duration_s=1.25,
        artifacts={"best_model.keras": "/runs/r/best_model.keras", "run.json": "/runs/r/run.json"},
        device="cpu",
    )
    result = success_result(outcome, run_id="r", metadata={"dataset_id": "iris", "seed": np.int64(1)})
    assert_plain(result)
    assert result["status"] == "success"
    assert result["best_architecture"] == result["best_model"]
    assert result["best_architecture"]["fitness"] == result["best_metric"] == 0.75
    assert (result["completed_trials"], result["failed_trials"]) == (1, 1)
    assert result["population_history"][0]["mean_fitness"] is None
    assert result["trials"][1] == {**result["trials"][1], "status": "failed", "value": None, "error": "loss is NaN"}
    assert result["trials"][0]["levels"] == [1, 1]
    assert result["trials"][0]["neurons"] == [[8], [3]]
    assert result["trials"][0]["activations"] == [["elu"], ["output"]]
    assert result["artifacts"] == {"best_model": "/runs/r/best_model.keras", "run": "/runs/r/run.json"}
    assert result["metadata"]["device"] == "cpu" and result["metadata"]["seed"] == 1
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("error, kind", [
    (InputError("bad", [ErrorDetail(("spec", "x"), "is wrong")]), "validation_error"),
    (DatasetError("no file"), "dataset_error"),
    (SearchFailed("no trial completed"), "search_failed"),
    (KeyError("boom"), "internal_error"),
])
def test_failure_result_shape(error, kind):
    result = failure_result(error, "run-1", 2)
    assert_plain(result)
    assert result["status"] == "failed" and result["error_type"] == kind
    assert result["run_id"] == "run-1" and result["completed_trials"] == 2
    assert result["metadata"]["error_type"] == kind
    assert result["metadata"]["timestamp"].endswith("Z")
    assert isinstance(result["error"], str) and result["error"]
    assert all(set(d) == {"loc", "message"} for d in result["error_details"])
    if kind == "validation_error":
        assert result["error_details"] == [{"loc": ["spec", "x"], "message": "is wrong"}]
