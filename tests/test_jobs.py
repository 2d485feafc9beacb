"""Searches as jobs: the runner, its executors (local, process), cancellation, shared datasets.

Worker processes pay TensorFlow's import (~6 s on 2 cores) once each, so the tests share
one runner whose worker is reused, and search tiny spaces for one epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import required

from cerebros_service import jobs
from cerebros_service.jobs import protocol
from cerebros_service.jobs.runner import JobRunner

TINY_SPACE = {"max_levels": 1, "max_units_per_level": 1, "min_neurons": 4, "max_neurons": 8}
TINY_SPEC = {"dataset_id": "iris", "training": {"epochs": 1}, "search_space": TINY_SPACE}
TINY_OPTS = {"seed": 7, "budget": {"max_trials": 1, "population_size": 1}}
# Enough work that a cancel lands mid-search: many trials of many epochs.
LONG_SPEC = {"dataset_id": "iris", "training": {"epochs": 30, "patience": 30}, "search_space": TINY_SPACE}
LONG_OPTS = {"budget": {"max_trials": 50, "population_size": 2}}


@pytest.fixture(autouse=True)
def _artifacts_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CEREBROS_ARTIFACTS_DIR", raising=False)
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))


@pytest.fixture(scope="module")
def runner():
    """This interpreter's runner (run_nas's too), whose worker process is reused from test
    to test; it shuts down at exit."""
    jobs.configure(max_concurrent_jobs=2)
    return jobs.default_runner()


def wait_for(predicate, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


def test_importing_the_runner_and_protocol_does_not_import_tensorflow():
    code = ("import sys, cerebros_service.jobs, cerebros_service.jobs.protocol, cerebros_service.jobs.worker; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


def test_an_invalid_request_is_answered_at_submit_and_unknown_jobs_are_named(runner):
    answer = runner.submit({"dataset_id": "iris", "training": {"epochs": 0}}, {"executor": {"kind": "grid"}})
    assert answer["status"] == "failed" and answer["error_type"] == "validation_error"
    locs = [detail["loc"] for detail in answer["error_details"]]
    assert ["spec", "training", "epochs"] in locs and ["opts", "executor", "kind"] in locs
    for call in (runner.status, runner.result, runner.cancel):
        unknown = call("job-nope")
        assert unknown["error_type"] == "validation_error" and unknown["error_details"][0]["loc"] == ["job_id"]
        assert "names no job" in unknown["error"]


def test_a_local_job_pushes_events_and_its_end_to_notify(runner):
    messages = []
    ack = runner.submit(TINY_SPEC, {**TINY_OPTS, "executor": {"kind": "local"}}, notify=messages.append)
    assert ack["status"] == "queued" and ack["job_id"].startswith("job-")
    result = runner.result(ack["job_id"], timeout=120)
    assert result["status"] == "success" and result["completed_trials"] == 1
    status = runner.status(ack["job_id"])
    assert status["status"] == "success" and status["executor"] == "local" and status["trials_done"] == 1
    assert status["worker_pid"] is None
    events = [m["event"] for m in messages if "event" in m]
    assert [e["type"] for e in events] == ["trial", "generation"]
    assert all(m["job_id"] == ack["job_id"] for m in messages)
    assert messages[-1] == {"job_id": ack["job_id"], "done": result}  # the end comes last, once


def test_a_process_job_runs_in_a_worker_and_matches_the_same_request_run_locally(runner):
    local = runner.result(runner.submit(TINY_SPEC, {**TINY_OPTS, "executor": {"kind": "local"}})["job_id"], None)
    ack = runner.submit(TINY_SPEC, TINY_OPTS)  # submit's default executor: a worker process
    result = runner.result(ack["job_id"], timeout=180)
    assert result["status"] == "success", result
    status = runner.status(ack["job_id"])
    assert status["executor"] == "process" and status["worker_pid"] not in (None, os.getpid())
    assert [t["value"] for t in result["trials"]] == [t["value"] for t in local["trials"]]
    assert result["best_architecture"] == local["best_architecture"]
    assert Path(result["artifacts"]["best_model"]).exists()


def test_same_seed_searches_at_once_in_one_interpreter_equal_the_same_search_alone(runner):
    # Searches in one interpreter share Keras's global state: they run one at a time
    # (jobs in worker processes each have their own; the test above compares those).
    from cerebros_service import run_nas

    local = {**TINY_OPTS, "executor": {"kind": "local"}}
    alone = run_nas(TINY_SPEC, local)
    job = runner.submit(TINY_SPEC, local)
    threaded: list[dict] = []
    threads = [threading.Thread(target=lambda: threaded.append(run_nas(TINY_SPEC, local))) for _ in range(2)]
    for thread in threads:
        thread.start()
    together = [runner.result(job["job_id"], None)]
    for thread in threads:
        thread.join()
    assert alone["status"] == "success"
    for result in together + threaded:
        assert result["status"] == "success", result
        assert result["best_metric"] == alone["best_metric"]
        assert [t["value"] for t in result["trials"]] == [t["value"] for t in alone["trials"]]


def test_cancel_stops_a_running_search_keeping_its_trials_and_best_model(runner):
    messages = []
    ack = runner.submit(LONG_SPEC, LONG_OPTS, notify=messages.append)
    wait_for(lambda: any(m.get("event", {}).get("type") == "trial" for m in messages), what="a first trial")
    asked = time.monotonic()
    assert runner.cancel(ack["job_id"])["status"] == "cancelling"
    result = runner.result(ack["job_id"], timeout=60)
    assert time.monotonic() - asked < 10  # within a batch, plus saving the run
    assert result["status"] == "cancelled" and result["metadata"]["stopped_because"] == "cancelled"
    assert 1 <= result["completed_trials"] < 50 and result["best_metric"] is not None
    assert Path(result["artifacts"]["best_model"]).exists()
    assert runner.status(ack["job_id"])["status"] == "cancelled"
    assert messages[-1]["done"]["status"] == "cancelled"


def test_a_queued_job_is_cancelled_at_once():
    solo = JobRunner(max_concurrent_jobs=1, default_executor="local")
    try:
        first = solo.submit(LONG_SPEC, LONG_OPTS)
        second = solo.submit(TINY_SPEC, TINY_OPTS)
        assert solo.status(second["job_id"])["status"] == "queued"
        assert solo.cancel(second["job_id"])["status"] == "cancelled"
        result = solo.result(second["job_id"])
        assert result["status"] == "cancelled" and result["completed_trials"] == 0
        assert solo.cancel(first["job_id"])["status"] in ("cancelling", "cancelled")
    finally:
        assert solo.shutdown(timeout=30)["unfinished"] == []


@pytest.mark.slow  # a second worker pays TensorFlow's import; mix test's subprocess suite covers it too
def test_a_worker_that_dies_is_a_worker_crashed_result_and_the_next_job_gets_a_fresh_one(runner):
    ack = runner.submit(LONG_SPEC, LONG_OPTS)
    pid = wait_for(lambda: runner.status(ack["job_id"])["worker_pid"], what="a worker")
    wait_for(lambda: runner.status(ack["job_id"])["trials_done"] >= 1, what="a first trial")
    os.kill(pid, signal.SIGKILL)
    crashed = runner.result(ack["job_id"], timeout=30)
    assert crashed["status"] == "failed" and crashed["error_type"] == "worker_crashed"
    assert f"pid {pid}" in crashed["error"] and "signal 9" in crashed["error"]
    after = runner.submit(TINY_SPEC, TINY_OPTS)
    assert runner.result(after["job_id"], timeout=180)["status"] == "success"
    assert runner.status(after["job_id"])["worker_pid"] != pid


def test_a_binary_dataset_reaches_workers_as_one_shared_file_released_on_unregister(runner):
    from cerebros_service.data import registry

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    answer = registry.register_dataset("binary-rows", {"data": x.tobytes(), "dtype": "float32", "shape": [120, 6]},
                                       {b"data": y.tobytes(), b"dtype": b"int64", b"shape": [120]})
    assert answer["status"] == "registered" and answer["n_samples"] == 120
    assert not registry.get_dataset("binary-rows").x.flags.owndata  # a view of the bytes: no copy
    spec = {**TINY_SPEC, "dataset_id": "binary-rows"}
    first = runner.result(runner.submit(spec, TINY_OPTS)["job_id"], 180)
    assert first["status"] == "success" and first["metadata"]["dataset"]["n_samples"] == 120
    shared = registry.shared_descriptor("binary-rows")
    assert runner.result(runner.submit(spec, TINY_OPTS)["job_id"], 180)["status"] == "success"
    assert registry.shared_descriptor("binary-rows") == shared  # the same files for every job
    paths = [Path(shared[key]["path"]) for key in ("x", "y")]
    assert all(path.exists() for path in paths)
    np.testing.assert_array_equal(np.load(paths[0], mmap_mode="r"), x)
    assert registry.unregister_dataset("binary-rows")
    assert not any(path.exists() for path in paths)


def test_bad_binary_arrays_are_refused_with_the_field_named():
    from cerebros_service.data import registry

    short = registry.register_dataset("short", {"data": b"\0" * 12, "dtype": "float32", "shape": [4, 2]}, [0, 1, 0, 1])
    assert short["error_type"] == "dataset_error" and short["error_details"][0]["loc"] == ["x", "data"]
    assert "holds 12 bytes" in short["error"]
    odd = registry.register_dataset("odd", {"data": b"", "dtype": "object", "shape": [0]}, [])
    assert odd["error_details"][0]["loc"] == ["x", "dtype"]


def test_run_nas_with_the_process_executor_waits_for_its_job():
    from cerebros_service import run_nas

    result = run_nas(TINY_SPEC, {**TINY_OPTS, "executor": {"kind": "process"}})
    assert result["status"] == "success" and result["completed_trials"] == 1
    assert result["metadata"]["stopped_because"] == "max_trials"


def test_the_protocol_names_what_is_wrong_with_a_request():
    assert protocol.handle({"op": "launch"})["error_details"][0]["loc"] == ["op"]
    assert protocol.handle({"op": "status"})["error"] == "op 'status' needs 'job_id'"
    extra = protocol.handle({"op": "ping", "spec": {}})
    assert extra["error_details"][0]["loc"] == ["spec"] and "unknown key" in extra["error"]
    assert protocol.handle({"op": "submit", "spec": {}, "events": "yes"})["error_details"][0]["loc"] == ["events"]
    assert protocol.handle({"op": "ping"})["pid"] == os.getpid()
    assert protocol.handle({"op": "result", "job_id": "x", "timeout": -1})["error_details"][0]["loc"] == ["timeout"]


def test_the_pythonx_entry_point_takes_bytes_keys_and_answers_json_bytes():
    import orjson

    answer = protocol.call({b"op": b"validate", b"spec": {b"dataset_id": b"iris"}})
    assert isinstance(answer, bytes) and orjson.loads(answer)["status"] == "valid"
    registered = orjson.loads(protocol.call({
        b"op": b"register_dataset", b"name": b"from-elixir",
        b"x": {b"data": np.arange(8, dtype=np.float64).tobytes(), b"dtype": b"float64", b"shape": [4, 2]},
        b"y": [0, 1, 0, 1]}))
    try:
        assert registered["status"] == "registered" and registered["n_features"] == 2
    finally:
        from cerebros_service.data import registry

        registry.unregister_dataset("from-elixir")


def test_configure_checks_its_value():
    assert jobs.configure(max_concurrent_jobs=0)["error_details"][0]["loc"] == ["max_concurrent_jobs"]
    assert jobs.configure(max_concurrent_jobs=True)["status"] == "failed"


def test_an_idle_worker_is_stopped_after_its_idle_timeout():
    from cerebros_service.jobs.executors.process import ProcessExecutor, _Worker

    executor = ProcessExecutor(idle_timeout_s=0.5)
    worker = _Worker()
    executor._checkin(worker)
    executor.trim()
    assert worker.alive()  # not idle long enough yet
    time.sleep(0.7)
    executor.trim()
    assert not worker.alive() and worker.process.returncode == 0  # asked to stop, and it did
    assert executor.worker_pids() == []


def test_register_dataset_reads_npy_files_only_under_the_operator_data_root(tmp_path, monkeypatch):
    x = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    inside, outside = tmp_path / "data", tmp_path / "elsewhere"
    inside.mkdir(), outside.mkdir()
    for folder in (inside, outside):
        np.save(folder / "x.npy", x)
    y = [0, 1] * 4

    def register(path, **extra):
        return protocol.handle({"op": "register_dataset", "name": "npy-rows", "x": {"npy": str(path)}, "y": y,
                                **extra})

    # A request cannot name a data root of its own: the key is not part of the op.
    moved = register(outside / "x.npy", data_root=str(outside))
    assert moved["error_type"] == "validation_error" and moved["error_details"][0]["loc"] == ["data_root"]
    monkeypatch.delenv("CEREBROS_DATA_ROOT", raising=False)
    no_root = register(inside / "x.npy")
    assert no_root["error_type"] == "dataset_error" and no_root["error_details"][0]["loc"] == ["x", "npy"]
    assert "no data root" in no_root["error"]
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(inside))
    for escape in (outside / "x.npy", "../elsewhere/x.npy"):
        refused = register(escape)
        assert refused["error_type"] == "dataset_error" and refused["error_details"][0]["loc"] == ["x", "npy"]
        assert "outside the data root" in refused["error"]
    from cerebros_service.data import registry

    try:
        assert register("x.npy")["status"] == "registered"  # relative to the operator's root
        np.testing.assert_array_equal(registry.get_dataset("npy-rows").x, x)
    finally:
        registry.unregister_dataset("npy-rows")


def test_registered_arrays_are_shared_as_files_only_with_jobs_placed_in_another_process(monkeypatch):
    from cerebros_service.data import registry

    x = np.random.default_rng(2).normal(size=(40, 3)).astype(np.float32)
    assert registry.register_dataset("placed", x, (x[:, 0] > 0).astype(np.int64))["status"] == "registered"
    idle = JobRunner(max_concurrent_jobs=0)  # no runner thread: submitted jobs stay queued
    spec = {**TINY_SPEC, "dataset_id": "placed"}
    try:
        datasets = {}
        for executor in ({"kind": "local"}, {"kind": "processes", "workers": 1}, {"kind": "process"}):
            ack = idle.submit(spec, {**TINY_OPTS, "executor": executor})
            assert ack["status"] == "queued", ack
            datasets[executor["kind"]] = idle._jobs[ack["job_id"]].task.datasets
            idle.cancel(ack["job_id"])
        assert datasets["local"] == {} and datasets["processes"] == {}
        assert datasets["process"] == {"placed": registry.shared_descriptor("placed")}
    finally:
        idle.shutdown(1.0)
        registry.unregister_dataset("placed")


def test_predict_answers_an_onnx_run_in_this_process_from_rows_buffers_and_npy_files(
        regression_run, after_root, tmp_path, monkeypatch):
    required("onnxruntime")
    run_id = regression_run["run_dir"].name
    x = np.random.default_rng(3).normal(size=(3, 10))
    monkeypatch.setenv("CEREBROS_DATA_ROOT", str(tmp_path))
    np.save(tmp_path / "rows.npy", x.astype(np.float32))
    answers = [protocol.handle({"op": "predict", "run": run_id, "x": form})
               for form in (x.tolist(), {"data": x.tobytes(), "dtype": "float64", "shape": [3, 10]},
                            {"npy": "rows.npy"})]
    for answer in answers:
        assert answer["status"] == "success" and answer["engine"] == "onnx" and answer["n_samples"] == 3, answer
    np.testing.assert_allclose(answers[1]["predictions"], answers[0]["predictions"], rtol=1e-5)
    np.testing.assert_allclose(answers[2]["predictions"], answers[0]["predictions"], rtol=1e-5)
    # Through the Pythonx entry point: bytes keys, a buffer of bytes, answered as JSON bytes.
    import orjson

    called = orjson.loads(protocol.call({b"op": b"predict", b"run": run_id.encode(), b"opts": {b"engine": b"onnx"},
                                         b"x": {b"data": x.tobytes(), b"dtype": b"float64", b"shape": [3, 10]}}))
    assert called["status"] == "success" and called["predictions"] == answers[1]["predictions"]
    short = protocol.handle({"op": "predict", "run": run_id, "x": {"data": x.tobytes()[:8], "dtype": "float64",
                                                                   "shape": [3, 10]}})
    assert short["error_type"] == "dataset_error" and short["error_details"][0]["loc"] == ["x", "data"]
    outside = protocol.handle({"op": "predict", "run": run_id, "x": {"npy": "../rows.npy"}})
    assert outside["error_details"][0]["loc"] == ["x", "npy"]
    missing = protocol.handle({"op": "predict", "run": "no-such-run", "x": x.tolist()})
    assert missing["error_type"] == "validation_error" and missing["error_details"][0]["loc"] == ["run"]
    assert protocol.handle({"op": "predict", "run": run_id})["error_details"][0]["loc"] == ["x"]
