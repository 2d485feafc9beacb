"""Latency of the subprocess protocol, as a caller sees it.

Prints two figures (medians):
- the wall time of one ``python -m cerebros_service validate`` process (start-up,
  imports, validation, exit) — what a one-shot call costs before any search;
- the round-trip time of a ``ping`` to a warm ``serve`` worker — the per-request
  overhead of the pool.

Run: ``.venv/bin/python benchmarks/cli_latency.py [--runs N] [--pings N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

REQUEST = json.dumps({
    "spec": {"dataset_id": "digits", "objective": "accuracy",
             "search_space": {"layer_sizes": [32, 64, 128], "activations": ["relu", "tanh"]}},
    "opts": {"run_id": "bench", "budget": {"max_trials": 10, "population_size": 20}},
})


def validate_wall_times(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cerebros_service", "validate"], input=REQUEST,
                              capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - started)
        assert json.loads(done.stdout)["status"] == "valid"
    return times


def ping_round_trips(pings: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "cerebros_service", "serve"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    try:
        times = []
        for index in range(pings + 1):
            sent = time.perf_counter()
            worker.stdin.write(json.dumps({"id": index, "op": "ping"}) + "\n")
            worker.stdin.flush()
            answer = json.loads(worker.stdout.readline())
            elapsed = time.perf_counter() - sent
            assert answer["id"] == index and answer["result"]["status"] == "ok"
            if index == 0:
                first_answer = time.perf_counter() - started  # start-up + first ping
            else:
                times.append(elapsed)
        return first_answer, times
    finally:
        worker.stdin.close()
        worker.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="validate processes to time")
    parser.add_argument("--pings", type=int, default=200, help="pings to a warm worker")
    args = parser.parse_args()

    walls = validate_wall_times(args.runs)
    first, pings = ping_round_trips(args.pings)
    print(f"validate (one process, python -m cerebros_service validate): "
          f"median {statistics.median(walls) * 1000:.0f} ms, min {min(walls) * 1000:.0f} ms "
          f"over {args.runs} runs")
    print(f"serve worker start-up to first ping answer: {first * 1000:.0f} ms")
    print(f"ping round trip to a warm serve worker: median {statistics.median(pings) * 1000:.2f} ms, "
          f"p95 {sorted(pings)[int(len(pings) * 0.95) - 1] * 1000:.2f} ms over {args.pings} pings")


if __name__ == "__main__":
    main()
