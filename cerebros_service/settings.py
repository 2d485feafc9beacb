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
StrategyName = Literal["random", "evolution", "halving"]
Wiring = Literal["cerebros", "poisson"]
Merging = Literal["concatenate", "add"]
UnitNormalization = Literal["bnorm", "dropout", "none"]
LearningRateSchedule = Literal["constant", "cosine"]

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


@dataclass(frozen=True)
class Standing:
    """Where a result stands in the one order of results (the run's best, a strategy's ranking,
    which model is saved, a trial's best epoch): its value; on a tie the lower ``loss`` when
    one is given; then the earlier ``order`` (trial or epoch), so the winner never depends on
    arrival order. Epochs give their validation loss (a small validation split ties on
    accuracy for epochs on end, and the first epoch to reach a value is rarely the best
    model that reaches it); trials do not (trial_standing)."""

    value: float | None
    loss: float | None  # the tie-breaking validation loss; None: no tie-break by loss
    order: int


def trial_standing(value: float | None, trial: int) -> Standing:
    """How a trial stands: its value, then the earlier trial. Not its validation loss: among
    the hundreds of trials that tie at a validation accuracy of 1.0 the lowest loss picked
    models worse on the test split (docs/benchmarks.md#search-quality-strategies-and-defaults)."""
    return Standing(value, None, trial)


def standing_key(standing: Standing, direction: Direction) -> tuple:
    """Ascending sort key of the one order; a missing or non-finite value sorts last."""
    value, loss = standing.value, standing.loss
    if value is None or not math.isfinite(value):
        return (1, 0.0, math.inf, standing.order)
    return (0, ranking_key(value, direction),
            math.inf if loss is None or not math.isfinite(loss) else loss, standing.order)


