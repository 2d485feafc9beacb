"""The side-by-side protocol: one held-out split, and each system's search run under it.

Every system gets the same 80% of the rows to search with (it splits its own 20%
validation part off them) and never sees the other 20%: the test split its best
model is scored on afterwards. Budgets are the same: trials, epochs per trial,
batch size, early-stopping patience, optimizer (AdamW, Cerebros' 0.005 / 0.004).

Peers (installed from the ``bench`` extra, never a runtime dependency):
- KerasTuner RandomSearch over plain MLPs: 1-4 Dense layers of 16-128 units, elu/relu.
- Optuna TPE over the same MLP space.
- ours: ``run_nas`` on the same rows (strategy random, one generation = every trial).

Each ``run_*`` function returns a dict of plain figures; ``search_speed.py`` and
``strategy_quality.py`` run them in fresh processes so no run inherits another's
imports, traced graphs or memory.
"""

from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np

LEARNING_RATE, WEIGHT_DECAY = 0.005, 0.004
# The peers' MLP space: layers, units (low, high, step), activations.
MLP_LAYERS, MLP_UNITS, MLP_ACTIVATIONS = (1, 4), (16, 128, 16), ["elu", "relu"]
VALIDATION_SPLIT = 0.2
TEST_SPLIT = 0.2


def held_out_split(dataset_name: str, seed: int) -> dict:
    """The built-in dataset cut once into search rows (80%) and test rows (20%), stratified for classes."""
    from sklearn.model_selection import train_test_split

    from cerebros_service.data.builtin import load_builtin

    dataset = load_builtin(dataset_name)
    stratify = dataset.y if dataset.task != "regression" else None
    x_search, x_test, y_search, y_test = train_test_split(
        np.asarray(dataset.x, np.float64), np.asarray(dataset.y), test_size=TEST_SPLIT, random_state=seed,
        stratify=stratify)
    return {"name": dataset_name, "task": dataset.task, "n_classes": dataset.n_classes,
            "x_search": x_search, "y_search": y_search, "x_test": x_test, "y_test": y_test}


def test_score(split: dict, predictions: np.ndarray) -> float:
    """Accuracy (classification) or RMSE (regression) of predictions on the test rows."""
    y = split["y_test"]
    p = np.asarray(predictions)
    if split["task"] == "regression":
        return float(np.sqrt(np.mean((p.reshape(-1) - y) ** 2)))
    labels = (p.reshape(-1) > 0.5).astype(int) if p.ndim == 1 or p.shape[1] == 1 else np.argmax(p, axis=1)
    return float(np.mean(labels == y))


# --------------------------------------------------------------------------- ours


def run_ours(split: dict, *, trials: int, epochs: int, batch_size: int, patience: int, seed: int,
             execution: str, strategy: str = "random", population: int | None = None,
             time_budget: float | None = None, search_space: dict | None = None,
             training: dict | None = None) -> dict:
    """``training``: more spec training keys (e.g. ``{"mixed_precision": True}``; device_check.sh)."""
    # Our package first, as a user imports it (it chooses TensorFlow's oneDNN kernels before
    # TensorFlow loads; cerebros_service/__init__.py), then Keras before the clock starts, as
    # the peers do.
    import cerebros_service
    import keras  # noqa: F401
    from cerebros_service.data.registry import register_dataset

    name = f"bench_{split['name']}"
    register_dataset(name, split["x_search"], split["y_search"], replace=True)
    spec = {"dataset_id": name, "strategy": strategy,
            "training": {"epochs": epochs, "batch_size": batch_size, "patience": patience,
                         "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
                         "validation_split": VALIDATION_SPLIT, **(training or {})},
            # the protocol holds out its own test split; the after-run steps (ONNX, report) are
            # not search work and no peer does them
            "evaluation": {"test_split": 0}, **({"search_space": search_space} if search_space else {})}
    with tempfile.TemporaryDirectory() as artifacts:
        os.environ["CEREBROS_ARTIFACTS_ROOT"] = artifacts  # the operator's setting, not the request's
        opts = {"seed": seed, "execution": execution, "after_run": {"onnx": False, "report": False},
                "budget": {"max_trials": trials, "population_size": population or trials,
                           **({"max_time_seconds": time_budget} if time_budget else {})}}
        started = time.monotonic()
        result = cerebros_service.run_nas(spec, opts)
        wall = time.monotonic() - started
        if result["status"] != "success":
            raise RuntimeError(f"our search failed: {result.get('error')}")
        import keras

        model = keras.saving.load_model(result["artifacts"]["best_model"])
        test = test_score(split, model.predict(split["x_test"].astype("float32"), verbose=0))
    trials_done = result["trials"]
    return {
        "wall_s": wall, "search_s": result["metadata"].get("search_duration_s", wall),
        "trials": len(trials_done), "epochs": sum(t["epochs_run"] for t in trials_done),
        "trial_s_sum": sum(t["duration_s"] for t in trials_done), "best_val": result["best_metric"],
        "test": test,
    }


# --------------------------------------------------------------------------- peers


