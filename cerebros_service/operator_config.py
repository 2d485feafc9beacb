"""What the operator of a deployment decides, never a request: where data may be read,
where run folders are written, and how big inputs and models may get.

Everything is read from environment variables at the moment it is needed, so the
CLI's flags (``--data-root``, ``--artifacts-root``), an Elixir app's config (passed
as these variables, or through ``configure``) and a child process spawned for a job
all see the same values. A request's spec and opts cannot name another root or
loosen a limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ErrorDetail, ServiceError

DATA_ROOT_ENV = "CEREBROS_DATA_ROOT"
ARTIFACTS_ROOT_ENV = "CEREBROS_ARTIFACTS_ROOT"
# The older name of the artifacts root's variable, still honoured (as run_store.py does).
LEGACY_ARTIFACTS_ENV = "CEREBROS_ARTIFACTS_DIR"
# Relative to the working directory of the process, like before roots were the operator's.
DEFAULT_ARTIFACTS_ROOT = "cerebros_runs"

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Size limits; each is a positive integer, set by ``CEREBROS_<NAME upper-cased>``."""

    # A CSV or NPZ file larger than this is refused before it is opened.
    max_file_bytes: int = 512 * MiB
    # One array inside an NPZ, uncompressed, read from its header before any data is.
    max_npz_member_bytes: int = 1024 * MiB
    # One CSV line (and so one field), read in pieces of at most this many bytes.
    max_csv_line_bytes: int = 1 * MiB
    # Rows x features of any dataset (file, inline, arrays or registered).
    max_cells: int = 100_000_000
    # Upper bound of one candidate's parameters, from the search space (refused up front).
    max_candidate_params: int = 20_000_000
    # Parameters of one chunk of candidates the engine trains fused into one model: the
    # most opts.execution.max_fused_params may ask for (and its default when lower).
    max_fused_params: int = 20_000_000
    # Error details a failed result lists; the rest are counted.
    max_error_details: int = 50


def limit_env_name(field_name: str) -> str:
    return "CEREBROS_" + field_name.upper()


LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Limits))
DEFAULT_LIMITS = Limits()


class ConfigError(ServiceError):
    """The operator's settings are wrong (a bad environment value): nothing a request can fix."""


def current_limits() -> Limits:
    """The limits in force now; ConfigError names a variable whose value is not a positive integer."""
    values = {}
    for name in LIMIT_NAMES:
        variable = limit_env_name(name)
        raw = os.environ.get(variable)
        if raw is None or not raw.strip():
            continue
        values[name] = _positive_int(variable, raw)
    return Limits(**values)


def limit_or_default(name: str) -> int:
    """One limit, falling back to its default when the environment is broken (for error paths)."""
    try:
        return getattr(current_limits(), name)
    except ConfigError:
        return getattr(DEFAULT_LIMITS, name)


def data_root() -> Path | None:
    """The one folder file sources may read from; None (no file access at all) when unset."""
    raw = os.environ.get(DATA_ROOT_ENV)
    if not raw:
        return None
    return _root(DATA_ROOT_ENV, raw)


def artifacts_root() -> Path:
    """Where run folders ``<root>/<run_id>`` are made (``./cerebros_runs`` when unset)."""
    raw = os.environ.get(ARTIFACTS_ROOT_ENV) or os.environ.get(LEGACY_ARTIFACTS_ENV) or DEFAULT_ARTIFACTS_ROOT
    return _root(ARTIFACTS_ROOT_ENV, raw)


def inside_root(root: Path, value: str | os.PathLike) -> Path:
    """``value`` (relative to ``root`` unless absolute) resolved, symlinks followed; ValueError
    unless it is ``root`` itself or lies inside it."""
    text = os.fspath(value)
    if "\0" in text:
        raise ValueError("holds a NUL byte")
    try:
        given = Path(text).expanduser()
        real = (given if given.is_absolute() else root / given).resolve()
    except (OSError, RuntimeError, ValueError):
        raise ValueError("cannot be resolved (a symlink loop or an unreadable folder)") from None
    if not real.is_relative_to(root):
        raise ValueError("points outside the operator's root")
    return real


def configure(*, data_root: str | os.PathLike | None = None,
              artifacts_root: str | os.PathLike | None = None,
              limits: dict | None = None) -> dict:
    """Set the operator's roots and limits for this process (and the children it spawns).

    For in-process callers (Pythonx): the same as setting the environment variables.
    Returns ``{"status": "configured", ...}`` or a failed result; never raises.
    """
    from .boundary.results import failure_result

    try:
        updates: dict[str, str] = {}
        if data_root is not None:
            root = _root(DATA_ROOT_ENV, os.fspath(data_root))
            if not root.is_dir():
                raise ConfigError(f"the data root ({DATA_ROOT_ENV}) must be an existing folder",
                                  [ErrorDetail(("data_root",), "is not an existing folder")])
            updates[DATA_ROOT_ENV] = str(root)
        if artifacts_root is not None:
            updates[ARTIFACTS_ROOT_ENV] = str(_root(ARTIFACTS_ROOT_ENV, os.fspath(artifacts_root)))
        for name, value in dict(limits or {}).items():
            if name not in LIMIT_NAMES:
                raise ConfigError(f"unknown limit {name!r}; known: {', '.join(LIMIT_NAMES)}",
                                  [ErrorDetail(("limits", str(name)), "is not a known limit")])
            variable = limit_env_name(name)
            updates[variable] = str(_positive_int(variable, value))
        os.environ.update(updates)
        return describe()
    except Exception as exc:  # noqa: BLE001 - a caller across Pythonx must get a dict back
        return failure_result(exc, None)


def describe() -> dict:
    """The settings in force, as plain data (for ``configure`` and operators' checks)."""
    root, limits = data_root(), current_limits()
    return {"status": "configured", "data_root": None if root is None else str(root),
            "artifacts_root": str(artifacts_root()),
            "limits": {name: getattr(limits, name) for name in LIMIT_NAMES}}


def _root(variable: str, raw: str) -> Path:
    if "\0" in raw:
        raise ConfigError(f"{variable} holds a NUL byte", [ErrorDetail(("env", variable), "holds a NUL byte")])
    try:
        return Path(raw).expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{variable} cannot be resolved ({type(exc).__name__})",
                          [ErrorDetail(("env", variable), "cannot be resolved")]) from None


def _positive_int(variable: str, raw: object) -> int:
    try:
        value = int(str(raw).strip().replace("_", "")) if not isinstance(raw, int) else raw
    except ValueError:
        value = None
    if isinstance(value, bool) or value is None or value < 1:
        raise ConfigError(f"{variable} must be a positive integer, got {str(raw)[:40]!r}",
                          [ErrorDetail(("env", variable), "must be a positive integer")])
    return value
