"""What a Dask worker runs for a scale-out search: one work unit in, its records out.

A work unit is one fused chunk or one candidate, planned by the caller exactly as
``search.train.train_population`` would plan them (``dask_trials.plan_units``), so
a record does not depend on how many workers there are. ``run_train_task`` is a
top-level function and its payload (``TrainTask``) frozen plain data: candidates,
settings, seeds, a wall-clock deadline and the *name* of the run's cancel event.
The dataset (``TrainingData``) arrives separately, scattered once per run.

On a worker process the first task prepares it once: the caller's Keras backend,
its device (``CUDA_VISIBLE_DEVICES``: one GPU per worker, or none) and its thread
pools (TensorFlow intra/inter-op threads, OMP/MKL/OpenBLAS), before TensorFlow
is imported. Tasks in one process run one at a time: Keras keeps global state.
Nothing here imports TensorFlow, Keras or Dask at import time.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Literal

from ...search.records import Candidate, TrialRecord
from ...search.train import StopCheck, TrainingData
from ...settings import Direction, ExecutionSettings, Standing, TrainSettings, outranks

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.25  # how often a running trial asks the scheduler whether the run was cancelled
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # TensorFlow's: device.py
WORKER_THREADS_ENV = "CEREBROS_WORKER_THREADS"  # an operator may set it on `dask worker` machines

WeightsPolicy = Literal["all", "better", "none"]


@dataclass(frozen=True)
class WorkerSetup:
    """How a worker process is prepared before its first trial.

    ``threads``: CPU threads for the trainer's thread pools (None: the worker's
    ``CEREBROS_WORKER_THREADS``, else the framework's defaults). ``gpus``: the GPU
    ids to spread this cluster's workers over, one each by worker name (None: leave
    ``CUDA_VISIBLE_DEVICES`` as the worker was started; empty: hide every GPU).
    """

    backend: str
    device: Literal["auto", "cpu", "gpu"] = "auto"
    threads: int | None = None
    gpus: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TrainTask:
    """One work unit: ``chunk_index`` set trains ``candidates`` as that fused chunk, else
    each candidate alone, in order (``search.train.train_one``)."""

    candidates: tuple[Candidate, ...]
    chunk_index: int | None
    training: TrainSettings
    execution: ExecutionSettings
    metric: str
    direction: Direction
    data_seed: int
    setup: WorkerSetup
    deadline_unix: float | None = None  # time.time() instant; None: no deadline
    cancel_event: str | None = None  # name of the distributed.Event the caller sets on cancel
    weights: WeightsPolicy = "none"  # which records come back with their best epoch's weights
    weights_above: Standing | None = None  # "better": those that outrank this one


@dataclass(frozen=True)
class TaskResult:
    records: tuple[TrialRecord, ...]
    worker: str  # the worker's address
    name: str  # the worker's name (kept across restarts of a LocalCluster worker)
    pid: int
    rss: int  # the worker process's resident memory after the task, bytes
    trials_in_process: int  # trials this worker process has trained so far
    device: str
    cuda_visible_devices: str | None = None  # as this worker process runs with it


_one_at_a_time = threading.Lock()
_process: dict = {"prepared": False, "trials": 0, "device": None}


def run_train_task(task: TrainTask, data: TrainingData) -> TaskResult:
    """Train one work unit on this worker; records in trial order (weights per ``task.weights``)."""
    with _one_at_a_time:
        device = _prepare(task.setup)
        stop = StopCheck(deadline=_monotonic(task.deadline_unix),
                         should_stop=None if task.cancel_event is None else CancelPoll(task.cancel_event))
        records = _train(task, data, stop)
        _process["trials"] += len(records)
        records = tuple(_keep_weights(record, task) for record in records)
        worker_address, worker_name = _worker_identity()
        return TaskResult(records, worker_address, worker_name, os.getpid(), _rss(), _process["trials"], device,
                          os.environ.get("CUDA_VISIBLE_DEVICES"))


def _train(task: TrainTask, data: TrainingData, stop: StopCheck) -> list[TrialRecord]:
    from ...search.train import WorkUnit, train_unit

    return train_unit(WorkUnit(tuple(task.candidates), task.chunk_index), data, task.training, task.metric,
                      task.direction, execution=task.execution, data_seed=task.data_seed, stop=stop)


def _keep_weights(record: TrialRecord, task: TrainTask) -> TrialRecord:
    keep = task.weights == "all" or (task.weights == "better" and record.status == "completed"
                                     and outranks(record.standing(), task.weights_above, task.direction))
    return record if keep or record.weights is None else replace(record, weights=None)


def _monotonic(deadline_unix: float | None) -> float | None:
    """The caller's deadline on this machine's monotonic clock (wall clocks are assumed in sync)."""
    return None if deadline_unix is None else time.monotonic() + (deadline_unix - time.time())


class CancelPoll:
    """``should_stop`` on a worker: whether the caller set the run's cancel event.

    Asks the scheduler at most every ``CANCEL_POLL_S`` seconds (a call takes about a
    millisecond); a scheduler that does not answer reads as "go on" (the caller
    cancels the task itself in that case).
    """

    def __init__(self, name: str, every: float = CANCEL_POLL_S):
        self.name, self.every = name, every
        self.cancelled = False
        self._next = 0.0
        self._event = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.cancelled or now < self._next:
            return self.cancelled
        self._next = now + self.every
        try:
            from distributed import Event

            if self._event is None:
                self._event = Event(self.name)
            self.cancelled = bool(self._event.is_set())
        except Exception as exc:  # noqa: BLE001 - keep training; the caller decides
            log.debug("cannot read the cancel event %s: %s", self.name, exc)
        return self.cancelled


# --------------------------------------------------------------------------- process set-up


def _prepare(setup: WorkerSetup) -> str:
    """Backend, GPU and thread pools of this process, once, before TensorFlow is imported."""
    if _process["prepared"]:
        return _process["device"]
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = setup.backend
    framework = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(setup.backend)
    loaded = framework in sys.modules
    if setup.gpus is not None:
        if loaded:
            log.warning("%s was imported before the first trial; this worker keeps the GPUs it sees", framework)
        elif not setup.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = setup.gpus[_worker_index() % len(setup.gpus)]
    # Two TensorFlow processes on one GPU must not each take all its memory.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    threads = setup.threads or _int(os.environ.get(WORKER_THREADS_ENV))
    if threads:
        for name in THREAD_VARIABLES:
            os.environ[name] = str(threads)
        _pin_torch_threads(setup.backend, threads)
    from ...search.device import configure_device

    _process["device"] = configure_device(setup.device, cpu_threads=threads or None)
    # TensorFlow's teardown at exit takes ~4 s, which every worker restart (recycling)
    # and every cluster close would wait for; this process ends at once instead.
    atexit.register(_exit_now)
    _process["prepared"] = True
    return _process["device"]


def _exit_now() -> None:
    """The last exit handler to run first: flush, then end the process without the slow teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream
            pass
    os._exit(0)


def _pin_torch_threads(backend: str, threads: int) -> None:
    if backend != "torch":
        return
    try:
        import torch

        torch.set_num_threads(threads)
    except RuntimeError as exc:  # torch already started its pools
        log.warning("cannot pin torch to %d threads on this worker: %s", threads, exc)


def _worker_identity() -> tuple[str, str]:
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker.address, str(worker.name)
    except Exception:  # noqa: BLE001 - called outside a worker (tests, a thread pool)
        return "", str(os.getpid())


def _worker_index() -> int:
    """A LocalCluster worker's name is its index (0, 1, …); other names count as 0."""
    try:
        return int(_worker_identity()[1])
    except ValueError:
        return 0


def _int(text: str | None) -> int | None:
    try:
        value = int(text) if text else None
    except ValueError:
        return None
    return value if value and value > 0 else None


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil comes with distributed; be safe anyway
        return 0
