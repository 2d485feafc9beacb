"""Many training steps in one compiled call, on TensorFlow.

``train_on_batch`` pays, every step, a Python call into the traced function, Keras'
metric reset and a copy of the logs back to numpy; on a search's small models that
was a quarter of a step or more (a 10-candidate fused digits chunk on 2 cores: 8-11
ms a step under ``train_on_batch``, 5.7-9 ms here; 40 candidates: 26-29 ms, 20-21 ms).
Here one ``tf.while_loop`` runs Keras' own ``train_step`` over a stack of batches, as
Keras does for ``steps_per_execution`` over a dataset iterator, but over arrays
already in memory. The loop is traced once per model (its number of steps is an
input), so a call can run any slice of an epoch.
"""

from __future__ import annotations

import time
import weakref

import numpy as np

SECONDS_PER_CALL = 0.25  # how often, at most, the monitor is asked whether to stop
FIRST_CALL_STEPS = 4  # the first call also traces: keep it short, so a stop is not late

_loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_epoch(model, xs: np.ndarray, ys: np.ndarray, should_stop, steps_per_call: int = 0) -> bool:
    """Train ``model`` on the batches ``xs[i], ys[i]`` in order; ``should_stop()`` is asked
    after every call (every ``steps_per_call`` steps, or as many as take about
    ``SECONDS_PER_CALL`` when 0). True when it said stop (the rest of the epoch is not run)."""
    loop = _loops.get(model)
    if loop is None:
        loop = _loops[model] = StepLoop(model, xs, ys)
    start = 0
    while start < len(xs):
        count = min(steps_per_call or loop.steps_per_call, len(xs) - start)
        loop(xs[start:start + count], ys[start:start + count])
        start += count
        if should_stop():
            return True
    return False


class StepLoop:
    """One model's compiled loop, and how many steps a call should run to last about
    ``SECONDS_PER_CALL``."""

    def __init__(self, model, xs: np.ndarray, ys: np.ndarray):
        import tensorflow as tf

        # Held weakly: this loop is the value of its model's entry in ``_loops``, and a
        # strong reference would keep every model ever trained (and its loop) alive.
        model_ref = weakref.ref(model)

        def run(xs, ys):
            model = model_ref()  # alive: a loop is traced by its model's first call

            def body(step):
                model.train_step((xs[step], ys[step]))
                return step + 1

            tf.while_loop(lambda step: step < tf.shape(xs)[0], body, [tf.constant(0)])

        signature = [tf.TensorSpec((None, *xs.shape[1:]), tf.as_dtype(xs.dtype)),
                     tf.TensorSpec((None, *ys.shape[1:]), tf.as_dtype(ys.dtype))]
        self.function = tf.function(run, input_signature=signature, autograph=False,
                                    jit_compile=bool(model.jit_compile))
        self.steps_per_call = FIRST_CALL_STEPS
        self.calls = 0

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> None:
        began = time.monotonic()
        self.function(xs, ys)
        elapsed = time.monotonic() - began
        self.calls += 1
        if self.calls > 1:  # the first call's time is mostly its trace
            self.steps_per_call = max(1, int(SECONDS_PER_CALL * len(xs) / max(elapsed, 1e-6)))
