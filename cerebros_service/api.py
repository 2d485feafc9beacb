"""The front door: ``run_nas(spec, opts)`` and ``validate(spec, opts)``.

Both take whatever the caller sends (Pythonx values, decoded JSON, plain Python)
and answer with a plain JSON-safe dict; neither raises. ``run_nas`` goes
normalize → validate → load the data → settings → run directory → search →
result. TensorFlow is imported only when a search actually starts.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from .boundary.normalize import normalize
from .boundary.results import failure_result, library_versions, success_result, utc_timestamp
from .jsonsafe import json_safe
from .boundary.schema import (
    RUN_ID_PATTERN,
    SCALE_OUT_KINDS,
    ArraysSource,
    BuiltinSource,
    CsvSource,
    InlineSource,
    NpzSource,
    Opts,
    Spec,
    budget_warnings,
    build_settings,
    check_part,
)
from .boundary.errors_text import short_repr, summary_sentence
from .boundary.safe_text import type_name
from .data import registry
from .data.builtin import BUILTIN_DATASETS, load_builtin
from .data.dataset import Dataset, make_dataset
from .data.files import load_csv, load_npz
from .errors import DatasetError, ErrorDetail, InputError, SearchFailed, ServiceError
from .events import make_event_sink
from .boundary.capacity import check_space_fits, space_too_large
from .data.validation import check_split
from .operator_config import artifacts_root, current_limits, inside_root
from .operator_config import data_root as operator_data_root
from .settings import resolve_metric

log = logging.getLogger(__name__)

# Keras and its backend keep global state (random seeds, graph caches), so two searches
# in one interpreter at once would change each other's results: one at a time here.
# Searches in worker processes (opts.executor, cerebros_service.jobs) are not bound by it.
_one_search_at_a_time = threading.Lock()


def validate(spec: Any, opts: Any = None) -> dict:
    """Check a request without running it: ``{"status": "valid", "spec", "opts"}`` with
    every default filled in, or a failed result (``error_type: "validation_error"``)."""
    try:
        spec_model, opts_model = _checked(spec, opts)
        return json_safe({
            "status": "valid",
            "spec": spec_model.model_dump(),
            "opts": opts_model.model_dump(),
            # valid, but not searching as the strategy means to (schema.budget_warnings)
            "warnings": [w.as_dict() for w in budget_warnings(spec_model, opts_model)],
        })
    except ServiceError as exc:
        return failure_result(exc, _given_run_id(opts))
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("validate failed with an internal error")
        return failure_result(exc, _given_run_id(opts))


def run_nas(spec: Any, opts: Any = None) -> dict:
    """Run a neural architecture search; always returns a result dict (see docs/contract.md).

    It runs in the calling thread unless ``opts.executor`` names another kind
    (``{"kind": "process"}``: a child process, through ``cerebros_service.jobs``).
    """
    started = time.monotonic()
    run_id = _given_run_id(opts)
    try:
        spec_model, opts_model = _checked(spec, opts)
    except ServiceError as exc:
        return failure_result(exc, run_id, metadata={"duration_s": time.monotonic() - started})
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("run_nas failed with an internal error (run_id=%s)", run_id)
        return failure_result(exc, run_id, metadata={"duration_s": time.monotonic() - started})
    if opts_model.executor is not None and opts_model.executor.kind not in ("local", *SCALE_OUT_KINDS):
        from .jobs import run_and_wait

        return run_and_wait(spec, spec_model, opts_model)
    return run_checked(spec_model, opts_model, started=started)


def check(spec: Any, opts: Any = None) -> tuple[Spec, Opts]:
    """Normalize and validate a request; raises InputError listing every problem."""
    return _checked(spec, opts)


def run_checked(spec: Spec, opts: Opts, *, should_stop: Callable[[], bool] | None = None,
                started: float | None = None) -> dict:
    """Search a validated request in this process; never raises.

    ``should_stop()`` cancels cooperatively (checked every training batch): the result
    then has ``status: "cancelled"`` with the trials done and the best model so far.
    """
    started = time.monotonic() if started is None else started
    try:
        while not _one_search_at_a_time.acquire(timeout=0.2):
            if should_stop is not None and should_stop():
                return cancelled_result(opts.run_id, started)
        try:
            return _search(spec, opts, started, should_stop)
        finally:
            _one_search_at_a_time.release()
    except ServiceError as exc:
        return failure_result(exc, opts.run_id, getattr(exc, "completed_trials", 0),
                              metadata={"duration_s": time.monotonic() - started})
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("run_nas failed with an internal error (run_id=%s)", opts.run_id)
        return failure_result(exc, opts.run_id, metadata={"duration_s": time.monotonic() - started})


def cancelled_result(run_id: str | None, started: float, *, metadata: dict | None = None,
                     run_dir: str | None = None, metric: str | None = None,
                     direction: str | None = None) -> dict:
    """The result of a search cancelled before any trial completed (same keys as success)."""
    return json_safe({
        "status": "cancelled", "run_id": run_id, "best_model": None, "best_architecture": None,
        "best_metric": None, "test_metric": None, "evaluation": None,
        "metric": metric, "direction": direction, "completed_trials": 0,
        "failed_trials": 0, "population_history": [], "trials": [],
        "artifacts": {} if run_dir is None else {"run_dir": run_dir},
        "metadata": {**(metadata or {}), "timestamp": (metadata or {}).get("timestamp", utc_timestamp()),
                     "duration_s": time.monotonic() - started, "stopped_because": "cancelled"},
    })


# --------------------------------------------------------------------------- steps


def _checked(spec: Any, opts: Any) -> tuple[Spec, Opts]:
    """Normalize and validate spec and opts, reporting every problem of both at once."""
    details: list[ErrorDetail] = []
    models: dict[str, Any] = {}
    limits = current_limits()
    total = 0
    for root, value in (("spec", spec), ("opts", {} if opts is None else opts)):
        try:
            models[root] = check_part(root, normalize(value, root=root), limit=limits.max_error_details)
        except InputError as exc:
            details.extend(exc.details)
            total += exc.total_details
        except (ServiceError, RecursionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - caller objects whose __eq__/__hash__ raise
            details.append(ErrorDetail((root,), f"cannot be checked: one of its values raised "
                                                f"{type_name(exc)} when compared or hashed; send plain data"))
            total += 1
    dataset_id = models["spec"].dataset_id if "spec" in models else _raw_dataset_id(spec)
    already_reported = any(d.loc[:2] == ("spec", "dataset_id") for d in details)
    if dataset_id is not None and not already_reported:
        unknown = _unknown_dataset_id(dataset_id)
        if unknown is not None:
            details.append(unknown)
            total += 1
    if "spec" in models:
        too_big = space_too_large(models["spec"], limits.max_candidate_params)
        if too_big is not None:
            details.append(too_big)
            total += 1
    if details:
        shown = details[:limits.max_error_details]
        raise InputError(summary_sentence(shown, total), shown, total_details=total)
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
    try:
        return _raw_text(spec, "dataset_id") or None
    except Exception:  # noqa: BLE001 - a spec of any shape; its own problems are reported already
        return None


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
    """The caller's run_id for a failure result, when it is usable as one; never raises."""
    try:
        value = _raw_text(opts, "run_id")
        if value is not None and RUN_ID_PATTERN.fullmatch(value) and value not in (".", ".."):
            return str.__str__(value)
    except Exception:  # noqa: BLE001 - opts may be any object, with keys whose __eq__ raises
        pass
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
        return load_csv(source.path, source.target, data_root=_data_root(opts), task=task)
    if isinstance(source, NpzSource):
        return load_npz(source.path, data_root=_data_root(opts), task=task)
    if isinstance(source, InlineSource):
        return make_dataset("inline", np.asarray(source.x, dtype=np.float64), np.asarray(source.y), task=task,
                            loc=("spec", "dataset"))
    if isinstance(source, ArraysSource):
        return make_dataset("arrays", source.x, source.y, task=task, loc=("spec", "dataset"))
    raise DatasetError("the spec names no data")  # unreachable after validation