def outranks(standing: Standing, reference: Standing | None, direction: Direction) -> bool:
    """Whether ``standing`` takes the lead from ``reference``: a missing or non-finite value
    never does; anything finite leads when there is no reference."""
    if standing.value is None or not math.isfinite(standing.value):
        return False
    return reference is None or standing_key(standing, direction) < standing_key(reference, direction)


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
    """Ranges of the Cerebros-style search space and its wiring rules (docs/search.md,
    where every rule stands beside Cerebros' own).

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
    # When set, each architecture draws the learning rate it trains with from these
    # (``"learning_rate"`` in the architecture); None: every trial trains at
    # TrainSettings.learning_rate.
    learning_rates: tuple[float, ...] | None = None
    # "poisson" wiring (the earlier sampler): a unit draws a Poisson number of distinct
    # predecessors per earlier level, mean affinity * decay ** (distance - 1).
    predecessor_affinity: float = 1.5
    # Both wirings: farther levels give fewer predecessors by this factor per level.
    predecessor_decay: float = 0.7
    min_skip_depth: int = 1
    # No connection spans more levels than this (the input counts as level -1).
    max_skip_depth: int = 7
    lateral_probability: float = 0.97
    lateral_decay: float = 0.95
    max_laterals_per_level: int = 8
    dropout: float = 0.0
    # "cerebros" wiring (the default): a unit of the first level reads the input
    # ceil(affinity_first) times; a later unit draws ceil(affinity_main * decay ** distance
    # * units there) predecessors from every earlier level, with replacement; the output
    # unit draws final_to_kminus1 * units of the last hidden level more.
    wiring: Wiring = "cerebros"
    predecessor_affinity_first: float = 5.0
    predecessor_affinity_main: float = 0.7
    predecessor_affinity_final_to_kminus1: float = 2.0
    # Laterals: a run of consecutive successful lateral draws in one unit stops here.
    max_consecutive_laterals: int = 7
    # How a unit merges its predecessors: "concatenate" or "add" (zero-padded to the widest).
    merging_strategy: Merging = "concatenate"
    # What every hidden unit applies to its output: BatchNormalization, Dropout(dropout_rate), nothing.
    # Dropout, not Cerebros' BatchNormalization: on the strategy benchmark it was within the seeds'
    # spread on the classification sets, better and steadier on diabetes, and trains faster
    # (docs/benchmarks.md).
    bnorm_or_dropout: UnitNormalization = "dropout"
    dropout_rate: float = 0.2
    # Moieties: each drawn set of levels, units and neurons is wired this many times
    # (fresh wiring each time) before the next one is drawn.
    tries_per_moiety: int = 1


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.005
    weight_decay: float = 0.004
    patience: int = 3
    validation_split: float = 0.2
    # float16 compute with float32 weights (Keras "mixed_float16"), on a GPU only: a CPU
    # gains nothing from it, so it is ignored there.
    mixed_precision: bool = False
    # "cosine" decays the learning rate to 0 over the epochs (keras CosineDecay).
    lr_schedule: LearningRateSchedule = "constant"
    # Set by the run loop from the training rows when a schedule needs it; None: constant.
    steps_per_epoch: int | None = None


# A held-out test split is made by default only when the data has this many rows:
# below it, every row is needed to train and rank, and a test score would be noise.
AUTO_TEST_MIN_ROWS = 200
AUTO_TEST_SPLIT = 0.2


@dataclass(frozen=True)
class EvaluationSettings:
    """The held-out test: rows neither training nor ranking ever sees (docs/search.md, "Evaluation").

    ``test_split``: the fraction of all rows held out (stratified for classification);
    "auto": AUTO_TEST_SPLIT when the data has AUTO_TEST_MIN_ROWS rows or more, else none;
    0: none. A test set given apart from the data replaces the split.
    ``refit``: retrain the winner on train + validation for its best epoch count
    before the test.
    """

    test_split: float | Literal["auto"] = "auto"
    refit: bool = False

    def resolved_test_split(self, n_samples: int) -> float:
        if self.test_split == "auto":
            return AUTO_TEST_SPLIT if n_samples >= AUTO_TEST_MIN_ROWS else 0.0
        return float(self.test_split)


@dataclass(frozen=True)
class EnsembleSettings:
    """The delivered model: a weighted average of the best trials (search/ensemble.py;
    docs/search.md, "The delivered model").

    ``method``: "average" (the best ``size`` trials by validation, equal weights) or
    "greedy" (selection with replacement on the validation loss, ``size`` picks).
    ``enabled=False`` delivers the single best trial, as ``best_model.keras``.
    """

    enabled: bool = True
    size: int = 20
    method: Literal["average", "greedy"] = "average"


@dataclass(frozen=True)
class HalvingSettings:
    """Successive halving (strategies/halving.py): rungs of growing epoch budgets.

    Each rung keeps the best ``1 / reduction_factor`` of the one before, which go on
    from their weights. ``min_epochs``: the first rung's budget; None gives three
    rungs, ``epochs / reduction_factor ** 2`` rounded up (at least 1).
    """

    reduction_factor: int = 3
    min_epochs: int | None = None


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
    # Rebuild a fused chunk with only its still-training candidates once most have
    # stopped, when the epochs saved pay for the new trace (search/fused_train.py).
    compact: bool = True


@dataclass(frozen=True)
class SearchSettings:
    # Random, not evolution: at an equal wall-clock budget (strategy benchmark, 4 datasets x
    # 5 seeds) evolution's mean test metric was level with random's on digits and wine and
    # below it on breast_cancer and diabetes (docs/benchmarks.md#search-quality-strategies-and-defaults).
    strategy: StrategyName = "random"
    seed: int = 0
    max_trials: int = 10
    # None: derived from max_trials and the strategy (derived_population_size).
    population_size: int | None = None
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
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    halving: HalvingSettings = field(default_factory=HalvingSettings)

    @property
    def generation_size(self) -> int:
        """Candidates asked for per generation: the given population, else the derived one."""
        if self.population_size is not None:
            return self.population_size
        return derived_population_size(self.strategy, self.max_trials, self.halving, self.training.epochs)


# A derived population never exceeds this: a search bounded by time (max_trials large)
# still gets several generations, and a fused chunk stays a size a CPU trains briskly.
MAX_DERIVED_POPULATION = 10
# Successive halving's first rung may be twice that: its candidates train only a few epochs.
MAX_DERIVED_FIRST_RUNG = 2 * MAX_DERIVED_POPULATION
MIN_GENERATIONS = 3  # what a derived evolution population leaves room for


def derived_population_size(strategy: str, max_trials: int, halving: HalvingSettings | None = None,
                            epochs: int = 10) -> int:
    """The population a request gets when it names none, so no default search degenerates.

    - evolution: max_trials // MIN_GENERATIONS (at least 2), so breeding happens at least
      twice after the random generation 0;
    - halving: the largest first rung whose whole bracket (every rung) fits max_trials;
    - random: as many as fit (generations mean nothing to it; bigger fused chunks train faster).
    """
    cap = max(1, min(max_trials, MAX_DERIVED_POPULATION))
    if strategy == "evolution":
        return max(2, min(cap, max_trials // MIN_GENERATIONS))
    if strategy == "halving":
        halving = halving or HalvingSettings()
        rungs = len(rung_epochs(epochs, halving))
        size = 1
        for candidate in range(1, MAX_DERIVED_FIRST_RUNG + 1):
            if bracket_trials(candidate, rungs, halving.reduction_factor) <= max_trials:
                size = candidate
        return size
    return cap


def rung_epochs(epochs: int, halving: HalvingSettings) -> list[int]:
    """Cumulative epoch budget of each rung, the last one ``epochs``: ``ceil(epochs / factor**k)``
    for k = s .. 0 (20 epochs, factor 3: [3, 7, 20]); s is 2 (three rungs), or the largest s
    whose first rung still has ``min_epochs``."""
    factor = max(2, int(halving.reduction_factor))
    epochs = max(1, int(epochs))
    if halving.min_epochs is None:
        depth = 2
    else:
        depth = 0
        while epochs / factor ** (depth + 1) >= halving.min_epochs:
            depth += 1
    rungs = sorted({max(1, math.ceil(epochs / factor**k)) for k in range(depth, -1, -1)})
    return rungs


def promoted_count(rung_size: int, reduction_factor: int) -> int:
    """How many of a rung go on to the next: the best 1 / reduction_factor, at least one."""
    return max(1, rung_size // max(2, int(reduction_factor)))


def bracket_trials(first_rung: int, rungs: int, reduction_factor: int) -> int:
    """Trials a successive-halving bracket spends: every rung's candidates count."""
    total, size = 0, first_rung
    for _ in range(rungs):
        total += size
        size = promoted_count(size, reduction_factor)
    return total
