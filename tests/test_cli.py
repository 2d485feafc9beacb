"""python -m cerebros_service run | validate | serve, through real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MAIN_WITH_TF_REPORT

PYTHON = sys.executable
TINY_SPEC = {"dataset_id": "iris", "training": {"epochs": 1},
             "search_space": {"max_levels": 1, "max_units_per_level": 1, "min_neurons": 4, "max_neurons": 8}}


@pytest.fixture(autouse=True)
def _operator_roots(tmp_path, monkeypatch):
    """Each test's tmp_path is the operator's artifacts root (opts.artifacts_dir may name it)."""
    monkeypatch.delenv("CEREBROS_ARTIFACTS_DIR", raising=False)
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))



def cli(*args: str, stdin: str = "", timeout: float = 240, tf_report: bool = False) -> subprocess.CompletedProcess:
    command = [PYTHON, "-c", MAIN_WITH_TF_REPORT, *args] if tf_report else [PYTHON, "-m", "cerebros_service", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)


def tiny_opts(tmp_path: Path, **extra) -> dict:
    return {"budget": {"max_trials": 1, "population_size": 1}, "parameters": {"elite_size": 0},
            "artifacts_dir": str(tmp_path), **extra}


def test_validate_answers_without_importing_tensorflow():
    done = cli("validate", stdin=json.dumps({"spec": {"dataset_id": "digits"}, "opts": {"run_id": "v1"}}),
               tf_report=True)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "valid" and answer["opts"]["run_id"] == "v1"
    assert answer["spec"]["training"]["epochs"] == 10  # defaults filled in
    assert "TF_LOADED=False" in done.stderr


def test_validate_exit_codes_and_error_answers(tmp_path):
    bad = cli("validate", stdin=json.dumps({"spec": {"dataset_id": "digits", "training": {"epochs": 0}}}))
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error_details"][0]["loc"] == ["spec", "training", "epochs"]

    not_json = cli("validate", stdin="{not json")
    assert not_json.returncode == 2 and json.loads(not_json.stdout)["error_type"] == "validation_error"

    extra_key = cli("validate", stdin=json.dumps({"spec": {}, "opts": {}, "extra": 1}))
    assert extra_key.returncode == 2 and "extra" in json.loads(extra_key.stdout)["error"]

    request = tmp_path / "request.json"
    request.write_text(json.dumps({"spec": {"dataset_id": "iris"}}))
    from_file = cli("validate", "--input", str(request))
    assert from_file.returncode == 0 and json.loads(from_file.stdout)["status"] == "valid"

    missing_file = cli("validate", "--input", str(tmp_path / "nope.json"))
    assert missing_file.returncode == 2 and "cannot read the input" in json.loads(missing_file.stdout)["error"]


def test_usage_errors_exit_2_with_a_json_answer():
    for args in ([], ["launch"], ["run", "--bogus"]):
        done = cli(*args)
        assert done.returncode == 2, args
        assert json.loads(done.stdout)["error_type"] == "validation_error"
        assert "usage:" in done.stderr


@pytest.mark.parametrize("command", [None, "run", "validate", "serve"])
def test_help_for_each_command_without_tensorflow(command):
    args = ["--help"] if command is None else [command, "--help"]
    done = cli(*args, tf_report=True)
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m cerebros_service")
    assert "--stderr-file" in done.stdout or command is None
    assert "TF_LOADED=False" in done.stderr


def test_run_writes_exactly_one_json_document(tmp_path):
    request = {"spec": TINY_SPEC, "opts": tiny_opts(tmp_path, run_id="cli-run")}
    done = cli("run", stdin=json.dumps(request))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # the whole stdout is one document: no TF noise in it
    assert result["status"] == "success" and result["run_id"] == "cli-run"
    assert Path(result["artifacts"]["best_model"]).exists()


def test_run_with_events_and_stderr_file(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_text("earlier line\n")
    request = {"spec": TINY_SPEC, "opts": tiny_opts(tmp_path, run_id="evented")}
    done = cli("run", "--events", "--stderr-file", str(log), stdin=json.dumps(request))
    assert done.returncode == 0, log.read_text()[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(set(line) == {"event"} for line in lines[:-1])
    assert {line["event"]["type"] for line in lines[:-1]} == {"trial", "generation"}
    assert lines[-1]["result"]["status"] == "success"
    assert done.stderr == ""  # everything went to the file …
    assert log.read_text().startswith("earlier line\n")  # … appended, not truncated
    assert len(log.read_text()) > len("earlier line\n")


def test_failed_run_exits_1_and_invalid_run_exits_2(tmp_path):
    missing = {"spec": {"dataset": {"source": "csv", "path": "none.csv", "target": 0}}}
    done = cli("run", "--data-root", str(tmp_path), stdin=json.dumps(missing), tf_report=True)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error_type"] == "dataset_error"
    assert "TF_LOADED=False" in done.stderr  # failing early costs no TensorFlow import

    invalid = cli("run", "--events", stdin=json.dumps({"spec": {"dataset_id": "iris"}, "opts": {"seed": -1}}))
    assert invalid.returncode == 2
    assert json.loads(invalid.stdout)["result"]["error_details"][0]["loc"] == ["opts", "seed"]


def test_serve_answers_each_line_and_keeps_going(tmp_path):
    requests = [
        {"id": 1, "op": "ping"},
        "this is not json",
        {"id": "v", "op": "validate", "spec": {"dataset_id": "iris"}},
        {"id": 2, "op": "unknown"},
        {"id": 3, "op": "run", "events": True, "spec": TINY_SPEC, "opts": tiny_opts(tmp_path, run_id="served")},
        {"id": 4, "op": "ping"},
    ]
    stdin = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in requests) + "\n"
    process = subprocess.Popen([PYTHON, "-m", "cerebros_service", "serve"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate(stdin, timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    lines = [json.loads(line) for line in stdout.splitlines()]
    results = {line["id"]: line["result"] for line in lines if "result" in line}

    assert results[1] == {"status": "ok", "pid": process.pid, "tensorflow_loaded": False}
    assert results[None]["error_type"] == "validation_error"  # the malformed line
    assert "not valid JSON" in results[None]["error"]
    assert results["v"]["status"] == "valid"
    assert results[2]["status"] == "failed" and "op must be one of" in results[2]["error"]
    assert results[3]["status"] == "success" and results[3]["run_id"] == "served"
    assert results[4]["tensorflow_loaded"] is True  # TensorFlow stays loaded between requests
    events = [line for line in lines if "event" in line]
    assert events and all(line["id"] == 3 for line in events)
    order = [line["id"] for line in lines]
    assert order.index(3) < order.index(4)  # events and the result come before the next answer
    assert [line.get("id") for line in lines if "result" in line] == [1, None, "v", 2, 3, 4]


def test_serve_exits_0_on_eof_without_requests():
    done = cli("serve", stdin="")
    assert done.returncode == 0 and done.stdout == ""


def test_module_entry_point_matches_console_script():
    # `cerebros-service` (pyproject [project.scripts]) and `python -m` run the same main.
    script = Path(PYTHON).parent / "cerebros-service"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    done = subprocess.run([str(script), "validate"], input=json.dumps({"spec": {"dataset_id": "iris"}}),
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "valid"
