"""The one check every dataset passes before it can be trained on.

``make_dataset`` (which every source uses: built-in, CSV, NPZ, inline, arrays and
the registry) calls these. What they refuse, each with a ``dataset_error`` naming
the column or row:

- features that are not real numbers (complex, text, objects, dates), no feature
  at all, NaN or infinity, and values float32 training cannot hold: a value beyond
  float32's range, or a column so spread out that its float32 variance overflows;
- targets that are NaN, infinite, complex, None or not a number or a string, and
  regression targets so spread out that squared errors overflow float32;
- a class with fewer than 2 rows (it could never be both trained on and
  validated), and more rows x features than the operator allows.

``check_split`` (the boundary, before the engine starts) and ``check_split_classes``
(the engine, after it splits) make sure both splits can hold every class.

Checks use per-column reductions, so the caller's arrays are never copied whole.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..boundary.safe_text import short_repr, type_name
from ..errors import DatasetError, ErrorDetail
from ..operator_config import current_limits, limit_env_name

FLOAT32_MAX = float(np.finfo(np.float32).max)
# A feature spanning more than this has a variance (at most (span / 2)^2) beyond float32.
MAX_FEATURE_SPAN = 2.0 * math.sqrt(FLOAT32_MAX)
# Squared errors of targets spanning 1e15, summed over up to 1e8 rows (a batch, or a
# metric over the validation split), stay below float32's 3.4e38.
MAX_TARGET_SPAN = 1e15
MIN_ROWS_PER_CLASS = 2
REAL_KINDS = "biuf"  # bool, signed and unsigned integers, floats


def check_features(x: np.ndarray, *, name: str, feature_names: tuple[str, ...] | None, loc: tuple,
                   quote_values: bool = True) -> np.ndarray:
    """``x`` itself (2-D), or a float64 copy of an object array of plain numbers.

    ``quote_values=False`` (data read from a file) keeps cell values out of messages.
    """
    if x.dtype.kind == "O":
        x = _numbers_from_objects(x, name=name, loc=loc + ("x",))
    if x.dtype.kind not in REAL_KINDS:
        what = "complex numbers" if x.dtype.kind == "c" else f"dtype {x.dtype}"
        raise _error(loc + ("x",), name, f"x must hold real numbers (integers, floats or "
                                   f"booleans), got {what}")
    if x.shape[1] < 1:
        raise _error(loc + ("x",), name, f"x has no feature column; give at least one")
    _check_cells(x, name, loc)
    if x.shape[0] == 0 or x.dtype.kind == "b":
        return x
    low, high = x.min(axis=0), x.max(axis=0)  # NaN propagates into both: one pass finds it
    for column in range(x.shape[1]):
        lo, hi = float(low[column]), float(high[column])
        if math.isfinite(lo) and math.isfinite(hi) and max(-lo, hi) <= FLOAT32_MAX:
            if hi - lo <= MAX_FEATURE_SPAN:
                continue
            label = _column_label(column, feature_names)
            raise _error(loc + ("x",), name, (
                f"x column {label} spans {_span_text(lo, hi, quote_values)}; float32 training needs each "
                f"feature to span at most {MAX_FEATURE_SPAN:.3g}: rescale it"
                + _rescale_hint(hi - lo, MAX_FEATURE_SPAN, quote_values)))
        _raise_bad_feature(x, column, name, feature_names, loc, quote_values)
    return x


def check_targets(y: np.ndarray, *, name: str, loc: tuple) -> np.ndarray:
    """``y`` itself, or an object array made into numbers or strings; NaN, inf, None refused."""
    if y.dtype.kind == "O":
        y = _labels_from_objects(y, name=name, loc=loc + ("y",))
    if y.dtype.kind == "c":
        raise _error(loc + ("y",), name, f"y must hold real numbers or string labels, "
                                   "got complex numbers")
    if y.dtype.kind not in REAL_KINDS + "US":
        raise _error(loc + ("y",), name, f"y must hold numbers or string labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and y.size:
        bad = ~np.isfinite(y)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            what = "NaN" if math.isnan(float(y[row])) else "infinite"
            raise _error(loc + ("y", row), name, (
                f"y row {row} is {what} ({int(bad.sum())} such row(s)): every row needs a "
                "finite target; drop those rows or fill them in"))
    return y


def check_regression_span(y: np.ndarray, *, name: str, loc: tuple, quote_values: bool = True) -> None:
    lo, hi = float(y.min()), float(y.max())
    if hi - lo > MAX_TARGET_SPAN:
        raise _error(loc + ("y",), name, (
            f"regression targets span {_span_text(lo, hi, quote_values)}; float32 training squares "
            f"errors, so they may span at most {MAX_TARGET_SPAN:.0e}: rescale y"
            + _rescale_hint(hi - lo, MAX_TARGET_SPAN, quote_values)))


def check_class_counts(labels: np.ndarray, counts: np.ndarray, *, name: str, loc: tuple,
                       quote_values: bool = True) -> None:
    small = [i for i, count in enumerate(counts) if count < MIN_ROWS_PER_CLASS]
    if small:
        first = small[0]
        more = f" (and {len(small) - 1} more such class(es))" if len(small) > 1 else ""
        label = _label_text(labels[first]) if quote_values else f"number {first + 1} of {len(labels)} (sorted)"
        raise _error(loc + ("y",), name, (
            f"class {label} has {int(counts[first])} row(s){more}; "
            f"each class needs at least {MIN_ROWS_PER_CLASS} (one to train on, one to validate on): "
            "add rows or drop the class"))


def check_split(n_samples: int, n_classes: int | None, validation_split: float) -> None:
    """Enough rows for both splits: one row of each class in each (what a stratified split needs).

    The sizes follow ``split_indices``: ``round(n * validation_split)`` rows, at least 1
    and at most ``n - 1``, go to validation.
    """
    n_val = min(max(1, int(round(n_samples * validation_split))), n_samples - 1)
    n_train = n_samples - n_val
    need = n_classes or 1
    need_train = max(need, 2)  # a regression's target statistics need two training rows
    if n_val >= need and n_train >= need_train:
        return
    kind = f"each of the {need} classes" if n_classes else "regression"
    raise DatasetError(
        f"validation_split {validation_split} of {n_samples} rows gives {n_train} training and {n_val} "
        f"validation rows; {kind} needs at least {need_train} and {need}: add rows or change validation_split",
        [ErrorDetail(("spec", "training", "validation_split"),
                     f"leaves {n_train} training and {n_val} validation rows for {n_samples} rows; "
                     f"need at least {need_train} and {need}")])


def check_split_classes(y_train: np.ndarray, y_val: np.ndarray, n_classes: int) -> None:
    """After the engine's split: every class (codes 0..n_classes-1) on both sides, else a dataset_error."""
    for part, codes in (("training", y_train), ("validation", y_val)):
        present = np.bincount(np.asarray(codes, dtype=np.int64), minlength=n_classes)
        missing = np.flatnonzero(present == 0)
        if missing.size:
            raise DatasetError(
                f"the {part} split holds no row of {missing.size} of the {n_classes} classes: "
                "add rows to the small classes or change validation_split",
                [ErrorDetail(("spec", "training", "validation_split"),
                             f"leaves {missing.size} class(es) out of the {part} split")])


