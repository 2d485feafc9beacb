"""Pydantic models of the request: ``spec`` (what to search) and ``opts`` (how).

Both take the output of ``normalize`` (plain str/list/dict; numpy arrays and
callables as objects). Validation is strict (no "5" → 5 coercion), rejects unknown
keys, and reports every problem at once, each with its path; ``check_request``
turns pydantic's errors into ``InputError`` details whose messages say what is
wrong and how to fix it. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import replace
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator,
    BeforeValidator,
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    SkipValidation,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..data.dataset import TaskRequest
from .. import operator_config
from ..errors import ErrorDetail, InputError
from ..settings import (KNOWN_ACTIVATIONS, EnsembleSettings, EvaluationSettings, ExecutionSettings, HalvingSettings, SearchSettings,
                        SpaceSettings, TrainSettings, bracket_trials, derived_population_size, resolve_metric,
                        rung_epochs)
from .errors_text import describe_errors, short_repr, summary_sentence

# Activation names the trainer accepts for hidden units, from the search space itself
# (plain names: the boundary needs no Keras to check them).
Activation = Literal[tuple(sorted(KNOWN_ACTIVATIONS))]  # type: ignore[valid-type]

MAX_LEVELS = 16
MAX_UNITS_PER_LEVEL = 32
MAX_NEURONS = 8192
MAX_SKIP_DEPTH = 16
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")


class _Strict(BaseModel):
    """Base of every request model: no unknown keys, no silent type coercion, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


def _problems(problems: list[tuple[tuple, str]]) -> None:
    """Raise one pydantic error carrying several located problems (expanded later)."""
    if problems:
        raise PydanticCustomError(
            "cross_field", "{summary}", {"summary": problems[0][1], "problems": problems}
        )


# --------------------------------------------------------------------------- data


class BuiltinSource(_Strict):
    source: Literal["builtin"]
    name: str = Field(min_length=1, max_length=128)


