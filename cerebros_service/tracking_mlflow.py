"""One MLflow run per search: parameters, per-trial metrics, the best model, the run folder.

Written through ``MlflowClient`` (an explicit tracking URI and run id), never
MLflow's process-wide "active run" or tracking URI, so a search leaves the
caller's own MLflow state alone. Per-trial and per-generation metrics come from
the search's event stream (step = trial or generation index, timestamp = when the
event was seen). Needs the ``mlflow`` extra (``mlflow-skinny``).

Note: MLflow 3 refuses a plain-folder (``file:``) tracking store unless
``MLFLOW_ALLOW_FILE_STORE=true`` is set; the refusal is recorded as the reason.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .run_store import read_run_json

INSTALL_HINT = "install the extra: pip install 'cerebros-service[mlflow]'"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000
MODEL_FILES = ("best_model.keras", "best_model.onnx")
SKIPPED_IN_ARTIFACTS = ("tensorboard",)  # logged as its own artifact folder


def log_to_mlflow(run_dir: Path, result: dict, events: list[dict], tracking_uri: str | None,
                  experiment: str) -> dict:
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        return {"status": "skipped", "reason": f"{exc.name or 'mlflow'} is not installed; {INSTALL_HINT}"}

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    run_info = read_run_json(run_dir)
    tags = [RunTag("cerebros.run_id", str(result.get("run_id"))), RunTag("cerebros.run_dir", str(run_dir)),
            RunTag("cerebros.dataset", str((run_info.get("run_info") or {}).get("dataset_id"))),
            RunTag("cerebros.task", str((run_info.get("dataset") or {}).get("task")))]
    run = client.create_run(experiment_id, run_name=run_dir.name, tags={tag.key: tag.value for tag in tags})
    mlflow_run_id = run.info.run_id
    try:
        params = [Param(key, value) for key, value in run_params(run_info).items()]
        for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
            client.log_batch(mlflow_run_id, params=params[start:start + MAX_PARAMS_PER_BATCH])
        metrics = [Metric(*fields) for fields in event_metrics(events, result)]
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(mlflow_run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])
        for name in MODEL_FILES:
            if (run_dir / name).is_file():
                client.log_artifact(mlflow_run_id, str(run_dir / name), artifact_path="model")
        for entry in sorted(run_dir.iterdir()):
            if entry.name.startswith(".") or entry.name in MODEL_FILES:
                continue
            if entry.is_dir():
                client.log_artifacts(mlflow_run_id, str(entry), artifact_path=f"run/{entry.name}")
            else:
                client.log_artifact(mlflow_run_id, str(entry), artifact_path="run")
        client.set_terminated(mlflow_run_id, "FINISHED")
    except BaseException:
        client.set_terminated(mlflow_run_id, "FAILED")
        raise
    return {"status": "done", "run_id": mlflow_run_id, "run_name": run_dir.name, "experiment": experiment,
            "experiment_id": experiment_id, "tracking_uri": str(client.tracking_uri),
            "artifact_uri": run.info.artifact_uri, "metrics_logged": len(metrics), "params_logged": len(params)}


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it in between: use theirs
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def run_params(run_info: dict) -> dict[str, str]:
    """The search's settings and data, flattened to ``a.b.c`` keys (MLflow params are strings)."""
    settings = dict(run_info.get("settings") or {})
    dataset = {k: v for k, v in (run_info.get("dataset") or {}).items() if k not in ("class_labels", "feature_names")}
    flat: dict[str, str] = {}
    _flatten("", {"search": settings, "dataset": dataset,
                  "dataset_id": (run_info.get("run_info") or {}).get("dataset_id"),
                  "metric": run_info.get("metric"), "direction": run_info.get("direction")}, flat)
    return flat


def _flatten(prefix: str, value, into: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
        return
    text = "" if value is None else (",".join(map(str, value)) if isinstance(value, list) else str(value))
    into[prefix] = text[:MAX_PARAM_CHARS]


def event_metrics(events: list[dict], result: dict) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) for every number the event stream carried, plus the totals."""
    rows: list[tuple[str, float, int, int]] = []
    metric = str(result.get("metric") or "metric")
    for event in events:
        stamp = int(1000 * float(event.get("time") or time.time()))
        if event.get("type") == "trial":
            step = int(event.get("trial") or 0)
            architecture = event.get("architecture") or {}
            for key, value in ((f"trial.{metric}", event.get("value")),
                               (f"best_so_far.{metric}", event.get("best_so_far")),
                               ("trial.params", architecture.get("params")),
                               ("trial.failed", 1.0 if event.get("status") == "failed" else 0.0),
                               ("trial.elapsed_s", event.get("elapsed_s"))):
                if _finite(value):
                    rows.append((key, float(value), stamp, step))
        elif event.get("type") == "generation":
            step = int(event.get("generation") or 0)
            for key in ("best_fitness", "mean_fitness", "std_fitness"):
                if _finite(event.get(key)):
                    rows.append((f"generation.{key}", float(event[key]), stamp, step))
    now = int(1000 * time.time())
    for key, value in ((f"best.{metric}", result.get("best_metric")),
                       ("completed_trials", result.get("completed_trials")),
                       ("failed_trials", result.get("failed_trials")),
                       ("search_duration_s", (result.get("metadata") or {}).get("search_duration_s"))):
        if _finite(value):
            rows.append((key, float(value), now, 0))
    return rows


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
