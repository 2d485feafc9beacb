"""Finished runs on disk: where they live, finding one by id or folder, listing, deleting.

Every run id or run folder a caller names goes through ``resolve_run_dir``, the one
place that knows where run folders live (``<artifacts root>/<run_id>``) and keeps a
caller inside that root: ``..``, an absolute path elsewhere or a symlink pointing out
is refused. ``artifacts_root`` is the one place here that asks which root is in force.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .boundary.normalize import normalize
from .boundary.results import failure_result
from .errors import ErrorDetail, InputError, ServiceError
from .jsonsafe import json_safe

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
# A folder holding one of these is a run folder (run.json is missing while a run goes on).
RUN_MARKERS = ("run.json", "trials.jsonl", "best_model.keras")


def artifacts_root() -> Path:
    """The folder run ids are resolved under, absolute: the operator's, never a request's.

    The same root ``run_nas`` makes run folders in (``$CEREBROS_ARTIFACTS_ROOT``,
    else ``./cerebros_runs``; see operator_config.py).
    """
    from .operator_config import artifacts_root as operator_artifacts_root

    return operator_artifacts_root()


def resolve_run_dir(run: Any, loc: tuple = ("run",)) -> Path:
    """The run folder ``run`` names: a run id (a folder name under the root) or a run folder's path.

    Either way the real folder (symlinks followed) must be a direct child of the
    artifacts root. Raises InputError naming the problem at ``loc``.
    """
    base = artifacts_root()
    if isinstance(run, os.PathLike):
        run = os.fspath(run)
    if not isinstance(run, str):
        raise _run_error(loc, f"must be a run id or a run folder's path (a string), got {type(run).__name__}")
    if not run.strip() or "\0" in run:
        raise _run_error(loc, "must be a run id or a run folder's path, got an empty or NUL-holding string")
    is_path = os.sep in run or (os.altsep is not None and os.altsep in run) or run in (".", "..")
    candidate = Path(run).expanduser() if is_path else base / run
    try:
        real = candidate.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise _run_error(loc, f"{run!r} cannot be resolved (a symlink loop?)") from None
    if real.parent != base:
        raise _run_error(loc, f"{run!r} is not a run folder under the artifacts root {str(base)!r} "
                              "(the operator sets the root: CEREBROS_ARTIFACTS_ROOT or --artifacts-root)")
    if not real.is_dir():
        close = difflib.get_close_matches(real.name, run_ids(base), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _run_error(loc, f"no run {real.name!r} under the artifacts root {str(base)!r}{hint}")
    return real


def _run_error(loc: tuple, message: str) -> InputError:
    return InputError(f"{'.'.join(map(str, loc))}: {message}", [ErrorDetail(loc, message)])


def run_ids(base: Path) -> list[str]:
    """Names of the run folders under ``base``, sorted."""
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir()
                  if entry.is_dir() and not entry.name.startswith(".")
                  and any((entry / marker).exists() for marker in RUN_MARKERS))


def read_run_json(run_dir: Path) -> dict:
    """run.json as a dict; ``{}`` when it is missing or unreadable (a run still going, or killed)."""
    try:
        data = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_run_json(run_dir: Path, path: tuple[str, ...], value: Any) -> None:
    """Set one key of run.json (``("after_run", "onnx")`` → ``run["after_run"]["onnx"]``), atomically.

    Every other key is kept. Without a run.json there is nothing to add to: the
    record then lives in the result only.
    """
    from .artifacts import RunDirectory

    data = read_run_json(run_dir)
    if not data:
        return
    section = data
    for key in path[:-1]:
        if not isinstance(section.get(key), dict):
            section[key] = {}
        section = section[key]
    section[path[-1]] = value
    RunDirectory(run_dir).write_json(RUN_JSON, data)


def run_summary(run_dir: Path) -> dict:
    """One row of the runs list: id, dataset, status, best, the delivered model and its test metric,
    when and how long."""
    from .resume import effective_status

    info = read_run_json(run_dir)
    run_info = info.get("run_info") or {}
    dataset = info.get("dataset") or {}
    timings = info.get("timings") or {}
    test = info.get("test_metric")  # the delivered model's (the ensemble's when there is one)
    if isinstance(test, dict):  # a held-out score may come as {"name": …, "value": …}
        test = test.get("value")
    members = (info.get("ensemble") or {}).get("members") or []
    return json_safe({
        "run_id": run_dir.name,
        "dataset": run_info.get("dataset_id") or dataset.get("name"),
        "task": dataset.get("task"),
        # "running" whose process is gone reads "interrupted" (resume it with opts.resume)
        "status": effective_status(info) or "incomplete",
        "metric": info.get("metric"),
        "best": info.get("best_value"),
        "test_metric": test,
        # what best_model.keras holds; None for a run.json from before ensembles (its single best)
        "delivered_model": info.get("delivered_model"),
        "ensemble_size": len(members) if info.get("delivered_model") == "ensemble" else None,
        "trials": info.get("trials"),
        "started": timings.get("started_at"),
        "duration_s": timings.get("duration_s"),
        "has_model": (run_dir / "best_model.keras").is_file(),
        "has_onnx": (run_dir / "best_model.onnx").is_file(),
        "path": str(run_dir),
    })


# --------------------------------------------------------------------------- public API


def list_runs() -> dict:
    """``{"status": "success", "root", "runs": [row, …]}``, newest first; never raises."""
    try:
        base = artifacts_root()
        rows = [run_summary(base / name) for name in run_ids(base)]
        rows.sort(key=lambda row: (row["started"] or "", row["run_id"]), reverse=True)
        return {"status": "success", "root": str(base), "runs": rows}
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("list_runs failed")
        return failure_result(exc, None)


def delete_run(run: Any) -> dict:
    """Remove one run folder: ``{"status": "deleted", "run_id", "path"}`` or a failed result."""
    try:
        run_dir = resolve_run_dir(normalize(run, root="run"))
        if not any((run_dir / marker).exists() for marker in RUN_MARKERS):
            raise _run_error(("run",), f"{str(run_dir)!r} holds none of {', '.join(RUN_MARKERS)}: "
                                       "not a run folder, left alone")
        shutil.rmtree(run_dir)
        return {"status": "deleted", "run_id": run_dir.name, "path": str(run_dir)}
    except ServiceError as exc:
        return failure_result(exc, None)
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("delete_run failed")
        return failure_result(exc, None)
