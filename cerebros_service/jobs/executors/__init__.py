"""Where a job's search runs: one module per ``opts.executor`` kind (see ``_base.py``)."""

from __future__ import annotations

from ._base import Executor, JobTask
from .local import LocalExecutor
from .process import ProcessExecutor

EXECUTORS: dict[str, type[Executor]] = {
    LocalExecutor.kind: LocalExecutor,
    ProcessExecutor.kind: ProcessExecutor,
    # Scale-out kinds: the job's search loop runs here, its trials on Dask workers (dask_trials.py).
    "processes": LocalExecutor,
    "dask": LocalExecutor,
}

__all__ = ["EXECUTORS", "Executor", "JobTask", "LocalExecutor", "ProcessExecutor"]
