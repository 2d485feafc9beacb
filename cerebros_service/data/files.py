"""CSV and NPZ files as Datasets, read only from inside the operator's data root.

A request names a file by a path relative to the data root (``CEREBROS_DATA_ROOT``
or the CLI's ``--data-root``; never the request). Whatever the path says (``..``,
an absolute path elsewhere, a symlink pointing out, a NUL byte), the file actually
opened must be a regular file under that root, so a caller cannot make the service
read arbitrary files. Without a data root no file can be read at all.

Files are untrusted: sizes are checked against the operator's limits before
reading (the file, each NPZ member as its header declares it, each CSV line), and
no error message quotes the file's content. Column names may be named; cell
values and lines that fail to parse are not.
"""

from __future__ import annotations

import csv
import math
import os
import stat
import zipfile
from array import array
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ..boundary.safe_text import short_repr
from ..errors import DatasetError, ErrorDetail
from ..operator_config import DATA_ROOT_ENV, current_limits, limit_env_name
from .dataset import Dataset, TaskRequest, make_dataset
from .validation import FLOAT32_MAX

PATH_LOC = ("spec", "dataset", "path")
TARGET_LOC = ("spec", "dataset", "target")
NPY_MAGIC = b"\x93NUMPY"
# Column names listed in an error, at most (a header can be a megabyte long).
MAX_COLUMNS_NAMED = 20


def _error(message: str, loc: tuple = PATH_LOC, detail: str | None = None) -> DatasetError:
    return DatasetError(message, [ErrorDetail(loc, detail or message)])


