"""What runs a job's search, in this process or in a worker process.

``run_task`` is the one path every executor ends in: attach the datasets a task
shares, validate its request here, search, answer a result dict (never raises); a
``predict`` task (the job protocol's Keras predictions) answers ``prediction.predict``.
``worker_main`` is the entry point of a spawned worker process: tasks and cancel
requests arrive on one pipe, events and results leave on another. Both are
top-level functions over plain data, so any process can run them.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Callable

from .executors._base import JobTask

log = logging.getLogger(__name__)


def run_task(task: JobTask, on_event: Callable[[dict], None], should_stop: Callable[[], bool]) -> dict:
    if task.op == "predict":  # short: nothing to cancel or report
        from ..prediction import predict

        return predict(task.spec["run"], task.spec["x"], task.opts)
    from ..api import check, run_checked
    from ..boundary.schema import SCALE_OUT_KINDS
    from ..boundary.results import failure_result
    from ..data import registry
    from ..errors import ServiceError

    started = time.monotonic()
    run_id = task.opts.get("run_id")
    try:
        for descriptor in task.datasets.values():
            registry.attach_shared(descriptor)
        # The job is placed now; a scale-out executor stays, to send its trials to Dask.
        in_process = task.executor if task.executor.get("kind") in SCALE_OUT_KINDS else {"kind": "local"}
        spec, opts = check(task.spec, {**task.opts, "executor": in_process})
        opts = opts.model_copy(update={"on_event": on_event})
        return run_checked(spec, opts, should_stop=should_stop, started=started)
    except ServiceError as exc:
        return failure_result(exc, run_id, metadata={"duration_s": time.monotonic() - started})
    except Exception as exc:  # noqa: BLE001 - a job always ends with a result
        log.exception("job %s failed with an internal error", task.job_id)
        return failure_result(exc, run_id, metadata={"duration_s": time.monotonic() - started})


# --------------------------------------------------------------------------- worker process

# Messages, as (kind, payload) tuples. Owner → worker: ("job", JobTask), ("cancel", job_id),
# ("stop", None). Worker → owner: ("event", dict), ("result", dict).


# Searches are batch work: a worker yields the CPU to the process that owns it (the
# BEAM, through Pythonx), whose calls must stay quick while searches run.
WORKER_NICENESS = 10


def serve_pipes(inbox_fd: int, outbox_fd: int) -> None:
    """A worker process's entry point (see executors/process.py)."""
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    worker_main(Connection(inbox_fd, writable=False), Connection(outbox_fd, readable=False))


def worker_main(inbox: Connection, outbox: Connection) -> None:
    """Serve tasks one at a time until told to stop; exit at once when the owner is gone."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s")
    tasks: queue.SimpleQueue = queue.SimpleQueue()
    cancels: dict[str, threading.Event] = {}
    lock = threading.Lock()
    threading.Thread(target=_read_inbox, args=(inbox, tasks, cancels, lock), daemon=True,
                     name="cerebros-worker-inbox").start()
    while True:
        task = tasks.get()
        if task is None:
            return
        with lock:
            cancelled = cancels[task.job_id]
        _apply_env(task.env)
        result = run_task(task, lambda event: outbox.send(("event", event)), cancelled.is_set)
        outbox.send(("result", result))
        with lock:
            cancels.pop(task.job_id, None)


def _apply_env(env: dict) -> None:
    """The owner's operator settings (CEREBROS_*) as they were when the job was submitted."""
    from .runner import OPERATOR_ENV_PREFIX

    for key in [key for key in os.environ if key.startswith(OPERATOR_ENV_PREFIX) and key not in env]:
        del os.environ[key]
    os.environ.update(env)


def _read_inbox(inbox: Connection, tasks: queue.SimpleQueue, cancels: dict, lock: threading.Lock) -> None:
    while True:
        try:
            kind, payload = inbox.recv()
        except (EOFError, OSError):
            os._exit(0)  # the owner died: nobody is left to read a result, so stop now
        if kind == "job":
            with lock:
                cancels[payload.job_id] = threading.Event()
            tasks.put(payload)
        elif kind == "cancel":
            with lock:
                event = cancels.get(payload)
            if event is not None:
                event.set()
        elif kind == "stop":
            tasks.put(None)
            return
