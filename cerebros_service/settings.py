"""The search's vocabulary: tasks, metrics and which way is better, activations, and
the plain, frozen settings of one search.

It sits below boundary/, data/ and search/ (all three import it; it imports none of
them, and no Keras): the boundary builds these settings, the data layer names tasks
with them and the engine runs on them. Everything here is picklable data, so a
worker process can receive it as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Task = Literal["binary", "multiclass", "regression"]
Direction = Literal["max", "min"]
StrategyName = Literal["random", "evolution"]

# Activations a hidden unit may use (Keras names; plain strings, so the boundary can
# check them without Keras). The output unit's activation is settled by the task head.
KNOWN_ACTIVATIONS = frozenset(
    {"elu", "relu", "selu", "gelu", "tanh", "sigmoid", "swish", "silu", "softplus",
     "softsign", "linear", "leaky_relu", "mish", "relu6", "hard_sigmoid", "exponential"}
)
OUTPUT_ACTIVATION = "output"

# Ranking metrics the trainer can report, and which way is better. Keys are Keras
# history keys ("val_" + the compiled metric's name).
METRIC_DIRECTIONS: dict[str, Direction] = {
    "val_accuracy": "max",
    "val_auc": "max",
    "val_loss": "min",
    "val_rmse": "min",
    "val_mae": "min",
}

# Short objective names a caller may use, mapped onto history keys.
OBJECTIVE_ALIASES: dict[str, str] = {
    "accuracy": "val_accuracy",
    "acc": "val_accuracy",
    "auc": "val_auc",
    "loss": "val_loss",
    "rmse": "val_rmse",
    "root_mean_squared_error": "val_rmse",
    "val_root_mean_squared_error": "val_rmse",
    "mae": "val_mae",
    "mean_absolute_error": "val_mae",
    "val_mean_absolute_error": "val_mae",
}

# Metrics that only make sense for some tasks.
CLASSIFICATION_ONLY = frozenset({"val_accuracy", "val_auc"})
BINARY_ONLY = frozenset({"val_auc"})
REGRESSION_ONLY = frozenset({"val_rmse", "val_mae"})


def is_better(value: float | None, reference: float | None, direction: Direction) -> bool:
    """Whether ``value`` beats ``reference`` under ``direction``: the one definition of "better".

    A missing or non-finite value never wins; anything finite beats a missing reference.
    """
    if value is None or not math.isfinite(value):
        return False
    if reference is None:
        return True
    return value > reference if direction == "max" else value < reference


def ranking_key(value: float, direction: Direction) -> float:
    """Sort key that puts better finite values first (ascending sort)."""
    return -value if direction == "max" else value


def best_of(values: list[float], direction: Direction) -> float:
    """The best of finite ``values`` under ``direction``."""
    return min(values, key=lambda v: ranking_key(v, direction))


def default_metric(task: Task) -> str:
    return "val_rmse" if task == "regression" else "val_accuracy"


def resolve_metric(objective: str | None, task: Task) -> tuple[str, Direction]:
    """Map an objective ("accuracy", "val_loss", None, …) to (history key, direction).

    Raises ValueError with a readable message when the objective is unknown or
    does not fit the task.
    """
    if objective is None:
        name = default_metric(task)
    else:
        key = objective.strip().lower()
        name = OBJECTIVE_ALIASES.get(key, key)
        if not name.startswith("val_"):
            name = "val_" + name
    if name not in METRIC_DIRECTIONS:
        known = sorted(set(METRIC_DIRECTIONS) | set(OBJECTIVE_ALIASES))
        raise ValueError(f"unknown objective {objective!r}; use one of {', '.join(known)}")
    if task == "regression" and name in CLASSIFICATION_ONLY:
        raise ValueError(f"objective {objective!r} needs a classification task, got regression")
    if task != "regression" and name in REGRESSION_ONLY:
        raise ValueError(f"objective {objective!r} needs a regression task, got {task}")
    if task != "binary" and name in BINARY_ONLY:
        raise ValueError(f"objective {objective!r} needs a binary classification task, got {task}")
    return name, METRIC_DIRECTIONS[name]


@dataclass(frozen=True)
class SpaceSettings:
    """Ranges of the Cerebros-style search space (see docs/search.md).

    Levels counted here are hidden levels; the output level is always added last.
    """

    min_levels: int = 1
    max_levels: int = 3
    min_units_per_level: int = 1
    max_units_per_level: int = 3
    min_neurons: int = 8
    max_neurons: int = 64
    # When set, neurons per unit are drawn from these values instead of the range
    # (the calling application's short form: {"layer_sizes": [32, 64, 128]}).
    neuron_choices: tuple[int, ...] | None = None
    activations: tuple[str, ...] = ("elu",)
    # Expected number of predecessors a unit draws from the nearest earlier level;
    # farther levels get affinity * decay ** (distance - 1).
    predecessor_affinity: float = 1.5
    predecessor_decay: float = 0.7
    min_skip_depth: int = 1
    max_skip_depth: int = 3
    lateral_probability: float = 0.3
    lateral_decay: float = 0.95
    max_laterals_per_level: int = 2
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.005
    weight_decay: float = 0.004
    patience: int = 3
    validation_split: float = 0.2


@dataclass(frozen=True)
class ExecutionSettings:
    """How candidates are trained: "fused" (a generation as one batched model, see
    search/fused.py) or "sequential" (one Keras model after another)."""

    mode: Literal["fused", "sequential"] = "fused"
    # A fused chunk holds at most this many candidates and this many padded
    # parameters (what its memory and arithmetic scale with); more become more chunks.
    max_fused_candidates: int = 64
    max_fused_params: int = 20_000_000
    # Keras compile options for the trainers' models: "auto" compiles with XLA where
    # the backend does by default (JAX; TensorFlow on a GPU), not on a TensorFlow CPU.
    jit_compile: bool | Literal["auto"] = "auto"
    steps_per_execution: int = 1


@dataclass(frozen=True)
class SearchSettings:
    strategy: StrategyName = "random"
    seed: int = 0
    max_trials: int = 10
    population_size: int = 5
    max_time_seconds: float | None = None
    mutation_rate: float = 0.1
    crossover_rate: float = 0.7
    elite_size: int = 2
    # None: follow the task (val_accuracy for classification, val_rmse for regression).
    objective: str | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    space: SpaceSettings = field(default_factory=SpaceSettings)
    training: TrainSettings = field(default_factory=TrainSettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
