"""MLflow (a real local file store) and TensorBoard logs; the after-run steps are bounded and never fail a run."""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import required

from cerebros_service.after_run import AfterRun, bounded
from cerebros_service.boundary.schema import MlflowTracking


def test_mlflow_gets_params_per_trial_metrics_the_model_and_the_artifacts(labelled_run):
    required("mlflow")
    from mlflow.tracking import MlflowClient

    result = labelled_run["result"]
    assert result["after_run"]["mlflow"]["status"] == "done", result["after_run"]["mlflow"]
    tracked = result["tracking"]["mlflow"]
    assert tracked["experiment"] == "after-tests" and tracked["run_name"] == "iris-labelled"
    client = MlflowClient(tracking_uri=labelled_run["mlruns"].as_uri())
    run = client.get_run(tracked["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == tracked["experiment_id"]
    assert client.get_experiment(tracked["experiment_id"]).name == "after-tests"
    params = run.data.params
    assert params["search.max_trials"] == "2" and params["search.training.epochs"] == "2"
    assert params["dataset.task"] == "multiclass" and params["metric"] == "val_accuracy"
    # one point per trial, stepped by trial index, taken from the event stream
    history = client.get_metric_history(run.info.run_id, "trial.val_accuracy")
    assert sorted(m.step for m in history) == [0, 1]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [t["value"] for t in result["trials"]]
    assert client.get_metric_history(run.info.run_id, "generation.mean_fitness")[0].step == 0
    assert run.data.metrics["best.val_accuracy"] == pytest.approx(result["best_metric"])
    assert run.data.tags["cerebros.run_id"] == "iris-labelled"
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "model")}
    assert logged == {"model/best_model.keras", "model/best_model.onnx"}
    run_files = {f.path for f in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/report.html", "run/trials.jsonl", "run/run.json", "run/events.jsonl", "run/plots"} <= run_files


def test_each_logging_is_a_new_mlflow_run(labelled_run, monkeypatch):
    required("mlflow")
    from cerebros_service.tracking_mlflow import log_to_mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    again = log_to_mlflow(labelled_run["run_dir"], labelled_run["result"], [], labelled_run["mlruns"].as_uri(),
                          "after-tests")
    first = labelled_run["result"]["tracking"]["mlflow"]
    assert again["status"] == "done" and again["run_id"] != first["run_id"]
    assert again["experiment_id"] == first["experiment_id"]


def test_tensorboard_logs_each_trials_epochs(labelled_run):
    required("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, run_dir = labelled_run["result"], labelled_run["run_dir"]
    assert result["after_run"]["tensorboard"]["status"] == "done"
    assert result["artifacts"]["tensorboard"] == str(run_dir / "tensorboard")
    for trial in result["trials"]:
        events = EventAccumulator(str(run_dir / "tensorboard" / f"trial-{trial['trial']:04d}")).Reload()
        tags = events.Tags()["tensors"] or events.Tags()["scalars"]
        assert {"loss", "val_loss", "val_accuracy"} <= set(tags)
        assert [e.step for e in events.Tensors("val_accuracy")] == list(range(1, trial["epochs_run"] + 1))
    search = EventAccumulator(str(run_dir / "tensorboard" / "search")).Reload()
    assert [e.step for e in search.Tensors("best_so_far/val_accuracy")] == [0, 1]


def fake_opts(mlflow=None, tensorboard=False) -> SimpleNamespace:
    """Validated opts as AfterRun reads them: only the tracking steps on."""
    return SimpleNamespace(after_run=SimpleNamespace(onnx=False, report=False, timeout_s=30),
                           tracking=SimpleNamespace(mlflow=mlflow, tensorboard=tensorboard))


def test_missing_extras_are_recorded_skips_not_failures(labelled_run, tmp_path, monkeypatch):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], run_dir)
    for module in ("mlflow", "mlflow.tracking", "mlflow.entities", "tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the extras were not installed
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(tmp_path))
    opts = fake_opts(mlflow=MlflowTracking(tracking_uri="ml", experiment="x"), tensorboard=True)
    result = AfterRun(opts, run_dir).finish({"status": "success", "artifacts": {}})
    assert result["status"] == "success"
    assert result["after_run"]["mlflow"]["status"] == "skipped"
    assert "cerebros-service[mlflow]" in result["after_run"]["mlflow"]["reason"]
    assert result["after_run"]["tensorboard"]["status"] == "skipped"
    assert "tracking" not in result
    recorded = json.loads((run_dir / "run.json").read_text())["after_run"]
    assert recorded["mlflow"]["status"] == "skipped"