def _column(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(
            f"must be a column name (string) or a 0-based column index (integer), got {short_repr(value)}"
        )
    if isinstance(value, str) and not value:
        raise ValueError("must not be empty: give the target column's header name")
    return value


class CsvSource(_Strict):
    source: Literal["csv"]
    path: str = Field(min_length=1)
    # Header name, or 0-based index (negative counts from the end: -1 is the last column).
    target: Annotated[Any, AfterValidator(_column)]
    task: TaskRequest | None = None


class NpzSource(_Strict):
    source: Literal["npz"]
    path: str = Field(min_length=1)


def _usable_label(label: Any) -> bool:
    """A target numpy can hold as it is: a string, a finite float, an int of at most 64 bits."""
    if isinstance(label, str):
        return True
    if isinstance(label, float):
        return math.isfinite(label)
    if isinstance(label, int):
        return -(2**63) <= label < 2**64
    return False


class InlineSource(_Strict):
    source: Literal["inline"]
    x: list[list[float]] = Field(min_length=1)
    y: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _rectangular(self) -> InlineSource:
        problems = []
        width = len(self.x[0])
        if width == 0:
            problems.append((("x", 0), "must hold at least one feature value"))
        ragged = [i for i, row in enumerate(self.x) if len(row) != width]
        for index in ragged[:5]:  # a few are enough to see the pattern
            problems.append((("x", index), f"has {len(self.x[index])} values but row 0 has {width}: "
                                           "rows must all be the same length"))
        bad = [i for i, label in enumerate(self.y) if not _usable_label(label)]
        if bad:
            more = f" ({len(bad)} such values)" if len(bad) > 1 else ""
            problems.append((("y", bad[0]), f"must be a finite number (at most 64 bits) or a string label, "
                                            f"got {short_repr(self.y[bad[0]])}{more}"))
        if len(self.y) != len(self.x):
            problems.append((("y",), f"has {len(self.y)} values but x has {len(self.x)} rows: "
                                     "give one target per row"))
        _problems(problems)
        return self


class ArraysSource(_Strict):
    """numpy arrays passed as objects (Python or Pythonx callers): kept as is, never copied."""

    source: Literal["arrays"]
    x: InstanceOf[np.ndarray]
    y: InstanceOf[np.ndarray]

    @field_serializer("x", "y")
    def _summarize(self, array: np.ndarray) -> dict:
        # Echoing or recording a request must not copy the data it carries.
        return {"shape": list(array.shape), "dtype": str(array.dtype)}


DatasetSource = Annotated[
    Union[BuiltinSource, CsvSource, NpzSource, InlineSource, ArraysSource],
    Field(discriminator="source"),
]

# --------------------------------------------------------------------------- space


def _range(default: int, low: int, high: int):
    return Field(default, ge=low, le=high)


class SearchSpaceSpec(_Strict):
    """The native Cerebros ranges (SpaceSettings), plus the short form's ``layer_sizes``."""

    min_levels: int = _range(SpaceSettings.min_levels, 1, MAX_LEVELS)
    max_levels: int = _range(SpaceSettings.max_levels, 1, MAX_LEVELS)
    min_units_per_level: int = _range(SpaceSettings.min_units_per_level, 1, MAX_UNITS_PER_LEVEL)
    max_units_per_level: int = _range(SpaceSettings.max_units_per_level, 1, MAX_UNITS_PER_LEVEL)
    min_neurons: int | None = Field(None, ge=1, le=MAX_NEURONS)
    max_neurons: int | None = Field(None, ge=1, le=MAX_NEURONS)
    neuron_choices: list[Annotated[int, Field(ge=1, le=MAX_NEURONS)]] | None = Field(None, min_length=1)
    # The calling application's short form: neurons per unit drawn from these sizes.
    layer_sizes: list[Annotated[int, Field(ge=1, le=MAX_NEURONS)]] | None = Field(None, min_length=1)
    activations: list[Activation] = Field(list(SpaceSettings.activations), min_length=1)
    # Each architecture trains at one of these rates (a searched dimension); null: all
    # at training.learning_rate, which is also what a request that sets that rate gets.
    learning_rates: list[Annotated[float, Field(gt=0, le=10)]] | None = Field(
        list(SpaceSettings.learning_rates) if SpaceSettings.learning_rates else None, min_length=1)
    predecessor_affinity: float = Field(SpaceSettings.predecessor_affinity, gt=0, le=16)
    predecessor_decay: float = Field(SpaceSettings.predecessor_decay, gt=0, le=1)
    min_skip_depth: int = _range(SpaceSettings.min_skip_depth, 1, MAX_SKIP_DEPTH)
    max_skip_depth: int = _range(SpaceSettings.max_skip_depth, 1, MAX_SKIP_DEPTH)
    lateral_probability: float = Field(SpaceSettings.lateral_probability, ge=0, le=1)
    lateral_decay: float = Field(SpaceSettings.lateral_decay, ge=0, le=1)
    max_laterals_per_level: int = Field(SpaceSettings.max_laterals_per_level, ge=0, le=64)
    dropout: float = Field(SpaceSettings.dropout, ge=0, lt=1)
    # Cerebros' wiring rules (docs/search.md states each beside Cerebros' own).
    wiring: Literal["cerebros", "poisson"] = SpaceSettings.wiring
    predecessor_affinity_first: float = Field(SpaceSettings.predecessor_affinity_first, ge=0, le=64)
    predecessor_affinity_main: float = Field(SpaceSettings.predecessor_affinity_main, ge=0, le=64)
    predecessor_affinity_final_to_kminus1: float = Field(SpaceSettings.predecessor_affinity_final_to_kminus1,
                                                         ge=0, le=64)
    max_consecutive_laterals: int = Field(SpaceSettings.max_consecutive_laterals, ge=0, le=64)
    merging_strategy: Literal["concatenate", "add"] = SpaceSettings.merging_strategy
    bnorm_or_dropout: Literal["bnorm", "dropout", "none"] = SpaceSettings.bnorm_or_dropout
    dropout_rate: float = Field(SpaceSettings.dropout_rate, ge=0, lt=1)
    tries_per_moiety: int = Field(SpaceSettings.tries_per_moiety, ge=1, le=1000)

    # Field validators (not one model validator) so these are reported together with
    # any other mistake in the request; a bound that itself failed is skipped.
    @field_validator("max_levels", "max_units_per_level", "max_neurons", "max_skip_depth")
    @classmethod
    def _not_below_min(cls, high, info: ValidationInfo):
        low_name = "min_" + info.field_name.removeprefix("max_")
        low = info.data.get(low_name)
        if high is not None and low is not None and low > high:
            raise ValueError(f"must be at least {low_name} ({low}), got {high}")
        return high

    @field_validator("layer_sizes")
    @classmethod
    def _one_neuron_list(cls, sizes, info: ValidationInfo):
        if sizes is not None and info.data.get("neuron_choices") is not None:
            raise ValueError("and neuron_choices say the same thing: give only one of them")
        return sizes

    def to_settings(self) -> SpaceSettings:
        choices = self.neuron_choices if self.neuron_choices is not None else self.layer_sizes
        if choices is not None:
            # The range follows the choices unless given, so the settings stay consistent.
            min_neurons = self.min_neurons if self.min_neurons is not None else min(choices)
            max_neurons = self.max_neurons if self.max_neurons is not None else max(choices)
        else:
            min_neurons = self.min_neurons if self.min_neurons is not None else SpaceSettings.min_neurons
            max_neurons = self.max_neurons if self.max_neurons is not None else SpaceSettings.max_neurons
            if min_neurons > max_neurons:  # only one bound given, outside the other's default
                min_neurons, max_neurons = min(min_neurons, max_neurons), max(min_neurons, max_neurons)
        return SpaceSettings(
            min_levels=self.min_levels,
            max_levels=self.max_levels,
            min_units_per_level=self.min_units_per_level,
            max_units_per_level=self.max_units_per_level,
            min_neurons=min_neurons,
            max_neurons=max_neurons,
            neuron_choices=tuple(choices) if choices is not None else None,
            activations=tuple(dict.fromkeys(self.activations)),
            learning_rates=tuple(dict.fromkeys(self.learning_rates)) if self.learning_rates else None,
            predecessor_affinity=self.predecessor_affinity,
            predecessor_decay=self.predecessor_decay,
            min_skip_depth=self.min_skip_depth,
            max_skip_depth=self.max_skip_depth,
            lateral_probability=self.lateral_probability,
            lateral_decay=self.lateral_decay,
            max_laterals_per_level=self.max_laterals_per_level,
            dropout=self.dropout,
            wiring=self.wiring,
            predecessor_affinity_first=self.predecessor_affinity_first,
            predecessor_affinity_main=self.predecessor_affinity_main,
            predecessor_affinity_final_to_kminus1=self.predecessor_affinity_final_to_kminus1,
            max_consecutive_laterals=self.max_consecutive_laterals,
            merging_strategy=self.merging_strategy,
            bnorm_or_dropout=self.bnorm_or_dropout,
            dropout_rate=self.dropout_rate,
            tries_per_moiety=self.tries_per_moiety,
        )


class TrainingSpec(_Strict):
    epochs: int = Field(TrainSettings.epochs, ge=1, le=10_000)
    batch_size: int = Field(TrainSettings.batch_size, ge=1, le=65_536)
    learning_rate: float = Field(TrainSettings.learning_rate, gt=0, le=10)
    weight_decay: float = Field(TrainSettings.weight_decay, ge=0, le=1)
    # Epochs without improvement before a trial stops early.
    patience: int = Field(TrainSettings.patience, ge=1, le=10_000)
    validation_split: float = Field(TrainSettings.validation_split, gt=0, lt=1)
    # "cosine": the learning rate decays to 0 over the epochs.
    lr_schedule: Literal["constant", "cosine"] = TrainSettings.lr_schedule
    # float16 compute on a GPU (ignored on a CPU, where it gains nothing).
    mixed_precision: bool = TrainSettings.mixed_precision

    def to_settings(self) -> TrainSettings:
        return TrainSettings(**self.model_dump())


# --------------------------------------------------------------------------- spec


def objective_problem(objective: str | None, task: str) -> str | None:
    """Why ``objective`` cannot rank a search on ``task`` (None when it can).

    ``task`` may still be open ("auto", "classification"): then the objective only
    has to fit one of the tasks it could become.
    """
    candidates = {
        "auto": ("binary", "multiclass", "regression"),
        "classification": ("binary", "multiclass"),
    }.get(task, (task,))
    first_error = None
    for candidate in candidates:
        try:
            resolve_metric(objective, candidate)
            return None
        except ValueError as exc:
            first_error = first_error or str(exc)
    return first_error


def _test_split(value: Any) -> float | str:
    if value == "auto" and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"must be \"auto\" or a fraction in [0, 1) (0: no test split), got {short_repr(value)}")
    return float(value)


