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
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import __version__
from . import resume as resuming
from .artifacts import RunDirectory
from .data.dataset import Dataset
from .data.splits import SearchSplits, align_test_set, search_splits
from .errors import InputError, SearchFailed
from .search import ensemble as ensembles
from .search.device import configure_device, keras_backend
from .search.metrics import output_units
from .search.records import Candidate, SearchOutcome, TrialRecord, delivered_model, takes_lead
from .settings import Direction, SearchSettings, TrainSettings, best_of, resolve_metric
from .search.space import architecture_summary
from .search.train import StopCheck, TrainingData, make_training_data, save_atomically, train_population
from .strategies import as_proposal, make_strategy

if TYPE_CHECKING:  # for the annotation; plan_evaluation imports it where it is used
    from .search.evaluate import HeldOut

log = logging.getLogger(__name__)

MODELS_DIR = ".models"  # per-trial saves inside the run directory, removed at the end
BEST_MODEL = "best_model.keras"  # the delivered model: the ensemble, or the single best without one
SINGLE_BEST_MODEL = "best_single_model.keras"  # the single best trial, when an ensemble is delivered
REFIT_MODEL = "refit_model.keras"


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
    test_set: Dataset | None = None,
    resume: bool = False,
) -> SearchOutcome:
    """Search within the budgets and return what was found.

    Rows held out for the test (``settings.evaluation``; or ``test_set``, a Dataset given
    apart, which replaces the split) are never trained on nor ranked by: the winner is
    scored on them once, after the search (``outcome.test_metric``, ``outcome.evaluation``).

    ``should_stop()`` (checked every training batch) cancels cooperatively: running
    trials end at once keeping their best epoch, and the outcome says
    ``stopped_because="cancelled"``. ``deadline`` (a ``time.monotonic()`` instant)
    overrides ``settings.max_time_seconds`` counted from now, so a caller can count
    its own start-up in the budget. ``trainer`` trains a list of candidates
    (default: ``train_population`` in this process); an executor that spreads the
    work over processes or machines passes its own.

    With ``resume``, ``run_dir`` holds an earlier run of the same settings that ended
    early: its finished trials are replayed, not retrained, and the search goes on
    from there (resume.py).
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat()
    if deadline is None and settings.max_time_seconds is not None:
        deadline = started + settings.max_time_seconds
    # The ensemble is chosen and saved inside the budget: training stops early enough for it.
    capacity = ensembles.pool_capacity(settings.ensemble)
    search_deadline = None if deadline is None else deadline - ensemble_reserve_s(capacity, deadline - started)
    stop = StopCheck(deadline=search_deadline, should_stop=should_stop)
    try:
        metric, direction = resolve_metric(settings.objective, dataset.task)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    device = configure_device(settings.device)
    train = trainer or train_population

    splits, held_out = plan_evaluation(dataset, settings, test_set)
    data = make_training_data(dataset, splits.train, splits.validation)  # once per search
    training = training_for(settings, len(splits.train))
    strategy = make_strategy(settings.strategy, settings, data.input_dim,
                             output_units(dataset.task, dataset.n_classes),
                             np.random.default_rng(settings.seed), direction)
    models_dir = None
    if run_dir is not None:
        models_dir = run_dir.file(MODELS_DIR)
        shutil.rmtree(models_dir, ignore_errors=True)  # a crashed run's unfinished saves
        models_dir.mkdir()
    previous: dict[int, TrialRecord] = {}
    if resume and run_dir is not None:
        previous = {r.trial: r for r in resuming.previous_trials(run_dir, settings)}
        if run_dir.file(SINGLE_BEST_MODEL).exists():  # the earlier run delivered an ensemble:
            os.replace(run_dir.file(SINGLE_BEST_MODEL), run_dir.file(BEST_MODEL))  # searching, the best leads

    state = _State(direction, ensembles.MemberPool(capacity, direction))
    report = _RunReport(dataset, settings, run_info, device, metric, direction, state, started_at, started,
                        splits, held_out)
    if run_dir is not None:
        run_dir.write_json("run.json", report.as_dict("running", None))

    def record_trial(record: TrialRecord) -> None:
        pooled = state.pool.offer(record)
        if record.status == "completed" and record.weights is not None:
            state.generation_weights[record.trial] = record.weights  # what a next rung continues from
            if (strategy.continues_trials or pooled) and run_dir is not None:  # a resumed run needs them
                resuming.save_weights(run_dir, record.trial, record.weights)
        if takes_lead(record, state.best, direction):
            if record.model_path is not None and run_dir is not None:
                os.replace(record.model_path, run_dir.file(BEST_MODEL))  # atomic swap of the best
                record = replace(record, model_path=str(run_dir.file(BEST_MODEL)))
            state.best, state.best_weights = replace(record, weights=None), record.weights
        elif record.model_path is not None:
            os.remove(record.model_path)
        stored = replace(record, model_path=None, weights=None)  # only the best's model survives
        state.trials.append(stored)
        if run_dir is not None:
            run_dir.append_jsonl("trials.jsonl", stored.as_dict())
        _emit(on_event, _trial_event(stored, state.best, started))

    def adopt(record: TrialRecord, candidate: Candidate) -> None:
        """A trial the earlier run finished: told to the strategy again, not trained again."""
        if record.architecture != candidate.architecture:
            raise resuming.mismatch(record.trial)
        if takes_lead(record, state.best, direction):
            kept = run_dir.file(BEST_MODEL)
            state.best, state.best_weights = replace(record, model_path=str(kept) if kept.exists() else None), None
        if strategy.continues_trials or capacity > 0:
            weights = resuming.load_weights(run_dir, record.trial)
            if weights is not None:
                if strategy.continues_trials:
                    state.generation_weights[record.trial] = weights
                state.pool.offer(replace(record, weights=weights))
        state.trials.append(record)

    # Weights come back when a strategy continues trials, when the ensemble is built from
    # them, or when no run folder keeps the best model for the held-out test (a
    # distributed trainer ships them only then).
    keep_weights = strategy.continues_trials or capacity > 0 or run_dir is None
    stopped_because = "max_trials"
    try:
        generation = 0
        while True:
            remaining = settings.max_trials - len(state.trials)
            if remaining <= 0:
                stopped_because = "max_trials"
                break
            reason = stop.reason() or _no_time_to_start(stop, state.trials)
            if reason is not None:
                stopped_because = reason
                break
            proposals = [as_proposal(item) for item in strategy.ask(min(settings.generation_size, remaining))]
            if not proposals:
                raise RuntimeError(f"strategy {settings.strategy!r} proposed no candidate")  # a strategy bug
            info = strategy.generation_info()
            first = len(state.trials)
            candidates = [state.candidate(first + i, generation, proposal, settings.seed)
                          for i, proposal in enumerate(proposals)]
            state.generation_weights = {}
            for candidate in candidates:
                if candidate.trial in previous:
                    adopt(previous.pop(candidate.trial), candidate)
            pending = [c for c in candidates if c.trial not in {t.trial for t in state.trials[first:]}]
            best_so_far = state.best.standing() if state.best is not None else None
            if pending:
                train(pending, data, training, metric, direction, execution=settings.execution,
                      data_seed=data_order_seed(settings.seed), stop=stop,
                      save_dir=None if models_dir is None else str(models_dir), save_threshold=best_so_far,
                      keep_weights=keep_weights, on_record=record_trial)
            state.trials[first:] = sorted(state.trials[first:], key=lambda t: t.trial)
            state.parent_weights = state.generation_weights  # only the last generation's are kept
            if (strategy.continues_trials or capacity > 0) and run_dir is not None:
                continued = set(state.parent_weights) if strategy.continues_trials else set()
                resuming.forget_weights(run_dir, keep=continued | state.pool.trials())
            strategy.tell(state.trials[first:])
            if state.trials[first:]:
                stats = {**generation_stats(generation, state.trials[first:], direction), **info}
                state.history.append(stats)
                _emit(on_event, {"type": "generation", **stats, "elapsed_s": time.monotonic() - started})
                if run_dir is not None:
                    run_dir.write_json("run.json", report.as_dict("running", None))
            generation += 1
    finally:
        if models_dir is not None:
            shutil.rmtree(models_dir, ignore_errors=True)

    best = state.best
    if best is not None:
        state.evaluation = evaluate_winner(
            best, state, dataset=dataset, data=data, splits=splits, held_out=held_out, settings=settings,
            training=training, cancelled=stopped_because == "cancelled",
            refit_path=None if run_dir is None else str(run_dir.file(REFIT_MODEL)))
        if capacity > 0:
            best = deliver_ensemble(best, state, data=data, held_out=held_out, settings=settings,
                                    cancelled=stopped_because == "cancelled", run_dir=run_dir)
    duration = time.monotonic() - started
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
        test_metric=state.delivered_test_metric(), evaluation=state.evaluation,
        ensemble=state.ensemble, ensemble_pool=state.ensemble_pool,
    )


class _State:
    def __init__(self, direction: Direction, pool: ensembles.MemberPool):
        self.direction = direction
        self.pool = pool  # the best trials' weights, for the ensemble
        self.ensemble: dict | None = None  # what the delivered ensemble is and how it scores
        self.ensemble_pool: ensembles.PoolPredictions | None = None
        self.best: TrialRecord | None = None
        self.best_weights: dict | None = None  # the best trial's best-epoch weights
        self.trials: list[TrialRecord] = []
        self.history: list[dict] = []
        # Best-epoch weights of the generation being trained, and of the last one trained
        # (what a strategy's Proposal may continue from); older ones are dropped.
        self.generation_weights: dict[int, dict] = {}
        self.parent_weights: dict[int, dict] = {}
        self.evaluation: dict = {}

    def delivered(self) -> str:
        """Which model best_model.keras holds: "ensemble" or "single_best"."""
        return delivered_model(self.ensemble)

    def delivered_test_metric(self) -> float | None:
        if self.delivered() == "ensemble":
            return self.ensemble.get("test_metric")
        return self.evaluation.get("test_metric")

    def candidate(self, trial: int, generation: int, proposal, search_seed: int) -> Candidate:
        weights = None
        if proposal.parent_trial is not None:
            weights = self.parent_weights.get(proposal.parent_trial)
            if weights is None:  # the trainer kept no weights for it: it restarts, and says so
                log.warning("trial %d continues trial %d, whose weights were not kept; it starts afresh",
                            trial, proposal.parent_trial)
        return Candidate(trial, generation, proposal.architecture, trial_seed(search_seed, trial),
                         epochs=proposal.epochs, initial_weights=weights, parent_trial=proposal.parent_trial)

    def lineage(self, record: TrialRecord) -> list[TrialRecord]:
        """``record`` and the trials it continued from, the first (fresh) one first."""
        by_trial = {t.trial: t for t in self.trials}
        chain = [record]
        while chain[-1].parent_trial is not None and chain[-1].parent_trial in by_trial:
            chain.append(by_trial[chain[-1].parent_trial])
        return chain[::-1]


def _no_time_to_start(stop: StopCheck, trials: list[TrialRecord]) -> str | None:
    """"max_time_seconds" when a new generation could not even finish its first epoch in the
    time left: building and tracing a model (a fused chunk: one for many candidates) cannot
    be interrupted, so one begun just before the deadline would overrun it by that much.
    The last generation's start-up (its slowest ``first_epoch_s``) is the estimate."""
    if stop.deadline is None or not trials:
        return None
    last = trials[-1].generation
    startup = max((t.first_epoch_s or 0.0) for t in trials if t.generation == last)
    return "max_time_seconds" if time.monotonic() + startup > stop.deadline else None


