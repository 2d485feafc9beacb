"""The job runner: searches submitted as jobs, run from a bounded queue by threads it owns.

``submit`` validates at once (an invalid request is answered there, with the usual
failed result) and returns ``{"job_id", "status": "queued"}``; at most
``max_concurrent_jobs`` jobs run at a time (default 1), the rest wait in order.
Where a job's search runs is its executor's business (``executors/``). Each job
pushes its progress and its end to a ``notify`` target, so a caller never polls:

- a Python callable gets ``{"job_id", "event": {…}}`` per event and, once,
  ``{"job_id", "done": result}``;
- anything else is taken for a Pythonx PID: the same dicts, orjson-encoded, arrive
  in that Elixir process as ``{:cerebros_job, %Pythonx.Object{}}`` (one bytes
  object to decode instead of a tree of Python objects).

Job states: ``queued`` → ``running`` (→ ``cancelling``) → the result's own status
(``success``, ``failed`` or ``cancelled``). Cancelling is cooperative: the search
stops within a training batch, keeps the trials it finished and its best model,
and ends with ``status: "cancelled"``. A queued job is cancelled on the spot.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
import time
from typing import Any, Callable

from ..boundary.results import failure_result, utc_timestamp
from ..errors import ErrorDetail, InputError, ServiceError
from .executors import EXECUTORS, Executor, JobTask

log = logging.getLogger(__name__)

JOB_TAG = "cerebros_job"
IDLE_CHECK_S = 30.0  # how often an idle runner thread lets executors give back idle workers
OPERATOR_ENV_PREFIX = "CEREBROS_"
ACTIVE_STATES = ("queued", "running", "cancelling")
# Predictions that need the Keras model run in worker processes (see submit_predict):
# at most this many at once, beside the searches; a worker keeps its loaded models.
MAX_CONCURRENT_PREDICTIONS = 2
PREDICTIONS_PER_WORKER = 1000


class QueueFull(ServiceError):
    error_type = "queue_full"


class _Job:
    def __init__(self, task: JobTask, run_id: str, listeners: list[Callable[[dict], None]]) -> None:
        self.task = task
        self.id = task.job_id
        self.run_id = run_id
        self.listeners = listeners
        self.state = "queued"
        self.result: dict | None = None
        self.info: dict = {}
        self.trials_done = 0
        self.best_so_far = None
        self.submitted_at = utc_timestamp()
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.stop_requested = threading.Event()
        self.finished = threading.Event()

    def status(self) -> dict:
        return {
            "job_id": self.id, "op": self.task.op, "status": self.state, "run_id": self.run_id,
            "executor": self.task.executor["kind"], "worker_pid": self.info.get("worker_pid"),
            "trials_done": self.trials_done, "best_so_far": self.best_so_far,
            "submitted_at": self.submitted_at, "started_at": self.started_at, "finished_at": self.finished_at,
        }

    def publish(self, message: dict) -> None:
        for listener in self.listeners:
            try:
                listener(message)
            except Exception:  # noqa: BLE001 - a broken listener never stops a job
                log.exception("job %s: a listener failed; the job goes on", self.id)


class JobRunner:
    def __init__(self, *, max_concurrent_jobs: int = 1, max_queued_jobs: int = 1000,
                 keep_finished: int = 200, default_executor: str = "process",
                 thread_entry: Callable[[Callable[[], None]], None] | None = None) -> None:
        self.max_concurrent_jobs = max_concurrent_jobs
        self.max_queued_jobs = max_queued_jobs
        self.keep_finished = keep_finished
        self.default_executor = default_executor
        # Runs each runner thread's loop. Inside Pythonx it must be a function defined
        # by a Pythonx eval: only such a frame lets a thread message Elixir (docs/elixir.md).
        self.thread_entry = thread_entry or (lambda loop: loop())
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: dict[str, _Job] = {}
        self._queue: collections.deque[_Job] = collections.deque()
        self._finished: collections.deque[str] = collections.deque()
        self._threads: list[threading.Thread] = []
        self._executors: dict[str, Executor] = {}
        self._prediction_slots = threading.BoundedSemaphore(MAX_CONCURRENT_PREDICTIONS)
        self._closing = False

    # ------------------------------------------------------------------ public

    def submit(self, spec: Any, opts: Any = None, notify: Any = None) -> dict:
        """Validate and queue a search: ``{"job_id", "status": "queued", "run_id"}``, or the
        failed result of an invalid request. Never raises."""
        from ..api import _given_run_id, check

        try:
            spec_model, opts_model = check(spec, opts)
            return self.submit_checked(spec, spec_model, opts_model, notify)
        except ServiceError as exc:
            return failure_result(exc, _given_run_id(opts))
        except Exception as exc:  # noqa: BLE001 - the front door never raises
            log.exception("submit failed with an internal error")
            return failure_result(exc, _given_run_id(opts))

    def submit_checked(self, spec: Any, spec_model, opts_model, notify: Any = None) -> dict:
        """``submit`` for a request ``api.check`` accepted (``spec`` as the caller gave it)."""
        from ..boundary.normalize import normalize
        from ..boundary.schema import SCALE_OUT_KINDS
        from ..data import registry
        from ..events import make_event_sink

        executor = (opts_model.executor.model_dump() if opts_model.executor is not None
                    else {"kind": self.default_executor, **_defaults(self.default_executor)})
        datasets = {}
        name = spec_model.dataset_id
        # A job placed in another process gets the registered arrays as shared files; local
        # and scale-out jobs keep their search loop here, with this registry.
        elsewhere = executor["kind"] not in ("local", *SCALE_OUT_KINDS) and EXECUTORS[executor["kind"]].runs_elsewhere
        if elsewhere and name is not None and registry.get_dataset(name) is not None:
            datasets[name] = registry.shared_descriptor(name)
        job_id = "job-" + secrets.token_hex(6)
        task = JobTask(job_id, normalize(spec, root="spec"), _plain_opts(opts_model), executor, datasets,
                       _operator_env())
        listeners = []
        legacy = make_event_sink(opts_model.run_id, opts_model.on_event, opts_model.notify)
        if legacy is not None:  # opts.on_event / opts.notify get bare events, as with run_nas
            listeners.append(_events_only(legacy))
        if notify is not None:
            listeners.append(notify if callable(notify) else pythonx_sender(notify))
        job = _Job(task, opts_model.run_id, listeners)
        with self._lock:
            if self._closing:
                raise ServiceError("the job runner is shutting down; submit again after a restart")
            waiting = len(self._queue)
            if waiting >= self.max_queued_jobs:
                raise QueueFull(f"the job queue is full ({waiting} jobs waiting); try again later",
                                [ErrorDetail((), f"{waiting} jobs are waiting")])
            self._jobs[job_id] = job
            self._queue.append(job)
            self._start_threads()
            self._wakeup.notify()
        return {"job_id": job_id, "status": "queued", "run_id": opts_model.run_id}

    def submit_predict(self, run: Any, x: Any, opts: Any = None, notify: Any = None) -> dict:
        """``prediction.predict(run, x, opts)`` in a worker process of the process executor,
        as a job: ``{"job_id", "status": "queued", "run_id"}`` at once, its result pushed to
        ``notify`` as ``{"job_id", "done": result}`` (and kept for ``result``).

        For the Keras model, so this process never imports TensorFlow. It does not wait
        behind searches: each runs on a thread of its own, at most
        MAX_CONCURRENT_PREDICTIONS at once, and reuses idle workers (TensorFlow and the
        models they loaded stay there). ``x`` is plain data or a numpy array (it pickles).
        """
        from pathlib import PurePath

        run_id = PurePath(run).name if isinstance(run, str) else None
        task = JobTask("job-" + secrets.token_hex(6), {"run": run, "x": x}, {} if opts is None else opts,
                       {"kind": "process", "max_jobs_per_worker": PREDICTIONS_PER_WORKER},
                       env=_operator_env(), op="predict")
        listeners = [] if notify is None else [notify if callable(notify) else pythonx_sender(notify)]
        job = _Job(task, run_id, listeners)
        with self._lock:
            if self._closing:
                raise ServiceError("the job runner is shutting down; predict again after a restart")
            job.state, job.started_at = "running", utc_timestamp()
            self._jobs[job.id] = job
        threading.Thread(target=self.thread_entry, args=(lambda: self._predict(job),), daemon=True,
                         name=f"cerebros-predict-{job.id}").start()
        return {"job_id": job.id, "status": "queued", "run_id": run_id}

    def _predict(self, job: _Job) -> None:
        with self._prediction_slots:
            self._run(job)

    def status(self, job_id: Any) -> dict:
        job, failure = self._find(job_id)
        return failure or job.status()

    def result(self, job_id: Any, timeout: float | None = 0.0) -> dict:
        """The job's result once it has ended (waiting up to ``timeout`` seconds, None:
        until it ends); before that, its status (``status`` queued/running/cancelling)."""
        job, failure = self._find(job_id)
        if failure:
            return failure
        if timeout is None or timeout > 0:
            job.finished.wait(timeout)
        return job.result if job.finished.is_set() else job.status()

    def cancel(self, job_id: Any) -> dict:
        """Cancel a job: a queued one at once, a running one cooperatively (see module doc).
        Answers its status afterwards; cancelling an ended job changes nothing."""
        from ..api import cancelled_result

        job, failure = self._find(job_id)
        if failure:
            return failure
        with self._lock:
            queued = job.state == "queued"
            if queued:
                self._queue.remove(job)
            elif job.state == "running":
                job.state = "cancelling"
                job.stop_requested.set()
        if queued:
            self._finish(job, cancelled_result(job.run_id, time.monotonic()))
        return job.status()

    def jobs(self) -> list[dict]:
        with self._lock:
            return [job.status() for job in self._jobs.values()]

    def shutdown(self, timeout: float = 10.0) -> dict:
        """Cancel every job and wait up to ``timeout`` s for the running ones to end; then
        stop the worker processes. Later submits are refused."""
        with self._lock:
            self._closing = True
            active = [job for job in self._jobs.values() if job.state in ACTIVE_STATES]
            self._wakeup.notify_all()
        for job in active:
            self.cancel(job.id)
        deadline = time.monotonic() + timeout
        unfinished = [job.id for job in active if not job.finished.wait(max(0.0, deadline - time.monotonic()))]
        for executor in list(self._executors.values()):
            executor.close(timeout=max(1.0, deadline - time.monotonic()))
        return {"status": "ok", "cancelled": [job.id for job in active], "unfinished": unfinished}

    # ------------------------------------------------------------------ internals

    def _find(self, job_id: Any) -> tuple[_Job | None, dict | None]:
        from ..boundary.normalize import normalize

        try:
            job_id = normalize(job_id, root="job_id")
        except ServiceError as exc:
            return None, failure_result(exc, None)
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            message = f"names no job ({job_id!r}); jobs are kept until {self.keep_finished} newer ones ended"
            return None, failure_result(InputError(f"job_id {message}", [ErrorDetail(("job_id",), message)]), None)
        return job, None

    def _start_threads(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.max_concurrent_jobs:
            thread = threading.Thread(target=self.thread_entry, args=(self._serve,), daemon=True,
                                      name=f"cerebros-jobs-{len(self._threads)}")
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    if not self._wakeup.wait(timeout=IDLE_CHECK_S):
                        self._lock.release()
                        try:  # nothing to do for a while: give back idle worker processes
                            for executor in list(self._executors.values()):
                                executor.trim()
                        finally:
                            self._lock.acquire()
                if not self._queue:  # shutting down
                    self._threads = [t for t in self._threads if t is not threading.current_thread()]
                    return
                job = self._queue.popleft()
                job.state = "running"
                job.started_at = utc_timestamp()
            self._run(job)

    def _run(self, job: _Job) -> None:
        try:
            executor = self._executor(job.task.executor["kind"])
            result = executor.run(job.task, lambda event: self._on_event(job, event),
                                  job.stop_requested.is_set, job.info.update)
        except Exception as exc:  # noqa: BLE001 - a job always ends with a result
            log.exception("job %s failed with an internal error", job.id)
            result = failure_result(exc, job.run_id)
        self._finish(job, result)

    def _on_event(self, job: _Job, event: dict) -> None:
        if event.get("type") == "trial":
            job.trials_done += 1
            job.best_so_far = event.get("best_so_far")
        job.publish({"job_id": job.id, "event": {**event, "job_id": job.id}})

    def _finish(self, job: _Job, result: dict) -> None:
        with self._lock:
            job.result = result
            job.state = result.get("status", "failed")
            job.finished_at = utc_timestamp()
            self._finished.append(job.id)
            while len(self._finished) > self.keep_finished:
                self._jobs.pop(self._finished.popleft(), None)
        job.finished.set()
        job.publish({"job_id": job.id, "done": result})

    def _executor(self, kind: str) -> Executor:
        with self._lock:
            executor = self._executors.get(kind)
            if executor is None:
                executor = self._executors[kind] = EXECUTORS[kind]()
            return executor


def _operator_env() -> dict:
    """The operator's settings in force now (CEREBROS_* variables), for a job's worker."""
    return {key: value for key, value in os.environ.items() if key.startswith(OPERATOR_ENV_PREFIX)}


def _defaults(kind: str) -> dict:
    from ..boundary.schema import ProcessExecutor

    return {"max_jobs_per_worker": ProcessExecutor.model_fields["max_jobs_per_worker"].default} \
        if kind == "process" else {}


def _plain_opts(opts_model) -> dict:
    """Validated opts as plain data for another process: what the caller set, and the
    run_id chosen here (the other defaults follow from the task's ``env``)."""
    plain = opts_model.model_dump(exclude_unset=True)
    plain["run_id"] = opts_model.run_id
    plain.pop("executor", None)
    return plain


def _events_only(listener: Callable[[dict], None]) -> Callable[[dict], None]:
    def forward(message: dict) -> None:
        if "event" in message:
            listener(message["event"])

    return forward


def pythonx_sender(pid: Any) -> Callable[[dict], None]:
    """A listener that sends each job message to an Elixir pid as orjson bytes."""
    from ..events import send_to_pythonx_pid
    from ..jsonsafe import dumps

    return lambda message: send_to_pythonx_pid(pid, JOB_TAG, dumps(message))