def load_test_set(spec: Spec, opts: Opts, dataset: Dataset) -> Dataset | None:
    """``spec.evaluation.test_dataset`` loaded like the data (same sources), under the data's task kind."""
    source = spec.evaluation.test_dataset
    if source is None:
        return None
    task = "regression" if dataset.task == "regression" else "classification"
    as_data = spec.model_copy(update={"dataset": source, "dataset_id": None, "task": task})
    return load_dataset(as_data, opts)


def _data_root(opts: Opts):
    """opts.data_root checked again against the operator's root in force now (None: no files)."""
    root = operator_data_root()
    if root is None or opts.data_root is None:
        return root
    try:
        return inside_root(root, opts.data_root)
    except ValueError as exc:
        raise DatasetError(f"opts.data_root {exc}", [ErrorDetail(("opts", "data_root"), str(exc))]) from None


def _artifacts_root(opts: Opts):
    """The operator's artifacts root, which opts.artifacts_dir (when given) must still name."""
    root = artifacts_root()
    try:
        if inside_root(root, opts.artifacts_dir) == root:
            return root
    except ValueError:
        pass
    raise InputError("Invalid request: opts.artifacts_dir is not the operator's artifacts root.",
                     [ErrorDetail(("opts", "artifacts_dir"), "is not the operator's artifacts root")])


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


