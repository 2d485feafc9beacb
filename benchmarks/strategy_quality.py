"""Do the strategies help? random vs evolution vs halving at an EQUAL wall-clock budget,
by the mean test metric of each search's best model (with its spread over seeds).

Protocol (the defaults are the full one; the lead runs it on a quiet machine):
4 datasets (digits, breast_cancer, wine, diabetes) x 3 seeds x each strategy, every
search bounded by the same ``--budget-s`` seconds (max_trials out of reach), the
service's default space and training unless overridden. Every system of one
(dataset, seed) sees the same split: a stratified 20% test part held out by
``data/splits.py`` that neither training nor ranking sees, validation from the rest.
The test metric is accuracy (classification, higher is better) or RMSE (diabetes,
lower is better), of the best-on-validation model.

``--peers`` adds KerasTuner RandomSearch through ``benchmarks/peers.py`` (the speed
benchmark's peer machinery) on exactly our rows: its search rows are our training
rows followed by our validation rows (so Keras' ``validation_split`` takes the same
validation rows) and it is scored on the same test rows; it trains with our epochs,
batch size, patience and learning rate (``--lr`` moves both). ``peers.run_keras_tuner``
bounds a search by ``--peer-trials`` (it has no clock of its own): its wall time is
printed beside ours. Every search runs in a fresh Python process, so none inherits
another's imports, traced graphs or memory.

    .venv/bin/python benchmarks/strategy_quality.py                      # full protocol
    .venv/bin/python benchmarks/strategy_quality.py --small              # a quick check it works
    .venv/bin/python benchmarks/strategy_quality.py --lr 0.002 --schedule cosine --patience 5
    .venv/bin/python benchmarks/strategy_quality.py --json results.json --peers
    .venv/bin/python benchmarks/strategy_quality.py --report seeds0-2.json seeds3-4.json  # one table

Every search of ours also delivers ENSEMBLES of its best trials (search/ensemble.py).
Each ensemble method is scored from the same search, so the comparison with that
search's single best (the row named after the strategy alone) is exactly paired:
``random+avg20`` is the average of the 20 best trials by validation, ``random+greedy20``
greedy selection on the validation loss with 20 picks, and so on for ``ENSEMBLES``. The
search keeps the weights of its ``POOL`` best trials for them. ``--hgb`` adds
scikit-learn's HistGradientBoosting (defaults, early stopping on our validation rows),
what a tabular user would pick instead of any network search.

Beside each system's mean test metric the table prints its mean validation metric and
its OPTIMISM, how much better validation said it was than the test found (validation
minus test for accuracy; test minus validation for RMSE): the winner's curse of
picking among many candidates on one validation split.

    .venv/bin/python benchmarks/strategy_quality.py --strategies random --peers --hgb --budget-s 40 \
        --seeds 0 1 --peer-trials 10 --json ensemble-seeds0-1.json   # issue 34's protocol, in pieces

``--report`` runs nothing: it pools the rows of earlier ``--json`` files (which must
share training, space, budget and refit) and prints the table a run of all of them
would have. Under the table, each system is compared with random seed by seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from cerebros_service.data.builtin import load_builtin
from cerebros_service.data.splits import search_splits
from cerebros_service.run import run_search
from cerebros_service.search.device import configure_device
from cerebros_service.search.ensemble import combine, select_members
from cerebros_service.search.scoring import score
from cerebros_service.settings import (EnsembleSettings, EvaluationSettings, SearchSettings, SpaceSettings,
                                       TrainSettings, resolve_metric)

DATASETS = ("digits", "breast_cancer", "wine", "diabetes")
STRATEGIES = ("random", "evolution", "halving")
SEEDS = (0, 1, 2)
BUDGET_S = 120.0
SMALL = {"datasets": ("breast_cancer", "wine"), "seeds": (0,), "budget_s": 25.0}
TEST_SPLIT = 0.2
MAX_TRIALS = 100_000  # out of reach: the clock is the budget
PEER_TRIALS = 30  # KerasTuner's trial cap (about our trials at the full budget on a 2-core CPU)
HERE = Path(__file__).resolve().parent
# Ensemble methods scored on every search of ours: (method, size); POOL trials are kept for them.
ENSEMBLES = (("average", 5), ("average", 10), ("average", 20), ("average", 30), ("greedy", 20))
POOL = max(size for _, size in ENSEMBLES)
DEFAULT_ENSEMBLE = f"{'avg' if EnsembleSettings.method == 'average' else 'greedy'}{EnsembleSettings.size}"


def main() -> None:
    args = _arguments()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.report:
        print(report_saved(args.report))
        return
    training = _training(args)
    space = _space(args.space)
    systems = list(args.strategies) + (["kerastuner"] if args.peers else []) + (["hgb"] if args.hgb else [])
    rows = []
    for name in args.datasets:
        for seed in args.seeds:
            for system in systems:
                request = {"system": system, "dataset": name, "seed": seed, "budget_s": args.budget_s,
                           "training": asdict(training), "space": _plain(asdict(space)),
                           "population": args.population, "device": args.device, "peer_trials": args.peer_trials,
                           "refit": args.refit}
                row = spawn(request, timeout=max(600.0, 6 * args.budget_s))
                for each in _with_ensembles(_with_refit(row)):
                    rows.append(each)
                    print(_line(each), flush=True)
    record = _record(rows, args, training, space)
    print()
    print(_report(rows, args.datasets, _header(args.seeds, args.budget_s, record["training"], args.refit,
                                               {"": record["machine"]})))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(record, out, indent=1, default=str)


def _record(rows: list[dict], args, training: TrainSettings, space: SpaceSettings) -> dict:
    """A run as ``--json`` writes it: its rows and all ``--report`` needs to head and pool them."""
    return {"rows": rows, "machine": machine(), "training": asdict(training), "space": _plain(asdict(space)),
            "budget_s": args.budget_s, "refit": args.refit, "strategies": list(args.strategies),
            "peers": args.peers, "hgb": args.hgb, "datasets": list(args.datasets), "seeds": list(args.seeds),
            "population": args.population, "peer_trials": args.peer_trials}


def spawn(request: dict, timeout: float) -> dict:
    """One search in a fresh Python process; its figures, or the error that stopped it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    base = {key: request[key] for key in ("dataset", "seed", "system")}
    try:
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(request)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:.0f} s", "wall_s": timeout}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stderr or "").strip().splitlines()[-3:])
        return {**base, "error": f"exit {done.returncode}: {tail}", "wall_s": 0.0}
    return json.loads(lines[-1])