def plan_evaluation(dataset: Dataset, settings: SearchSettings,
                    test_set: Dataset | None) -> tuple[SearchSplits, "HeldOut | None"]:
    """The rows of each part, and the held-out test rows (None when the search has none)."""
    from .search.evaluate import HeldOut

    labels = None if dataset.task == "regression" else dataset.y
    test_split = 0.0 if test_set is not None else settings.evaluation.resolved_test_split(dataset.n_samples)
    splits = search_splits(dataset.n_samples, labels, settings.training.validation_split, test_split,
                           settings.seed)
    if test_set is not None:
        x, y = align_test_set(test_set, dataset)
        return splits, HeldOut(x, y, "given")
    if len(splits.test):
        return splits, HeldOut(dataset.x[splits.test], dataset.y[splits.test], "split")
    return splits, None


def training_for(settings: SearchSettings, train_rows: int) -> TrainSettings:
    """The training settings trials run with: a schedule learns how many steps an epoch has."""
    training = settings.training
    if training.lr_schedule != "constant":
        training = replace(training, steps_per_epoch=math.ceil(train_rows / training.batch_size))
    return training


def evaluate_winner(best: TrialRecord, state: _State, *, dataset: Dataset, data: TrainingData,
                    splits: SearchSplits, held_out, settings: SearchSettings, training, cancelled: bool,
                    refit_path: str | None) -> dict:
    """The winner on the validation split (its per-class view) and on the held-out test rows.

    A failure here never loses the search: it is reported in ``error``.
    """
    from .search import evaluate

    lineage = state.lineage(best)
    result = {
        "metric": best.metric, "test_source": None if held_out is None else held_out.source,
        **splits.describe(), "test_rows": 0 if held_out is None else held_out.rows,
        "best_epochs": sum(t.best_epoch or 0 for t in lineage),
        "validation": None, "test": None, "test_metric": None, "refit": None,
    }
    if state.best_weights is not None:
        predict = evaluate.predictor(best.architecture, state.best_weights, data)
    elif best.model_path is not None:
        predict = evaluate.saved_predictor(best.model_path)
    else:
        result["error"] = "the trainer kept neither weights nor a model of the best trial to score again"
        return result
    name = best.metric.removeprefix("val_")
    try:
        result["validation"] = evaluate.report(data, data.y_val, predict(data.x_val))
        if held_out is not None:
            result["test"] = evaluate.report(data, held_out.y, predict(held_out.x))
            result["test_metric"] = result["test"].get(name)
        if settings.evaluation.refit and not cancelled:
            result["refit"] = _refit(best, lineage, result["best_epochs"], dataset=dataset, splits=splits,
                                     held_out=held_out, settings=settings, training=training,
                                     path=refit_path, name=name)
            if held_out is not None:
                result["test_metric"] = result["refit"]["test"].get(name)
    except Exception as exc:  # the search's result stands without its evaluation
        log.exception("evaluating the best trial failed")
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def _refit(best: TrialRecord, lineage: list[TrialRecord], epochs: int, *, dataset: Dataset,
           splits: SearchSplits, held_out, settings: SearchSettings, training, path: str | None,
           name: str) -> dict:
    from .search import evaluate

    rows = np.sort(np.concatenate([splits.train, splits.validation]))
    seed = trial_seed(settings.seed, lineage[0].trial)  # the winner's own initial weights
    started = time.monotonic()
    weights, data, used = evaluate.refit(best.architecture, seed=seed, epochs=max(1, epochs), dataset=dataset,
                                         rows=rows, training=training, data_seed=data_order_seed(settings.seed))
    refit = {"epochs": max(1, epochs), "rows": int(len(rows)), "duration_s": time.monotonic() - started,
             "test": None, "model_path": None}
    if held_out is not None:
        refit["test"] = evaluate.report(data, held_out.y,
                                        evaluate.predictor(best.architecture, weights, data)(held_out.x))
    if path is not None:
        evaluate.save_refit(best.architecture, weights, data, used, path)
        refit["model_path"] = path
    return refit


