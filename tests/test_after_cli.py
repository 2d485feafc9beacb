"""The CLI after the search: runs (JSON and a terminal table), --delete, serve ops, the progress view."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

from conftest import required
from conftest import MAIN_WITH_TF_REPORT

from cerebros_service.cli_human import eta_seconds, run_with_progress

PYTHON = sys.executable


def cli(*args: str, stdin: str = "", root=None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"CEREBROS_ARTIFACTS_ROOT": str(root)} if root is not None else {})}
    return subprocess.run([PYTHON, "-c", MAIN_WITH_TF_REPORT, *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)


def on_a_terminal(*args: str, root, timeout: float = 120) -> str:
    """Run the CLI with its stdout on a pseudo-terminal, as a person would see it; returns that screen."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "CEREBROS_ARTIFACTS_ROOT": str(root), "COLUMNS": "160", "TERM": "xterm"}
    process = subprocess.Popen([PYTHON, "-m", "cerebros_service", *args], stdout=terminal,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(terminal)
    screen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other side closed: the program ended
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=10)
    os.close(controller)
    assert process.returncode == 0, screen.decode(errors="replace")[-3000:]
    return screen.decode("utf-8", errors="replace")


def test_runs_lists_the_runs_as_json_without_tensorflow(labelled_run, regression_run, after_root_dir):
    done = cli("runs", root=after_root_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TF_LOADED=False" in done.stderr
    listing = json.loads(done.stdout)
    assert listing["status"] == "success" and listing["root"] == str(after_root_dir)
    rows = {row["run_id"]: row for row in listing["runs"]}
    row = rows["iris-labelled"]
    assert row["dataset"] == "inline" and row["status"] == "completed" and row["metric"] == "val_accuracy"
    assert row["best"] == pytest.approx(labelled_run["result"]["best_metric"])
    assert row["has_model"] and row["started"] and row["duration_s"] > 0 and "test_metric" in row
    # the delivered model: the ensemble by default, its size as many members as run.json records
    result = labelled_run["result"]
    assert row["delivered_model"] == result["delivered_model"] == "ensemble"
    assert row["ensemble_size"] == len(result["ensemble"]["members"]) >= 1
    assert row["test_metric"] == result["test_metric"]
    assert rows["diabetes-regression"]["metric"] == "val_rmse"


def test_runs_draws_a_table_on_a_terminal(labelled_run, after_root_dir):
    screen = on_a_terminal("runs", root=after_root_dir)
    assert "Runs under" in screen and "iris-labelled" in screen and "val_accuracy" in screen
    assert f"ensemble of {len(labelled_run['result']['ensemble']['members'])}" in screen
    assert '{"status"' not in screen  # a person gets the table, not the protocol


def test_runs_delete_removes_only_run_folders_under_the_root(labelled_run, after_root_dir, tmp_path):
    copy = after_root_dir / "to-delete"
    shutil.copytree(labelled_run["run_dir"], copy)
    (after_root_dir / "not-a-run").mkdir(exist_ok=True)
    deleted = cli("runs", "--delete", "to-delete", root=after_root_dir)
    assert deleted.returncode == 0 and json.loads(deleted.stdout) == {
        "status": "deleted", "run_id": "to-delete", "path": str(copy)}
    assert not copy.exists()
    for target in ("not-a-run", "../", str(tmp_path), "to-delete"):
        refused = cli("runs", "--delete", target, root=after_root_dir)
        assert refused.returncode == 2, target
        assert json.loads(refused.stdout)["error_type"] == "validation_error", target
    assert (after_root_dir / "not-a-run").is_dir()


def test_serve_answers_predict_and_refuses_malformed_ones(labelled_run, after_root_dir):
    required("onnxruntime")
    lines = [
        {"id": 1, "op": "predict", "run": "iris-labelled", "x": [[5.1, 3.5, 1.4, 0.2]], "opts": {"engine": "onnx"}},
        {"id": 2, "op": "predict", "run": "iris-labelled"},
        {"id": 3, "op": "predict", "run": "iris-labelled", "x": [[1, 2]], "verbose": True},
        {"id": 4, "op": "predict", "run": "nope", "x": [[1, 2, 3, 4]]},
        {"id": 5, "op": "runs"},
    ]
    done = cli("serve", stdin="".join(json.dumps(line) + "\n" for line in lines), root=after_root_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    answers = {answer["id"]: answer["result"] for answer in map(json.loads, done.stdout.splitlines())}
    assert answers[1]["status"] == "success" and answers[1]["predictions"] == ["setosa"]
    assert answers[2]["error_details"][0]["loc"] == ["x"]
    assert answers[3]["error_details"][0]["loc"] == ["verbose"]
    assert "no run 'nope'" in answers[4]["error"]
    assert "iris-labelled" in {row["run_id"] for row in answers[5]["runs"]}
    assert "TF_LOADED=False" in done.stderr  # the ONNX engine served it


def test_help_names_the_new_commands_without_tensorflow():
    done = cli("--help")
    assert done.returncode == 0 and "TF_LOADED=False" in done.stderr
    for command in ("predict", "export", "report", "runs"):
        assert command in done.stdout
        assert cli(command, "--help").returncode == 0


def test_eta_is_the_mean_trial_time_times_the_trials_left_capped_by_the_time_budget():
    assert eta_seconds(0, 10, 5.0, None) is None
    assert eta_seconds(2, 10, 10.0, None) == pytest.approx(40.0)
    assert eta_seconds(2, 10, 10.0, 25.0) == pytest.approx(15.0)
    assert eta_seconds(10, 10, 30.0, None) == 0.0


def test_the_progress_view_and_the_summary_table(after_root, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    screen = io.StringIO()
    result = run_with_progress(
        {"dataset_id": "iris", "training": {"epochs": 1}, "search_space": {"max_levels": 1, "max_neurons": 8}},
        {"run_id": "progress-view", "budget": {"max_trials": 1, "population_size": 1},
         "after_run": {"onnx": False, "report": False}}, screen)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # without the terminal's control codes
    assert result["status"] == "success"
    assert "searching" in text and "1/1 trials · best" in text and "ETA 0:00" in text
    assert "Top 1 trial by val_accuracy (higher is better)" in text
    trial_rows = [line for line in text.splitlines() if re.match(r"│\s+1 │\s+0 │\s+0 │", line)]
    assert len(trial_rows) == 1, text[-3000:]
    assert f"{result['best_metric']:#.4g} val_accuracy" in text and "run folder" in text
    assert result["delivered_model"] == "ensemble" and "delivered  ensemble of 1 trial\n" in text
    invalid = io.StringIO()
    refused = run_with_progress({"dataset_id": "iris", "training": {"epochs": 0}}, {}, invalid)
    assert refused["status"] == "failed" and "spec.training.epochs" in invalid.getvalue()


@pytest.mark.slow
def test_run_on_a_terminal_shows_progress_then_the_table(after_root_dir, tmp_path):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"spec": {"dataset_id": "iris", "training": {"epochs": 1}},
                                   "opts": {"run_id": "on-a-terminal", "budget": {"max_trials": 2,
                                                                                  "population_size": 2}}}))
    screen = on_a_terminal("run", "--input", str(request), root=after_root_dir, timeout=300)
    assert "searching" in screen and "2/2" in screen and "Top 2 trials" in screen and "report" in screen
    assert '"status"' not in screen