def run_one(request: dict) -> dict:
    """In the child process: one system on one (dataset, seed) for the budget."""
    import keras  # noqa: F401 - imported before any clock starts, for every system alike

    configure_device(request["device"])
    dataset = load_builtin(request["dataset"])
    training = TrainSettings(**request["training"])
    space = SpaceSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in request["space"].items()})
    system, seed, budget_s = request["system"], request["seed"], request["budget_s"]
    metric, direction = resolve_metric(None, dataset.task)
    row = {"dataset": dataset.name, "seed": seed, "system": system, "metric": metric.removeprefix("val_"),
           "direction": direction}
    started = time.monotonic()
    if system == "kerastuner":
        row.update(kerastuner_test_metric(dataset, seed, budget_s, training, request["peer_trials"]))
    elif system == "hgb":
        row.update(hgb_test_metric(dataset, seed, training, row["metric"]))
    else:
        evaluation = EvaluationSettings(test_split=TEST_SPLIT, refit=request["refit"])
        settings = SearchSettings(strategy=system, seed=seed, max_trials=MAX_TRIALS,
                                  population_size=request["population"], max_time_seconds=budget_s,
                                  training=training, space=space, evaluation=evaluation,
                                  ensemble=EnsembleSettings(size=POOL, method="average"))
        outcome = run_search(dataset, settings)
        single_test = outcome.evaluation.get("test_metric")  # the single best's (refit's with --refit)
        if request["refit"]:  # the same winner, scored before and after its refit
            before = (outcome.evaluation.get("test") or {}).get(row["metric"])
            row.update(refit_test=single_test, test_before_refit=before)
        row["ensembles"] = ensemble_scores(outcome.ensemble_pool, row["metric"])
        row.update(test=single_test, validation=outcome.best.value, trials=len(outcome.trials),
                   epochs=sum(t.epochs_run for t in outcome.trials), population=settings.generation_size,
                   best_trial=outcome.best.trial, best_params=outcome.best.params,
                   generations=len(outcome.population_history),
                   # how training settings serve the search: where trials peak and stop
                   median_best_epoch=_median([t.best_epoch for t in outcome.trials if t.best_epoch]),
                   median_epochs_run=_median([t.epochs_run for t in outcome.trials if t.status == "completed"]),
                   stopped_by_patience=sum(t.stop_reason == "patience" for t in outcome.trials) / len(outcome.trials))
    row["wall_s"] = time.monotonic() - started
    return row