class EvaluationSpec(_Strict):
    """The held-out test (settings.EvaluationSettings)."""

    # Fraction of all rows held out (stratified for classification); "auto": 0.2 from 200
    # rows on, else none; 0: none.
    test_split: Annotated[Any, AfterValidator(_test_split)] = EvaluationSettings.test_split
    # A test set given apart from the data (any data source); replaces test_split.
    test_dataset: DatasetSource | None = None
    # Retrain the winner on train + validation for its best epoch count before the test.
    refit: bool = EvaluationSettings.refit

    @model_validator(mode="after")
    def _one_test(self) -> EvaluationSpec:
        if self.test_dataset is not None and "test_split" in self.model_fields_set and self.test_split != 0:
            _problems([(("test_split",), "and test_dataset were both given: a given test set replaces the "
                                         "split; keep only one of them")])
        return self

    def to_settings(self) -> EvaluationSettings:
        test_split = 0.0 if self.test_dataset is not None else self.test_split
        return EvaluationSettings(test_split=test_split, refit=self.refit)


class Spec(_Strict):
    # Order matters: a field validator sees the fields declared before it.
    dataset: DatasetSource | None = None
    dataset_id: str | None = Field(None, min_length=1, max_length=128, validate_default=True)
    task: TaskRequest = "auto"
    search_space: SearchSpaceSpec = SearchSpaceSpec()
    # None: accuracy for classification, rmse for regression (settled by the data).
    objective: str | None = Field(None, min_length=1, max_length=64)
    training: TrainingSpec = TrainingSpec()
    strategy: Literal["random", "evolution", "halving"] = SearchSettings.strategy
    # The held-out test (docs/search.md, "Evaluation"). Declared after dataset/dataset_id.
    evaluation: EvaluationSpec = Field(default_factory=lambda: EvaluationSpec())

    @property
    def effective_task(self) -> str:
        if self.task == "auto" and isinstance(self.dataset, CsvSource) and self.dataset.task:
            return self.dataset.task
        return self.task

    @field_validator("dataset_id")
    @classmethod
    def _one_data_source(cls, dataset_id, info: ValidationInfo):
        if "dataset" not in info.data:
            return dataset_id  # the dataset object itself is wrong: reported there
        given = info.data["dataset"] is not None
        if given and dataset_id is not None:
            raise ValueError("and dataset were both given: keep only one of them")
        if not given and dataset_id is None:
            raise ValueError(
                "is required (a built-in or registered dataset name), "
                "unless spec.dataset describes the data"
            )
        return dataset_id

    @field_validator("objective")
    @classmethod
    def _objective_fits(cls, objective, info: ValidationInfo):
        task = info.data.get("task", "auto")
        dataset = info.data.get("dataset")
        if task == "auto" and isinstance(dataset, CsvSource) and dataset.task:
            task = dataset.task
        problem = objective_problem(objective, task)
        if problem:
            raise ValueError(problem)
        return objective

    @model_validator(mode="after")
    def _one_task(self) -> Spec:
        if (
            isinstance(self.dataset, CsvSource)
            and self.dataset.task not in (None, "auto")
            and self.task != "auto"
            and self.dataset.task != self.task
        ):
            _problems([(("dataset", "task"), f"is {self.dataset.task!r} but spec.task is {self.task!r}; give the task once")])
        return self


