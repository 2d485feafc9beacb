"""TensorBoard logs of a finished run: one log folder per trial, plus the search as a whole.

``<run>/tensorboard/trial-NNNN/`` holds each epoch's training and validation scores
(the trial's Keras history, from trials.jsonl); ``<run>/tensorboard/search/`` holds
each trial's ranking value and the best so far, stepped by trial index. Open with
``tensorboard --logdir <run>/tensorboard``. Written with ``tf.summary``, whose scalar
writer comes with the ``tensorboard`` package (the ``tensorboard`` extra).
"""

from __future__ import annotations

import math
from pathlib import Path

from .reporting.run_data import load_run_data

LOG_DIR = "tensorboard"
INSTALL_HINT = "install the extra: pip install 'cerebros-service[tensorboard]'"


def write_tensorboard(run_dir: Path) -> dict:
    try:
        import tensorboard  # noqa: F401 - tf.summary's scalar writer lives in this package
        import tensorflow as tf
    except ImportError as exc:
        return {"status": "skipped", "reason": f"{exc.name or 'tensorboard'} is not installed; {INSTALL_HINT}"}
    data = load_run_data(run_dir)
    root = run_dir / LOG_DIR
    for trial in data.trials:
        writer = tf.summary.create_file_writer(str(root / f"trial-{int(trial.get('trial', 0)):04d}"))
        with writer.as_default():
            for key, values in sorted((trial.get("history") or {}).items()):
                for epoch, value in enumerate(values, start=1):
                    if _finite(value):
                        tf.summary.scalar(key, float(value), step=epoch)
        writer.close()
    writer = tf.summary.create_file_writer(str(root / "search"))
    best = None
    with writer.as_default():
        for trial in data.trials:
            value = trial.get("value") if trial.get("status") == "completed" else None
            if not _finite(value):
                continue
            if best is None or (value > best if data.direction == "max" else value < best):
                best = value
            tf.summary.scalar(f"trial/{data.metric}", float(value), step=int(trial["trial"]))
            tf.summary.scalar(f"best_so_far/{data.metric}", float(best), step=int(trial["trial"]))
    writer.close()
    return {"status": "done", "path": str(root), "trials": len(data.trials)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