def ensemble_scores(pool, metric: str) -> dict:
    """Each of ENSEMBLES chosen on the pool's validation outputs, scored on its test outputs."""
    if pool is None or pool.test is None:
        return {}
    scores = {}
    for method, size in ENSEMBLES:
        chosen = select_members(pool.task, pool.y_validation, pool.validation, method=method, size=size)
        if not chosen:
            continue
        name = f"{'avg' if method == 'average' else 'greedy'}{size}"
        scores[name] = _scored(pool, chosen, metric)
    return scores


def _scored(pool, chosen: list, metric: str) -> dict:
    return {"validation": score(pool.task, pool.y_validation, combine(pool.validation, chosen))[metric],
            "test": score(pool.task, pool.y_test, combine(pool.test, chosen))[metric], "members": len(chosen)}


def _with_ensembles(rows: list[dict]) -> list[dict]:
    """A search's ensembles as systems of their own (``<strategy>+avg20``…), beside its single best."""
    out = []
    for row in rows:
        out.append({k: v for k, v in row.items() if k != "ensembles"})
        for name, figures in (row.get("ensembles") or {}).items():
            out.append({**out[-1], "system": f"{row['system']}+{name}", **figures})
    return out


def our_splits(dataset, training: TrainSettings, seed: int):
    """The rows our search of this seed trains, validates and tests on (data/splits.py), for a peer."""
    labels = None if dataset.task == "regression" else dataset.y
    return search_splits(dataset.n_samples, labels, training.validation_split, TEST_SPLIT, seed)