def _search(spec: Spec, opts: Opts, started: float, should_stop: Callable[[], bool] | None = None) -> dict:
    dataset = load_dataset(spec, opts)
    metric, direction = _metric_for(spec, dataset)
    # Before anything is built: the exact bound now that the data's width is known.
    check_space_fits(spec, dataset, current_limits().max_candidate_params)
    check_split(dataset.n_samples, dataset.n_classes, spec.training.validation_split)
    test_set = load_test_set(spec, opts, dataset)

    from .artifacts import RunDirectory
    from .backend import require_backend
    from .run import run_search  # the engine (and, when training starts, TensorFlow): only now

    require_backend()  # Keras' framework (TensorFlow by default) installed, or a clear error
    settings = build_settings(spec, opts, metric)
    # Trials on Dask workers (opts.executor "processes" | "dask"), opened before the run
    # folder so that an unreachable cluster leaves nothing behind; closed once the search ends.
    trainer = _scale_out_trainer(opts)
    try:
        root = _artifacts_root(opts)
        resuming = opts.resume and RunDirectory.exists(root, opts.run_id)
        run_dir = RunDirectory.open(root, opts.run_id) if resuming else RunDirectory.create(root, opts.run_id)
    except BaseException:
        _close(trainer)
        raise
    from .after_run import AfterRun

    after_run = AfterRun(opts, run_dir.path)  # ONNX, report, tracking once the search succeeded
    timestamp = utc_timestamp()
    metadata = {
        "dataset_id": _dataset_label(spec),
        "dataset": dataset.describe(),
        "task": dataset.task,
        "objective": spec.objective if spec.objective is not None else metric,
        "strategy": spec.strategy,
        "warnings": [w.as_dict() for w in budget_warnings(spec, opts)],
        "ga_params": {
            "population_size": settings.population_size,
            "mutation_rate": settings.mutation_rate,
            "crossover_rate": settings.crossover_rate,
            "elite_size": settings.elite_size,
            "max_trials": settings.max_trials,
            "max_time_seconds": settings.max_time_seconds,
        },
        "seed": settings.seed,
        "resumed": bool(opts.resume and resuming),
        "timestamp": timestamp,
        "versions": library_versions(),
        "run_dir": str(run_dir.path),
    }
    run_info = {
        "run_id": opts.run_id,
        "request": json_safe({"spec": spec.model_dump(), "opts": opts.model_dump()}),
        **metadata,
    }
    try:
        outcome = run_search(
            dataset,
            settings,
            run_dir=run_dir,
            on_event=after_run.listen(make_event_sink(opts.run_id, opts.on_event, opts.notify)),
            run_info=run_info,
            should_stop=should_stop,
            deadline=training_deadline(started, settings.max_time_seconds),
            trainer=trainer,
            test_set=test_set,
            resume=resuming,
        )
    except SearchFailed:
        if should_stop is not None and should_stop():  # cancelled before a trial completed
            return cancelled_result(opts.run_id, started, metadata=metadata, run_dir=str(run_dir.path),
                                    metric=metric, direction=direction)
        raise
    finally:
        _close(trainer)
        if trainer is not None:
            metadata["executor"] = trainer.summary()
    if outcome.best is None:  # run_search raises SearchFailed first; kept as a guard
        raise ServiceError("the search finished without a best trial")
    result = success_result(outcome, run_id=opts.run_id, metadata=metadata)
    if outcome.stopped_because == "cancelled":
        result["status"] = "cancelled"
    result["artifacts"].setdefault("run_dir", str(run_dir.path))
    result["metadata"]["search_duration_s"] = result["metadata"]["duration_s"]
    result["metadata"]["duration_s"] = time.monotonic() - started
    deadline = None if settings.max_time_seconds is None else started + settings.max_time_seconds
    return after_run.finish(result, deadline) if result["status"] == "success" else result


def training_deadline(started: float, budget: float | None) -> float | None:
    """When training must stop for the call to end within its budget.

    The budget counts from the call's start (imports and data loading included), and
    what follows training — materializing the stopped candidates, saving the best
    model, the held-out test — takes ~3 s on a 2-core CPU: training stops that much
    earlier (10% of the budget, at least 3 s and at most 10 s). The after-run steps get
    what is left.
    """
    if budget is None:
        return None
    return started + budget - min(max(0.1 * budget, 3.0), 10.0)


def _scale_out_trainer(opts: Opts):
    """The Dask trainer ``opts.executor`` asks for (None: trials run in this process)."""
    if opts.executor is None or opts.executor.kind not in SCALE_OUT_KINDS:
        return None
    from .jobs.executors.dask_trials import open_trainer

    return open_trainer(opts.executor, device=opts.device)


def _close(trainer) -> None:
    if trainer is not None:
        trainer.close()
