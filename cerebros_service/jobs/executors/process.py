"""``{"kind": "process"}``: each running job has a worker process of its own.

TensorFlow is imported in the worker only, so the process that submits jobs (the
BEAM, through Pythonx) never loads it, and a search that crashes or exhausts memory
kills its worker, not the caller. A worker serves one job at a time and is reused
for up to ``max_jobs_per_worker`` jobs (Keras keeps memory per trained model that
only a fresh process gives back); one that died is replaced at the next job. Idle
workers are stopped after ``idle_timeout_s``.

A worker is a fresh ``sys.executable`` given this process's ``sys.path`` (so it
finds the packages a Pythonx ``sys_paths`` added), started with ``subprocess``
rather than ``multiprocessing``: it must not re-run the caller's ``__main__``
script, as a spawned ``multiprocessing`` child does. Tasks and cancel requests go
down one pipe and events and results come back on another, pickled by
``multiprocessing.connection``; the worker's stdout goes to this process's stderr.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait

from ...boundary.results import failure_result
from ...errors import ServiceError
from ._base import EventListener, Executor, JobTask, Reporter, StopCheck

log = logging.getLogger(__name__)

# The worker's whole command: take the owner's sys.path, then serve on the two pipes.
_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
         "from cerebros_service.jobs.worker import serve_pipes; serve_pipes(int(sys.argv[1]), int(sys.argv[2]))")


class WorkerCrashed(ServiceError):
    error_type = "worker_crashed"


class _Worker:
    """The owner's handle on one worker process and its two pipes."""

    def __init__(self) -> None:
        inbox_reader, inbox_writer = os.pipe()
        outbox_reader, outbox_writer = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(inbox_reader), str(outbox_writer), json.dumps(sys.path)],
                pass_fds=(inbox_reader, outbox_writer), stdin=subprocess.DEVNULL, stdout=2)
        finally:
            # The worker holds these ends now; with ours closed, EOF means it is gone.
            os.close(inbox_reader)
            os.close(outbox_writer)
        self.inbox = Connection(inbox_writer, readable=False)
        self.outbox = Connection(outbox_reader, writable=False)
        self.jobs_done = 0
        self.idle_since = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, task: JobTask, on_event: EventListener, should_stop: StopCheck) -> dict:
        self.inbox.send(("job", task))
        cancel_sent = False
        while True:
            if wait([self.outbox], timeout=0.1):
                try:
                    kind, payload = self.outbox.recv()
                except (EOFError, OSError):  # every write end is closed: the worker died
                    raise self._crashed() from None
                if kind == "event":
                    on_event(payload)
                elif kind == "result":
                    self.jobs_done += 1
                    return payload
            if not cancel_sent and should_stop():
                self.inbox.send(("cancel", task.job_id))
                cancel_sent = True

    def _crashed(self) -> WorkerCrashed:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return WorkerCrashed(
            f"the worker process (pid {self.pid}) {how} before the search finished; "
            "the next job gets a fresh worker. A search space too large for memory is a common cause.")

    def stop(self, timeout: float) -> None:
        try:
            self.inbox.send(("stop", None))
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self.inbox.close()
        self.outbox.close()


class ProcessExecutor(Executor):
    kind = "process"
    runs_elsewhere = True

    def __init__(self, idle_timeout_s: float = 300.0) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()

    def run(self, task: JobTask, on_event: EventListener, should_stop: StopCheck, report: Reporter) -> dict:
        try:
            worker = self._checkout()
        except Exception as exc:  # noqa: BLE001 - e.g. no executable to spawn
            log.exception("cannot start a worker process")
            return failure_result(WorkerCrashed(f"cannot start a worker process: {exc}"), task.opts.get("run_id"))
        report({"worker_pid": worker.pid})
        try:
            result = worker.run(task, on_event, should_stop)
        except WorkerCrashed as exc:
            self._retire(worker)
            return failure_result(exc, task.opts.get("run_id"))
        except Exception as exc:  # noqa: BLE001 - a broken pipe, an unpicklable task
            log.exception("job %s: the worker process failed", task.job_id)
            self._retire(worker)
            return failure_result(WorkerCrashed(f"the worker process failed: {exc}"), task.opts.get("run_id"))
        if worker.jobs_done >= task.executor.get("max_jobs_per_worker", 1):
            self._retire(worker)
        else:
            self._checkin(worker)
        return result

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in (*self._idle, *self._busy)]

    def trim(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [w for w in self._idle if now - w.idle_since > self.idle_timeout_s or not w.alive()]
            self._idle = [w for w in self._idle if w not in expired]
        for old in expired:
            old.stop(timeout=5)

    def _checkout(self) -> _Worker:
        self.trim()
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker()
        with self._lock:
            self._busy.add(worker)
        return worker

    def _checkin(self, worker: _Worker) -> None:
        worker.idle_since = time.monotonic()
        with self._lock:
            self._busy.discard(worker)
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        worker.stop(timeout=5)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            workers, self._idle = [*self._idle, *self._busy], []
            self._busy = set()
        for worker in workers:
            worker.stop(timeout)