def resolve_under_root(path: str | os.PathLike, data_root: str | os.PathLike | None, loc: tuple = PATH_LOC) -> Path:
    """The real path of ``path`` (relative to ``data_root`` unless absolute), confined to the root.

    Symlinks are resolved before the check, so a link inside the root that points
    outside it is refused too. Raises DatasetError when there is no data root, the
    path escapes it, cannot be resolved (NUL byte, symlink loop) or is not a
    regular file.
    """
    if data_root is None:
        raise _error(f"no data root is set, so no file can be read: the operator sets {DATA_ROOT_ENV} "
                     "(or the --data-root flag)", loc, "cannot be read: this service has no data root")
    shown = _shown(path)
    text = os.fspath(path)
    if "\0" in str(text):
        raise _error(f"path {shown} holds a NUL byte", loc, "holds a NUL byte")
    try:
        root = Path(data_root).resolve()
        given = Path(text)
        real = (given if given.is_absolute() else root / given).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable folder
        raise _error(f"path {shown} cannot be resolved (a symlink loop or an unreadable folder)", loc,
                     "cannot be resolved (a symlink loop or an unreadable folder)") from None
    if not real.is_relative_to(root):
        raise _error(f"path {shown} points outside the data root; put the file under the data root "
                     f"({DATA_ROOT_ENV}) and name it relative to it", loc, "points outside the data root")
    try:
        info = real.stat()
    except OSError:
        raise _error(f"file {shown} does not exist under the data root", loc, "does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise _error(f"{shown} is not a regular file", loc, "is not a regular file")
    return real


def _shown(path) -> str:
    return short_repr(os.fspath(path) if isinstance(path, os.PathLike) else path)


def _open_confined(path, data_root, loc: tuple = PATH_LOC) -> tuple[Path, BinaryIO]:
    """Open the confined file for reading, refusing one larger than the operator's limit."""
    real = resolve_under_root(path, data_root, loc)
    try:
        # O_NOFOLLOW: the last component cannot have been swapped for a symlink since the check.
        # O_NONBLOCK: were it swapped for a FIFO, opening must not hang (refused just below).
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _error(f"{real.name}: cannot be opened ({exc.strerror})", loc, "cannot be opened") from None
    handle = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        raise _error(f"{real.name}: is not a regular file", loc, "is not a regular file")
    size = info.st_size
    limit = current_limits().max_file_bytes
    if size > limit:
        handle.close()
        raise _error(f"{real.name}: {size:,} bytes, more than this service's limit of {limit:,} "
                     f"({limit_env_name('max_file_bytes')})", loc, f"is larger than {limit:,} bytes")
    return real, handle


# --------------------------------------------------------------------------- CSV


def load_csv(
    path: str | os.PathLike,
    target: str | int,
    *,
    data_root: str | os.PathLike | None,
    task: TaskRequest = "auto",
    name: str | None = None,
) -> Dataset:
    """A CSV file with a header row: every column but ``target`` is a numeric feature.

    ``target`` is a header name or a 0-based column index (negative from the end).
    The target column may hold strings (class labels) for classification.
    Rows are numbered as a spreadsheet shows them (the header is row 1).
    """
    real, handle = _open_confined(path, data_root)
    limits = current_limits()
    with handle:
        rows = csv.reader(_text_lines(handle, real.name, limits.max_csv_line_bytes))
        try:
            header = [cell.strip() for cell in next(rows)]
            target_index = _target_index(header, target, real.name)
            feature_columns = [i for i in range(len(header)) if i != target_index]
            if not feature_columns:
                raise _error(f"{real.name}: has no feature column besides the target")
            values = array("d")
            targets: list[str] = []
            for row in rows:
                if not any(cell.strip() for cell in row):
                    continue
                row_number = rows.line_num
                if len(row) != len(header):
                    raise _error(f"{real.name}: row {row_number} has {len(row)} cells but the header has "
                                 f"{len(header)}")
                if (len(targets) + 1) * len(feature_columns) > limits.max_cells:
                    raise _error(f"{real.name}: more than {limits.max_cells:,} values (rows x features), "
                                 f"this service's limit ({limit_env_name('max_cells')})")
                for col in feature_columns:
                    values.append(_number(row[col], row_number, header[col], real.name))
                label = row[target_index].strip()
                if not label:
                    raise _error(f"{real.name}: row {row_number}, target column {_name(header[target_index])} "
                                 "is empty: every row needs a target")
                targets.append(label)
        except StopIteration:
            raise _error(f"{real.name}: is empty; it needs a header row and data rows") from None
        except csv.Error as exc:
            raise _error(f"{real.name}: row {rows.line_num} cannot be read as CSV ({exc})") from None
    if not targets:
        raise _error(f"{real.name}: needs a header row and at least one data row")

    x = np.frombuffer(values, dtype=np.float64).reshape(len(targets), len(feature_columns))
    feature_names = tuple(header[i] for i in feature_columns)
    return _file_dataset(real.name, name or real.stem, x, _target_array(targets), task, feature_names)


def _text_lines(handle: BinaryIO, file_name: str, max_line: int) -> Iterator[str]:
    """Lines as text, refusing one longer than ``max_line`` bytes before reading the rest of it."""
    number = 0
    while True:
        line = handle.readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line:
            raise _error(f"{file_name}: line {number} is longer than this service's limit of {max_line:,} "
                         f"bytes ({limit_env_name('max_csv_line_bytes')})")
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a byte-order mark, as spreadsheet programs write
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(f"{file_name}: line {number} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start} of the line)") from None


def _name(column: str) -> str:
    return short_repr(column)


def _target_index(header: list[str], target: str | int, file_name: str) -> int:
    if isinstance(target, int):
        index = target + len(header) if target < 0 else target
        if not 0 <= index < len(header):
            raise _error(
                f"{file_name}: target column index {target} is out of range: "
                f"the file has {len(header)} columns",
                TARGET_LOC, f"must be in [{-len(header)}, {len(header) - 1}]")
        return index
    if target not in header:
        listed = ", ".join(header[:MAX_COLUMNS_NAMED])
        more = f" and {len(header) - MAX_COLUMNS_NAMED} more" if len(header) > MAX_COLUMNS_NAMED else ""
        raise _error(f"{file_name}: no column named {_name(target)}; columns: {listed}{more}",
                     TARGET_LOC, f"no column named {_name(target)} in the header")
    return header.index(target)


def _number(cell: str, row_number: int, column: str, file_name: str) -> float:
    text = cell.strip()
    where = f"{file_name}: row {row_number}, column {_name(column)}"
    if not text:
        raise _error(f"{where} is an empty cell: feature columns must be numeric")
    try:
        value = float(text)
    except ValueError:
        raise _error(f"{where} is not a number: feature columns must be numeric") from None
    if not math.isfinite(value):
        raise _error(f"{where} is not finite (NaN or infinity): feature values must be finite")
    if abs(value) > FLOAT32_MAX:
        raise _error(f"{where} is beyond float32's range (±{FLOAT32_MAX:.3g}): rescale the column")
    return value


def _target_array(targets: list[str]) -> np.ndarray:
    """Numbers when every target parses as a finite one (ints when all integral), else the strings."""
    try:
        values = [float(t) for t in targets]
    except ValueError:
        return np.array(targets)
    if not all(math.isfinite(v) for v in values):
        return np.array(values, dtype=np.float64)  # refused by the validation, with the row
    if all(v == int(v) and abs(v) < 2**63 for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _file_dataset(file_name: str, name: str, x, y, task: TaskRequest, feature_names=None) -> Dataset:
    """make_dataset for file contents: no cell values or labels in messages, locs at the path."""
    try:
        return make_dataset(name, x, y, task=task, feature_names=feature_names, quote_values=False)
    except DatasetError as exc:
        details = [ErrorDetail(PATH_LOC, d.message) for d in exc.details]
        message = f"{file_name}: {details[0].message}" if details else exc.message
        raise DatasetError(message, details) from None


# --------------------------------------------------------------------------- NPZ


def load_npz(
    path: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None,
    task: TaskRequest = "auto",
    name: str | None = None,
) -> Dataset:
    """An ``.npz`` archive (``np.savez(path, x=..., y=...)``) holding arrays ``x`` and ``y``.

    Each member's header is read first: an object (pickled) array, or one whose
    declared size is over the operator's limit, is refused before its data is read.
    """
    real, handle = _open_confined(path, data_root)
    limits = current_limits()
    with handle:
        start = handle.read(len(NPY_MAGIC))
        if not start:
            raise _error(f"{real.name}: is empty, not an .npz archive")
        if start == NPY_MAGIC:
            raise _error(f"{real.name}: is a .npy file (one array), not an .npz archive: save x and y "
                         "together with np.savez(path, x=..., y=...)")
        handle.seek(0)
        try:
            with zipfile.ZipFile(handle) as archive:
                members = _members(archive, real.name)
                x, y = (_read_member(archive, members[key], key, real.name, limits) for key in ("x", "y"))
        except DatasetError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                NotImplementedError, RuntimeError) as exc:
            raise _error(f"{real.name}: not a readable .npz archive ({_zip_problem(exc)})") from None
    return _file_dataset(real.name, name or real.stem, x, y, task)


def _members(archive: zipfile.ZipFile, file_name: str) -> dict[str, zipfile.ZipInfo]:
    infos = {info.filename: info for info in archive.infolist()}
    found = {}
    for key in ("x", "y"):
        info = infos.get(f"{key}.npy") or infos.get(key)
        if info is not None:
            found[key] = info
    missing = [key for key in ("x", "y") if key not in found]
    if missing:
        held = [n.removesuffix(".npy")[:60] for n in list(infos)[:MAX_COLUMNS_NAMED]]
        raise _error(f"{file_name}: missing array(s) {', '.join(missing)}; the archive holds "
                     f"{', '.join(held) or 'nothing'} (save with np.savez(path, x=..., y=...))")
    return found


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, file_name: str, limits) -> np.ndarray:
    """One array, its declared and real sizes checked against the limits before its data is read."""
    where = f"{file_name}: array {key}"
    if info.file_size > limits.max_npz_member_bytes:
        raise _error(f"{where} unpacks to {info.file_size:,} bytes, more than this service's limit of "
                     f"{limits.max_npz_member_bytes:,} ({limit_env_name('max_npz_member_bytes')})")
    with archive.open(info) as member:
        shape, dtype = _npy_header(member, where)
    if dtype.hasobject:
        raise _error(f"{where} holds Python objects (pickled data), which are never loaded: save numbers")
    cells = math.prod(shape)
    if cells * dtype.itemsize > info.file_size:
        raise _error(f"{where} is truncated: its header promises more data than the archive holds")
    if cells > limits.max_cells:
        raise _error(f"{where} holds {cells:,} values, more than this service's limit of "
                     f"{limits.max_cells:,} ({limit_env_name('max_cells')})")
    # zipfile never unpacks more than a member's declared size, checked above.
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _npy_header(member: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _fortran, dtype = fmt.read_array_header_2_0(member)
        else:
            shape, _fortran, dtype = fmt._read_array_header(member, version)  # noqa: SLF001 - 3.0 headers
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, AttributeError):
        raise _error(f"{where} is not a readable .npy array (its header is malformed)") from None
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _zip_problem(exc: BaseException) -> str:
    """What went wrong, in fixed words: library messages can quote the file's bytes."""
    if isinstance(exc, zipfile.BadZipFile):
        return "not a zip archive, or a truncated or corrupt one"
    if isinstance(exc, EOFError):
        return "it ends too early (truncated)"
    if isinstance(exc, NotImplementedError):
        return "it uses a compression method this service does not read"
    if isinstance(exc, OSError):
        return f"reading it failed: {exc.strerror or 'input/output error'}"
    return "an array in it is malformed or truncated"