# --------------------------------------------------------------------------- opts


def _check_run_id(value: str) -> str:
    if not RUN_ID_PATTERN.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            "names a directory, so it may only hold letters, digits, '.', '_' and '-' "
            f"(1 to 128 characters, not '.' or '..'), got {short_repr(value)}"
        )
    return value


def _is_artifacts_root(value: str) -> str:
    root = operator_config.artifacts_root()
    try:
        real = operator_config.inside_root(root, value)
    except ValueError:
        real = None
    if real != root:
        raise ValueError(
            "is the operator's to choose: run folders are always <artifacts root>/<run_id> "
            f"({operator_config.ARTIFACTS_ROOT_ENV} or the --artifacts-root flag); leave artifacts_dir out")
    return str(real)


def _inside_data_root(value: str | None) -> str | None:
    if value is None:
        return None
    root = operator_config.data_root()
    if root is None:
        raise ValueError(f"cannot be set: this service has no data root ({operator_config.DATA_ROOT_ENV} "
                         "or the --data-root flag), so no file can be read")
    try:
        return str(operator_config.inside_root(root, value))
    except ValueError as exc:
        raise ValueError(f"{exc}: data_root may only name a folder inside the operator's data root "
                         f"({operator_config.DATA_ROOT_ENV}); leave it out to use the root itself") from None


def _text_or_none(path) -> str | None:
    return None if path is None else str(path)


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{stamp}-{secrets.token_hex(3)}"


class Budget(_Strict):
    max_trials: int = Field(10, ge=1, le=100_000)
    # None: derived from max_trials and the strategy (settings.derived_population_size).
    population_size: int | None = Field(None, ge=1, le=10_000)
    max_time_seconds: float | None = Field(None, gt=0)


class GaParameters(_Strict):
    mutation_rate: float = Field(0.1, ge=0, le=1)
    crossover_rate: float = Field(0.7, ge=0, le=1)
    elite_size: int = Field(2, ge=0, le=10_000)
    # Successive halving (strategy "halving"): keep the best 1/reduction_factor of each rung;
    # min_epochs: the least epochs of a first rung (None: three rungs).
    reduction_factor: int = Field(HalvingSettings.reduction_factor, ge=2, le=100)
    min_epochs: int | None = Field(HalvingSettings.min_epochs, ge=1, le=10_000)