def hgb_test_metric(dataset, seed: int, training: TrainSettings, metric: str) -> dict:
    """HistGradientBoosting with scikit-learn's defaults, stopped early on our validation rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    splits = our_splits(dataset, training, seed)
    x, y = np.asarray(dataset.x, np.float64), dataset.y
    kind = HistGradientBoostingRegressor if dataset.task == "regression" else HistGradientBoostingClassifier
    model = kind(early_stopping=True, random_state=seed)
    model.fit(x[splits.train], y[splits.train], X_val=x[splits.validation], y_val=y[splits.validation])

    def outputs(rows):
        if dataset.task == "regression":
            return model.predict(x[rows]).reshape(-1, 1)
        p = model.predict_proba(x[rows])
        return p[:, 1:] if dataset.task == "binary" else p

    return {"test": score(dataset.task, y[splits.test], outputs(splits.test))[metric],
            "validation": score(dataset.task, y[splits.validation], outputs(splits.validation))[metric],
            "trials": 1}


def _with_refit(row: dict) -> list[dict]:
    """A refit run as two systems: its winner as the search left it, and refit (``<system>+refit``)."""
    if "refit_test" not in row:
        return [row]
    return [{**row, "test": row["test_before_refit"]}, {**row, "system": f"{row['system']}+refit"}]


def kerastuner_test_metric(dataset, seed: int, budget_s: float, training: TrainSettings, trials: int) -> dict:
    """KerasTuner RandomSearch (``benchmarks/peers.py``) on exactly our rows; the hook for peers.

    Its search rows are our training rows then our validation rows, so Keras'
    ``validation_split`` (the last rows) validates on ours; it is scored on our test rows.
    """
    sys.path.insert(0, str(HERE))
    try:
        import peers  # benchmarks/peers.py (the speed benchmark's peer machinery)
    except ImportError:
        return {"test": None, "note": "benchmarks/peers.py not found: KerasTuner left out"}
    splits = our_splits(dataset, training, seed)
    search_rows = np.concatenate([splits.train, splits.validation])
    split = {"name": dataset.name, "task": dataset.task, "n_classes": dataset.n_classes,
             "x_search": np.asarray(dataset.x[search_rows], np.float64), "y_search": dataset.y[search_rows],
             "x_test": np.asarray(dataset.x[splits.test], np.float64), "y_test": dataset.y[splits.test]}
    figures = peers.run_keras_tuner(split, trials=trials, epochs=training.epochs, batch_size=training.batch_size,
                                    patience=training.patience, seed=seed, time_budget=budget_s,
                                    learning_rate=training.learning_rate)
    return {"test": figures["test"], "validation": figures["best_val"], "trials": figures["trials"],
            "epochs": figures["epochs"]}


def _median(values: list) -> float | None:
    return float(statistics.median(values)) if values else None


def _plain(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# --------------------------------------------------------------------------- report


def _header(seeds: list, budget_s: float | None, training: dict | None, refit: bool | None,
            machines: dict[str, str | None]) -> str:
    """The lines above the table, from plain data: a run's own, or those pooled from saved files.

    ``machines``: the machine line of each source, by its name ("" for this run).
    """
    budget = f"{budget_s:.0f} s" if budget_s is not None else "an unrecorded budget"
    lines = [f"# strategy quality: {len(seeds)} seed(s), {budget} per search"]
    lines += [f"machine{f' ({source})' if source else ''}: {line or 'not recorded'}"
              for source, line in machines.items()]
    if training is None:
        lines.append("training: not recorded")
    else:
        lines.append(f"training: epochs {training['epochs']}, lr {training['learning_rate']} "
                     f"({training['lr_schedule']}), {'refit on training + validation, ' if refit else ''}"
                     f"patience {training['patience']}, batch {training['batch_size']}")
    return "\n".join(lines)


def _report(rows: list[dict], datasets: list[str], header: str) -> str:
    lines = [header,
             "",
             "| dataset | metric | system | test mean ± sd | val mean | optimism | trials | best epoch / run (median) "
             "| per-seed test |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name in datasets:
        group = [r for r in rows if r["dataset"] == name]
        if not group:
            continue
        # an error row carries no metric: take them from a row that ran
        direction = next((r["direction"] for r in group if r.get("direction")), "max")
        metric = next((r["metric"] for r in group if r.get("metric")), "-")
        means = {}
        for system in dict.fromkeys(r["system"] for r in group):
            mine = [r for r in group if r["system"] == system]
            tests = [r["test"] for r in mine if r.get("test") is not None]
            vals = [r["validation"] for r in mine if r.get("validation") is not None]
            mean = statistics.fmean(tests) if tests else None
            spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
            means[system] = mean
            lines.append(f"| {name} | {metric} | {system} | {_num(mean)} ± {_num(spread)} | "
                         f"{_num(statistics.fmean(vals) if vals else None)} | {_num(_optimism(mine, direction))} | "
                         f"{statistics.fmean(r.get('trials') or 0 for r in mine):.0f} | "
                         f"{_epochs(mine)} | {', '.join(_num(t) for t in tests)} |")
        verdicts.append(_verdict(name, means, direction))
        verdicts.extend(_paired(group, metric, direction))
    return "\n".join(lines + [""] + verdicts + _targets(rows, datasets))


def _optimism(rows: list[dict], direction: str) -> float | None:
    """Mean of how much better validation said a model was than the test found."""
    gaps = [(r["validation"] - r["test"]) * (1 if direction == "max" else -1) for r in rows
            if r.get("validation") is not None and r.get("test") is not None]
    return statistics.fmean(gaps) if gaps else None


def _targets(rows: list[dict], datasets: list[str]) -> list[str]:
    """Issue 34's targets for the delivered (default) ensemble of the random search."""
    ensemble, single = f"random+{DEFAULT_ENSEMBLE}", "random"
    lines = ["", f"Targets for the delivered ensemble ({ensemble}), by mean test metric:"]
    beats_hgb = known_hgb = 0
    for name in datasets:
        group = [r for r in rows if r["dataset"] == name]
        direction = next((r["direction"] for r in group if r.get("direction")), "max")

        def mean(system):
            tests = [r["test"] for r in group if r["system"] == system and r.get("test") is not None]
            return statistics.fmean(tests) if tests else None

        mine = mean(ensemble)
        if mine is None:
            continue
        verdicts = []
        for other in (single, "kerastuner", "hgb"):
            theirs = mean(other)
            if theirs is None:
                continue
            ok = mine >= theirs if direction == "max" else mine <= theirs
            verdicts.append(f">= {other}: {'yes' if ok else 'NO'} ({_num(mine)} vs {_num(theirs)})")
            if other == "hgb":
                known_hgb, beats_hgb = known_hgb + 1, beats_hgb + ok
        gaps = {s: _optimism([r for r in group if r["system"] == s], direction) for s in (ensemble, single)}
        if None not in gaps.values():
            verdicts.append(f"optimism {_num(gaps[ensemble])} vs single best's {_num(gaps[single])}")
        lines.append(f"- {name}: " + "; ".join(verdicts))
    if known_hgb:
        lines.append(f"- at least HistGradientBoosting's on {beats_hgb} of {known_hgb} datasets (target: 3 of 4)")
    return lines


