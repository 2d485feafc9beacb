"""The job protocol over ``python -m cerebros_service serve``: submit, status, cancel, ids, EOF."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest

from conftest import required

TINY_SPACE = {"max_levels": 1, "max_units_per_level": 1, "min_neurons": 4, "max_neurons": 8}
LONG = {"spec": {"dataset_id": "iris", "training": {"epochs": 30, "patience": 30}, "search_space": TINY_SPACE},
        "opts": {"budget": {"max_trials": 50, "population_size": 2}}}


@pytest.fixture(autouse=True)
def _artifacts_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CEREBROS_ARTIFACTS_DIR", raising=False)
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))


class Serve:
    """A serve process with its stdout read line by line on a thread."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, "-m", "cerebros_service", "serve", *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.process.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def send(self, request: dict | str) -> None:
        self.process.stdin.write((request if isinstance(request, str) else json.dumps(request)).encode() + b"\n")
        self.process.stdin.flush()

    def next_raw(self, timeout: float = 120) -> bytes:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "serve ended"
        return line

    def until(self, predicate, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.next_raw(max(0.1, deadline - time.monotonic())))
            if predicate(message):
                return message


def test_submit_status_cancel_and_eof_over_serve():
    serve = Serve()
    try:
        serve.send({"id": "a", "op": "submit", "events": True, **LONG})
        ack = serve.until(lambda m: m.get("id") == "a" and "result" in m)["result"]
        assert ack["status"] == "queued"
        job = ack["job_id"]
        event = serve.until(lambda m: "event" in m)
        assert event["id"] == "a" and event["job_id"] == job and event["event"]["type"] == "trial"

        serve.send({"id": "s", "op": "status", "job_id": job})
        assert serve.until(lambda m: m.get("id") == "s")["result"]["status"] == "running"
        serve.send({"id": "c", "op": "cancel", "job_id": job})
        assert serve.until(lambda m: m.get("id") == "c")["result"]["status"] == "cancelling"
        done = serve.until(lambda m: "done" in m)
        assert done["id"] == "a" and done["job_id"] == job
        assert done["done"]["status"] == "cancelled" and done["done"]["completed_trials"] >= 1

        serve.send({"id": 3, "op": "ping"})
        ping = serve.until(lambda m: m.get("id") == 3)["result"]
        assert ping["pid"] == serve.process.pid and ping["tensorflow_loaded"] is False  # it ran in a worker

        serve.send({"id": 4, "op": "submit", **LONG})  # no events asked: only the end comes
        serve.until(lambda m: m.get("id") == 4 and "result" in m)
        serve.send({"id": 5, "op": "status", "job_id": "nope"})
        assert serve.until(lambda m: m.get("id") == 5)["result"]["error_details"][0]["loc"] == ["job_id"]
        serve.process.stdin.close()  # end of input: the running job is cancelled, its end written
        done = serve.until(lambda m: m.get("id") == 4 and "done" in m, timeout=60)
        assert done["done"]["status"] == "cancelled"
        assert serve.process.wait(timeout=30) == 0
    finally:
        serve.process.kill()


def test_ids_come_back_exactly_as_sent():
    serve = Serve()
    try:
        for raw_id in ("123456789012345678901234567890", "-98765432109876543210987", "1e400", "0.1", "2.50",
                       '"text"', "true", "null", '{"k":[1,2]}'):
            serve.send('{"id": %s, "op": "ping"}' % raw_id)
            line = serve.next_raw()
            assert line.startswith(b'{"id":' + raw_id.encode() + b","), line
        serve.send('{"id": 12345678901234567890123, "op": "validate", "spec": {"dataset_id": "iris"}, '
                   '"opts": {"seed": 123456789012345678901234567890}}')
        answer = json.loads(serve.next_raw())
        assert answer["id"] == 12345678901234567890123  # exact, though no 64-bit integer holds it
        assert answer["result"]["error_details"][0]["loc"] == ["opts", "seed"]
    finally:
        serve.process.stdin.close()
        serve.process.wait(timeout=30)