# --------------------------------------------------------------------------- helpers


def _check_cells(x: np.ndarray, name: str, loc: tuple) -> None:
    limit = current_limits().max_cells
    cells = int(x.shape[0]) * int(x.shape[1])
    if cells > limit:
        raise _error(loc + ("x",), name, (
            f"{x.shape[0]} rows x {x.shape[1]} features = {cells:,} values, more than this "
            f"service's limit of {limit:,} ({limit_env_name('max_cells')})"))


def _raise_bad_feature(x: np.ndarray, column: int, name: str, feature_names, loc: tuple,
                       quote_values: bool) -> None:
    values = np.asarray(x[:, column], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
    row = int(np.flatnonzero(bad)[0])
    value = float(values[row])
    shown = f"{value:.3g}, " if quote_values else ""
    what = ("NaN" if math.isnan(value) else "infinite" if math.isinf(value)
            else f"{shown}beyond float32's range (±{FLOAT32_MAX:.3g})")
    label = _column_label(column, feature_names)
    raise _error(loc + ("x", row, column), name, (
        f"x row {row}, column {label} is {what} ({int(bad.sum())} such value(s) in the "
        "column): features must be finite numbers float32 can hold"))


def _numbers_from_objects(x: np.ndarray, *, name: str, loc: tuple) -> np.ndarray:
    """An object array (lists holding None, huge ints, …) as float64, or the first bad cell named."""
    for index, value in np.ndenumerate(x):
        problem = _not_a_real_number(value)
        if problem:
            raise _error(loc + tuple(int(i) for i in index), name, (
                f"x at {list(index)} is {problem}: features must be real numbers"))
    return x.astype(np.float64)


def _labels_from_objects(y: np.ndarray, *, name: str, loc: tuple) -> np.ndarray:
    values = y.tolist()
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    for row, value in enumerate(values):
        problem = None if isinstance(value, str) else _not_a_real_number(value)
        if problem:
            raise _error(loc + (row,), name, f"y row {row} is {problem}: a target must be a "
                                       "number or a string label")
    if any(isinstance(v, str) for v in values):
        raise _error(loc, name, f"y mixes numbers and strings; use one kind of label")
    return np.array(values, dtype=np.float64)


def _not_a_real_number(value: Any) -> str | None:
    """Why ``value`` cannot be a float64 feature (None when it can)."""
    if value is None:
        return "None (null)"
    if isinstance(value, bool) or isinstance(value, (np.bool_, np.integer, np.floating)):
        return None
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            return "an integer too large for a 64-bit float"
        return None
    if isinstance(value, float):
        return None
    return f"a {type_name(value)}, not a number"


def _column_label(column: int, feature_names: tuple[str, ...] | None) -> str:
    if feature_names is not None and column < len(feature_names):
        return f"{short_repr(feature_names[column])} (index {column})"
    return str(column)


def _label_text(label: Any) -> str:
    return short_repr(label.item() if hasattr(label, "item") else label)


def _span_text(lo: float, hi: float, quote_values: bool) -> str:
    if not quote_values:
        return "too wide a range"
    return f"{hi - lo:.3g} (from {lo:.3g} to {hi:.3g})"


def _rescale_hint(span: float, most: float, quote_values: bool) -> str:
    if not quote_values or not math.isfinite(span):
        return ""
    factor = 10.0 ** max(1, math.ceil(math.log10(max(span / most, 1.0))))
    return f" (for example divide it by {factor:.0e})"


def _error(loc: tuple, name: str, message: str) -> DatasetError:
    """A dataset_error: the message names the dataset, the detail says what is wrong at ``loc``."""
    return DatasetError(f"dataset {short_repr(name)}: {message}", [ErrorDetail(tuple(loc), message)])
