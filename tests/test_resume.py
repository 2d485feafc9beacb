"""Resume after a crash: a killed run reads "interrupted" and continues as if it never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import cerebros_service
from cerebros_service.resume import _read_records, effective_status

SPEC = {"dataset_id": "iris", "strategy": "evolution", "training": {"epochs": 2, "patience": 2},
        "search_space": {"max_levels": 2, "max_units_per_level": 2, "bnorm_or_dropout": "none"}}


def _opts(run_id, **extra):
    return {"run_id": run_id, "seed": 3, "execution": "fused",
            "budget": {"max_trials": 4, "population_size": 2},
            "after_run": {"onnx": False, "report": False}, **extra}


def _killed_after_first_generation(root, run_id):
    """A search in a child process that SIGKILLs itself once generation 0 is recorded."""
    code = textwrap.dedent(f"""
        import os, signal, cerebros_service
        def die(event):
            if event["type"] == "generation":
                os.kill(os.getpid(), signal.SIGKILL)
        opts = {_opts(run_id)!r}
        opts["on_event"] = die
        cerebros_service.run_nas({SPEC!r}, opts)
    """)
    env = {**os.environ, "CEREBROS_ARTIFACTS_ROOT": str(root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


def test_a_killed_run_reads_interrupted_and_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    _killed_after_first_generation(tmp_path, "crashy")
    run_json = json.loads((tmp_path / "crashy" / "run.json").read_text())
    assert run_json["status"] == "running" and effective_status(run_json) == "interrupted"
    listed = {row["run_id"]: row for row in cerebros_service.list_runs()["runs"]}
    assert listed["crashy"]["status"] == "interrupted"
    done_before = [json.loads(line)["trial"] for line in open(tmp_path / "crashy" / "trials.jsonl")]
    assert done_before == [0, 1]

    resumed = cerebros_service.run_nas(SPEC, _opts("crashy", resume=True))
    reference = cerebros_service.run_nas(SPEC, _opts("straight"))
    assert resumed["status"] == reference["status"] == "success", resumed.get("error")
    assert resumed["metadata"]["resumed"] is True and resumed["artifacts"]["run_dir"].endswith("crashy")
    # the finished trials were not trained again: trials.jsonl holds each trial once
    lines = [json.loads(line) for line in open(tmp_path / "crashy" / "trials.jsonl")]
    assert [line["trial"] for line in lines] == [0, 1, 2, 3]
    for ours, theirs in zip(resumed["trials"], reference["trials"]):
        assert (ours["trial"], ours["generation"], ours["neurons"]) == (theirs["trial"], theirs["generation"],
                                                                          theirs["neurons"])
        assert ours["value"] == pytest.approx(theirs["value"], abs=1e-6)
    assert resumed["best_metric"] == pytest.approx(reference["best_metric"], abs=1e-6)
    # the trials of the killed run keep their weights on disk, so the same ensemble is delivered
    assert resumed["delivered_model"] == "ensemble"
    assert resumed["ensemble"]["members"] == reference["ensemble"]["members"]
    assert resumed["ensemble"]["validation_metric"] == pytest.approx(reference["ensemble"]["validation_metric"],
                                                                     abs=1e-6)
    assert json.loads((tmp_path / "crashy" / "run.json").read_text())["status"] == "completed"


def test_resume_refuses_other_settings_and_starts_afresh_without_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    first = cerebros_service.run_nas(SPEC, _opts("once", budget={"max_trials": 2, "population_size": 2}))
    assert first["status"] == "success"
    other = {**SPEC, "training": {"epochs": 3, "patience": 2}}
    refused = cerebros_service.run_nas(other, _opts("once", resume=True))
    assert refused["status"] == "failed" and refused["error_type"] == "validation_error"
    assert any(d["loc"] == ["opts", "resume"] and "training" in d["message"] for d in refused["error_details"])
    fresh = cerebros_service.run_nas(SPEC, _opts("never-ran", resume=True,
                                                 budget={"max_trials": 2, "population_size": 2}))
    assert fresh["status"] == "success" and fresh["artifacts"]["run_dir"].endswith("never-ran")


def test_a_line_cut_short_by_the_crash_is_the_trial_that_did_not_finish(tmp_path):
    record = {"trial": 0, "generation": 0, "status": "completed", "architecture": {"levels": []}, "metric": "m",
              "value": 0.5, "best_epoch": 1, "epochs_run": 1, "duration_s": 1.0, "first_epoch_s": 1.0,
              "params": 10}
    path = tmp_path / "trials.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "trial": 1})[:40])
    assert [r.trial for r in _read_records(path)] == [0]


def test_a_running_status_stays_running_while_its_process_lives():
    import socket

    alive = {"status": "running", "owner": {"pid": os.getpid(), "host": socket.gethostname()}}
    assert effective_status(alive) == "running"
    elsewhere = {"status": "running", "owner": {"pid": 1, "host": "another-host"}}
    assert effective_status(elsewhere) == "running"
    assert effective_status({"status": "completed"}) == "completed"
