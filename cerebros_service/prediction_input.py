"""What a caller sends as ``x`` to ``predict`` → one float32 (samples, features) array.

``x`` may be given as for ``run_nas``'s data (no targets needed):

- rows: a list of rows of numbers, or a 2-D numpy array (used without a copy when
  it already is float32);
- records: a list of ``{feature name: number}`` maps (needs the run's feature names);
- a source object: ``{"source": "inline", "x": rows}``, ``{"source": "arrays", "x": array}``,
  ``{"source": "csv", "path", "target"?}``, ``{"source": "npz", "path"}``,
  ``{"source": "builtin", "name"}`` or ``{"source": "registered", "name"}``.

The columns are matched to what the model was trained on: by name when the run
recorded its feature names and the input has names (CSV header, records), else by
position. Files are read only from under the operator's data root, within the
operator's size limits (operator_config.py), as for ``run_nas``. Every problem is an
InputError/DatasetError naming where it is; a file's cell values are never quoted.
"""

from __future__ import annotations

import csv
import math
import zipfile
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from .boundary.errors_text import short_repr
from .errors import DatasetError, ErrorDetail, InputError

SOURCES = ("inline", "arrays", "csv", "npz", "builtin", "registered")
_SOURCE_KEYS = {
    "inline": {"source", "x", "y"},
    "arrays": {"source", "x", "y"},
    "csv": {"source", "path", "target", "task"},
    "npz": {"source", "path"},
    "builtin": {"source", "name"},
    "registered": {"source", "name"},
}
MAX_SHOWN_NAMES = 12
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _confined_file(path: str, loc: tuple) -> Path:
    """The file under the operator's data root, refused when larger than the operator's limit."""
    from .data.files import resolve_under_root
    from .operator_config import current_limits, data_root, limit_env_name

    real = resolve_under_root(path, data_root(), loc)
    limit = current_limits().max_file_bytes
    if real.stat().st_size > limit:
        raise DatasetError(f"{real.name}: larger than this service's limit of {limit:,} bytes "
                           f"({limit_env_name('max_file_bytes')})", [ErrorDetail(loc, f"is larger than {limit:,} bytes")])
    return real


def features_from(x: Any, n_features: int, feature_names: list[str] | None) -> np.ndarray:
    """The float32 (samples, n_features) array ``x`` describes, columns in the model's order."""
    if isinstance(x, np.ndarray):
        return _checked_array(x, n_features, ("x",))
    if isinstance(x, list):
        if x and all(isinstance(row, dict) for row in x):
            return _from_records(x, n_features, feature_names)
        return _from_rows(x, n_features, ("x",))
    if isinstance(x, dict):
        return _from_source(x, n_features, feature_names)
    raise _bad(("x",), "must be a list of rows, a list of {feature: value} records, a numpy array or "
                       f"a source object ({', '.join(SOURCES)}), got {type(x).__name__}")


def _bad(loc: tuple, message: str) -> InputError:
    return InputError(f"{'.'.join(map(str, loc))}: {message}", [ErrorDetail(loc, message)])


def _names_text(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:MAX_SHOWN_NAMES]))
    return shown + (f", … ({len(names)} in all)" if len(names) > MAX_SHOWN_NAMES else "")


# --------------------------------------------------------------------------- arrays and rows


def _checked_array(array: np.ndarray, n_features: int, loc: tuple) -> np.ndarray:
    if array.ndim == 1 and n_features == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise _bad(loc, f"must be 2-D (samples, features), got shape {list(array.shape)}"
                        + ("; wrap a single sample in a list: [[...]]" if array.ndim == 1 else ""))
    if array.shape[0] == 0:
        raise _bad(loc, "holds no samples")
    if array.shape[1] != n_features:
        raise _bad(loc, f"has {array.shape[1]} feature(s) per sample but the model takes {n_features}")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                       or np.issubdtype(array.dtype, np.floating)):
        raise _bad(loc, f"must hold real numbers, got dtype {array.dtype}")
    features = array.astype(np.float32, copy=False)
    finite = np.isfinite(features)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise _bad(loc + (row, column), "is NaN, infinite, or too large for float32: features must be finite")
    return features


