"""The steps of benchmarks/device_check.sh, one per process, and the table they make.

    python benchmarks/device_steps.py speed --trials 40 --epochs 20 [--mixed] --log OUT/steps.jsonl
    python benchmarks/device_steps.py chunk --candidates 40 --epochs 5 --log …
    python benchmarks/device_steps.py processes --trials 20 --epochs 5 [--workers N] --log …
    python benchmarks/device_steps.py failed --step NAME --work TEXT --error TEXT --log …
    python benchmarks/device_steps.py table --log OUT/steps.jsonl --md OUT/device.md [--note TEXT]

Each step appends one JSON line to ``--log``; device_check.sh bounds each in time and
records one that timed out or failed with ``failed``. ``speed`` is search_speed.py's
"ours fused" search (its ``run_one``, the held-out digits protocol of peers.py);
``chunk`` is fused_chunk.py's one chunk (first epoch with the trace, later epochs);
``processes`` is a ``run_nas`` search with the worker-process executor, its result checked.
Peak device memory is JAX's ``peak_bytes_in_use`` of the first device, where it reports one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
# --tiny (the dry run): one level of one unit, so each trace is short on a small CPU.
TINY_SPACE = {"min_levels": 1, "max_levels": 1, "min_units_per_level": 1, "max_units_per_level": 1,
              "max_neurons": 8, "bnorm_or_dropout": "none"}


def device_info() -> dict:
    """The platform JAX trains on and its first device's peak memory (None where not reported)."""
    import keras

    info = {"backend": keras.backend.backend(), "platform": "?", "peak_bytes": None}
    if info["backend"] == "jax":
        import jax

        device = jax.devices()[0]
        info["platform"] = f"{device.platform}:{device.device_kind}"
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a platform without statistics
            stats = {}
        info["peak_bytes"] = stats.get("peak_bytes_in_use")
    return info


def step_speed(args) -> dict:
    sys.path.insert(0, str(HERE))
    import search_speed

    kwargs = {"execution": "fused", **({"training": {"mixed_precision": True}} if args.mixed else {}),
              **({"search_space": TINY_SPACE} if args.tiny else {})}
    request = {"dataset": "digits", "trials": args.trials, "epochs": args.epochs, "batch_size": 32,
               "patience": 5, "seed": 0, "runner": "ours", "kwargs": kwargs}
    figures = search_speed.run_one(request)
    rate = figures["trials"] / figures["search_s"] * 60
    return {"seconds": figures["search_s"],
            "result": f"{rate:.1f} trials/min, {figures['epochs']} epochs, best val {figures['best_val']:.4f}, "
                      f"test {figures['test']:.4f}", "figures": figures}


def step_chunk(args) -> dict:
    sys.path.insert(0, str(HERE))
    import fused_chunk

    space = {**TINY_SPACE} if args.tiny else {"bnorm_or_dropout": "dropout"}  # the search's default units
    r = fused_chunk.measure(args.candidates, space.pop("bnorm_or_dropout"), args.epochs, space)
    return {"seconds": r["first_epoch_s"] + r["later_epoch_s"] * (args.epochs - 1),
            "result": f"first epoch (trace included) {r['first_epoch_s']:.2f} s, later {r['later_epoch_s']:.3f} s "
                      f"({r['step_ms']:.1f} ms a step); {r['padded_params']:,} padded parameters",
            "figures": r}


def step_processes(args) -> dict:
    import numpy as np

    import cerebros_service

    with tempfile.TemporaryDirectory() as root:
        os.environ["CEREBROS_ARTIFACTS_ROOT"] = root
        executor = {"kind": "processes", **({"workers": args.workers} if args.workers else {})}
        started = time.monotonic()
        result = cerebros_service.run_nas(
            {"dataset_id": "digits", "training": {"epochs": args.epochs},
             **({"search_space": TINY_SPACE} if args.tiny else {})},
            {"seed": 0, "budget": {"max_trials": args.trials, "population_size": max(1, args.trials // 2)},
             "execution": "fused", "executor": executor, "after_run": {"onnx": False, "report": False}})
        wall = time.monotonic() - started
        problems = []
        if result["status"] != "success":
            raise RuntimeError(f"run_nas: {result['status']}: {result.get('error')}")
        meta = result["metadata"].get("executor") or {}
        if result["completed_trials"] != args.trials or result["failed_trials"]:
            problems.append(f"{result['completed_trials']} of {args.trials} trials completed, "
                            f"{result['failed_trials']} failed")
        if meta.get("kind") != "processes" or not meta.get("tasks"):
            problems.append(f"executor metadata {meta!r}")
        if meta.get("faults"):
            problems.append(f"worker faults {meta['faults']!r}")
        if not Path(result["artifacts"]["best_model"]).is_file():
            problems.append("no best_model.keras")
        from sklearn.datasets import load_digits

        answer = cerebros_service.predict(result["run_id"], np.asarray(load_digits().data[:8]))
        if answer["status"] != "success" or len(answer["predictions"]) != 8:
            problems.append(f"predict: {answer.get('error') or answer['status']}")
        if problems:
            raise RuntimeError("; ".join(problems))
    return {"seconds": result["metadata"].get("search_duration_s", wall),
            "result": f"{result['completed_trials']} trials, {meta['tasks']} tasks on {meta.get('workers')} "
                      f"worker(s), best val {result['best_metric']:.4f}, checked",
            "figures": {"wall_s": wall, "executor": meta},
            "peak_bytes": "in the workers"}  # not this process's device memory


STEPS = {"speed": step_speed, "chunk": step_chunk, "processes": step_processes}


def append(log: Path, row: dict) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(json.dumps(row, default=str) + "\n")


def mib(value) -> str:
    if isinstance(value, str):
        return value
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def table(log: Path, md: Path, note: str) -> str:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    lines = [f"# Device check, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "", note, "",
             "| step | work | device | seconds | result | peak device memory |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['step']} | {r['work']} | {r.get('platform', '-')} | - | **{r['error']}** | - |")
        else:
            lines.append(f"| {r['step']} | {r['work']} | {r['platform']} | {r['seconds']:.1f} | {r['result']} | "
                         f"{mib(r['peak_bytes'])} |")
    by_step = {r["step"]: r for r in rows if "error" not in r}
    for size in ("40", "200"):
        gpu, cpu = by_step.get(f"speed-{size}"), by_step.get(f"speed-{size}-cpu")
        if gpu and cpu:
            lines.append(f"\nFused search, {gpu['work']}: this device {cpu['seconds'] / gpu['seconds']:.1f}x "
                         f"the same machine's CPU (JAX_PLATFORMS=cpu).")
    text = "\n".join(lines) + "\n"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=[*STEPS, "failed", "table"])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--step", default=None, help="the row's name (default: the kind)")
    parser.add_argument("--work", default="", help="what the row measured, in words")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--mixed", action="store_true", help="training.mixed_precision on")
    parser.add_argument("--tiny", action="store_true", help="a one-unit search space (the dry run)")
    parser.add_argument("--error", default="")
    parser.add_argument("--md", type=Path, default=None)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    step = args.step or args.kind
    if args.kind == "table":
        print(table(args.log, args.md or args.log.with_name("device.md"), args.note))
        return 0
    if args.kind == "failed":
        append(args.log, {"step": step, "work": args.work, "error": args.error})
        return 0
    try:
        row = STEPS[args.kind](args)
    except Exception as exc:  # noqa: BLE001 - a failed step is a row saying why
        append(args.log, {"step": step, "work": args.work, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        raise
    append(args.log, {"step": step, "work": args.work, **device_info(), **row})
    print(f"{step}: {row['result']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
