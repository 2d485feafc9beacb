"""Resident memory over a long search: sequential in this process ("local") vs Dask worker processes.

Each mode runs in a fresh Python process so neither inherits the other's memory. Every
10 trials it records the resident set size (RSS) of the process running the search
loop (the caller) and, for "processes", of each worker. It prints one table per mode,
the wall time of each search and their ratio (local / processes: the speed-up), and
the load average before and after (the machine may be shared: rerun on a quiet one).

Default protocol: 200 trials of the sequential trainer (one Keras model per trial) on
synthetic_classification (400 x 10), 1 epoch each, random strategy, population 10,
CPU; "processes" with 2 workers (one thread each) recycled every 20 trials (the
executor's default). ``--quick`` runs 40 trials.

    .venv/bin/python benchmarks/memory.py [--quick] [--trials 200] [--workers 2] [--trials-per-worker 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SAMPLE_EVERY = 10


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def run_mode(mode: str, trials: int, workers: int, trials_per_worker: int, epochs: int) -> dict:
    """One search in this process; RSS samples every SAMPLE_EVERY trials."""
    from cerebros_service.artifacts import RunDirectory
    from cerebros_service.data.builtin import load_builtin
    from cerebros_service.run import run_search
    from cerebros_service.settings import ExecutionSettings, SearchSettings, SpaceSettings, TrainSettings

    dataset = load_builtin("synthetic_classification")
    settings = SearchSettings(
        strategy="random", seed=0, max_trials=trials, population_size=10, device="cpu",
        space=SpaceSettings(max_levels=2, max_units_per_level=2, min_neurons=8, max_neurons=32),
        training=TrainSettings(epochs=epochs, patience=epochs),
        execution=ExecutionSettings(mode="sequential"),
    )
    trainer = None
    opened = time.monotonic()
    if mode == "processes":
        from cerebros_service.boundary.schema import ProcessesExecutor
        from cerebros_service.jobs.executors.dask_trials import open_trainer

        trainer = open_trainer(ProcessesExecutor(kind="processes", workers=workers,
                                                 trials_per_worker=trials_per_worker), device="cpu")
    samples = [{"trials": 0, "caller_mb": _rss() / 2**20, "workers_mb": []}]
    done = {"trials": 0}

    def on_event(event: dict) -> None:
        if event["type"] != "trial":
            return
        done["trials"] += 1
        if done["trials"] % SAMPLE_EVERY == 0:
            workers_mb = []
            if trainer is not None:
                live = trainer.client.run(_rss)  # every worker now, busy or not
                workers_mb = [round(rss / 2**20) for _, rss in sorted(live.items())]
            samples.append({"trials": done["trials"], "caller_mb": _rss() / 2**20, "workers_mb": workers_mb,
                            "restarts": 0 if trainer is None else trainer.worker_restarts})

    with tempfile.TemporaryDirectory() as root:
        started = time.monotonic()
        try:
            outcome = run_search(dataset, settings, run_dir=RunDirectory.create(root, mode), on_event=on_event,
                                 trainer=trainer)
            search_s = time.monotonic() - started
        finally:
            if trainer is not None:
                trainer.close()
    return {"mode": mode, "trials": len(outcome.trials), "completed": outcome.completed_trials,
            "search_s": search_s, "total_s": time.monotonic() - opened, "samples": samples,
            "best": outcome.best.value, "summary": None if trainer is None else trainer.summary()}


def _child(args: argparse.Namespace, mode: str) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--trials", str(args.trials),
               "--workers", str(args.workers), "--trials-per-worker", str(args.trials_per_worker),
               "--epochs", str(args.epochs)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(result: dict) -> None:
    print(f"\n{result['mode']}: {result['trials']} trials ({result['completed']} completed), "
          f"search {result['search_s']:.1f} s, with cluster start/stop {result['total_s']:.1f} s")
    print(f"{'trials':>6}  {'caller MB':>9}  workers MB (restarts so far)")
    for sample in result["samples"]:
        workers = ", ".join(str(mb) for mb in sample["workers_mb"]) or "-"
        restarts = f" ({sample['restarts']})" if sample["workers_mb"] else ""
        print(f"{sample['trials']:>6}  {sample['caller_mb']:>9.0f}  {workers}{restarts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 trials instead of 200")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials-per-worker", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--mode", choices=("local", "processes"), help=argparse.SUPPRESS)  # one child's mode
    args = parser.parse_args()
    if args.quick:
        args.trials = 40
    if args.mode is not None:
        sys.stdout.flush()
        result = run_mode(args.mode, args.trials, args.workers, args.trials_per_worker, args.epochs)
        print(json.dumps(result))
        return

    load_before = os.getloadavg()
    print(f"{args.trials} trials x {args.epochs} epoch(s), sequential trainer, synthetic_classification; "
          f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in load_before)}")
    local = _child(args, "local")
    processes = _child(args, "processes")
    for result in (local, processes):
        _table(result)
    print(f"\nprocesses ({args.workers} workers, recycled every {args.trials_per_worker} trials): "
          f"{processes['summary']['worker_restarts']} worker restarts, faults: {processes['summary']['faults']}")
    growth = local["samples"][-1]["caller_mb"] - local["samples"][1]["caller_mb"]
    print(f"local caller grew {growth:.0f} MB from trial {SAMPLE_EVERY} to {local['samples'][-1]['trials']}")
    print(f"speed-up (local search time / processes search time): {local['search_s'] / processes['search_s']:.2f}x; "
          f"counting the cluster's start and stop: {local['total_s'] / processes['total_s']:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
