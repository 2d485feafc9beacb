"""What the operator of a deployment decides, never a request: where data may be read,
where run folders are written, how big inputs and models may get, and which Dask
clusters and MLflow tracking servers the service may connect to.

Everything is read from environment variables at the moment it is needed, so the
CLI's flags (``--data-root``, ``--artifacts-root``, ``--dask-clusters``,
``--mlflow-servers``), an Elixir app's config (passed as these variables or flags, or
through ``configure``) and a child process spawned for a job all see the same values.
A request's spec and opts cannot name another root, loosen a limit, or name an
address: they pick a cluster or a server by the name the operator gave it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ErrorDetail, ServiceError

DATA_ROOT_ENV = "CEREBROS_DATA_ROOT"
ARTIFACTS_ROOT_ENV = "CEREBROS_ARTIFACTS_ROOT"
# The older name of the artifacts root's variable, still honoured (as run_store.py does).
LEGACY_ARTIFACTS_ENV = "CEREBROS_ARTIFACTS_DIR"
# Relative to the working directory of the process, like before roots were the operator's.
DEFAULT_ARTIFACTS_ROOT = "cerebros_runs"
# Comma-separated name=URL lists: the Dask schedulers and the MLflow tracking servers a
# request may pick by name (opts.executor.cluster, opts.tracking.mlflow.server).
DASK_CLUSTERS_ENV = "CEREBROS_DASK_CLUSTERS"
MLFLOW_SERVERS_ENV = "CEREBROS_MLFLOW_SERVERS"
# The CLI flag that sets each list (for messages that tell a request where names come from).
ENDPOINT_FLAGS = {DASK_CLUSTERS_ENV: "--dask-clusters", MLFLOW_SERVERS_ENV: "--mlflow-servers"}

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


def dask_clusters() -> dict[str, str]:
    """The operator's Dask schedulers, name -> address (empty when none are configured)."""
    return _endpoints(DASK_CLUSTERS_ENV, os.environ.get(DASK_CLUSTERS_ENV, ""))


def mlflow_servers() -> dict[str, str]:
    """The operator's MLflow tracking servers, name -> tracking URI (empty when none)."""
    return _endpoints(MLFLOW_SERVERS_ENV, os.environ.get(MLFLOW_SERVERS_ENV, ""))


def configured_names(variable: str, names: list[str] | dict) -> str:
    """A sentence for a request that named an unknown endpoint: the names there are, or
    that there are none and which variable and flag configure them."""
    if names:
        return "configured: " + ", ".join(repr(name) for name in names)
    return (f"none are configured (the operator sets them with {variable} or "
            f"{ENDPOINT_FLAGS[variable]}, as name=URL pairs)")


_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DASK_ADDRESS = re.compile(r"(tcp|tls|ucx|ws|wss|inproc)://[^\s/,]+(:\d{1,5})?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s,]*|databricks")  # a comma would split the list


def _endpoints(variable: str, raw: str | dict) -> dict[str, str]:
    """``name=URL,name=URL`` (or a mapping) as a dict; ConfigError names the variable and
    the entry at fault (no ``=``, an empty or ill-formed name, a name twice, a bad URL)."""
    if isinstance(raw, dict):
        pairs = []
        for name, url in raw.items():
            if not isinstance(name, str) or not isinstance(url, str):
                _endpoint_error(variable, f"each entry must be a name and a URL, both strings, "
                                          f"got {str(name)[:80]!r}: {str(url)[:80]!r}")
            pairs.append((name.strip(), url.strip()))
    elif not isinstance(raw, str):
        _endpoint_error(variable, f"must be name=URL pairs separated by commas, or a mapping, "
                                  f"got {type(raw).__name__}")
    else:
        if "\0" in raw:
            _endpoint_error(variable, "holds a NUL byte")
        pairs = []
        for entry in (part.strip() for part in raw.split(",")):
            if not entry:
                continue
            if "=" not in entry:
                _endpoint_error(variable, f"entry {entry[:80]!r} has no '=': each entry is name=URL")
            name, _, url = entry.partition("=")
            pairs.append((name.strip(), url.strip()))
    found: dict[str, str] = {}
    for name, url in pairs:
        if not name:
            _endpoint_error(variable, f"entry {('=' + url)[:80]!r} has an empty name: each entry is name=URL")
        if not _ENDPOINT_NAME.fullmatch(name):
            _endpoint_error(variable, f"name {name[:80]!r} must be 1-64 letters, digits, '_', '.' or '-', "
                                      "starting with a letter or digit")
        if name in found:
            _endpoint_error(variable, f"names {name!r} twice")
        dask = variable == DASK_CLUSTERS_ENV
        if not (_DASK_ADDRESS if dask else _URI).fullmatch(url):
            what = ("a Dask scheduler address such as tcp://10.0.0.5:8786" if dask
                    else "a tracking URI such as http://mlflow.internal:5000")
            _endpoint_error(variable, f"the URL of {name!r} must be {what}, got {url[:80]!r}")
        found[name] = url
    return found


def _endpoint_error(variable: str, problem: str) -> None:
    raise ConfigError(f"{variable} (or {ENDPOINT_FLAGS[variable]}) is malformed: {problem}",
                      [ErrorDetail(("env", variable), problem)])


def _endpoint_text(variable: str, value: str | dict) -> str:
    """A checked list in the variable's own form, ``name=URL,…``."""
    return ",".join(f"{name}={url}" for name, url in _endpoints(variable, value).items())


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
              limits: dict | None = None,
              dask_clusters: str | dict | None = None,
              mlflow_servers: str | dict | None = None) -> dict:
    """Set the operator's roots, limits and endpoints for this process (and the children it
    spawns). ``dask_clusters`` and ``mlflow_servers``: a mapping name -> URL, or the
    variables' text ``name=URL,name=URL``.

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
        for variable, value in ((DASK_CLUSTERS_ENV, dask_clusters), (MLFLOW_SERVERS_ENV, mlflow_servers)):
            if value is not None:
                updates[variable] = _endpoint_text(variable, value)
        os.environ.update(updates)
        return describe()
    except Exception as exc:  # noqa: BLE001 - a caller across Pythonx must get a dict back
        return failure_result(exc, None)


def describe() -> dict:
    """The settings in force, as plain data (for ``configure`` and operators' checks)."""
    root, limits = data_root(), current_limits()
    return {"status": "configured", "data_root": None if root is None else str(root),
            "artifacts_root": str(artifacts_root()),
            "limits": {name: getattr(limits, name) for name in LIMIT_NAMES},
            "dask_clusters": dask_clusters(), "mlflow_servers": mlflow_servers()}


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
