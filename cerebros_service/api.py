"""The front door: ``run_nas(spec, opts)`` and ``validate(spec, opts)``.

Both take whatever the caller sends (Pythonx values, decoded JSON, plain Python)
and answer with a plain JSON-safe dict; neither raises. ``run_nas`` goes
normalize → validate → load the data → settings → run directory → search →
result. TensorFlow is imported only when a search actually starts.
"""

from __future__ import annotations

import difflib
import logging
import time
from typing import Any

import numpy as np

from .boundary.normalize import normalize
from .boundary.results import failure_result, library_versions, success_result, utc_timestamp
from .jsonsafe import json_safe
from .boundary.schema import (
    RUN_ID_PATTERN,
    ArraysSource,
    BuiltinSource,
    CsvSource,
    InlineSource,
    NpzSource,
    Opts,
    Spec,
    build_settings,
    check_part,
)
from .boundary.errors_text import short_repr, summary_sentence
from .data import registry
from .data.builtin import BUILTIN_DATASETS, load_builtin
from .data.dataset import Dataset, make_dataset
from .data.files import load_csv, load_npz
from .errors import DatasetError, ErrorDetail, InputError, ServiceError
from .events import make_event_sink
from .settings import resolve_metric

log = logging.getLogger(__name__)


def validate(spec: Any, opts: Any = None) -> dict:
    """Check a request without running it: ``{"status": "valid", "spec", "opts"}`` with
    every default filled in, or a failed result (``error_type: "validation_error"``)."""
    try:
        spec_model, opts_model = _checked(spec, opts)
        return json_safe({
            "status": "valid",
            "spec": spec_model.model_dump(),
            "opts": opts_model.model_dump(),
        })
    except ServiceError as exc:
        return failure_result(exc, _given_run_id(opts))
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("validate failed with an internal error")
        return failure_result(exc, _given_run_id(opts))


def run_nas(spec: Any, opts: Any = None) -> dict:
    """Run a neural architecture search; always returns a result dict (see docs/contract.md)."""
    started = time.monotonic()
    run_id = _given_run_id(opts)
    try:
        spec_model, opts_model = _checked(spec, opts)
        run_id = opts_model.run_id
        return _search(spec_model, opts_model, started)
    except ServiceError as exc:
        return failure_result(exc, run_id, getattr(exc, "completed_trials", 0),
                              metadata={"duration_s": time.monotonic() - started})
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("run_nas failed with an internal error (run_id=%s)", run_id)
        return failure_result(exc, run_id, metadata={"duration_s": time.monotonic() - started})


# --------------------------------------------------------------------------- steps


def _checked(spec: Any, opts: Any) -> tuple[Spec, Opts]:
    """Normalize and validate spec and opts, reporting every problem of both at once."""
    details: list[ErrorDetail] = []
    models: dict[str, Any] = {}
    for root, value in (("spec", spec), ("opts", {} if opts is None else opts)):
        try:
            models[root] = check_part(root, normalize(value, root=root))
        except InputError as exc:
            details.extend(exc.details)
    dataset_id = models["spec"].dataset_id if "spec" in models else _raw_dataset_id(spec)
    already_reported = any(d.loc[:2] == ("spec", "dataset_id") for d in details)
    if dataset_id is not None and not already_reported:
        unknown = _unknown_dataset_id(dataset_id)
        if unknown is not None:
            details.append(unknown)
    if details:
        raise InputError(summary_sentence(details), details)
    return models["spec"], models["opts"]


def _raw_text(mapping: Any, key: str) -> str | None:
    """A str value from an unvalidated request part, whether its key and value came as str or bytes."""
    if not isinstance(mapping, dict):
        return None
    value = mapping.get(key, mapping.get(key.encode()))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _raw_dataset_id(spec: Any) -> str | None:
    """dataset_id from a spec that failed validation elsewhere, to report it too."""
    return _raw_text(spec, "dataset_id") or None


