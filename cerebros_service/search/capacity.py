"""The most parameters a candidate of a search space can have, counted without Keras.

``build.py`` makes every hidden unit ``Dense(neurons)`` over the concatenation of
its inputs, optionally followed by BatchNormalization; the output unit is the task
head's Dense. A unit reading ``w`` values with ``n`` neurons therefore holds
``w n + n`` weights, plus ``4 n`` when normalized (scale, offset, moving mean and
variance: all held in memory, so all counted); the input's Normalization holds
none (its statistics are constants).

The bound is reached by the fully connected architecture at the top of every
range: the sampler may draw every possible edge (its predecessor counts are
Poisson, so unbounded), and mutation and crossover stay inside the same ranges.
The boundary uses it to refuse, before anything is built, a space whose largest
candidate would not fit the operator's limit. Pure Python: no numpy, no Keras.
"""

from __future__ import annotations

from ..settings import SpaceSettings

BATCH_NORM_WEIGHTS_PER_NEURON = 4


def unit_params(input_width: int, neurons: int, batchnorm: bool = True) -> int:
    """Dense(neurons) over ``input_width`` inputs, and its BatchNormalization when ``batchnorm``."""
    normalization = BATCH_NORM_WEIGHTS_PER_NEURON * neurons if batchnorm else 0
    return input_width * neurons + neurons + normalization


def widest_neurons(space: SpaceSettings) -> int:
    """The most neurons a hidden unit of ``space`` can get."""
    if space.neuron_choices:
        return max(max(space.neuron_choices), 1)
    return max(space.max_neurons, space.min_neurons, 1)


def max_candidate_params(space: SpaceSettings, input_dim: int, output_units: int) -> int:
    """An upper bound, and a reachable one, of any candidate's parameters (all weights).

    Every hidden unit reads the input and every unit of every earlier level and is
    normalized; each level holds ``max_laterals_per_level`` laterals, each feeding
    one unit's output into another unit of the level; the head reads everything.
    """
    levels = max(space.max_levels, space.min_levels)
    units = max(space.max_units_per_level, space.min_units_per_level)
    neurons = widest_neurons(space)
    laterals = min(space.max_laterals_per_level, units * (units - 1) // 2)
    total = 0
    for level in range(levels):
        width = input_dim + level * units * neurons
        total += units * unit_params(width, neurons) + laterals * neurons * neurons
    total += unit_params(input_dim + levels * units * neurons, output_units, batchnorm=False)
    return total