def _mlp(task: str, n_classes: int | None, input_dim: int, layers: list[tuple[int, str]], x_search,
         learning_rate: float = LEARNING_RATE):
    import keras

    normalize = keras.layers.Normalization()
    normalize.adapt(np.asarray(x_search, "float32"))
    model = keras.Sequential([keras.Input((input_dim,)), normalize]
                             + [keras.layers.Dense(units, activation=act) for units, act in layers])
    if task == "multiclass":
        model.add(keras.layers.Dense(n_classes, activation="softmax"))
        loss, metric = "sparse_categorical_crossentropy", "accuracy"
    elif task == "binary":
        model.add(keras.layers.Dense(1, activation="sigmoid"))
        loss, metric = "binary_crossentropy", "accuracy"
    else:
        model.add(keras.layers.Dense(1))
        loss, metric = "mse", keras.metrics.RootMeanSquaredError(name="rmse")
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=WEIGHT_DECAY), loss=loss,
                  metrics=[metric])
    return model


def random_mlp_layers(rng: np.random.Generator) -> list[tuple[int, str]]:
    """One draw from the peers' MLP space, (units, activation) per layer, without a tuner."""
    low, high, step = MLP_UNITS
    return [(int(rng.integers(low // step, high // step + 1)) * step, str(rng.choice(MLP_ACTIVATIONS)))
            for _ in range(int(rng.integers(MLP_LAYERS[0], MLP_LAYERS[1] + 1)))]


def _objective(task: str) -> tuple[str, str]:
    return ("val_rmse", "min") if task == "regression" else ("val_accuracy", "max")


def run_keras_tuner(split: dict, *, trials: int, epochs: int, batch_size: int, patience: int, seed: int,
                    time_budget: float | None = None, search_space: dict | None = None,
                    learning_rate: float = LEARNING_RATE) -> dict:
    import keras
    import keras_tuner

    task, x, y = split["task"], split["x_search"].astype("float32"), split["y_search"]
    monitor, direction = _objective(task)
    epochs_run, trial_s = [], []

    class Counting(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started, self.epochs = time.monotonic(), 0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1

        def on_train_end(self, logs=None):
            epochs_run.append(self.epochs)
            trial_s.append(time.monotonic() - self.started)

    def build(hp):
        low, high, step = MLP_UNITS
        layers = [(hp.Int(f"units_{i}", low, high, step=step), hp.Choice(f"act_{i}", MLP_ACTIVATIONS))
                  for i in range(hp.Int("layers", *MLP_LAYERS))]
        return _mlp(task, split["n_classes"], x.shape[1], layers, x, learning_rate)

    with tempfile.TemporaryDirectory() as folder:
        tuner = keras_tuner.RandomSearch(
            build, objective=keras_tuner.Objective(monitor, direction), max_trials=trials, seed=seed,
            directory=folder, project_name="bench", overwrite=True)
        started = time.monotonic()
        tuner.search(x, y, epochs=epochs, batch_size=batch_size, validation_split=VALIDATION_SPLIT, verbose=0,
                     callbacks=[keras.callbacks.EarlyStopping(monitor, patience=patience, mode=direction,
                                                              restore_best_weights=True), Counting()])
        wall = time.monotonic() - started
        best = tuner.get_best_models(1)[0]
        best_val = tuner.oracle.get_best_trials(1)[0].score
        test = test_score(split, best.predict(split["x_test"].astype("float32"), verbose=0))
    return {"wall_s": wall, "search_s": wall, "trials": len(epochs_run), "epochs": sum(epochs_run),
            "trial_s_sum": sum(trial_s), "best_val": best_val, "test": test}


def run_optuna(split: dict, *, trials: int, epochs: int, batch_size: int, patience: int, seed: int,
               time_budget: float | None = None, search_space: dict | None = None) -> dict:
    import keras
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task, x, y = split["task"], split["x_search"].astype("float32"), split["y_search"]
    monitor, direction = _objective(task)
    n_val = int(round(len(x) * VALIDATION_SPLIT))  # Keras' validation_split: the last rows
    best = {"value": None, "model": None}
    epochs_run, trial_s = [], []

    def objective(trial):
        keras.backend.clear_session()
        low, high, step = MLP_UNITS
        layers = [(trial.suggest_int(f"units_{i}", low, high, step=step),
                   trial.suggest_categorical(f"act_{i}", MLP_ACTIVATIONS))
                  for i in range(trial.suggest_int("layers", *MLP_LAYERS))]
        model = _mlp(task, split["n_classes"], x.shape[1], layers, x)
        started = time.monotonic()
        history = model.fit(x[:-n_val], y[:-n_val], validation_data=(x[-n_val:], y[-n_val:]), epochs=epochs,
                            batch_size=batch_size, verbose=0,
                            callbacks=[keras.callbacks.EarlyStopping(monitor, patience=patience, mode=direction,
                                                                     restore_best_weights=True)]).history
        trial_s.append(time.monotonic() - started)
        epochs_run.append(len(history[monitor]))
        value = max(history[monitor]) if direction == "max" else min(history[monitor])
        if best["value"] is None or (value > best["value"] if direction == "max" else value < best["value"]):
            best["value"], best["model"] = value, model
        return value

    study = optuna.create_study(direction="maximize" if direction == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    started = time.monotonic()
    study.optimize(objective, n_trials=trials, timeout=time_budget)
    wall = time.monotonic() - started
    test = test_score(split, best["model"].predict(split["x_test"].astype("float32"), verbose=0))
    return {"wall_s": wall, "search_s": wall, "trials": len(epochs_run), "epochs": sum(epochs_run),
            "trial_s_sum": sum(trial_s), "best_val": best["value"], "test": test}


RUNNERS = {"ours": run_ours, "keras_tuner": run_keras_tuner, "optuna": run_optuna}


def finite(value) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
