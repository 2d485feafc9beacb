"""Searches as jobs: submitted, watched, cancelled, their end pushed to the caller.

One ``JobRunner`` per interpreter serves these functions (see ``runner.py``). They
answer plain dicts and never raise, like ``run_nas``::

    from cerebros_service import jobs

    ack = jobs.submit({"dataset_id": "digits"}, {"budget": {"max_trials": 4}},
                      notify=lambda message: print(message))
    jobs.status(ack["job_id"])      # {"job_id", "status": "running", "trials_done", ...}
    jobs.cancel(ack["job_id"])      # the search stops within a batch: status "cancelled"
    jobs.result(ack["job_id"], timeout=60)

Submitted jobs run in a worker process by default (``opts.executor`` picks another
kind). Importing this package never imports TensorFlow.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Callable

from ..boundary.results import failure_result
from ..errors import ErrorDetail, InputError, ServiceError
from .runner import JobRunner

__all__ = ["JobRunner", "cancel", "configure", "default_runner", "jobs", "result", "run_and_wait",
           "shutdown", "status", "submit"]

MAX_CONCURRENT_JOBS_LIMIT = 64

_runner: JobRunner | None = None
_runner_lock = threading.Lock()
_settings: dict[str, Any] = {"max_concurrent_jobs": None, "thread_entry": None}


def default_runner() -> JobRunner:
    """This interpreter's runner, made on first use (``configure`` sets it up first)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            limit = _settings["max_concurrent_jobs"] or int(os.environ.get("CEREBROS_MAX_CONCURRENT_JOBS") or 1)
            _runner = JobRunner(max_concurrent_jobs=limit, thread_entry=_settings["thread_entry"])
            atexit.register(_runner.shutdown, 5.0)
        return _runner


def configure(*, max_concurrent_jobs: Any = None,
              thread_entry: Callable[[Callable[[], None]], None] | None = None) -> dict:
    """How many jobs may run at once (1 to 64; more only helps with worker processes),
    and the function each runner thread starts in (see ``JobRunner``)."""
    if max_concurrent_jobs is not None:
        if (isinstance(max_concurrent_jobs, bool) or not isinstance(max_concurrent_jobs, int)
                or not 1 <= max_concurrent_jobs <= MAX_CONCURRENT_JOBS_LIMIT):
            message = f"must be an integer in [1, {MAX_CONCURRENT_JOBS_LIMIT}], got {max_concurrent_jobs!r}"
            return failure_result(InputError(f"max_concurrent_jobs {message}",
                                             [ErrorDetail(("max_concurrent_jobs",), message)]), None)
        _settings["max_concurrent_jobs"] = max_concurrent_jobs
    if thread_entry is not None:
        _settings["thread_entry"] = thread_entry
    with _runner_lock:
        if _runner is not None:
            _runner.max_concurrent_jobs = _settings["max_concurrent_jobs"] or _runner.max_concurrent_jobs
            _runner.thread_entry = _settings["thread_entry"] or _runner.thread_entry
    return {"status": "ok", "max_concurrent_jobs": default_runner().max_concurrent_jobs}


def submit(spec: Any, opts: Any = None, notify: Any = None) -> dict:
    return default_runner().submit(spec, opts, notify)


def status(job_id: Any) -> dict:
    return default_runner().status(job_id)


def result(job_id: Any, timeout: float | None = 0.0) -> dict:
    return default_runner().result(job_id, timeout)


def cancel(job_id: Any) -> dict:
    return default_runner().cancel(job_id)


def jobs() -> list[dict]:
    return default_runner().jobs()


def shutdown(timeout: float = 10.0) -> dict:
    return default_runner().shutdown(timeout)


def run_and_wait(spec: Any, spec_model, opts_model) -> dict:
    """A validated request run as a job, waited for (``run_nas`` with a non-local executor)."""
    runner = default_runner()
    try:
        job_id = runner.submit_checked(spec, spec_model, opts_model)["job_id"]
    except ServiceError as exc:
        return failure_result(exc, opts_model.run_id)
    try:
        return runner.result(job_id, timeout=None)
    except BaseException:  # e.g. KeyboardInterrupt: do not leave the search running
        runner.cancel(job_id)
        raise
