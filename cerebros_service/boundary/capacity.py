"""Refuse a search space whose largest candidate would not fit the operator's parameter limit.

At validate time the data's width is known for built-in, registered, inline and
arrays sources; for files it is not (they are not read then), so the check
assumes one feature and tightens once the data is loaded, before anything is built.
"""

from __future__ import annotations

from ..data import registry
from ..data.builtin import BUILTIN_SHAPES
from ..data.dataset import Dataset
from ..errors import ErrorDetail, InputError
from ..operator_config import limit_env_name
from ..search.capacity import max_candidate_params, widest_neurons
from .errors_text import summary_sentence
from .schema import ArraysSource, BuiltinSource, InlineSource, Spec

LOC = ("spec", "search_space")


def space_too_large(spec: Spec, limit: int) -> ErrorDetail | None:
    """The problem with ``spec``'s space for the data width known before loading, if any."""
    input_dim, output_units = _known_shape(spec)
    return _problem(spec, input_dim, output_units, limit)


def check_space_fits(spec: Spec, dataset: Dataset, limit: int) -> None:
    """Raise InputError when the space's largest candidate on ``dataset`` exceeds ``limit``."""
    classes = dataset.n_classes
    output_units = classes if dataset.task == "multiclass" and classes else 1
    detail = _problem(spec, dataset.n_features, output_units, limit)
    if detail is not None:
        raise InputError(summary_sentence([detail]), [detail])


def _problem(spec: Spec, input_dim: int, output_units: int, limit: int) -> ErrorDetail | None:
    space = spec.search_space.to_settings()
    bound = max_candidate_params(space, input_dim, output_units)
    if bound <= limit:
        return None
    return ErrorDetail(LOC, (
        f"allows candidates of up to {bound:,} parameters (with {input_dim} input feature(s) and "
        f"{output_units} output(s)), more than this service's limit of {limit:,} "
        f"({limit_env_name('max_candidate_params')}): lower max_levels ({space.max_levels}), "
        f"max_units_per_level ({space.max_units_per_level}) or the neuron counts "
        f"(up to {widest_neurons(space)})"))


def _known_shape(spec: Spec) -> tuple[int, int]:
    """(input features, output units) as far as known without reading files; else (1, 1)."""
    name = spec.dataset_id
    source = spec.dataset
    if isinstance(source, BuiltinSource):
        name = source.name
    if name is not None:
        registered = registry.get_dataset(name)
        if registered is not None:
            classes = registered.n_classes
            return registered.n_features, classes if registered.task == "multiclass" and classes else 1
        features, classes = BUILTIN_SHAPES.get(name, (1, None))
        if spec.task in ("regression", "binary") or not classes or classes < 3:
            return features, 1
        return features, classes
    if isinstance(source, InlineSource):
        return max(len(source.x[0]), 1), 1
    if isinstance(source, ArraysSource):
        shape = source.x.shape
        return (int(shape[1]) if len(shape) == 2 else 1), 1
    return 1, 1