def _from_rows(rows: list, n_features: int, loc: tuple) -> np.ndarray:
    if not rows:
        raise _bad(loc, "holds no samples")
    matrix = np.empty((len(rows), n_features), dtype=np.float32)
    for index, row in enumerate(rows):
        if not isinstance(row, list):
            hint = "; wrap a single sample in a list: [[...]]" if isinstance(row, (int, float)) else ""
            raise _bad(loc + (index,), f"must be a row (a list of {n_features} numbers), got {short_repr(row)}{hint}")
        if len(row) != n_features:
            raise _bad(loc + (index,), f"has {len(row)} value(s) but the model takes {n_features} feature(s)")
        for column, value in enumerate(row):
            matrix[index, column] = _number(value, loc + (index, column))
    return matrix


def _number(value: Any, loc: tuple) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _bad(loc, f"must be a number, got {short_repr(value)}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise _bad(loc, f"must be a finite number (within float32), got {short_repr(value)}")
    return number


def _from_records(records: list[dict], n_features: int, feature_names: list[str] | None) -> np.ndarray:
    if feature_names is None:
        raise _bad(("x",), "is a list of {feature: value} records, but this run's data had no feature "
                           "names: send rows (lists of numbers) in the training column order")
    matrix = np.empty((len(records), n_features), dtype=np.float32)
    wanted = set(feature_names)
    for index, record in enumerate(records):
        unknown = [key for key in record if key not in wanted]
        if unknown:
            raise _bad(("x", index, unknown[0]),
                       f"is not a feature of this model; its features: {_names_text(feature_names)}")
        missing = [name for name in feature_names if name not in record]
        if missing:
            raise _bad(("x", index), f"lacks feature(s) {_names_text(missing)}")
        for column, name in enumerate(feature_names):
            matrix[index, column] = _number(record[name], ("x", index, name))
    return matrix


# --------------------------------------------------------------------------- sources


def _from_source(spec: dict, n_features: int, feature_names: list[str] | None) -> np.ndarray:
    source = spec.get("source")
    if source not in SOURCES:
        raise _bad(("x", "source"), f"must be one of {', '.join(map(repr, SOURCES))}, got {short_repr(source)}")
    unknown = sorted(set(spec) - _SOURCE_KEYS[source], key=str)
    if unknown:
        raise _bad(("x", unknown[0]), f"is not a key of a {source!r} source; allowed: "
                                      f"{', '.join(sorted(_SOURCE_KEYS[source]))}")
    if source == "inline":
        return _from_rows(_required(spec, "x", list), n_features, ("x", "x"))
    if source == "arrays":
        return _checked_array(_required(spec, "x", np.ndarray), n_features, ("x", "x"))
    if source == "csv":
        target = spec.get("target")
        if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
            raise _bad(("x", "target"), f"must be a column name or a 0-based index, got {short_repr(target)}")
        return _from_csv(_required(spec, "path", str), target, n_features, feature_names)
    if source == "npz":
        return _from_npz(_required(spec, "path", str), n_features)
    return _from_named(source, _required(spec, "name", str), n_features)


def _required(spec: dict, key: str, kind: type) -> Any:
    if key not in spec:
        raise _bad(("x", key), f"is required for a {spec['source']!r} source")
    value = spec[key]
    if not isinstance(value, kind) or (kind is str and not value):
        words = {list: "a list of rows", np.ndarray: "a numpy array", str: "a non-empty string"}[kind]
        raise _bad(("x", key), f"must be {words}, got {short_repr(value)}")
    return value


def _from_named(source: str, name: str, n_features: int) -> np.ndarray:
    if source == "registered":
        from .data import registry

        dataset = registry.get_dataset(name)
        if dataset is None:
            known = ", ".join(d["name"] for d in registry.list_datasets()) or "none"
            raise _bad(("x", "name"), f"names no registered dataset ({short_repr(name)}); registered: {known}")
    else:
        from .data.builtin import BUILTIN_DATASETS, load_builtin

        if name not in BUILTIN_DATASETS:
            raise _bad(("x", "name"), f"names no built-in dataset ({short_repr(name)}); "
                                      f"built-in: {', '.join(BUILTIN_DATASETS)}")
        dataset = load_builtin(name)
    return _checked_array(dataset.x, n_features, ("x",))


def _from_npz(path: str, n_features: int) -> np.ndarray:
    from .operator_config import current_limits, limit_env_name

    loc = ("x", "path")
    real = _confined_file(path, loc)
    limit = current_limits().max_npz_member_bytes
    try:
        with zipfile.ZipFile(real) as archive:
            member = next((info for info in archive.infolist() if info.filename == "x.npy"), None)
            if member is None:
                raise DatasetError(f"{real.name}: has no array 'x' (save it with np.savez(path, x=...))",
                                   [ErrorDetail(loc, "the archive has no array 'x'")])
            if member.file_size > limit:  # checked before anything is decompressed
                raise DatasetError(f"{real.name}: array 'x' is {member.file_size:,} bytes uncompressed, more than "
                                   f"this service's limit of {limit:,} ({limit_env_name('max_npz_member_bytes')})",
                                   [ErrorDetail(loc, f"array 'x' is larger than {limit:,} bytes")])
            with archive.open(member) as handle:
                matrix = np.lib.format.read_array(handle, allow_pickle=False)  # no pickles: loading runs no code
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise DatasetError(f"{real.name}: not a readable .npz archive ({type(exc).__name__})",
                           [ErrorDetail(loc, "is not a readable .npz archive")]) from None
    return _checked_array(matrix, n_features, loc)


def _from_csv(path: str, target: str | int | None, n_features: int,
              feature_names: list[str] | None) -> np.ndarray:
    from .operator_config import current_limits, limit_env_name

    loc = ("x", "path")
    real = _confined_file(path, loc)
    max_cells = current_limits().max_cells
    values = array("f")
    try:
        with open(real, newline="", encoding="utf-8-sig") as handle:
            rows = csv.reader(handle)
            header = [cell.strip() for cell in next(rows, [])]
            if not header:
                raise DatasetError(f"{real.name}: is empty; it needs a header row and data rows",
                                   [ErrorDetail(loc, "is empty")])
            columns = _csv_columns(header, target, n_features, feature_names, real.name)
            for row in rows:
                if not any(cell.strip() for cell in row):
                    continue
                line = rows.line_num  # as a spreadsheet numbers rows: the header is row 1
                if len(row) != len(header):
                    raise DatasetError(f"{real.name}: row {line} has {len(row)} cells but the header has "
                                       f"{len(header)}", [ErrorDetail(loc, f"row {line} has {len(row)} cells")])
                if len(values) + n_features > max_cells:
                    raise DatasetError(f"{real.name}: more than {max_cells:,} values, this service's limit "
                                       f"({limit_env_name('max_cells')})", [ErrorDetail(loc, "holds too many values")])
                for column in columns:
                    values.append(_cell(row[column], line, header[column], real.name))
    except UnicodeDecodeError:
        raise DatasetError(f"{real.name}: not UTF-8 text", [ErrorDetail(loc, "is not UTF-8 text")]) from None
    except csv.Error as exc:
        raise DatasetError(f"{real.name}: cannot be read as CSV ({exc})", [ErrorDetail(loc, "cannot be read as CSV")]) from None
    if not values:
        raise DatasetError(f"{real.name}: has a header row but no data rows", [ErrorDetail(loc, "has no data rows")])
    return np.frombuffer(values, dtype=np.float32).reshape(-1, n_features)


def _cell(text: str, line: int, column: str, file_name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        # The cell's text stays out of the message: it is the caller's data.
        raise DatasetError(f"{file_name}: row {line}, column {short_repr(column)} is not a finite number",
                           [ErrorDetail(("x", "path"), f"row {line}, column {short_repr(column)} is not a finite number")])
    return value


def _csv_columns(header: list[str], target: str | int | None, n_features: int,
                 feature_names: list[str] | None, file_name: str) -> list[int]:
    """Indices of the model's features in the file: by name when possible, else every column but the target."""
    if feature_names is not None and all(name in header for name in feature_names):
        return [header.index(name) for name in feature_names]
    columns = list(range(len(header)))
    if target is not None:
        index = _target_index(header, target, file_name)
        columns.remove(index)
    if len(columns) != n_features:
        expected = f" ({_names_text(feature_names)})" if feature_names else ""
        missing = [name for name in (feature_names or []) if name not in header]
        hint = f"; missing column(s) {_names_text(missing)}" if missing and len(missing) < len(feature_names) else ""
        raise DatasetError(
            f"{file_name}: has {len(columns)} feature column(s) but the model takes {n_features}{expected}{hint}",
            [ErrorDetail(("x", "path"), f"has {len(columns)} feature column(s), the model takes {n_features}")])
    return columns


def _target_index(header: list[str], target: str | int, file_name: str) -> int:
    if isinstance(target, int):
        index = target + len(header) if target < 0 else target
        if not 0 <= index < len(header):
            raise _bad(("x", "target"), f"column index {target} is out of range: {file_name} has {len(header)} columns")
        return index
    if target not in header:
        raise _bad(("x", "target"), f"no column named {short_repr(target)} in {file_name}; "
                                    f"columns: {_names_text(header)}")
    return header.index(target)
