"""CSV and NPZ files as Datasets, read only from inside a data root.

A request names a file by a path relative to the data root (``opts.data_root``);
whatever the path says (``..``, an absolute path elsewhere, a symlink pointing
out), the file actually opened must lie under that root, so a caller cannot make
the service read arbitrary files.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError, ErrorDetail
from .dataset import Dataset, TaskRequest, make_dataset


def resolve_under_root(path: str | os.PathLike, data_root: str | os.PathLike, loc: tuple = ()) -> Path:
    """The real path of ``path`` (relative to ``data_root`` unless absolute), confined to the root.

    Symlinks are resolved before the check, so a link inside the root that points
    outside it is rejected too. Raises DatasetError when the path escapes or the
    file does not exist.
    """
    root = Path(data_root).resolve()
    given = Path(path)
    real = (given if given.is_absolute() else root / given).resolve()
    if not real.is_relative_to(root):
        raise DatasetError(
            f"path {os.fspath(path)!r} points outside the data root {str(root)!r}; "
            "put the file under the data root (opts.data_root or CEREBROS_DATA_ROOT)",
            [ErrorDetail(loc, f"resolves to {str(real)!r}, outside the data root {str(root)!r}")],
        )
    if not real.is_file():
        what = "is not a file" if real.exists() else "does not exist"
        raise DatasetError(
            f"file {os.fspath(path)!r} {what} (looked for {str(real)!r})",
            [ErrorDetail(loc, f"{what}: {str(real)!r}")],
        )
    return real


# --------------------------------------------------------------------------- CSV


def load_csv(
    path: str | os.PathLike,
    target: str | int,
    *,
    data_root: str | os.PathLike,
    task: TaskRequest = "auto",
    name: str | None = None,
) -> Dataset:
    """A CSV file with a header row: every column but ``target`` is a numeric feature.

    ``target`` is a header name or a 0-based column index (negative from the end).
    The target column may hold strings (class labels) for classification.
    """
    real = resolve_under_root(path, data_root, ("spec", "dataset", "path"))
    try:
        with open(real, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{real.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, csv.Error) as exc:
        raise DatasetError(f"{real.name}: cannot be read as CSV: {exc}") from None
    if len(rows) < 2:
        raise DatasetError(f"{real.name}: needs a header row and at least one data row")

    header = [cell.strip() for cell in rows[0]]
    target_index = _target_index(header, target, real.name)
    feature_columns = [i for i in range(len(header)) if i != target_index]
    if not feature_columns:
        raise DatasetError(f"{real.name}: has no feature column besides the target")

    x = np.empty((len(rows) - 1, len(feature_columns)), dtype=np.float64)
    targets: list[str] = []
    for row_number, row in enumerate(rows[1:], start=2):  # line numbers as a spreadsheet shows them
        if len(row) != len(header):
            raise DatasetError(
                f"{real.name}: row {row_number} has {len(row)} cells but the header has {len(header)}"
            )
        for out_col, col in enumerate(feature_columns):
            x[row_number - 2, out_col] = _number(row[col], row_number, header[col], real.name)
        label = row[target_index].strip()
        if not label:
            raise DatasetError(
                f"{real.name}: row {row_number}, target column {header[target_index]!r} is empty: "
                "every row needs a target"
            )
        targets.append(label)

    y = _target_array(targets)
    feature_names = tuple(header[i] for i in feature_columns)
    return make_dataset(name or real.stem, x, y, task=task, feature_names=feature_names)


def _target_index(header: list[str], target: str | int, file_name: str) -> int:
    if isinstance(target, int):
        index = target + len(header) if target < 0 else target
        if not 0 <= index < len(header):
            raise DatasetError(
                f"{file_name}: target column index {target} is out of range: "
                f"the file has {len(header)} columns",
                [ErrorDetail(("spec", "dataset", "target"), f"must be in [{-len(header)}, {len(header) - 1}]")],
            )
        return index
    if target not in header:
        raise DatasetError(
            f"{file_name}: no column named {target!r}; columns: {', '.join(header)}",
            [ErrorDetail(("spec", "dataset", "target"), f"no column named {target!r} in the header")],
        )
    return header.index(target)


def _number(cell: str, row_number: int, column: str, file_name: str) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        shown = repr(text) if text else "an empty cell"
        raise DatasetError(
            f"{file_name}: row {row_number}, column {column!r} holds {shown}, not a number: "
            "feature columns must be numeric"
        ) from None
    if not math.isfinite(value):
        raise DatasetError(f"{file_name}: row {row_number}, column {column!r} holds {text!r}: "
                           "feature values must be finite")
    return value


def _target_array(targets: list[str]) -> np.ndarray:
    """Numbers when every target parses as one (ints when all integral), else the strings."""
    try:
        values = [float(t) for t in targets]
    except ValueError:
        return np.array(targets)
    if all(math.isfinite(v) and v == int(v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array(values, dtype=np.float64)


# --------------------------------------------------------------------------- NPZ


def load_npz(
    path: str | os.PathLike,
    *,
    data_root: str | os.PathLike,
    task: TaskRequest = "auto",
    name: str | None = None,
) -> Dataset:
    """An ``.npz`` archive holding arrays ``x`` (samples × features) and ``y``."""
    real = resolve_under_root(path, data_root, ("spec", "dataset", "path"))
    try:
        # allow_pickle=False: an archive from elsewhere must not run code when loaded.
        with np.load(real, allow_pickle=False) as archive:
            missing = [key for key in ("x", "y") if key not in archive.files]
            if missing:
                raise DatasetError(
                    f"{real.name}: missing array(s) {', '.join(missing)}; the archive holds "
                    f"{', '.join(archive.files) or 'nothing'} (save with np.savez(path, x=..., y=...))"
                )
            x, y = archive["x"], archive["y"]
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{real.name}: not a readable .npz archive: {exc}") from None
    return make_dataset(name or real.stem, x, y, task=task)