class LocalExecutor(_Strict):
    """Run the search in the calling process and thread (plain ``run_nas``'s default)."""

    kind: Literal["local"]


class ProcessExecutor(_Strict):
    """Run the search in a child Python process (spawned; ``jobs.submit``'s default).

    A child is reused for up to ``max_jobs_per_worker`` jobs, then replaced, which
    gives back the memory Keras keeps per trained model.
    """

    kind: Literal["process"]
    max_jobs_per_worker: int = Field(10, ge=1, le=100_000)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
                 "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20,
                 "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}
MIN_WORKER_MEMORY = 10**6


def _memory_bytes(value: Any) -> int | None:
    """A memory size as Dask writes it ("4GB", "512MiB") or a number of bytes, as bytes."""
    if value is None:
        return None
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match is not None:
        size = int(float(match.group(1)) * _SIZE_FACTORS[(match.group(2) or "").lower()])
    else:
        raise ValueError(f"must be a memory size such as \"4GB\" or \"512MiB\", or a number of bytes, "
                         f"got {short_repr(value)}")
    if size < MIN_WORKER_MEMORY:
        raise ValueError(f"must be at least 1MB (a worker holds TensorFlow: about 1GB), got {short_repr(value)}")
    return size


def _dask_cluster(name: str) -> str:
    clusters = operator_config.dask_clusters()
    if name not in clusters:
        raise ValueError(f"names no Dask cluster of this service, got {short_repr(name)}; "
                         + operator_config.configured_names(operator_config.DASK_CLUSTERS_ENV, list(clusters)))
    return name


def _refuse_address(data: Any) -> Any:
    if isinstance(data, dict) and "address" in data:
        names = list(operator_config.dask_clusters())
        _problems([(("address",), (
            "is not accepted: the service connects only to the Dask clusters its operator names; "
            "ask the operator to configure this scheduler by name (name=URL in "
            f"{operator_config.DASK_CLUSTERS_ENV}, or serve's --dask-clusters) and pick it with "
            "opts.executor.cluster; " + operator_config.configured_names(operator_config.DASK_CLUSTERS_ENV, names)))])
    return data


class ProcessesExecutor(_Strict):
    """Trials on worker processes of this machine: a Dask ``LocalCluster`` started for the
    run (one thread per worker) and closed after it; the search loop stays in the caller.

    ``workers`` None: one per visible GPU, else one per CPU core. A worker is restarted
    after ``trials_per_worker`` trials, or when its memory after a task passes
    ``memory_limit``; a trial whose worker died is tried again ``retries`` times.
    ``timeout``: seconds allowed for the cluster to start (docs/scaling.md).
    """

    kind: Literal["processes"]
    workers: int | None = Field(None, ge=1, le=256)
    trials_per_worker: int | None = Field(20, ge=1, le=100_000)
    memory_limit: Annotated[Any, AfterValidator(_memory_bytes)] = None  # bytes once checked
    retries: int = Field(1, ge=0, le=10)
    timeout: float = Field(60.0, gt=0, le=3600)


class DaskExecutor(_Strict):
    """Trials on the workers of a running Dask scheduler, the one the operator named
    ``cluster`` (operator_config.dask_clusters(); a request never gives an address):
    nothing is started or stopped, and the search loop stays in the caller. ``workers``: how many workers must
    have joined before the search starts, waiting up to ``timeout`` seconds (which also
    bounds reaching the scheduler). Workers are restarted (``trials_per_worker``,
    ``memory_limit``) only when asked: they may be shared.
    """

    kind: Literal["dask"]
    cluster: Annotated[str, AfterValidator(_dask_cluster)] = Field(min_length=1, max_length=64)
    workers: int = Field(1, ge=1, le=100_000)
    trials_per_worker: int | None = Field(None, ge=1, le=100_000)
    memory_limit: Annotated[Any, AfterValidator(_memory_bytes)] = None  # bytes once checked
    retries: int = Field(1, ge=0, le=10)
    timeout: float = Field(30.0, gt=0, le=3600)

    _no_address = model_validator(mode="before")(_refuse_address)

    def scheduler_address(self) -> str:
        """The address the operator gave ``cluster``; InputError when it is no longer configured."""
        clusters = operator_config.dask_clusters()
        if self.cluster not in clusters:
            message = (f"names no Dask cluster of this service, got {short_repr(self.cluster)}; "
                       + operator_config.configured_names(operator_config.DASK_CLUSTERS_ENV, list(clusters)))
            raise InputError(f"Invalid request: opts.executor.cluster: {message}.",
                             [ErrorDetail(("opts", "executor", "cluster"), message)])
        return clusters[self.cluster]