def test_an_unreachable_tracking_server_is_a_recorded_failure(labelled_run, tmp_path, monkeypatch):
    required("mlflow")
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], run_dir)
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", "nowhere=unknown-scheme://nowhere")
    opts = fake_opts(mlflow=MlflowTracking(server="nowhere", experiment="x"))
    result = AfterRun(opts, run_dir).finish({"status": "success", "artifacts": {}})
    assert result["status"] == "success" and result["after_run"]["mlflow"]["status"] == "failed"
    assert "unknown-scheme" in result["after_run"]["mlflow"]["reason"]  # the operator's URI was the one tried


def test_a_server_named_by_the_operator_receives_the_run(labelled_run, tmp_path, monkeypatch):
    """The request names the server; the URI behind the name is the operator's (here a store
    outside the artifacts root, which a request could not name itself)."""
    required("mlflow")
    import shutil

    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    shutil.copytree(labelled_run["run_dir"], run_dir)
    store = tmp_path / "operators-mlflow"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", f"other=file:///nowhere, team={store.as_uri()}")
    tracking = MlflowTracking(server="team", experiment="named")
    assert tracking.store_uri() == store.as_uri()
    result = AfterRun(fake_opts(mlflow=tracking), run_dir).finish({"status": "success", "artifacts": {}})
    assert result["after_run"]["mlflow"]["status"] == "done", result["after_run"]["mlflow"]
    tracked = result["tracking"]["mlflow"]
    assert tracked["tracking_uri"] == store.as_uri()
    client = MlflowClient(tracking_uri=store.as_uri())
    assert client.get_run(tracked["run_id"]).info.status == "FINISHED"
    assert client.get_experiment(tracked["experiment_id"]).name == "named"


def test_a_step_is_bounded_in_time_and_its_errors_are_records():
    started = time.monotonic()
    slow = bounded(lambda: time.sleep(5) or {"status": "done"}, 0.2, "slow")
    assert time.monotonic() - started < 2
    assert slow["status"] == "failed" and "did not finish within 0.2 s" in slow["reason"]
    broken = bounded(lambda: 1 / 0, 5, "broken")
    assert broken["status"] == "failed" and broken["reason"].startswith("ZeroDivisionError")
    assert bounded(lambda: {"status": "done"}, 5, "fine")["status"] == "done"


def test_the_event_stream_is_recorded_and_still_reaches_the_caller(tmp_path):
    seen = []
    after = AfterRun(fake_opts(), tmp_path)
    listener = after.listen(seen.append)
    listener({"type": "trial", "trial": 0, "value": float("nan")})
    assert len(seen) == 1 and seen[0]["trial"] == 0  # the caller gets the event as the search sent it
    line = json.loads((tmp_path / "events.jsonl").read_text())
    assert line["trial"] == 0 and line["value"] is None and line["time"] > 0
    assert after.listen(None)({"type": "generation", "generation": 0}) is None  # nobody else listening


def test_the_opts_of_tracking_and_the_after_run_steps_are_validated():
    import cerebros_service

    valid = cerebros_service.validate({"dataset_id": "iris"}, {"tracking": {"mlflow": {"experiment": "x"}},
                                                               "after_run": {"onnx": False}})
    assert valid["status"] == "valid", valid
    assert valid["opts"]["tracking"] == {"mlflow": {"server": None, "tracking_uri": None, "experiment": "x"},
                                         "tensorboard": False}
    assert valid["opts"]["after_run"] == {"onnx": False, "report": True, "timeout_s": 300.0}
    refused = cerebros_service.validate({"dataset_id": "iris"}, {"tracking": {"mlflow": {"experimnt": "x"}},
                                                                 "after_run": {"timeout_s": 0}})
    locs = {tuple(detail["loc"]) for detail in refused["error_details"]}
    assert ("opts", "tracking", "mlflow", "experimnt") in locs and ("opts", "after_run", "timeout_s") in locs
    assert "did you mean 'experiment'" in refused["error"]


