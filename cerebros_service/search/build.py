"""Architecture dict → compiled Keras 3 functional model, and its initial weights.

Only ``keras.layers`` / ``keras.optimizers`` are used (no ``tf.*``), so the JAX and
PyTorch backends work too, and only built-in layers, so a saved ``.keras`` file
loads with plain ``keras.saving.load_model`` and no custom objects.
Keras is imported inside the functions: importing this module stays cheap.

A hidden unit is ``Concatenate(predecessors)`` (or, with the architecture's
``"merging": "add"``, their sum, narrower ones zero-padded) → ``Dense(neurons, activation)`` →
``BatchNormalization`` (only when the unit asks for it) → ``Dropout`` (when its rate
is > 0). Normalizing a unit's *output* rather than each consumer's concatenated
input keeps one set of statistics per unit, which is also what the fused trainer
computes (search/fused.py), so both trainers build the same function.

Initial weights come from numpy (``initial_weights``), seeded per candidate, so a
candidate starts from the same point whichever trainer runs it.
"""

from __future__ import annotations

import numpy as np

from ..settings import Task, TrainSettings
from .metrics import compiled_metrics, head_for
from .optimizer import make_optimizer, trial_training
from .space import INPUT, Node, all_nodes, check_architecture, level_sizes, predecessors_of

Weights = dict[str, list[np.ndarray]]  # layer name -> that layer's weights, Keras order


def dense_name(node: Node, output_node: Node) -> str:
    return "head" if node == output_node else f"dense_{node[0]}_{node[1]}"


def batchnorm_name(node: Node) -> str:
    return f"bn_{node[0]}_{node[1]}"


def unit_spec(arch: dict, node: Node) -> dict:
    return arch["levels"][node[0]]["units"][node[1]]


def unit_dropout(arch: dict, node: Node) -> float:
    return float(unit_spec(arch, node).get("dropout", arch.get("dropout", 0.0)))


def unit_width(arch: dict, node: Node, input_dim: int | None = None) -> int:
    """Width of a node's output: the input's feature count for INPUT, else the unit's neurons."""
    if node == INPUT:
        return int(arch["input_dim"] if input_dim is None else input_dim)
    return int(unit_spec(arch, node)["neurons"])


def merges_by_adding(arch: dict) -> bool:
    return arch.get("merging", "concatenate") == "add"


def merged_width(arch: dict, sources: list[Node]) -> int:
    """Width of a unit's merged input: the sum of its predecessors' widths (concatenate), or
    the widest (add: narrower ones are zero-padded to it)."""
    widths = [unit_width(arch, src) for src in sources]
    return max(widths) if merges_by_adding(arch) else sum(widths)


def initial_weights(arch: dict, output_units: int, seed: int) -> Weights:
    """Glorot-uniform kernels and zero biases for every Dense, unit BatchNorms at identity.

    Drawn unit by unit in (level, unit) order from one numpy Generator, with each
    kernel's real fan-in (its predecessors' widths), as Keras' own default would.
    """
    rng = np.random.default_rng(seed)
    predecessors = predecessors_of(arch)
    nodes = all_nodes(level_sizes(arch))
    output_node = nodes[-1]
    weights: Weights = {}
    for node in nodes[1:]:
        fan_in = merged_width(arch, predecessors[node])
        fan_out = output_units if node == output_node else unit_width(arch, node)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        weights[dense_name(node, output_node)] = [kernel, np.zeros(fan_out, dtype=np.float32)]
        if node != output_node and unit_spec(arch, node).get("batchnorm"):
            ones, zeros = np.ones(fan_out, np.float32), np.zeros(fan_out, np.float32)
            weights[batchnorm_name(node)] = [ones, zeros.copy(), zeros.copy(), ones.copy()]
    return weights


def build_model(
    arch: dict,
    task: Task,
    n_classes: int | None,
    *,
    feature_mean: np.ndarray,
    feature_var: np.ndarray,
    target_mean: float = 0.0,
    target_std: float = 1.0,
    training: TrainSettings | None = None,
    weights: Weights | None = None,
    compile: bool = True,
    metrics: bool = True,
    optimizer=None,
):
    """The standalone model of ``arch``; ``weights`` (layer name -> arrays) are set when given.

    ``metrics``: compile the task's Keras metrics (a saved model's ``evaluate`` reports them);
    off for training, whose scores come from scoring.py. ``optimizer``: what it is compiled
    with; Keras' own AdamW (what a saved model carries) when None.
    """
    import keras

    check_architecture(arch)
    head = head_for(task, n_classes)
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
        x = _merge(arch, node, predecessors[node], tensors)
        if node == output_node:
            x = keras.layers.Dense(head.units, activation=head.activation, name="head")(x)
        else:
            spec = unit_spec(arch, node)
            x = keras.layers.Dense(spec["neurons"], activation=spec["activation"],
                                   name=dense_name(node, output_node))(x)
            if spec.get("batchnorm"):
                x = keras.layers.BatchNormalization(name=batchnorm_name(node))(x)
            rate = unit_dropout(arch, node)
            if rate > 0.0:
                x = keras.layers.Dropout(rate, name=f"dropout_{level}_{unit}")(x)
        tensors[node] = x

    outputs = tensors[output_node]
    if task == "regression":
        # The net learns a standardized target; rescaling here keeps the optimisation
        # well-conditioned while the model (and its metrics) speak original units.
        outputs = keras.layers.Rescaling(scale=float(target_std), offset=float(target_mean),
                                         name="to_target_units")(outputs)
    model = keras.Model(inputs, outputs, name="cerebros_candidate")
    if weights is not None:
        for name, values in weights.items():
            model.get_layer(name).set_weights(values)
    if compile:
        model.compile(
            optimizer=optimizer or make_optimizer(trial_training(training or TrainSettings(), arch)),
            loss=head.loss,
            metrics=compiled_metrics(task) if metrics else None,
        )
    return model


def _merge(arch: dict, node: Node, sources: list[Node], tensors: dict):
    """The unit's input: its predecessors concatenated, or added (zero-padded to the widest)."""
    import keras

    level, unit = node
    inputs = [tensors[src] for src in sources]
    if len(inputs) == 1:
        return inputs[0]
    if not merges_by_adding(arch):
        return keras.layers.Concatenate(name=f"concat_{level}_{unit}")(inputs)
    widest = merged_width(arch, sources)
    padded = []
    for position, (src, tensor) in enumerate(zip(sources, inputs)):
        width = unit_width(arch, src)
        if width < widest:  # built-in layers only, so the saved model needs no custom objects
            tag = f"{level}_{unit}_{position}"
            tensor = keras.layers.Reshape((width, 1), name=f"pad_in_{tag}")(tensor)
            tensor = keras.layers.ZeroPadding1D((0, widest - width), name=f"pad_{tag}")(tensor)
            tensor = keras.layers.Reshape((widest,), name=f"pad_out_{tag}")(tensor)
        padded.append(tensor)
    return keras.layers.Add(name=f"add_{level}_{unit}")(padded)


def count_params(arch: dict, output_units: int) -> int:
    """Trainable parameters of ``arch`` without building it (Dense kernels and biases, BN scales)."""
    predecessors = predecessors_of(arch)
    nodes = all_nodes(level_sizes(arch))
    total = 0
    for node in nodes[1:]:
        fan_in = merged_width(arch, predecessors[node])
        fan_out = output_units if node == nodes[-1] else unit_width(arch, node)
        total += fan_in * fan_out + fan_out
        if node != nodes[-1] and unit_spec(arch, node).get("batchnorm"):
            total += 2 * fan_out
    return total