def _paired(group: list[dict], metric: str, direction: str) -> list[str]:
    """Each system minus random on the seeds both have: the spread of means over seeds hides
    that a seed's split moves every system alike, which pairing by seed cancels."""
    tests: dict[str, dict] = {}
    for row in group:
        if row.get("test") is not None:
            tests.setdefault(row["system"], {})[row["seed"]] = row["test"]
    systems = list(dict.fromkeys(r["system"] for r in group))
    lines = []
    default = f"random+{DEFAULT_ENSEMBLE}"
    for system in systems:
        baselines = [_baseline(system, systems)]
        if "+" in system and not system.endswith("+refit") and system != default and default in systems:
            baselines.append(default)  # the decision rule: does another method beat the default?
        if system in ("kerastuner", "hgb") and default in systems:
            baselines = [default]
        for baseline in baselines:
            if system == baseline or baseline not in systems:
                continue
            theirs, random = tests.get(system, {}), tests.get(baseline, {})
            diffs = [theirs[seed] - random[seed] for seed in theirs if seed in random]
            lines.append(f"- {system} - {baseline}, {_paired_summary(diffs, metric, direction)}")
    return lines


def _baseline(system: str, systems: list[str]) -> str:
    """random, or random's refit for a refit system: else the difference would be mostly the refit's;
    an ensemble of another size or method is compared with the default ensemble too (_paired)."""
    if system.endswith("+refit") and system != "random+refit" and "random+refit" in systems:
        return "random+refit"
    return "random"


def _paired_summary(diffs: list[float], metric: str, direction: str) -> str:
    if not diffs:
        return "paired over 0 seeds: no seed where both have a test metric"
    spread = f" ± {_num(statistics.stdev(diffs))}" if len(diffs) > 1 else ""
    equal = sum(abs(d) < 1e-12 for d in diffs)
    better = sum(abs(d) >= 1e-12 and (d > 0 if direction == "max" else d < 0) for d in diffs)
    # the difference keeps its raw sign, so say when a positive one is the worse
    note = f"; lower {metric} is better" if direction == "min" else ""
    return (f"paired over {len(diffs)} seed(s): {_signed(statistics.fmean(diffs))}{spread} "
            f"(better in {better}, equal in {equal}, worse in {len(diffs) - better - equal}{note})")