def test_a_local_mlflow_store_must_lie_under_the_artifacts_root(after_root):
    import cerebros_service

    def tracking_uri(uri):
        return cerebros_service.validate({"dataset_id": "iris"}, {"tracking": {"mlflow": {"tracking_uri": uri}}})

    inside = tracking_uri("mlruns")
    assert inside["opts"]["tracking"]["mlflow"]["tracking_uri"] == (after_root / "mlruns").as_uri()
    assert tracking_uri(f"sqlite:///{after_root}/ml.db")["opts"]["tracking"]["mlflow"]["tracking_uri"] == \
        f"sqlite:///{after_root}/ml.db"
    for outside in ("/tmp", "../mlruns", "file:///etc", "sqlite:////tmp/ml.db", "sqlite://relative.db"):
        refused = tracking_uri(outside)
        assert refused["status"] == "failed", outside
        assert refused["error_details"][0]["loc"] == ["opts", "tracking", "mlflow", "tracking_uri"], outside


# --------------------------------------------------------------------------- servers are the operator's


def _tracking(mlflow: dict) -> dict:
    import cerebros_service

    return cerebros_service.validate({"dataset_id": "iris"}, {"tracking": {"mlflow": mlflow}})


@pytest.mark.parametrize("uri", ["http://tracking.example:5000", "https://mlflow.attacker.test/",
                                 "databricks://profile", "HTTP://upper.example", "postgresql://db/ml"])
def test_a_request_that_gives_a_server_url_is_refused_and_told_to_ask_the_operator(uri, after_root, monkeypatch):
    monkeypatch.delenv("CEREBROS_MLFLOW_SERVERS", raising=False)
    refused = _tracking({"tracking_uri": uri})
    assert refused["status"] == "failed" and refused["error_type"] == "validation_error", refused
    (detail,) = refused["error_details"]
    assert detail["loc"] == ["opts", "tracking", "mlflow", "tracking_uri"]
    assert "ask the operator" in detail["message"] and "opts.tracking.mlflow.server" in detail["message"]
    assert "none are configured" in detail["message"] and "CEREBROS_MLFLOW_SERVERS" in detail["message"]
    assert "--mlflow-servers" in detail["message"]
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", "team=http://mlflow.internal:5000")
    assert "configured: 'team'" in _tracking({"tracking_uri": uri})["error_details"][0]["message"]


def test_a_server_is_picked_by_a_name_the_operator_configured(monkeypatch):
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", "team=http://mlflow.internal:5000,lab=https://lab.example")
    valid = _tracking({"server": "lab", "experiment": "e"})
    assert valid["status"] == "valid", valid
    assert valid["opts"]["tracking"]["mlflow"] == {"server": "lab", "tracking_uri": None, "experiment": "e"}
    assert MlflowTracking(server="lab").store_uri() == "https://lab.example"
    assert MlflowTracking(server="team").store_uri() == "http://mlflow.internal:5000"

    unknown = _tracking({"server": "elsewhere"})
    (detail,) = unknown["error_details"]
    assert unknown["error_type"] == "validation_error"
    assert detail["loc"] == ["opts", "tracking", "mlflow", "server"]
    assert "'elsewhere'" in detail["message"] and "configured: 'team', 'lab'" in detail["message"]
    both = _tracking({"server": "lab", "tracking_uri": "mlruns"})
    assert both["error_details"][0]["loc"] == ["opts", "tracking", "mlflow", "tracking_uri"]
    assert "left out when server is given" in both["error_details"][0]["message"]

    monkeypatch.delenv("CEREBROS_MLFLOW_SERVERS")
    none = _tracking({"server": "lab"})["error_details"][0]["message"]
    assert "none are configured" in none and "CEREBROS_MLFLOW_SERVERS" in none and "--mlflow-servers" in none


def test_a_server_removed_after_validation_is_not_contacted(monkeypatch, tmp_path):
    """The name is looked up again when the step runs: gone, the step fails without a URI."""
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", "team=http://mlflow.internal:5000")
    tracking = MlflowTracking(server="team")
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", "")
    from cerebros_service.errors import InputError

    with pytest.raises(InputError) as gone:
        tracking.store_uri()
    assert gone.value.details[0].loc == ("opts", "tracking", "mlflow", "server")


@pytest.mark.parametrize("raw, words", [
    ("team", "has no '='"), ("=http://x", "empty name"), ("a=http://x,a=http://y", "names 'a' twice"),
    ("a=not a url", "must be a tracking URI"),
])
def test_a_malformed_server_list_is_a_clear_error_naming_the_variable(raw, words, monkeypatch):
    monkeypatch.setenv("CEREBROS_MLFLOW_SERVERS", raw)
    failed = _tracking({"server": "a"})
    assert failed["status"] == "failed" and failed["error_type"] == "internal_error"  # the operator's to fix
    assert "CEREBROS_MLFLOW_SERVERS" in failed["error"] and words in failed["error"], failed["error"]
