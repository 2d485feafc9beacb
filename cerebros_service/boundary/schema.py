"""Pydantic models of the request: ``spec`` (what to search) and ``opts`` (how).

Both take the output of ``normalize`` (plain str/list/dict; numpy arrays and
callables as objects). Validation is strict (no "5" → 5 coercion), rejects unknown
keys, and reports every problem at once, each with its path; ``check_request``
turns pydantic's errors into ``InputError`` details whose messages say what is
wrong and how to fix it. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator,
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
from ..errors import ErrorDetail, InputError
from ..settings import KNOWN_ACTIVATIONS, SearchSettings, SpaceSettings, TrainSettings, resolve_metric
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
        bad = [i for i, label in enumerate(self.y) if label is None or not isinstance(label, (str, int, float))]
        if bad:
            more = f" ({len(bad)} such values)" if len(bad) > 1 else ""
            problems.append((("y", bad[0]), f"must be a number or a string label, "
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
    predecessor_affinity: float = Field(SpaceSettings.predecessor_affinity, gt=0, le=16)
    predecessor_decay: float = Field(SpaceSettings.predecessor_decay, gt=0, le=1)
    min_skip_depth: int = _range(SpaceSettings.min_skip_depth, 1, MAX_SKIP_DEPTH)
    max_skip_depth: int = _range(SpaceSettings.max_skip_depth, 1, MAX_SKIP_DEPTH)
    lateral_probability: float = Field(SpaceSettings.lateral_probability, ge=0, le=1)
    lateral_decay: float = Field(SpaceSettings.lateral_decay, ge=0, le=1)
    max_laterals_per_level: int = Field(SpaceSettings.max_laterals_per_level, ge=0, le=64)
    dropout: float = Field(SpaceSettings.dropout, ge=0, lt=1)

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
            predecessor_affinity=self.predecessor_affinity,
            predecessor_decay=self.predecessor_decay,
            min_skip_depth=self.min_skip_depth,
            max_skip_depth=self.max_skip_depth,
            lateral_probability=self.lateral_probability,
            lateral_decay=self.lateral_decay,
            max_laterals_per_level=self.max_laterals_per_level,
            dropout=self.dropout,
        )


class TrainingSpec(_Strict):
    epochs: int = Field(TrainSettings.epochs, ge=1, le=10_000)
    batch_size: int = Field(TrainSettings.batch_size, ge=1, le=65_536)
    learning_rate: float = Field(TrainSettings.learning_rate, gt=0, le=10)
    weight_decay: float = Field(TrainSettings.weight_decay, ge=0, le=1)
    # Epochs without improvement before a trial stops early.
    patience: int = Field(TrainSettings.patience, ge=1, le=10_000)
    validation_split: float = Field(TrainSettings.validation_split, gt=0, lt=1)

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


class Spec(_Strict):
    # Order matters: a field validator sees the fields declared before it.
    dataset: DatasetSource | None = None
    dataset_id: str | None = Field(None, min_length=1, max_length=128, validate_default=True)
    task: TaskRequest = "auto"
    search_space: SearchSpaceSpec = SearchSpaceSpec()
    # None: accuracy for classification, rmse for regression (settled by the data).
    objective: str | None = Field(None, min_length=1, max_length=64)
    training: TrainingSpec = TrainingSpec()
    strategy: Literal["random", "evolution"] = "evolution"

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


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"run-{stamp}-{secrets.token_hex(3)}"


class Budget(_Strict):
    max_trials: int = Field(10, ge=1, le=100_000)
    population_size: int = Field(20, ge=1, le=10_000)
    max_time_seconds: float | None = Field(None, gt=0)


class GaParameters(_Strict):
    mutation_rate: float = Field(0.1, ge=0, le=1)
    crossover_rate: float = Field(0.7, ge=0, le=1)
    elite_size: int = Field(2, ge=0, le=10_000)


class Opts(_Strict):
    run_id: Annotated[str, AfterValidator(_check_run_id)] = Field(default_factory=new_run_id)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    budget: Budget = Budget()
    parameters: GaParameters = GaParameters()
    artifacts_dir: str = Field(
        default_factory=lambda: os.environ.get("CEREBROS_ARTIFACTS_DIR") or "./cerebros_runs",
        min_length=1,
    )
    data_root: str = Field(
        default_factory=lambda: os.environ.get("CEREBROS_DATA_ROOT") or os.getcwd(), min_length=1
    )
    device: Literal["auto", "cpu", "gpu"] = "auto"
    # A Pythonx PID to send progress events to, and/or a Python callable; neither is data
    # to echo or record, so both are left out of dumps.
    notify: SkipValidation[Any] = Field(None, exclude=True)
    on_event: Callable[..., Any] | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _cross_fields(self) -> Opts:
        # The default elite (2) shrinks to fit a tiny population; only an elite the
        # caller asked for is an error.
        asked = "elite_size" in self.parameters.model_fields_set
        if asked and self.parameters.elite_size > self.budget.population_size:
            _problems([(
                ("parameters", "elite_size"),
                f"must not exceed budget.population_size ({self.budget.population_size}), "
                f"got {self.parameters.elite_size}",
            )])
        return self


# --------------------------------------------------------------------------- entry


def check_part(root: Literal["spec", "opts"], value: Any) -> Spec | Opts:
    """Validate one normalized side of a request; InputError lists every problem."""
    model = Spec if root == "spec" else Opts
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        details = describe_errors(exc, model, root)
        raise InputError(summary_sentence(details), details) from None


def check_request(spec: Any, opts: Any) -> tuple[Spec, Opts]:
    """Validate normalized spec and opts together; one InputError with the problems of both."""
    details: list[ErrorDetail] = []
    checked: dict[str, Any] = {}
    for root, value in (("spec", spec), ("opts", {} if opts is None else opts)):
        try:
            checked[root] = check_part(root, value)
        except InputError as exc:
            details.extend(exc.details)
    if details:
        raise InputError(summary_sentence(details), details)
    return checked["spec"], checked["opts"]


def build_settings(spec: Spec, opts: Opts, objective_key: str) -> SearchSettings:
    return SearchSettings(
        strategy=spec.strategy,
        seed=opts.seed,
        max_trials=opts.budget.max_trials,
        population_size=opts.budget.population_size,
        max_time_seconds=opts.budget.max_time_seconds,
        mutation_rate=opts.parameters.mutation_rate,
        crossover_rate=opts.parameters.crossover_rate,
        elite_size=min(opts.parameters.elite_size, opts.budget.population_size),
        objective=objective_key,
        device=opts.device,
        space=spec.search_space.to_settings(),
        training=spec.training.to_settings(),
    )