# --------------------------------------------------------------------------- pooling saved runs

# Pooling files that differ in these would mix two experiments in one mean.
MUST_MATCH = ("training", "space", "budget_s", "refit")


def report_saved(paths: list[str]) -> str:
    """The table of several ``--json`` files' rows together, e.g. seeds 0-2 and 3-4 run apart."""
    repeated = sorted({path for path in paths if paths.count(path) > 1})
    if repeated:  # its rows would count twice
        raise SystemExit(f"--report: {', '.join(repeated)} given more than once")
    records = {path: _load_saved(path) for path in paths}
    _check_poolable(records)
    rows = _pooled_rows(records)
    first = next(iter(records.values()))
    seeds = _union([record.get("seeds") or [r["seed"] for r in record["rows"]] for record in records.values()])
    datasets = _union([(record.get("datasets") or []) + [r["dataset"] for r in record["rows"]]
                       for record in records.values()])
    machines = {path: record.get("machine") for path, record in records.items()}
    return _report(rows, datasets, _header(seeds, first.get("budget_s"), first.get("training"),
                                           first.get("refit"), machines))


def _load_saved(path: str) -> dict:
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--report: cannot read {path}: {error}")
    # the first files held the rows alone; what they did not record reads as None
    return {"rows": saved} if isinstance(saved, list) else saved


def _check_poolable(records: dict[str, dict]) -> None:
    (first_path, first), *others = records.items()
    for path, record in others:
        for field in MUST_MATCH:
            unrecorded = [p for p, r in ((first_path, first), (path, record)) if r.get(field) is None]
            if len(unrecorded) == 1:  # an older file: nothing to compare with
                raise SystemExit(f"--report: cannot pool {first_path} and {path}: "
                                 f"{field} is not recorded in {unrecorded[0]}")
            difference = _difference(field, first.get(field), record.get(field))
            if difference:
                raise SystemExit(f"--report: cannot pool {first_path} and {path}: {difference}")


def _difference(field: str, mine, theirs) -> str | None:
    if mine == theirs:
        return None
    if isinstance(mine, dict) and isinstance(theirs, dict):  # name the setting, not the whole dict
        keys = [k for k in dict.fromkeys([*mine, *theirs]) if mine.get(k) != theirs.get(k)]
        return "; ".join(f"{field}.{k} differs ({_shown(mine.get(k))} vs {_shown(theirs.get(k))})" for k in keys)
    return f"{field} differs ({_shown(mine)} vs {_shown(theirs)})"


def _shown(value) -> str:
    return "not recorded" if value is None else repr(value)


def _pooled_rows(records: dict[str, dict]) -> list[dict]:
    """All rows, file by file; a (dataset, seed, system) in two files would count one seed twice."""
    rows, source = [], {}
    for path, record in records.items():
        for row in record["rows"]:
            key = (row["dataset"], row["seed"], row["system"])
            if source.get(key, path) != path:
                raise SystemExit(f"--report: {key[0]} seed {key[1]} {key[2]} is in both {source[key]} and "
                                 f"{path}: pool runs of different seeds")
            source[key] = path
            rows.append(row)
    return rows


def _union(lists: list[list]) -> list:
    return list(dict.fromkeys(item for items in lists for item in items))


# --------------------------------------------------------------------------- formatting


def _epochs(rows: list[dict]) -> str:
    best = [r["median_best_epoch"] for r in rows if r.get("median_best_epoch") is not None]
    run = [r["median_epochs_run"] for r in rows if r.get("median_epochs_run") is not None]
    if not best:
        return "-"
    return f"{statistics.median(best):.1f} / {statistics.median(run):.1f}"


