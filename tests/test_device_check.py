"""benchmarks/device_check.sh (the GPU device check, issue 37) cannot rot: its dry run
(the same steps, tiny, on this CPU, TensorFlow refused, installing nothing) writes the
Markdown table with a row for every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import required


@pytest.fixture(autouse=True)
def _jax_installed():
    required("jax")  # the `test` extra installs it: missing, these tests fail rather than skip


ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
# The dry run's step names (chunk sizes 4 and 6), in the script's order.
STEPS = ["speed-40", "speed-200", "speed-200-cpu", "chunk-4", "chunk-6", "processes", "mixed-40", "speed-40-cpu"]


def dry_run(out: Path, *args: str, total_s: int | None = None, timeout: float = 600) -> tuple[str, list[dict]]:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    env.pop("KERAS_BACKEND", None)
    if total_s is not None:
        env["DEVICE_CHECK_TOTAL_S"] = str(total_s)
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (out / "device.md").read_text()
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == STEPS
    for step in STEPS:  # one table row per step, in order
        assert sum(line.startswith(f"| {step} |") for line in table.splitlines()) == 1, step
    return table, rows


def test_dry_run_writes_a_row_per_step(tmp_path):
    """Under a minute: one step of each kind runs (the speed search with mixed precision on,
    a fused chunk, the worker-process search); the others are listed as not run."""
    ran = {"mixed-40", "chunk-4", "processes"}
    table, rows = dry_run(tmp_path, "--only", ",".join(sorted(ran)))
    by_step = {r["step"]: r for r in rows}
    for step in STEPS:
        if step not in ran:
            assert by_step[step]["error"] == "not run (--only)"
    for step in ran:
        assert "error" not in by_step[step], by_step[step]
        assert by_step[step]["platform"].startswith("cpu") and by_step[step]["seconds"] > 0
    mixed = by_step["mixed-40"]["figures"]
    assert mixed["trials"] == 4 and mixed["epochs"] >= 4 and 0 < mixed["best_val"] <= 1
    chunk = by_step["chunk-4"]["figures"]
    assert chunk["candidates"] == 4 and chunk["first_epoch_s"] > chunk["later_epoch_s"] > 0
    assert by_step["processes"]["figures"]["executor"]["kind"] == "processes"
    assert "checked" in by_step["processes"]["result"]
    assert "Dry run" in table and "| n/a |" in table  # no device memory statistics on a CPU


def test_out_of_time_steps_are_rows_too(tmp_path):
    """The 8-minute bound: a step with no time left is not started, and says so."""
    _, rows = dry_run(tmp_path, total_s=1, timeout=120)
    assert all(r["error"] == "not run: the 1 s were spent" for r in rows)


@pytest.mark.slow
def test_full_dry_run(tmp_path):
    table, rows = dry_run(tmp_path)
    assert [r for r in rows if "error" in r] == []
    assert "this device" in table and "the same machine's CPU" in table  # the 200-candidate ratio line