# Where a search runs. One model per kind; a new kind is a new model here and a new
# file in cerebros_service/jobs/executors/. "local" and "process" place the whole
# search (job-level); "processes" and "dask" keep the loop in the caller and spread
# its trials over Dask workers (SCALE_OUT_KINDS; jobs/executors/dask_trials.py).
ExecutorOpts = Annotated[Union[LocalExecutor, ProcessExecutor, ProcessesExecutor, DaskExecutor],
                         Field(discriminator="kind")]
SCALE_OUT_KINDS = ("processes", "dask")


def _within_fused_limit(value: int) -> int:
    limit = operator_config.current_limits().max_fused_params
    if value > limit:
        raise ValueError(f"must be at most {limit:,}, this service's limit "
                         f"({operator_config.limit_env_name('max_fused_params')}), got {value:,}")
    return value


class ExecutionOpts(_Strict):
    """How candidates are trained (settings.ExecutionSettings; docs/search.md, "Execution")."""

    mode: Literal["fused", "sequential"] = ExecutionSettings.mode
    max_fused_candidates: int = Field(ExecutionSettings.max_fused_candidates, ge=1, le=4096)
    # Never above the operator's CEREBROS_MAX_FUSED_PARAMS (the default follows it down).
    max_fused_params: Annotated[int, AfterValidator(_within_fused_limit)] = Field(
        default_factory=lambda: min(ExecutionSettings.max_fused_params,
                                    operator_config.current_limits().max_fused_params), ge=1)
    jit_compile: bool | Literal["auto"] = ExecutionSettings.jit_compile
    steps_per_execution: int = Field(ExecutionSettings.steps_per_execution, ge=1, le=10_000)
    compact: bool = ExecutionSettings.compact

    def to_settings(self) -> ExecutionSettings:
        return ExecutionSettings(**self.model_dump())


def _execution(value: Any) -> Any:
    # The short form: "fused" or "sequential" alone.
    return {"mode": value} if isinstance(value, str) else value


def _tracking_store_inside_root(uri: str | None) -> str | None:
    """A local MLflow store (a folder, a file: or sqlite: URI) must lie under the artifacts
    root, like every path a request names; it comes back absolute. A server's URL is refused:
    servers are the operator's, picked by name (``server``)."""
    if uri is None:
        return None
    from urllib.parse import unquote, urlparse

    from ..operator_config import artifacts_root, inside_root

    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file", "sqlite"):
        names = list(operator_config.mlflow_servers())
        raise ValueError(
            f"names a tracking server ({short_repr(parsed.scheme + ':…')}), which a request may not: the service "
            "sends data only to the MLflow servers its operator names; ask the operator to configure it by "
            f"name (name=URL in {operator_config.MLFLOW_SERVERS_ENV}, or serve's --mlflow-servers) and pick it "
            "with opts.tracking.mlflow.server; "
            + operator_config.configured_names(operator_config.MLFLOW_SERVERS_ENV, names))
    if parsed.scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise ValueError("must be sqlite:///<path> for an SQLite store")
    path = uri[len("sqlite:///"):] if parsed.scheme == "sqlite" else (
        unquote(parsed.path) if parsed.scheme == "file" else uri)
    root = artifacts_root()
    try:
        real = inside_root(root, path)
    except ValueError as exc:
        raise ValueError(f"names a local MLflow store, which must lie under the artifacts root ({exc}); "
                         "name it relative to the root, e.g. \"mlruns\"") from None
    return f"sqlite:///{real}" if parsed.scheme == "sqlite" else real.as_uri()


def _mlflow_server(name: str | None) -> str | None:
    servers = operator_config.mlflow_servers()
    if name is not None and name not in servers:
        raise ValueError(f"names no MLflow server of this service, got {short_repr(name)}; "
                         + operator_config.configured_names(operator_config.MLFLOW_SERVERS_ENV, list(servers)))
    return name