ENSEMBLE_RESERVE_FIXED_S = 1.5  # building, selecting and saving the ensemble: a fixed part...
ENSEMBLE_RESERVE_PER_MEMBER_S = 0.2  # ...and a part per pooled trial (2-core CPU, TensorFlow)
ENSEMBLE_RESERVE_MAX_SHARE = 0.2  # never more than this share of the time budget


def ensemble_reserve_s(capacity: int, budget_s: float) -> float:
    """Seconds kept back from training for the ensemble, so that it fits the time budget."""
    if capacity <= 0:
        return 0.0
    wanted = ENSEMBLE_RESERVE_FIXED_S + ENSEMBLE_RESERVE_PER_MEMBER_S * capacity
    return min(wanted, ENSEMBLE_RESERVE_MAX_SHARE * max(budget_s, 0.0))


def deliver_ensemble(best: TrialRecord, state: _State, *, data: TrainingData, held_out,
                     settings: SearchSettings, cancelled: bool, run_dir: RunDirectory | None) -> TrialRecord:
    """Choose the ensemble on the validation rows, score it on the test rows, and save it as
    best_model.keras (the single best moves to best_single_model.keras). Returns the best
    trial's record with its model's new path. A failure here never loses the search: the
    single best stays the delivered model and ``ensemble.error`` says why."""
    from .search import evaluate

    options = settings.ensemble
    name = best.metric.removeprefix("val_")
    info: dict = {"method": options.method, "size": options.size, "pool": len(state.pool), "members": [],
                  "validation": None, "test": None, "validation_metric": None, "test_metric": None,
                  "single_best": {"trial": best.trial, "validation_metric": best.value,
                                  "test_metric": state.evaluation.get("test_metric")}}
    state.ensemble = info
    if cancelled:
        info["skipped"] = "the search was cancelled: the single best is delivered"
        return best
    if not len(state.pool):
        info["skipped"] = "no completed trial kept its weights"
        return best
    started = time.monotonic()
    try:
        built = ensembles.build_ensemble(state.pool.records, data, None if held_out is None else held_out.x,
                                         options, None if held_out is None else held_out.y)
        if built is None:
            info["skipped"] = "no pooled trial gave finite validation predictions"
            return best
        info["members"] = [m.as_dict() for m in built.members]
        info["validation"] = evaluate.report(data, data.y_val, built.validation_outputs)
        info["validation_metric"] = info["validation"].get(name)
        if held_out is not None:
            info["test"] = evaluate.report(data, held_out.y, built.test_outputs)
            info["test_metric"] = info["test"].get(name)
        state.ensemble_pool = built.pool
        if run_dir is not None:
            tmp = str(run_dir.file("best_ensemble.keras"))
            save_atomically(built.model, tmp)  # uncompiled: it is for predicting
            if run_dir.file(BEST_MODEL).exists():
                os.replace(run_dir.file(BEST_MODEL), run_dir.file(SINGLE_BEST_MODEL))
                best = replace(best, model_path=str(run_dir.file(SINGLE_BEST_MODEL)))
            os.replace(tmp, run_dir.file(BEST_MODEL))
    except Exception as exc:  # the search's result stands without its ensemble
        log.exception("building the ensemble failed; the single best is delivered")
        info.update(members=[], error=f"{type(exc).__name__}: {exc}")
    info["duration_s"] = time.monotonic() - started
    return best


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
                 metric: str, direction: Direction, state: _State, started_at: str, started: float,
                 splits: SearchSplits, held_out):
        self.dataset, self.settings, self.run_info, self.device = dataset, settings, run_info, device
        self.metric, self.direction, self.state = metric, direction, state
        self.started_at, self.started = started_at, started
        self.splits, self.held_out = splits, held_out

    def as_dict(self, status: str, stopped_because: str | None, duration: float | None = None) -> dict:
        state, dataset = self.state, self.dataset
        completed = [t for t in state.trials if t.status == "completed"]
        training_s = sum(t.duration_s for t in state.trials)
        return {
            "status": status,
            "owner": resuming.owner(),  # a "running" run whose owner is gone reads "interrupted"
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
            "delivered_model": state.delivered(),
            "population_size": self.settings.generation_size,
            # Held-out score of the delivered model (validation values rank; these never do).
            "test_metric": state.delivered_test_metric(),
            "ensemble": state.ensemble,
            "evaluation": state.evaluation or {
                **self.splits.describe(), "test_source": None if self.held_out is None else self.held_out.source,
                "test_rows": 0 if self.held_out is None else self.held_out.rows},
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
