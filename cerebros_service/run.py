"""The search loop: ask → train → tell → record, within the budgets; events; artifacts.

Keras is never imported here: training happens in ``search.train``.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from . import __version__
from .artifacts import RunDirectory
from .data.dataset import Dataset, split_indices
from .errors import InputError, SearchFailed
from .search.device import configure_device, keras_backend
from .search.metrics import output_units
from .search.records import Candidate, SearchOutcome, TrialRecord
from .settings import Direction, SearchSettings, best_of, is_better, resolve_metric
from .search.space import architecture_summary
from .search.train import StopCheck, make_training_data, train_population
from .strategies import make_strategy

log = logging.getLogger(__name__)

MODELS_DIR = ".models"  # per-trial saves inside the run directory, removed at the end
BEST_MODEL = "best_model.keras"


Trainer = Callable[..., list[TrialRecord]]  # train_population's signature (search/train.py)


def run_search(
    dataset: Dataset,
    settings: SearchSettings,
    *,
    run_dir: RunDirectory | None = None,
    on_event: Callable[[dict], None] | None = None,
    run_info: dict | None = None,
    should_stop: Callable[[], bool] | None = None,
    deadline: float | None = None,
    trainer: Trainer | None = None,
) -> SearchOutcome:
    """Search within the budgets and return what was found.

    ``should_stop()`` (checked every training batch) cancels cooperatively: running
    trials end at once keeping their best epoch, and the outcome says
    ``stopped_because="cancelled"``. ``deadline`` (a ``time.monotonic()`` instant)
    overrides ``settings.max_time_seconds`` counted from now, so a caller can count
    its own start-up in the budget. ``trainer`` trains a list of candidates
    (default: ``train_population`` in this process); an executor that spreads the
    work over processes or machines passes its own.
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat()
    if deadline is None and settings.max_time_seconds is not None:
        deadline = started + settings.max_time_seconds
    stop = StopCheck(deadline=deadline, should_stop=should_stop)
    try:
        metric, direction = resolve_metric(settings.objective, dataset.task)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    device = configure_device(settings.device)
    train = trainer or train_population

    train_idx, val_idx = split_indices(dataset.n_samples, settings.training.validation_split, settings.seed)
    data = make_training_data(dataset, train_idx, val_idx)  # once per search
    strategy = make_strategy(settings.strategy, settings, data.input_dim,
                             output_units(dataset.task, dataset.n_classes),
                             np.random.default_rng(settings.seed), direction)
    models_dir = None
    if run_dir is not None:
        models_dir = run_dir.file(MODELS_DIR)
        models_dir.mkdir(exist_ok=True)

    state = _State(direction)
    report = _RunReport(dataset, settings, run_info, device, metric, direction, state, started_at, started)
    if run_dir is not None:
        run_dir.write_json("run.json", report.as_dict("running", None))

    def record_trial(record: TrialRecord) -> None:
        if record.status == "completed" and is_better(
                record.value, None if state.best is None else state.best.value, direction):
            if record.model_path is not None and run_dir is not None:
                os.replace(record.model_path, run_dir.file(BEST_MODEL))  # atomic swap of the best
                record = replace(record, model_path=str(run_dir.file(BEST_MODEL)))
            state.best = record
        elif record.model_path is not None:
            os.remove(record.model_path)
        stored = replace(record, model_path=None, weights=None)  # only the best's model survives
        state.trials.append(stored)
        if run_dir is not None:
            run_dir.append_jsonl("trials.jsonl", stored.as_dict())
        _emit(on_event, _trial_event(stored, state.best, started))

    stopped_because = "max_trials"
    try:
        generation = 0
        while True:
            remaining = settings.max_trials - len(state.trials)
            if remaining <= 0:
                stopped_because = "max_trials"
                break
            reason = stop.reason()
            if reason is not None:
                stopped_because = reason
                break
            architectures = strategy.ask(min(settings.population_size, remaining))
            first = len(state.trials)
            candidates = [Candidate(first + i, generation, arch, trial_seed(settings.seed, first + i))
                          for i, arch in enumerate(architectures)]
            best_value = state.best.value if state.best is not None else None
            records = train(
                candidates, data, settings.training, metric, direction, execution=settings.execution,
                data_seed=data_order_seed(settings.seed), stop=stop,
                save_dir=None if models_dir is None else str(models_dir), save_threshold=best_value,
                on_record=record_trial,
            )
            strategy.tell(state.trials[first:])
            if records:
                stats = generation_stats(generation, state.trials[first:], direction)
                state.history.append(stats)
                _emit(on_event, {"type": "generation", **stats, "elapsed_s": time.monotonic() - started})
                if run_dir is not None:
                    run_dir.write_json("run.json", report.as_dict("running", None))
            generation += 1
    finally:
        if models_dir is not None:
            shutil.rmtree(models_dir, ignore_errors=True)

    duration = time.monotonic() - started
    best = state.best
    trials = tuple(replace(t, model_path=best.model_path) if best is not None and t.trial == best.trial else t
                   for t in state.trials)
    if run_dir is not None:
        if best is not None:
            run_dir.write_json("best_architecture.json", {
                "trial": best.trial, "generation": best.generation, "metric": metric,
                "direction": direction, "value": best.value, "params": best.params,
                "architecture": best.architecture,
            })
        run_dir.write_json("population_history.json", state.history)
        status = "completed" if best is not None else "failed"
        run_dir.write_json("run.json", report.as_dict(status, stopped_because, duration))
    if best is None:
        errors = sorted({t.error for t in state.trials if t.error})
        hint = f"; first error: {errors[0]}" if errors else ""
        raise SearchFailed(
            f"no trial completed ({len(state.trials)} ran, stopped by {stopped_because}){hint}. "
            "Try a smaller learning_rate, a larger max_time_seconds or max_trials, or a simpler space."
        )
    return SearchOutcome(
        trials=trials, best=next(t for t in trials if t.trial == best.trial), metric=metric,
        direction=direction, population_history=tuple(state.history), stopped_because=stopped_because,
        duration_s=duration, artifacts={} if run_dir is None else run_dir.paths(), device=device,
    )


