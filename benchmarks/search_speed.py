"""Search speed side by side: ours (sequential, fused; TensorFlow and JAX) and, with --peers,
KerasTuner RandomSearch and Optuna TPE, under one protocol (benchmarks/peers.py).

For each dataset and budget (trials x epochs; batch 32, patience 5, seed fixed) every
system runs once, each in a fresh Python process, and one table is printed: search
wall seconds, trials per minute, epochs run, the sum of per-trial seconds over the
wall time, the best validation metric, and the test metric of the best model on a
held-out 20% split no system saw. Ratios are against KerasTuner's trials per minute.

    .venv/bin/python benchmarks/search_speed.py --peers            # the full protocol
    .venv/bin/python benchmarks/search_speed.py --quick            # digits 10 x 5, ours only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# TensorFlow's thread pools as ours sizes them on 2 cores (search/device.py), for a peer
# measured with the same setting ("keras_tuner (tf; our threads)"); the peers' own rows keep
# TensorFlow's defaults, as their users get them.
OUR_THREADS_ON_2_CORES = {"TF_NUM_INTEROP_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "1"}
# TensorFlow's oneDNN kernels, which ours turns on where TensorFlow does not (cerebros_service/__init__.py),
# for a peer measured with them too ("keras_tuner (tf; oneDNN)").
ONEDNN = {"TF_ENABLE_ONEDNN_OPTS": "1"}
SYSTEMS = {  # name -> (runner, keyword arguments, KERAS_BACKEND, extra environment)
    "ours sequential (tf)": ("ours", {"execution": "sequential"}, "tensorflow", {}),
    "ours fused (tf)": ("ours", {"execution": "fused"}, "tensorflow", {}),
    "ours fused (jax)": ("ours", {"execution": "fused"}, "jax", {}),
    "keras_tuner (tf)": ("keras_tuner", {}, "tensorflow", {}),
    "optuna (tf)": ("optuna", {}, "tensorflow", {}),
    "keras_tuner (tf; our threads)": ("keras_tuner", {}, "tensorflow", OUR_THREADS_ON_2_CORES),
    "keras_tuner (tf; oneDNN)": ("keras_tuner", {}, "tensorflow", ONEDNN),
}


def run_one(request: dict) -> dict:
    """In a child process: one system, one dataset, one budget."""
    sys.path.insert(0, str(HERE))
    import peers

    split = peers.held_out_split(request["dataset"], request["seed"])
    runner = peers.RUNNERS[request["runner"]]
    return runner(split, trials=request["trials"], epochs=request["epochs"], batch_size=request["batch_size"],
                  patience=request["patience"], seed=request["seed"], **request["kwargs"])


def spawn(system: str, request: dict, timeout: float) -> dict:
    runner, kwargs, backend, extra = SYSTEMS[system]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    payload = json.dumps({**request, "runner": runner, "kwargs": kwargs})
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, __file__, "--one", payload], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}
    figures = json.loads(lines[-1])
    figures["process_s"] = time.monotonic() - started
    return figures


def table(title: str, rows: dict[str, dict], reference: str = "keras_tuner (tf)") -> str:
    ref = rows.get(reference, {})
    ref_rate = ref["trials"] / ref["search_s"] * 60 if "trials" in ref else None
    out = [f"\n### {title}\n",
           "| system | search s | trials/min | vs KerasTuner | epochs | Σ trial s / wall | best val | test |",
           "|---|---|---|---|---|---|---|---|"]
    for system, r in rows.items():
        if "error" in r:
            out.append(f"| {system} | {r['error']} |  |  |  |  |  |  |")
            continue
        rate = r["trials"] / r["search_s"] * 60
        ratio = f"{rate / ref_rate:.1f}x" if ref_rate else "-"
        out.append(f"| {system} | {r['search_s']:.1f} | {rate:.1f} | {ratio} | {r['epochs']} | "
                   f"{r['trial_s_sum'] / r['search_s']:.2f} | {r['best_val']:.4f} | {r['test']:.4f} |")
    return "\n".join(out)


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", default="digits,breast_cancer")
    parser.add_argument("--budgets", default="10x20,40x20", help="trials x epochs, comma separated")
    parser.add_argument("--systems", default="ours sequential (tf),ours fused (tf),ours fused (jax)")
    parser.add_argument("--peers", action="store_true", help="add KerasTuner and Optuna")
    parser.add_argument("--quick", action="store_true", help="digits 10 x 5, ours fused (tf) only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    systems = args.systems.split(",")
    if args.peers:
        systems += ["keras_tuner (tf)", "optuna (tf)"]
    datasets, budgets = args.datasets.split(","), args.budgets.split(",")
    if args.quick:
        systems, datasets, budgets = ["ours fused (tf)"], ["digits"], ["10x5"]
    versions = subprocess.run([sys.executable, "-c", "import keras, tensorflow, numpy; "
                               "print(f'keras {keras.__version__}, tensorflow {tensorflow.__version__}, "
                               "numpy {numpy.__version__}')"], capture_output=True, text=True).stdout.strip()
    print(f"# search_speed: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {versions}; load before: {load()}")
    for dataset in datasets:
        for budget in budgets:
            trials, epochs = (int(v) for v in budget.split("x"))
            request = {"dataset": dataset, "trials": trials, "epochs": epochs, "batch_size": args.batch_size,
                       "patience": args.patience, "seed": args.seed}
            rows = {}
            for system in systems:
                rows[system] = spawn(system, request, args.timeout)
                print(f"  {dataset} {budget} {system}: {rows[system]} (load {load()})", file=sys.stderr)
            print(table(f"{dataset}, {trials} trials x {epochs} epochs, batch {args.batch_size}, "
                        f"patience {args.patience}, seed {args.seed} (load after: {load()})", rows), flush=True)


if __name__ == "__main__":
    main()