def _unknown_dataset_id(name: str) -> ErrorDetail | None:
    if name in BUILTIN_DATASETS or registry.get_dataset(name) is not None:
        return None
    registered = [d["name"] for d in registry.list_datasets()]
    close = difflib.get_close_matches(name, [*BUILTIN_DATASETS, *registered], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    known = ", ".join(BUILTIN_DATASETS) + (f"; registered: {', '.join(registered)}" if registered else "")
    return ErrorDetail(("spec", "dataset_id"),
                       f"names no dataset ({short_repr(name)}); {hint}built-in: {known}")


def _given_run_id(opts: Any) -> str | None:
    """The caller's run_id for a failure result, when it is usable as one."""
    value = _raw_text(opts, "run_id")
    if value is not None and RUN_ID_PATTERN.fullmatch(value) and value not in (".", ".."):
        return value
    return None


def load_dataset(spec: Spec, opts: Opts) -> Dataset:
    """The Dataset the spec names; caller's numpy arrays are kept without copying."""
    task = spec.effective_task
    source = spec.dataset
    if spec.dataset_id is not None:
        registered = registry.get_dataset(spec.dataset_id)
        dataset = registered if registered is not None else load_builtin(spec.dataset_id, seed=opts.seed)
        return _with_task(dataset, task)
    if isinstance(source, BuiltinSource):
        return _with_task(load_builtin(source.name, seed=opts.seed), task)
    if isinstance(source, CsvSource):
        return load_csv(source.path, source.target, data_root=opts.data_root, task=task)
    if isinstance(source, NpzSource):
        return load_npz(source.path, data_root=opts.data_root, task=task)
    if isinstance(source, InlineSource):
        return make_dataset("inline", np.asarray(source.x, dtype=np.float64), np.asarray(source.y), task=task)
    if isinstance(source, ArraysSource):
        return make_dataset("arrays", source.x, source.y, task=task)
    raise DatasetError("the spec names no data")  # unreachable after validation


def _with_task(dataset: Dataset, task: str) -> Dataset:
    """A named dataset under the task the spec asks for (same arrays, re-labelled if needed)."""
    fits = task == "auto" or task == dataset.task or (
        task == "classification" and dataset.task in ("binary", "multiclass"))
    if fits:
        return dataset
    y = dataset.y
    if dataset.class_labels is not None and task == "regression":
        y = np.asarray(dataset.class_labels)[dataset.y]
    return make_dataset(dataset.name, dataset.x, y, task=task, feature_names=dataset.feature_names)


def _metric_for(spec: Spec, dataset: Dataset) -> tuple[str, str]:
    try:
        return resolve_metric(spec.objective, dataset.task)
    except ValueError as exc:
        raise InputError(
            f"Invalid request: spec.objective: {exc} (the data is a {dataset.task} task).",
            [ErrorDetail(("spec", "objective"), f"{exc} (the data is a {dataset.task} task)")],
        ) from None


def _dataset_label(spec: Spec) -> str:
    source = spec.dataset
    if spec.dataset_id is not None:
        return spec.dataset_id
    if isinstance(source, BuiltinSource):
        return source.name
    if isinstance(source, (CsvSource, NpzSource)):
        return f"{source.source}:{source.path}"
    return source.source if source is not None else "unknown"


def _search(spec: Spec, opts: Opts, started: float) -> dict:
    dataset = load_dataset(spec, opts)
    metric, _direction = _metric_for(spec, dataset)

    from .artifacts import RunDirectory
    from .run import run_search  # the engine (and, when training starts, TensorFlow): only now
    settings = build_settings(spec, opts, metric)
    run_dir = RunDirectory.create(opts.artifacts_dir, opts.run_id)
    timestamp = utc_timestamp()
    metadata = {
        "dataset_id": _dataset_label(spec),
        "dataset": dataset.describe(),
        "task": dataset.task,
        "objective": spec.objective if spec.objective is not None else metric,
        "strategy": spec.strategy,
        "ga_params": {
            "population_size": settings.population_size,
            "mutation_rate": settings.mutation_rate,
            "crossover_rate": settings.crossover_rate,
            "elite_size": settings.elite_size,
            "max_trials": settings.max_trials,
            "max_time_seconds": settings.max_time_seconds,
        },
        "seed": settings.seed,
        "timestamp": timestamp,
        "versions": library_versions(),
        "run_dir": str(run_dir.path),
    }
    run_info = {
        "run_id": opts.run_id,
        "request": json_safe({"spec": spec.model_dump(), "opts": opts.model_dump()}),
        **metadata,
    }
    outcome = run_search(
        dataset,
        settings,
        run_dir=run_dir,
        on_event=make_event_sink(opts.run_id, opts.on_event, opts.notify),
        run_info=run_info,
    )
    if outcome.best is None:  # run_search raises SearchFailed first; kept as a guard
        raise ServiceError("the search finished without a best trial")
    result = success_result(outcome, run_id=opts.run_id, metadata=metadata)
    result["artifacts"].setdefault("run_dir", str(run_dir.path))
    result["metadata"]["search_duration_s"] = result["metadata"]["duration_s"]
    result["metadata"]["duration_s"] = time.monotonic() - started
    return result