class MlflowTracking(_Strict):
    """Log the search to MLflow (the ``mlflow`` extra): params, per-trial metrics, model, run folder."""

    # A tracking server the operator named (operator_config.mlflow_servers()), by its name.
    server: Annotated[str | None, AfterValidator(_mlflow_server)] = Field(None, min_length=1, max_length=64)
    # Or a local store, confined to the artifacts root (a relative path is relative to it).
    # Neither: MLflow's own default ($MLFLOW_TRACKING_URI, the operator's environment).
    tracking_uri: Annotated[str | None, AfterValidator(_tracking_store_inside_root)] = Field(
        None, min_length=1, max_length=2048)
    experiment: str = Field("cerebros", min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_store(self) -> "MlflowTracking":
        if self.server is not None and self.tracking_uri is not None:
            _problems([(("tracking_uri",), "must be left out when server is given: the run is logged "
                                           "to one place, the named server or a local store")])
        return self

    def store_uri(self) -> str | None:
        """Where MLflow writes: the named server's URI, the local store, or None (MLflow's default).
        InputError when the server is no longer configured."""
        if self.server is None:
            return self.tracking_uri
        servers = operator_config.mlflow_servers()
        if self.server not in servers:
            message = (f"names no MLflow server of this service, got {short_repr(self.server)}; "
                       + operator_config.configured_names(operator_config.MLFLOW_SERVERS_ENV, list(servers)))
            raise InputError(f"Invalid request: opts.tracking.mlflow.server: {message}.",
                             [ErrorDetail(("opts", "tracking", "mlflow", "server"), message)])
        return servers[self.server]


class TrackingOpts(_Strict):
    mlflow: MlflowTracking | None = None
    # TensorBoard logs per trial under <run folder>/tensorboard/, written after the search.
    tensorboard: bool = False


class AfterRunOpts(_Strict):
    """The steps after a successful search (docs/using-the-result.md), each bounded in time."""

    onnx: bool = True  # best_model.onnx, verified against Keras (the ``onnx`` extra)
    report: bool = True  # report.html and plots/*.png (the pictures need the ``plots`` extra)
    timeout_s: float = Field(300.0, gt=0, le=3600)  # per step


class EnsembleOpts(_Strict):
    """The delivered model (settings.EnsembleSettings; docs/search.md, "The delivered model")."""

    enabled: bool = EnsembleSettings.enabled
    size: int = Field(EnsembleSettings.size, ge=1, le=100)
    method: Literal["average", "greedy"] = EnsembleSettings.method

    def to_settings(self) -> EnsembleSettings:
        return EnsembleSettings(**self.model_dump())


def _ensemble(value: Any) -> Any:
    # The short forms: false (deliver the single best) or true (the defaults).
    return {"enabled": value} if isinstance(value, bool) else value


class Opts(_Strict):
    run_id: Annotated[str, AfterValidator(_check_run_id)] = Field(default_factory=new_run_id)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    # Continue the run folder of run_id when it exists (a run that ended early), else start it.
    resume: bool = False
    budget: Budget = Budget()
    parameters: GaParameters = GaParameters()
    # The roots are the operator's (operator_config.py). A request may leave these out
    # (the usual case) or name the same artifacts root and a folder inside the data root;
    # anything else is refused.
    artifacts_dir: Annotated[str, AfterValidator(_is_artifacts_root)] = Field(
        default_factory=lambda: str(operator_config.artifacts_root()), min_length=1)
    data_root: Annotated[str | None, AfterValidator(_inside_data_root)] = Field(
        default_factory=lambda: _text_or_none(operator_config.data_root()))
    device: Literal["auto", "cpu", "gpu"] = "auto"
    # After a successful search: tracking (MLflow, TensorBoard) and the other steps.
    tracking: TrackingOpts = TrackingOpts()
    after_run: AfterRunOpts = AfterRunOpts()
    execution: Annotated[ExecutionOpts, BeforeValidator(_execution)] = Field(default_factory=ExecutionOpts)
    # The delivered model: an ensemble of the best trials, or false for the single best.
    ensemble: Annotated[EnsembleOpts, BeforeValidator(_ensemble)] = Field(default_factory=EnsembleOpts)
    # None: the entry point decides (run_nas: local; jobs.submit: process).
    executor: ExecutorOpts | None = None
    # A Pythonx PID to send progress events to, and/or a Python callable; neither is data
    # to echo or record, so both are left out of dumps.
    notify: SkipValidation[Any] = Field(None, exclude=True)
    on_event: Callable[..., Any] | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _cross_fields(self) -> Opts:
        # The default elite (2) shrinks to fit a tiny population; only an elite the
        # caller asked for is an error.
        asked = "elite_size" in self.parameters.model_fields_set
        population = self.budget.population_size
        if asked and population is not None and self.parameters.elite_size > population:
            _problems([(
                ("parameters", "elite_size"),
                f"must not exceed budget.population_size ({self.budget.population_size}), "
                f"got {self.parameters.elite_size}",
            )])
        return self


# --------------------------------------------------------------------------- entry


def check_part(root: Literal["spec", "opts"], value: Any, limit: int | None = None) -> Spec | Opts:
    """Validate one normalized side of a request; InputError lists every problem
    (the first ``limit`` of them, with ``total_details`` counting all)."""
    model = Spec if root == "spec" else Opts
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        details = describe_errors(exc, model, root, limit)
        total = max(exc.error_count(), len(details))
        raise InputError(summary_sentence(details, total), details, total_details=total) from None


def check_request(spec: Any, opts: Any) -> tuple[Spec, Opts]:
    """Validate normalized spec and opts together; one InputError with the problems of both."""
    details: list[ErrorDetail] = []
    total = 0
    checked: dict[str, Any] = {}
    for root, value in (("spec", spec), ("opts", {} if opts is None else opts)):
        try:
            checked[root] = check_part(root, value)
        except InputError as exc:
            details.extend(exc.details)
            total += exc.total_details
    if details:
        raise InputError(summary_sentence(details, total), details, total_details=total)
    return checked["spec"], checked["opts"]


def build_settings(spec: Spec, opts: Opts, objective_key: str) -> SearchSettings:
    halving = HalvingSettings(reduction_factor=opts.parameters.reduction_factor,
                              min_epochs=opts.parameters.min_epochs)
    population = opts.budget.population_size
    if population is None:
        population = derived_population_size(spec.strategy, opts.budget.max_trials, halving, spec.training.epochs)
    return SearchSettings(
        strategy=spec.strategy,
        seed=opts.seed,
        max_trials=opts.budget.max_trials,
        population_size=population,
        max_time_seconds=opts.budget.max_time_seconds,
        mutation_rate=opts.parameters.mutation_rate,
        crossover_rate=opts.parameters.crossover_rate,
        elite_size=min(opts.parameters.elite_size, population),
        objective=objective_key,
        device=opts.device,
        space=space_settings(spec),
        training=spec.training.to_settings(),
        execution=opts.execution.to_settings(),
        evaluation=spec.evaluation.to_settings(),
        ensemble=opts.ensemble.to_settings(),
        halving=halving,
    )


def space_settings(spec: Spec) -> SpaceSettings:
    """The search space; a request that sets training.learning_rate, and not
    search_space.learning_rates, trains every trial at that rate (what it asked for)."""
    space = spec.search_space.to_settings()
    if "learning_rate" in spec.training.model_fields_set and "learning_rates" not in spec.search_space.model_fields_set:
        space = replace(space, learning_rates=None)
    return space


# What only a genetic algorithm reads; sent with another strategy they are a misunderstanding.
GA_ONLY_PARAMETERS = frozenset({"mutation_rate", "crossover_rate", "elite_size"})


def budget_warnings(spec: Spec, opts: Opts) -> list[ErrorDetail]:
    """Requests that are valid but would not search as their strategy means to (validate and
    run_nas report them in ``warnings``; nothing is refused)."""
    warnings = []
    population, trials = opts.budget.population_size, opts.budget.max_trials
    if spec.strategy == "evolution" and population is not None and population >= trials:
        warnings.append(ErrorDetail(("opts", "budget", "population_size"), (
            f"is {population} with max_trials {trials}: every trial is in generation 0, so evolution "
            f"is a random search; leave population_size out (it is then max_trials // 3) or raise max_trials")))
    ga_given = sorted(opts.parameters.model_fields_set & GA_ONLY_PARAMETERS)
    if spec.strategy != "evolution" and ga_given:
        warnings.append(ErrorDetail(("opts", "parameters"), (
            f"{', '.join(ga_given)} {'is' if len(ga_given) == 1 else 'are'} read only by strategy "
            f"\"evolution\"; this request's strategy is \"{spec.strategy}\", so "
            f"{'it is' if len(ga_given) == 1 else 'they are'} ignored; set \"strategy\": \"evolution\" to breed")))
    if spec.strategy == "halving" and population is not None:
        halving = HalvingSettings(reduction_factor=opts.parameters.reduction_factor,
                                  min_epochs=opts.parameters.min_epochs)
        rungs = len(rung_epochs(spec.training.epochs, halving))
        needed = bracket_trials(population, rungs, halving.reduction_factor)
        if rungs > 1 and needed > trials:
            warnings.append(ErrorDetail(("opts", "budget", "population_size"), (
                f"is {population}: its bracket of {rungs} rungs needs {needed} trials but max_trials is "
                f"{trials}, so no candidate reaches the full {spec.training.epochs} epochs; leave "
                f"population_size out (it is then derived to fit) or raise max_trials")))
    return warnings
