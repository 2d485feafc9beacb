"""`make demo`: a small search on the built-in digits data, through the public front door.

Run with ``python -m cerebros_service.demo [--trials N] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import run_nas


def demo_request(trials: int, epochs: int, seed: int) -> tuple[dict, dict]:
    spec = {
        "dataset_id": "digits",
        "objective": "accuracy",
        "strategy": "evolution",
        "training": {"epochs": epochs, "batch_size": 32, "patience": 3},
    }
    opts = {
        "seed": seed,
        "budget": {"max_trials": trials, "population_size": max(2, trials // 2), "max_time_seconds": 150},
        "parameters": {"mutation_rate": 0.2, "crossover_rate": 0.7, "elite_size": 1},
    }
    return spec, opts


def describe_architecture(architecture: dict) -> str:
    levels = architecture.get("levels", [])
    hidden = levels[:-1]
    parts = [
        "[" + ", ".join(f"{unit['neurons']} {unit['activation']}" for unit in level["units"]) + "]"
        for level in hidden
    ]
    return f"{len(hidden)} hidden level(s): " + " → ".join(parts) if parts else "no hidden level"


def print_summary(result: dict, wall_s: float, out=sys.stdout) -> None:
    if result["status"] != "success":
        print(f"search failed ({result['error_type']}): {result['error']}", file=out)
        return
    best = result["best_architecture"]
    print("", file=out)
    print("cerebros-service demo: digits (1797 images of 8×8 pixels, 10 classes)", file=out)
    print(f"  best architecture : {describe_architecture(best)}", file=out)
    print(f"  best {result['metric']:<13}: {result['best_metric']:.4f} ({result['direction']})", file=out)
    print(f"  trials            : {result['completed_trials']} completed, {result['failed_trials']} failed", file=out)
    ensemble = result.get("ensemble") or {}
    if result.get("delivered_model") == "ensemble":
        print(f"  delivered model   : an ensemble of {len(ensemble['members'])} trials (best_model.keras)", file=out)
    test, single = result.get("test_metric"), (ensemble.get("single_best") or {}).get("test_metric")
    if test is not None:
        beside = f" (the single best: {single:.4f})" if result.get("delivered_model") == "ensemble" and single is not None else ""
        print(f"  test {result['metric'].removeprefix('val_'):<13}: {test:.4f}{beside}", file=out)
    print(f"  time              : {wall_s:.1f} s (search {result['metadata']['duration_s']:.1f} s)", file=out)
    print(f"  artifacts         : {result['artifacts']['run_dir']}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cerebros_service.demo", description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    spec, opts = demo_request(args.trials, args.epochs, args.seed)
    result = run_nas(spec, opts)
    print_summary(result, time.monotonic() - started)
    return 0 if result["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
