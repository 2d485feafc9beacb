"""Task → output head, loss and compiled metrics.

The metric objects are built inside ``compiled_metrics`` so that importing this
module never imports Keras.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Task


@dataclass(frozen=True)
class Head:
    units: int
    activation: str  # Keras activation of the output Dense layer
    loss: str


def head_for(task: Task, n_classes: int | None = None) -> Head:
    if task == "binary":
        return Head(1, "sigmoid", "binary_crossentropy")
    if task == "multiclass":
        if not n_classes or n_classes < 2:
            raise ValueError(f"multiclass needs n_classes >= 2, got {n_classes!r}")
        return Head(int(n_classes), "softmax", "sparse_categorical_crossentropy")
    if task == "regression":
        # Linear, then rescaled by the target's mean/std inside the model (see build.py).
        return Head(1, "linear", "mean_squared_error")
    raise ValueError(f"unknown task {task!r}; use binary, multiclass or regression")


def output_units(task: Task, n_classes: int | None = None) -> int:
    return head_for(task, n_classes).units


def compiled_metrics(task: Task) -> list:
    """Fresh Keras metric objects; "val_" + each name is a history key (settings.METRIC_DIRECTIONS)."""
    import keras

    if task == "binary":
        return [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    if task == "multiclass":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if task == "regression":
        return [keras.metrics.RootMeanSquaredError(name="rmse"),
                keras.metrics.MeanAbsoluteError(name="mae")]
    raise ValueError(f"unknown task {task!r}; use binary, multiclass or regression")
