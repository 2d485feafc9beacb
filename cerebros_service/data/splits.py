"""Seeded splits of a dataset's rows: stratified by class for classification.

A stratified split gives every class its share of the part, as close as whole rows
allow (largest remainders, ties broken by a seeded draw), so a validation or test
part holds each class in the proportion the data does. Which rows of a class go
where is a seeded permutation. Nothing here copies the data: only row indices.

``search_splits`` makes the three parts of a search: a test part held out first
(when asked for), then train and validation from the rest. ``align_test_set``
takes a test set given apart from the data instead, in the data's class codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError, ErrorDetail

TEST_SPLIT_LOC = ("spec", "evaluation", "test_split")


def part_size(n_rows: int, fraction: float) -> int:
    """Rows a part of ``fraction`` gets: round(n * fraction), at least 1 and at most n - 1."""
    return min(max(1, int(round(n_rows * fraction))), n_rows - 1)


def stratified_split(labels: np.ndarray, fraction: float, seed: int, *,
                     keep_per_class: int = 1, take_per_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part): ``part`` holds ``part_size(n, fraction)`` rows, each class in proportion.

    Every class keeps at least ``keep_per_class`` rows in ``rest`` and, where it has
    more than that, gives at least ``take_per_class`` to ``part``. Both sorted.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    classes, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes, minlength=len(classes))
    total = part_size(len(labels), fraction)
    low = np.minimum(take_per_class, np.maximum(counts - keep_per_class, 0))
    high = np.maximum(counts - keep_per_class, 0)
    quota = _allocate(counts * (total / len(labels)), total, low, high, rng)
    rest, part = [], []
    for index in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(codes == index))
        part.append(rows[:quota[index]])
        rest.append(rows[quota[index]:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(part))


def shuffled_split(n_rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part): a seeded shuffle, ``part_size(n, fraction)`` rows in ``part``. Both sorted."""
    order = np.random.default_rng(seed).permutation(n_rows)
    size = part_size(n_rows, fraction)
    return np.sort(order[size:]), np.sort(order[:size])


def _allocate(shares: np.ndarray, total: int, low: np.ndarray, high: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Whole rows per class summing to ``total`` (as far as ``[low, high]`` allow), near ``shares``."""
    quota = np.clip(np.floor(shares).astype(np.int64), low, high)
    tiebreak = rng.random(len(shares))
    while quota.sum() != total:
        if quota.sum() < total:
            open_ = quota < high
            if not open_.any():
                break
            gap = np.where(open_, shares - quota, -np.inf)
        else:
            open_ = quota > low
            if not open_.any():
                break
            gap = np.where(open_, quota - shares, -np.inf)
        best = np.flatnonzero(gap == gap.max())
        pick = best[np.argmax(tiebreak[best])]
        quota[pick] += 1 if quota.sum() < total else -1
    return quota


@dataclass(frozen=True)
class SearchSplits:
    """Row indices of the three parts of a search; ``test`` is empty when none is held out."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    stratified: bool

    def describe(self) -> dict:
        return {"train_rows": int(len(self.train)), "validation_rows": int(len(self.validation)),
                "test_rows": int(len(self.test)), "stratified": self.stratified}


def search_splits(n_rows: int, labels: np.ndarray | None, validation_split: float, test_split: float,
                  seed: int) -> SearchSplits:
    """Test rows first (``test_split`` of all rows; 0: none), then validation from the rest.

    ``labels`` (class codes) make both splits stratified; None (regression) shuffles.
    Every class keeps a row for training and one for validation; a test part that
    would leave less is refused, naming ``spec.evaluation.test_split``.
    """
    from .dataset import split_indices  # the validation split's one definition

    all_rows = np.arange(n_rows)
    if test_split > 0:
        _check_test_split(n_rows, labels, test_split)
        if labels is None:
            search, test = shuffled_split(n_rows, test_split, _test_seed(seed))
        else:
            search, test = stratified_split(labels, test_split, _test_seed(seed), keep_per_class=2)
    else:
        search, test = all_rows, all_rows[:0]
    sub_labels = None if labels is None else np.asarray(labels)[search]
    train, validation = split_indices(len(search), validation_split, seed, labels=sub_labels)
    return SearchSplits(search[train], search[validation], test, stratified=labels is not None)


def _test_seed(seed: int) -> int:
    # Its own stream: the validation split of a run with a test part is not the
    # same draw as its test split.
    return int(np.random.SeedSequence([int(seed), 0x7E57]).generate_state(1)[0])


def _check_test_split(n_rows: int, labels: np.ndarray | None, test_split: float) -> None:
    if not 0.0 < test_split < 1.0:
        raise DatasetError(f"evaluation.test_split must be in [0, 1), got {test_split}",
                           [ErrorDetail(TEST_SPLIT_LOC, f"must be in [0, 1), got {test_split}")])
    n_test = part_size(n_rows, test_split)
    classes = 1 if labels is None else len(np.unique(labels))
    need = max(2 * classes, 3)  # a training and a validation row per class (regression: 2 + 1)
    if n_rows - n_test < need:
        message = (f"holds out {n_test} of {n_rows} rows for the test, leaving {n_rows - n_test} to "
                   f"train and validate on; need at least {need}: lower test_split or add rows")
        raise DatasetError(f"evaluation.test_split {test_split} {message}", [ErrorDetail(TEST_SPLIT_LOC, message)])


TEST_SET_LOC = ("spec", "evaluation", "test_dataset")


def align_test_set(test, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a test Dataset given apart, its labels recoded as ``dataset``'s class indices.

    Refuses (naming ``spec.evaluation.test_dataset``) a feature count that differs, or a
    class the training data does not have.
    """
    if test.n_features != dataset.n_features:
        message = f"has {test.n_features} features but the training data has {dataset.n_features}"
        raise DatasetError(f"the test set {message}", [ErrorDetail(TEST_SET_LOC, message)])
    if dataset.task == "regression":
        return test.x, np.asarray(test.y, dtype=np.float64)
    if test.class_labels is None:
        message = "holds continuous targets, but the training data is a classification task"
        raise DatasetError(f"the test set {message}", [ErrorDetail(TEST_SET_LOC, message)])
    known = {label: code for code, label in enumerate(dataset.class_labels)}
    unknown = [label for label in test.class_labels if label not in known]
    if unknown:
        message = (f"holds {len(unknown)} class(es) the training data does not have; "
                   "a test set may only use the training data's classes")
        raise DatasetError(f"the test set {message}", [ErrorDetail(TEST_SET_LOC, message)])
    codes = np.array([known[label] for label in test.class_labels], dtype=np.int64)
    return test.x, codes[np.asarray(test.y, dtype=np.int64)]
