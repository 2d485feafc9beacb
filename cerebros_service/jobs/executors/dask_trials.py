"""``{"kind": "processes" | "dask"}``: a search's trials on Dask workers, its loop in the caller.

``open_trainer(opts.executor, device=…)`` starts a ``LocalCluster`` for the run
(``processes``: one thread per worker process, closed by ``close()``) or connects
to a running scheduler (``dask``: nothing started or stopped), and answers a
``DaskTrainer``: a callable with ``search.train.train_population``'s signature that
``run.run_search(…, trainer=…)`` calls once per generation. The strategy asks and
tells in the caller as before; per generation:

- the candidates are split into work units exactly as ``train_population`` would
  (``plan_units``: its fused chunks, then the candidates that train alone), so a
  record never depends on the number of workers;
- the dataset is scattered once per run (each new worker process gets one copy);
- at most one unit per worker is in flight, so a running unit is always a
  running trial: records come back as units finish (out of trial order), are
  offered to the same model saver ``train_population`` uses (models are saved
  *here*, from the weights the worker sends back: ``save_dir`` is the caller's
  folder), and reach ``on_record`` at once;
- a worker is restarted (``Client.restart_workers``) once its process has trained
  ``trials_per_worker`` trials or its memory after a unit passes ``memory_limit``;
- a unit whose worker died is tried ``retries`` more times on another worker, then
  its trials are failed records saying so; faults are listed in ``summary()``;
- cancelling (``stop.should_stop``) sets a Dask ``Event`` that running trials poll
  every ``CANCEL_POLL_S``; the deadline travels as a wall-clock instant. Units not
  yet sent are dropped; running ones end within a batch and report what they
  did, or are cancelled after ``STOP_GRACE_S``.

Importing this module imports neither Dask nor TensorFlow.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from ...errors import ErrorDetail, ServiceError
from ...search.device import available_cores
from ...search.records import Candidate, TrialRecord
from ...search.train import (ModelSaver, RecordSink, StopCheck, TrainingData, WorkUnit, describe, failed_record,
                             plan_work)
from ...settings import Direction, ExecutionSettings, Standing, TrainSettings
from .dask_tasks import TrainTask, WorkerSetup, run_train_task

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the caller looks at finished units and at its stop check
STOP_GRACE_S = 30.0  # after a stop, how long running units may take to report before they are cancelled
DEADLINE_NUDGE_S = 5.0  # after the deadline, when running units are also told through the cancel event
MAX_DATA_RESENDS = 3  # per call: units requeued because the scattered dataset was lost


class ExecutorError(ServiceError):
    """The Dask cluster could not be started or reached, or went away: the run fails."""

    error_type = "executor_error"


def plan_units(candidates: list[Candidate], data: TrainingData, training: TrainSettings,
               execution: ExecutionSettings) -> list[WorkUnit]:
    """``train_population``'s own plan (search.train.plan_work): one Dask task per unit."""
    return plan_work(candidates, data, training, execution)


@dataclass
class _Attempt:
    unit: WorkUnit
    number: int = 0  # 0: first try
    avoid: str | None = None  # name of the worker that died running it
    worker: str | None = None  # the worker it was sent to
    started: float = 0.0