@pytest.mark.parametrize("command", ["serve", "run", "validate"])
def test_a_stderr_file_in_a_missing_folder_is_answered_in_the_protocol(tmp_path, command):
    missing = tmp_path / "no" / "such" / "stderr.log"
    args = [sys.executable, "-m", "cerebros_service", command, "--stderr-file", str(missing)]
    done = subprocess.run(args, input=b"", capture_output=True, timeout=60)
    assert done.returncode == 2
    answer = json.loads(done.stdout)
    failure = answer["result"] if command == "serve" else answer
    if command == "serve":
        assert answer["id"] is None
    assert failure["error_type"] == "validation_error" and failure["error_details"][0]["loc"] == ["stderr_file"]
    assert str(missing) in failure["error"] and "No such file or directory" in failure["error"]
    assert b"Traceback" not in done.stderr


def test_a_request_cannot_widen_the_data_root_of_serve(tmp_path):
    import numpy as np

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir(), elsewhere.mkdir()
    rows = np.arange(16, dtype=np.float32).reshape(8, 2)
    for folder in (data, elsewhere):
        np.save(folder / "x.npy", rows)
    serve = Serve("--data-root", str(data))
    try:
        register = {"op": "register_dataset", "name": "rows", "y": [0, 1] * 4}
        serve.send({"id": 1, **register, "x": {"npy": str(elsewhere / "x.npy")}, "data_root": str(elsewhere)})
        moved = serve.until(lambda m: m.get("id") == 1)["result"]
        assert moved["error_type"] == "validation_error" and moved["error_details"][0]["loc"] == ["data_root"]
        serve.send({"id": 2, **register, "x": {"npy": str(elsewhere / "x.npy")}})
        outside = serve.until(lambda m: m.get("id") == 2)["result"]
        assert outside["error_type"] == "dataset_error" and outside["error_details"][0]["loc"] == ["x", "npy"]
        serve.send({"id": 3, **register, "x": {"npy": "x.npy"}})
        assert serve.until(lambda m: m.get("id") == 3)["result"]["status"] == "registered"
    finally:
        serve.process.stdin.close()
        serve.process.wait(timeout=30)


def test_serve_predicts_onnx_runs_at_once_and_keras_runs_in_a_worker_never_loading_tensorflow(
        regression_run, after_root_dir):
    import shutil

    required("onnxruntime")
    run_dir = regression_run["run_dir"]
    keras_only = after_root_dir / "diabetes-keras-only"
    shutil.copytree(run_dir, keras_only, dirs_exist_ok=True)
    (keras_only / "best_model.onnx").unlink()
    rows = [[0.01 * (i + j) for j in range(10)] for i in range(3)]
    serve = Serve("--artifacts-root", str(after_root_dir))
    try:
        serve.send({"id": "onnx", "op": "predict", "run": run_dir.name, "x": rows})
        onnx = serve.until(lambda m: m.get("id") == "onnx")["result"]
        assert onnx["status"] == "success" and onnx["engine"] == "onnx" and len(onnx["predictions"]) == 3
        serve.send({"id": "keras", "op": "predict", "run": keras_only.name, "x": rows})
        ack = serve.until(lambda m: m.get("id") == "keras" and "result" in m)["result"]
        assert ack["status"] == "queued" and ack["run_id"] == keras_only.name
        done = serve.until(lambda m: m.get("id") == "keras" and "done" in m)
        assert done["job_id"] == ack["job_id"]
        keras = done["done"]
        assert keras["status"] == "success" and keras["engine"] == "keras", keras
        assert keras["predictions"] == pytest.approx(onnx["predictions"], rel=1e-3, abs=1e-3)
        serve.send({"id": "ping", "op": "ping"})
        assert serve.until(lambda m: m.get("id") == "ping")["result"]["tensorflow_loaded"] is False
        serve.send({"id": "jobs", "op": "jobs"})
        listed = serve.until(lambda m: m.get("id") == "jobs")["result"]["jobs"]
        assert [(job["op"], job["status"]) for job in listed] == [("predict", "success")]
    finally:
        serve.process.stdin.close()
        serve.process.wait(timeout=60)
        shutil.rmtree(keras_only, ignore_errors=True)