def _verdict(name: str, means: dict, direction: str) -> str:
    known = {k: v for k, v in means.items() if v is not None}
    if not known:
        return f"{name}: no result"
    best = (max if direction == "max" else min)(known, key=known.get)
    random = known.get("random")
    beats = [s for s, v in known.items() if s != "random" and random is not None
             and (v >= random if direction == "max" else v <= random)]
    return f"{name}: best mean test {best}; at least random's: {', '.join(beats) or 'none'}"


def _line(row: dict) -> str:
    if row.get("error"):
        return f"{row['dataset']:<14} seed {row['seed']} {row['system']:<10} ERROR {row['error']}"
    extra = f" ({row['note']})" if row.get("note") else ""
    if "refit_test" in row:  # the test shown is the refit's
        extra += f" (before refit: {_num(row['test_before_refit'])})"
    return (f"{row['dataset']:<14} seed {row['seed']} {row['system']:<10} test {_num(row.get('test'))} "
            f"val {_num(row.get('validation'))} trials {row.get('trials', '-')} "
            f"epochs {row.get('epochs', '-')} wall {row['wall_s']:.0f}s{extra}")


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _signed(value: float) -> str:
    return f"{value:+.4f}" if abs(value) < 10 else f"{value:+.2f}"


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{platform.machine()} {os.cpu_count()} CPU(s), load {load[0]:.2f}, Python "
            f"{platform.python_version()}, numpy {np.__version__}")


def _training(args) -> TrainSettings:
    training = TrainSettings()
    changes = {key: value for key, value in (("learning_rate", args.lr), ("lr_schedule", args.schedule),
                                             ("patience", args.patience), ("epochs", args.epochs))
               if value is not None}
    return replace(training, **changes)


# Space fields whose default is None but which hold a list when set.
LIST_FIELDS = ("neuron_choices", "learning_rates")


def _number_or_text(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _space(pairs: list[str]) -> SpaceSettings:
    """SpaceSettings with ``key=value`` overrides (numbers parsed; e.g. bnorm_or_dropout=none)."""
    changes = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        default = getattr(SpaceSettings, key)
        if isinstance(default, tuple) or key in LIST_FIELDS:  # a comma list, e.g. activations=elu,relu
            changes[key] = tuple(_number_or_text(item) for item in text.split(","))
        else:
            changes[key] = type(default)(text) if isinstance(default, (int, float)) else text
    return replace(SpaceSettings(), **changes)


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help=f"a quick check: {', '.join(SMALL['datasets'])}, seed 0, {SMALL['budget_s']:.0f} s")
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=None, help=f"seconds per search (default {BUDGET_S:.0f})")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--population", type=int, default=None, help="default: derived (settings.py)")
    parser.add_argument("--peers", action="store_true", help="add KerasTuner RandomSearch (benchmarks/peers.py)")
    parser.add_argument("--hgb", action="store_true", help="add HistGradientBoosting (scikit-learn defaults)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default=None)
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--space", nargs="*", default=[], metavar="KEY=VALUE",
                        help="search-space overrides, e.g. bnorm_or_dropout=none wiring=poisson activations=elu,relu")
    parser.add_argument("--peer-trials", type=int, default=PEER_TRIALS,
                        help=f"KerasTuner's trial cap (default {PEER_TRIALS}; it has no clock)")
    parser.add_argument("--refit", action="store_true",
                        help="evaluation.refit: test the winner retrained on training + validation rows")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one search, in a child
    parser.add_argument("--json", default=None,
                        help="also write every row, and the settings that head them, to this file")
    parser.add_argument("--report", nargs="+", default=None, metavar="JSON",
                        help="run nothing: print one table of these --json files' rows, pooled")
    args = parser.parse_args()
    if args.report and args.json:
        parser.error("--report runs nothing, so it has no rows of its own for --json to write")
    small = SMALL if args.small else {}
    args.datasets = args.datasets or small.get("datasets", DATASETS)
    args.seeds = args.seeds or small.get("seeds", SEEDS)
    args.budget_s = args.budget_s or small.get("budget_s", BUDGET_S)
    return args


if __name__ == "__main__":
    main()
