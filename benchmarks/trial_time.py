"""Wall time per trial and the share spent before the first epoch ends (build + compile + tracing).

digits (1797 x 64), 20 epochs, batch 32, patience 20 (never stops early), a few random
architectures trained one after another in this process (the sequential trainer; the
fused one is measured by search_speed.py).

With ``--peers``, as many plain Keras MLPs of the peers' space (benchmarks/peers.py:
1-4 Dense layers of 16-128 units, what KerasTuner and Optuna build) are then trained
the way they train them (``fit`` with validation data) on the same rows, and the
medians of the first epoch (build + compile + first epoch with its validation, as
ours is counted) are compared: the speed issue's target (c), at most 1.2x.

    .venv/bin/python benchmarks/trial_time.py [--trials 5] [--peers]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from cerebros_service.data.builtin import load_builtin
from cerebros_service.data.dataset import split_indices
from cerebros_service.run import trial_seed
from cerebros_service.search.device import configure_device
from cerebros_service.search.metrics import output_units
from cerebros_service.search.records import Candidate
from cerebros_service.settings import SpaceSettings, TrainSettings
from cerebros_service.search.space import sample_architecture
from cerebros_service.search.train import make_training_data, train_population
from cerebros_service.settings import ExecutionSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--peers", action="store_true", help="also time the peers' MLPs' first epochs")
    args = parser.parse_args()

    device = configure_device("auto")
    dataset = load_builtin("digits")
    train_idx, val_idx = split_indices(dataset.n_samples, 0.2, seed=0)
    data = make_training_data(dataset, train_idx, val_idx)
    training = TrainSettings(epochs=args.epochs, batch_size=32, patience=args.epochs)
    rng = np.random.default_rng(0)
    candidates = [Candidate(i, 0, sample_architecture(SpaceSettings(), data.input_dim,
                                                      output_units(dataset.task, dataset.n_classes), rng),
                            trial_seed(0, i)) for i in range(args.trials)]
    started = time.monotonic()
    records = train_population(candidates, data, training, "val_accuracy", "max",
                               execution=ExecutionSettings(mode="sequential"))
    total = time.monotonic() - started

    print(f"device: {device}; digits {data.x_train.shape[0]} train / {data.x_val.shape[0]} val, "
          f"{args.epochs} epochs, batch 32")
    print(f"{'trial':>5} {'params':>7} {'epochs':>6} {'wall_s':>7} {'first_epoch_s':>13} {'share':>6} "
          f"{'later_epoch_s':>13} {'val_acc':>7}")
    for r in records:
        later = (r.duration_s - r.first_epoch_s) / max(1, r.epochs_run - 1) if r.first_epoch_s else float("nan")
        share = r.first_epoch_s / r.duration_s if r.first_epoch_s else float("nan")
        value = f"{r.value:.4f}" if r.value is not None else r.status
        print(f"{r.trial:>5} {r.params or 0:>7} {r.epochs_run:>6} {r.duration_s:>7.2f} "
              f"{r.first_epoch_s or float('nan'):>13.2f} {share:>6.0%} {later:>13.3f} {value:>7}")
    walls = [r.duration_s for r in records]
    firsts = [r.first_epoch_s for r in records if r.first_epoch_s is not None]
    print(f"total {total:.1f} s; per trial median {statistics.median(walls):.2f} s; "
          f"before the first epoch ends: median {statistics.median(firsts):.2f} s "
          f"({sum(firsts) / sum(walls):.0%} of all trial time)")
    if args.peers:
        peer_firsts = peer_first_epochs(data, dataset, args.trials, args.epochs)
        ours, theirs = statistics.median(firsts), statistics.median(peer_firsts)
        print("peers' MLPs, first epoch s: " + ", ".join(f"{t:.2f}" for t in peer_firsts))
        print(f"first epoch, median: ours {ours:.2f} s, peers' {theirs:.2f} s: {ours / theirs:.2f}x (target <= 1.2x)")


def peer_first_epochs(data, dataset, trials: int, epochs: int) -> list[float]:
    """Build + compile + first epoch (with its validation) of ``trials`` peer MLPs, as KerasTuner trains them."""
    import keras

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers import _mlp, random_mlp_layers

    rng = np.random.default_rng(0)
    firsts = []
    for _ in range(trials):
        keras.backend.clear_session()
        layers = random_mlp_layers(rng)
        started = time.monotonic()
        first = []

        class FirstEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    first.append(time.monotonic() - started)

        model = _mlp(dataset.task, dataset.n_classes, data.input_dim, layers, data.x_train)
        model.fit(data.x_train, data.targets(data.y_train), validation_data=(data.x_val, data.targets(data.y_val)),
                  epochs=epochs, batch_size=32, verbose=0, callbacks=[FirstEpoch()])
        firsts.append(first[0])
    return firsts


if __name__ == "__main__":
    main()