class DaskTrainer:
    """A ``run_search`` trainer whose work units run on Dask workers (see the module doc)."""

    def __init__(self, client, *, kind: str, setup: WorkerSetup, retries: int = 1,
                 trials_per_worker: int | None = None, memory_limit: int | None = None,
                 timeout: float = 30.0, cluster=None) -> None:
        self.client, self.cluster, self.kind, self.setup = client, cluster, kind, setup
        self.retries, self.trials_per_worker, self.memory_limit = retries, trials_per_worker, memory_limit
        self.timeout = timeout
        self.cancel_event = f"cerebros-cancel-{secrets.token_hex(6)}"
        self._token = secrets.token_hex(4)
        self._submitted = 0
        self._data: TrainingData | None = None
        self._data_future = None
        self._recycle: set[str] = set()
        self._no_workers_since: float | None = None
        self._closed = False
        self.faults: list[dict] = []
        self.worker_restarts = 0
        self.dataset_copies = 0
        self.tasks = 0
        self.workers_seen: dict[str, dict] = {}  # worker name -> {"pid", "rss", "trials", "device", "cuda"}
        self._cancel_set = False

    # ------------------------------------------------------------------ the trainer

    def __call__(
        self,
        candidates: list[Candidate],
        data: TrainingData,
        training: TrainSettings,
        metric: str,
        direction: Direction,
        *,
        execution: ExecutionSettings = ExecutionSettings(),
        data_seed: int = 0,
        stop: StopCheck = StopCheck(),
        save_dir: str | None = None,
        save_threshold: Standing | None = None,
        keep_weights: bool = False,
        on_record: Callable[[TrialRecord], None] | None = None,
    ) -> list[TrialRecord]:
        sink = RecordSink(ModelSaver(data, training, direction, save_dir, save_threshold), keep_weights, on_record)
        finished = sink  # records of one unit go in together (RecordSink.take_all)

        template = TrainTask(
            candidates=(), chunk_index=None, training=training, execution=execution, metric=metric,
            direction=direction, data_seed=data_seed, setup=self.setup,
            deadline_unix=None if stop.deadline is None else time.time() + (stop.deadline - time.monotonic()),
            cancel_event=self.cancel_event,
            weights="all" if keep_weights else ("better" if save_dir is not None else "none"),
            weights_above=save_threshold,
        )
        pending = collections.deque(_Attempt(unit) for unit in plan_units(candidates, data, training, execution))
        running: dict = {}  # future -> _Attempt
        self._share(data)
        if self._cancel_set:  # a stop of an earlier call: this one starts afresh
            self._dask("clearing the cancel event", self._event().clear)
            self._cancel_set = False
        resends = 0
        stopping, stopped_at = None, 0.0
        try:
            while pending or running:
                if stopping is None:
                    stopping = stop.reason()
                    if stopping is not None:
                        pending.clear()
                        stopped_at = time.monotonic()
                        if stopping == "cancelled":
                            self._set_cancel()
                else:
                    waited = time.monotonic() - stopped_at
                    if waited > STOP_GRACE_S:
                        log.warning("trials %s did not stop within %.0f s of the %s; cancelled without a record",
                                    sorted(t for a in running.values() for t in a.unit.trials), STOP_GRACE_S, stopping)
                        self._cancel(running)
                        break
                    if stopping == "max_time_seconds" and waited > DEADLINE_NUDGE_S:
                        self._set_cancel()  # the workers' clocks may run behind ours
                if stopping is None:
                    self._send(pending, running, template)
                for future in self._finished(running):
                    attempt = running.pop(future)
                    requeue = self._collect(future, attempt, pending, finished, stopping, metric, direction,
                                            training)
                    if requeue and resends < MAX_DATA_RESENDS:
                        resends += 1
                        self._share(data, again=True)
                        pending.appendleft(attempt)
                    elif requeue:
                        self._fail(attempt, "the Dask cluster kept losing the dataset", finished, metric,
                                   direction, training)
                self._restart_done(running)
        except BaseException:  # an executor error, a listener's, an interrupt: leave nothing running
            self._cancel(running)
            raise
        return sink.in_trial_order()

    def _dask(self, what: str, call, *args, **kwargs):
        """A call into Dask; its failure (lost scheduler, broken connection) is the executor's."""
        try:
            return call(*args, **kwargs)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ExecutorError(f"the Dask cluster failed while {what}: {describe(exc)}") from exc

    # ------------------------------------------------------------------ sending

    def _share(self, data: TrainingData, *, again: bool = False) -> None:
        """Scatter the dataset once per run (again only when the cluster lost every copy)."""
        if self._data is data and not again and self._data_future is not None:
            return
        self._data_future = self._dask("sending the dataset", self.client.scatter, data, broadcast=True, hash=False)
        self._data = data
        self.dataset_copies += 1

    def _send(self, pending: collections.deque, running: dict, template: TrainTask) -> None:
        if not pending:
            return
        workers = self._workers()
        if not workers:
            self._no_workers_since = self._no_workers_since or time.monotonic()
            if time.monotonic() - self._no_workers_since > self.timeout:
                raise ExecutorError(f"the Dask cluster has had no worker for {self.timeout:g} s "
                                    "(opts.executor.timeout); start workers with `dask worker <scheduler address>`")
            return
        self._no_workers_since = None
        busy = {a.worker for a in running.values()}
        free = [address for address in workers if address not in busy and address not in self._recycle]
        placed = []
        for attempt in pending:
            if not free:
                break
            others = [a for a in free if workers[a] != attempt.avoid]
            if not others and any(name != attempt.avoid for name in workers.values()):
                continue  # a retry waits for a worker other than the one that died
            address = (others or free)[0]
            free.remove(address)
            placed.append(attempt)
            attempt.worker, attempt.started = address, time.monotonic()
            task = _with_unit(template, attempt.unit)
            self._submitted += 1
            key = f"cerebros-trials-{self._token}-{self._submitted}-t{attempt.unit.trials[0]}"
            future = self._dask("submitting trials", self.client.submit, run_train_task, task, self._data_future,
                                key=key, pure=False, workers=[address], allow_other_workers=True)
            running[future] = attempt
        for attempt in placed:
            pending.remove(attempt)

    def _workers(self) -> dict[str, str]:
        """Address -> name of the workers the scheduler knows now."""
        info = self._dask("listing workers", scheduler_info, self.client).get("workers", {})
        return {address: str(worker.get("name", address)) for address, worker in info.items()}

    # ------------------------------------------------------------------ receiving

    def _finished(self, running: dict) -> list:
        if not running:
            time.sleep(POLL_S)
            return []
        from distributed import wait

        def wait_a_little():
            try:
                with self.client.as_current():  # wait() uses the current client; ours is not the default
                    return wait(list(running), timeout=POLL_S, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                return []

        return list(self._dask("waiting for trials", wait_a_little))

    def _collect(self, future, attempt: _Attempt, pending, finished, stopping, metric, direction,
                 training) -> bool:
        """Hand one finished unit's records on; True when it must be sent again (data lost)."""
        from distributed.scheduler import KilledWorker

        try:
            result = future.result()
        except KilledWorker as exc:
            worker = exc.last_worker
            address, name = getattr(worker, "address", "?"), getattr(worker, "name", None)
            reason = f"the Dask worker running it ({address}) died: killed, out of memory or crashed"
            retry = attempt.number < self.retries and stopping is None
            self.faults.append({"trials": attempt.unit.trials, "worker": address, "error": reason,
                                "attempt": attempt.number + 1, "retried": retry})
            if retry:
                avoid = None if name is None else str(name)
                pending.appendleft(_Attempt(attempt.unit, attempt.number + 1, avoid=avoid))
            else:
                tries = f" (tried {attempt.number + 1} times)" if attempt.number else ""
                self._fail(attempt, reason + tries, finished, metric, direction, training)
            return False
        except Exception as exc:  # noqa: BLE001 - the unit's own failure, or it was cancelled
            from concurrent.futures import CancelledError

            if isinstance(exc, CancelledError):
                if stopping is not None:
                    return False
                if self.client.status not in ("running", "connecting"):
                    raise ExecutorError(f"lost the Dask scheduler during the search ({describe(exc)})") from exc
                return True  # its input (the scattered dataset) was lost: send it again
            self._fail(attempt, f"the Dask task failed: {describe(exc)}", finished, metric, direction, training)
            return False
        finally:
            future.release()
        self.tasks += 1
        self.workers_seen[result.name] = {"pid": result.pid, "rss": result.rss, "trials": result.trials_in_process,
                                          "device": result.device, "cuda": result.cuda_visible_devices}
        if self._should_recycle(result):
            self._recycle.add(result.worker)
        finished.take_all(list(result.records))
        return False

    def _fail(self, attempt: _Attempt, reason: str, finished, metric, direction, training) -> None:
        from ...search.tracking import EpochTracker

        unit = attempt.unit
        wall = time.monotonic() - attempt.started
        chunk = None if unit.chunk_index is None else {"index": unit.chunk_index, "size": len(unit.candidates),
                                                       "wall_s": wall}
        for candidate in unit.candidates:
            tracker = EpochTracker(metric, direction, training.patience, attempt.started)
            finished.take(failed_record(candidate, metric, attempt.started, tracker, reason,
                                   execution="sequential" if chunk is None else "fused",
                                   duration_s=wall / len(unit.candidates), chunk=chunk))

    # ------------------------------------------------------------------ recycling and stopping

    def _should_recycle(self, result) -> bool:
        if self.trials_per_worker is not None and result.trials_in_process >= self.trials_per_worker:
            return True
        return self.memory_limit is not None and result.rss > self.memory_limit

    def _restart_done(self, running: dict) -> None:
        """Restart the workers due for it that have nothing in flight; then check the dataset."""
        busy = {a.worker for a in running.values()}
        due = [address for address in self._recycle if address not in busy]
        if not due:
            return
        self._recycle.difference_update(due)
        try:
            self.client.restart_workers(due, timeout=self.timeout)
            self.worker_restarts += len(due)
        except Exception as exc:  # noqa: BLE001 - e.g. workers without a nanny: stop recycling
            log.warning("cannot restart Dask workers %s (%s); worker recycling is off for this run", due, exc)
            self.faults.append({"trials": [], "worker": ", ".join(due), "attempt": 0, "retried": False,
                                "error": f"worker restart failed, recycling turned off: {describe(exc)}"})
            self.trials_per_worker = self.memory_limit = None
        if not self._data_alive():
            self._share(self._data, again=True)

    def _data_alive(self) -> bool:
        try:
            return bool(self.client.who_has(self._data_future).get(self._data_future.key))
        except Exception:  # noqa: BLE001 - a forgotten (lost) future raises here
            return False

    def _event(self):
        from distributed import Event

        return Event(self.cancel_event, client=self.client)

    def _set_cancel(self) -> None:
        if self._cancel_set:
            return
        self._cancel_set = True
        try:
            self._event().set()
        except Exception as exc:  # noqa: BLE001 - the units are cancelled after the grace period anyway
            log.warning("cannot set the Dask cancel event: %s", exc)

    def _cancel(self, running: dict) -> None:
        try:
            if running:
                self.client.cancel(list(running), force=True)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot cancel Dask tasks: %s", exc)
        running.clear()

    # ------------------------------------------------------------------ reporting and closing

    def summary(self) -> dict:
        """What the executor did, as plain data (the result's ``metadata.executor``)."""
        return {
            "kind": self.kind, "tasks": self.tasks, "workers": len(self.workers_seen),
            "worker_restarts": self.worker_restarts, "dataset_copies": self.dataset_copies,
            "devices": sorted({w["device"] for w in self.workers_seen.values() if w["device"]}),
            # worker name -> its CUDA_VISIBLE_DEVICES (one GPU each when this machine has GPUs)
            "cuda_visible_devices": {name: w["cuda"] for name, w in sorted(self.workers_seen.items())
                                     if w["cuda"] is not None},
            "faults": list(self.faults),
        }

    def worker_memory(self) -> dict[str, int]:
        """Resident bytes of each worker (by name), as last reported after a unit."""
        return {name: w["rss"] for name, w in self.workers_seen.items()}

    def close(self) -> None:
        """Disconnect; a ``processes`` cluster is shut down, a ``dask`` one left running."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close(timeout=10)
        except Exception as exc:  # noqa: BLE001
            log.warning("closing the Dask client failed: %s", exc)
        if self.cluster is not None:
            try:
                self.cluster.close(timeout=20)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the local Dask cluster failed: %s", exc)


def scheduler_info(client) -> dict:
    try:
        return client.scheduler_info(n_workers=-1)  # every worker (newer Dask lists 5 by default)
    except TypeError:  # older Dask: always every worker
        return client.scheduler_info()


def _with_unit(template: TrainTask, unit: WorkUnit) -> TrainTask:
    from dataclasses import replace

    return replace(template, candidates=unit.candidates, chunk_index=unit.chunk_index)


# --------------------------------------------------------------------------- opening


def open_trainer(executor, *, device: str = "auto") -> DaskTrainer:
    """A trainer for ``opts.executor`` (a ``ProcessesExecutor`` or ``DaskExecutor`` model)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        message = "needs Dask: install the extra, pip install 'cerebros-service[distributed]'"
        raise ExecutorError(f"opts.executor kind {executor.kind!r} {message}",
                            [ErrorDetail(("opts", "executor", "kind"), message)]) from None
    from ...search.device import keras_backend

    if executor.kind == "processes":
        return _local_cluster(executor, device, keras_backend())
    return _connect(executor, device, keras_backend())


def _local_cluster(executor, device: str, backend: str) -> DaskTrainer:
    from distributed import Client

    from .local_cluster import start_local_cluster

    gpus = visible_gpus(device)
    workers = executor.workers or len(gpus) or available_cores()
    threads = max(1, available_cores() // workers)
    env = {"CEREBROS_WORKER_THREADS": str(threads), "KERAS_BACKEND": backend}
    cluster = client = None
    try:
        cluster = start_local_cluster(workers, env)
        client = Client(cluster, set_as_default=False, timeout=executor.timeout)
        client.wait_for_workers(workers, timeout=executor.timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to start is the executor's
        for thing in (client, cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001
                    pass
        raise ExecutorError(f"could not start a local Dask cluster of {workers} worker processes within "
                            f"{executor.timeout:g} s: {describe(exc)}") from exc
    setup = WorkerSetup(backend=backend, device=device, threads=threads, gpus=gpus)
    return DaskTrainer(client, kind="processes", cluster=cluster, setup=setup, retries=executor.retries,
                       trials_per_worker=executor.trials_per_worker, memory_limit=executor.memory_limit,
                       timeout=executor.timeout)


def _connect(executor, device: str, backend: str) -> DaskTrainer:
    from distributed import Client

    # The operator's address for the cluster the request named (never one a request gave).
    address, timeout = executor.scheduler_address(), executor.timeout
    where = f"the Dask scheduler of cluster {executor.cluster!r} ({address})"
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, a refused handshake
        message = (f"cannot reach {where} within {timeout:g} s ({describe(exc)}); the operator starts it "
                   "with `dask scheduler`, or names another cluster")
        raise ExecutorError(message, [ErrorDetail(("opts", "executor", "cluster"), message)]) from exc
    try:
        client.wait_for_workers(executor.workers, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        have = len(scheduler_info(client).get("workers", {}))
        client.close()
        message = (f"{where} has {have} worker(s), fewer than opts.executor.workers "
                   f"({executor.workers}), after {timeout:g} s; start workers with `dask worker {address}`")
        raise ExecutorError(message, [ErrorDetail(("opts", "executor", "workers"), message)]) from exc
    setup = WorkerSetup(backend=backend, device=device)
    return DaskTrainer(client, kind="dask", setup=setup, retries=executor.retries,
                       trials_per_worker=executor.trials_per_worker, memory_limit=executor.memory_limit,
                       timeout=timeout)


def visible_gpus(device: str) -> tuple[str, ...]:
    """GPU ids this machine's workers may use, without importing a framework: none for
    ``device="cpu"``, else ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi`` lists."""
    if device == "cpu":
        return ()
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        ids = [part.strip() for part in given.split(",") if part.strip()]
        return tuple(ids[: ids.index("-1")] if "-1" in ids else ids)  # CUDA stops at an invalid id
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    if listed.returncode != 0:
        return ()
    return tuple(line.strip() for line in listed.stdout.splitlines() if line.strip())