class _State:
    def __init__(self, direction: Direction):
        self.direction = direction
        self.best: TrialRecord | None = None
        self.trials: list[TrialRecord] = []
        self.history: list[dict] = []


def trial_seed(search_seed: int, trial: int) -> int:
    """A seed per trial that depends on the search seed and the trial index only."""
    return int(np.random.SeedSequence([int(search_seed), int(trial)]).generate_state(1)[0] % (2**31 - 1))


def data_order_seed(search_seed: int) -> int:
    """The seed of the training rows' order: one per search, shared by every trial, so trials
    differ by architecture and initial weights, not by the luck of their batches."""
    return int(np.random.SeedSequence([int(search_seed), 0xDA7A]).generate_state(1)[0] % (2**31 - 1))


def generation_stats(generation: int, records: list[TrialRecord], direction: Direction) -> dict:
    values = [r.value for r in records if r.status == "completed" and r.value is not None
              and math.isfinite(r.value)]
    if not values:
        best = mean = std = None
    else:
        best = best_of(values, direction)
        mean, std = float(np.mean(values)), float(np.std(values))
    return {"generation": generation, "best_fitness": best, "mean_fitness": mean,
            "std_fitness": std, "population_size": len(records)}


def _trial_event(record: TrialRecord, best: TrialRecord | None, started: float) -> dict:
    summary = architecture_summary(record.architecture)
    return {
        "type": "trial", "trial": record.trial, "generation": record.generation,
        "status": record.status, "metric": record.metric, "value": record.value,
        "best_so_far": None if best is None else best.value,
        "architecture": {"levels": summary["levels"], "neurons": summary["neurons"],
                         "params": record.params},
        "error": record.error, "elapsed_s": time.monotonic() - started,
    }


def _emit(on_event: Callable[[dict], None] | None, event: dict) -> None:
    if on_event is None:
        return
    try:
        on_event(event)
    except Exception:  # a broken listener never stops a search
        log.exception("on_event raised on a %s event; ignored", event.get("type"))


class _RunReport:
    """run.json: written when the search starts ("running"), after each generation, and at the end."""

    def __init__(self, dataset: Dataset, settings: SearchSettings, run_info: dict | None, device: str,
                 metric: str, direction: Direction, state: _State, started_at: str, started: float):
        self.dataset, self.settings, self.run_info, self.device = dataset, settings, run_info, device
        self.metric, self.direction, self.state = metric, direction, state
        self.started_at, self.started = started_at, started

    def as_dict(self, status: str, stopped_because: str | None, duration: float | None = None) -> dict:
        state, dataset = self.state, self.dataset
        completed = [t for t in state.trials if t.status == "completed"]
        training_s = sum(t.duration_s for t in state.trials)
        return {
            "status": status,
            "settings": asdict(self.settings),
            "seed": self.settings.seed,
            "dataset": {**dataset.describe(),
                        # what a predictor needs to speak the user's labels and columns
                        "class_labels": None if dataset.class_labels is None else list(dataset.class_labels),
                        "feature_names": None if dataset.feature_names is None else list(dataset.feature_names)},
            "run_info": self.run_info or {},
            "versions": _versions(),
            "device": self.device,
            "metric": self.metric,
            "direction": self.direction,
            "best_trial": None if state.best is None else state.best.trial,
            "best_value": None if state.best is None else state.best.value,
            "trials": len(state.trials),
            "completed_trials": len(completed),
            "failed_trials": len(state.trials) - len(completed),
            "stopped_because": stopped_because,
            "timings": {
                "started_at": self.started_at,
                "duration_s": time.monotonic() - self.started if duration is None else duration,
                "training_s": training_s,
                "mean_trial_s": training_s / len(state.trials) if state.trials else None,
            },
        }


def _versions() -> dict:
    versions = {"cerebros_service": __version__, "python": platform.python_version(),
                "numpy": np.__version__, "keras_backend": keras_backend()}
    for name in ("keras", "tensorflow", "jax", "torch"):
        module = sys.modules.get(name)  # report what this run loaded; import nothing new
        if module is not None:
            versions[name] = getattr(module, "__version__", None)
    return versions
