"""Architecture dict → compiled Keras 3 functional model.

Only ``keras.layers`` / ``keras.optimizers`` are used (no ``tf.*``), so the JAX and
PyTorch backends work too, and only built-in layers, so a saved ``.keras`` file
loads with plain ``keras.saving.load_model`` and no custom objects.
Keras is imported inside the function: importing this module stays cheap.
"""

from __future__ import annotations

import numpy as np

from .metrics import compiled_metrics, head_for
from ..settings import Task
from .space import INPUT, all_nodes, check_architecture, level_sizes, predecessors_of


def build_model(
    arch: dict,
    task: Task,
    n_classes: int | None,
    *,
    feature_mean: np.ndarray,
    feature_var: np.ndarray,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    learning_rate: float = 0.005,
    weight_decay: float = 0.004,
):
    import keras

    check_architecture(arch)
    head = head_for(task, n_classes)
    dropout = float(arch.get("dropout", 0.0))
    inputs = keras.Input(shape=(arch["input_dim"],), name="features")
    # Normalization inside the model: the saved model takes raw features.
    normalized = keras.layers.Normalization(
        mean=np.asarray(feature_mean, dtype="float32"),
        variance=np.asarray(feature_var, dtype="float32"),
        name="normalize",
    )(inputs)

    tensors = {INPUT: normalized}
    predecessors = predecessors_of(arch)
    nodes = all_nodes(level_sizes(arch))
    output_node = nodes[-1]
    for node in nodes[1:]:  # (level, unit) order is a topological order
        level, unit = node
        spec = arch["levels"][level]["units"][unit]
        sources = [tensors[src] for src in predecessors[node]]
        x = sources[0] if len(sources) == 1 else keras.layers.Concatenate(
            name=f"concat_{level}_{unit}")(sources)
        x = keras.layers.BatchNormalization(name=f"bn_{level}_{unit}")(x)
        if node == output_node:
            x = keras.layers.Dense(head.units, activation=head.activation, name="head")(x)
        else:
            x = keras.layers.Dense(spec["neurons"], activation=spec["activation"],
                                   name=f"dense_{level}_{unit}")(x)
            if dropout > 0.0:
                x = keras.layers.Dropout(dropout, name=f"dropout_{level}_{unit}")(x)
        tensors[node] = x

    outputs = tensors[output_node]
    if task == "regression":
        # The net learns a standardized target; rescaling here keeps the optimisation
        # well-conditioned while the model (and its metrics) speak original units.
        outputs = keras.layers.Rescaling(scale=float(target_std), offset=float(target_mean),
                                         name="to_target_units")(outputs)
    model = keras.Model(inputs, outputs, name="cerebros_candidate")
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay),
        loss=head.loss,
        metrics=compiled_metrics(task),
    )
    return model
