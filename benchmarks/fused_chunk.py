"""One fused chunk of K default-space digits architectures: its first epoch (trace + run) and later epochs.

    .venv/bin/python benchmarks/fused_chunk.py [--candidates 40] [--bnorm-or-dropout bnorm|dropout|none]

The figures of docs/benchmarks.md ("Where a fused TensorFlow chunk spends its time");
``KERAS_BACKEND=jax`` measures the JAX backend. No validation scoring, saving or
compaction: the chunk's training alone (``fit_epochs``, as the trainer runs it), 5 epochs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(candidates: int = 40, bnorm_or_dropout: str = "bnorm", epochs: int = 5,
            space: dict | None = None) -> dict:
    """Train one chunk of ``candidates`` for ``epochs``; its size and epoch times (also used by
    device_steps.py, which adds the chunk's peak device memory). ``space``: more SpaceSettings."""
    from cerebros_service.data.builtin import load_builtin
    from cerebros_service.search.build import initial_weights
    from cerebros_service.search.device import configure_device
    from cerebros_service.search.fused import make_fused_model
    from cerebros_service.search.fused_plan import make_plan, to_fused
    from cerebros_service.search.space import sample_architecture
    from cerebros_service.search.train import fit_epochs, make_training_data, training_batches
    from cerebros_service.settings import SpaceSettings, TrainSettings

    device = configure_device()  # TensorFlow's CPU thread pools as a search sizes them; a GPU stays visible
    dataset = load_builtin("digits")
    order = np.random.default_rng(0).permutation(dataset.n_samples)
    data = make_training_data(dataset, order[:1150], order[1150:1437])
    space = SpaceSettings(bnorm_or_dropout=bnorm_or_dropout, **(space or {}))
    rng = np.random.default_rng(0)
    archs = [sample_architecture(space, data.input_dim, data.output_units, rng) for _ in range(candidates)]
    plan = make_plan(archs, data.output_units)
    model = make_fused_model(plan, data.task, feature_mean=data.feature_mean, feature_var=data.feature_var,
                             target_mean=0.0, target_std=1.0, training=TrainSettings(), seed=0)
    model.set_arrays(to_fused(plan, [initial_weights(a, data.output_units, i) for i, a in enumerate(archs)]))
    times: list[float] = []

    class EpochTimes:
        def __init__(self):
            self.started = time.monotonic()

        def batch_end(self) -> bool:
            return False

        def epoch_end(self, epoch: int) -> bool:
            now = time.monotonic()
            times.append(now - self.started)
            self.started = now
            return False

    batches = training_batches(data, 32, 0)
    fit_epochs(model, batches, epochs, EpochTimes())
    later = float(np.median(times[1:])) if len(times) > 1 else float("nan")
    return {"device": device, "candidates": candidates, "unit_positions": len(plan.slots),
            "padded_params": plan.padded_params(), "first_epoch_s": times[0], "later_epoch_s": later,
            "step_ms": 1000 * later / len(batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--bnorm-or-dropout", default="bnorm", choices=("bnorm", "dropout", "none"))
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    import keras

    r = measure(args.candidates, args.bnorm_or_dropout, args.epochs)
    print(f"{keras.backend.backend()}: {r['candidates']} candidates, {r['unit_positions']} unit positions, "
          f"{r['padded_params']:,} padded parameters; first epoch {r['first_epoch_s']:.2f} s, later "
          f"{r['later_epoch_s']:.3f} s ({r['step_ms']:.1f} ms a step)")


if __name__ == "__main__":
    main()
