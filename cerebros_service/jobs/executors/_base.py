"""What an executor is: something that runs one job's search somewhere and answers its result.

The job runner (``jobs.runner``) owns the queue, the job table and cancellation; an
executor only decides *where* a search runs. Each kind is one file in this folder
and one model in ``boundary.schema`` (``opts.executor = {"kind": …}``); a new kind
(say, a scale-out one) adds both and an entry in ``executors.EXECUTORS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

EventListener = Callable[[dict], None]
StopCheck = Callable[[], bool]
Reporter = Callable[[dict], None]


@dataclass(frozen=True)
class JobTask:
    """One search, as plain data that pickles: what crosses into a worker process.

    ``spec`` is the normalized spec (numpy arrays allowed); ``opts`` the validated
    opts with run_id, data_root and artifacts_dir fixed and no listeners; ``datasets``
    the registered datasets the spec names, as ``registry.shared_descriptor``s;
    ``executor`` the executor options (``{"kind": …, …}``); ``env`` the operator's
    settings in force at submit (the ``CEREBROS_*`` environment variables: data and
    artifacts roots, limits), which a worker process applies before the search.
    ``op`` is ``"search"``, or ``"predict"``: then ``spec`` is ``{"run", "x"}`` and
    ``opts`` predict's opts (``prediction.predict`` in the worker, for the Keras model).
    """

    job_id: str
    spec: Any
    opts: dict
    executor: dict
    datasets: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    op: str = "search"


class Executor(ABC):
    kind: str
    # True when the search runs in another process, which then needs the registered
    # datasets as shared descriptors (JobTask.datasets) instead of this registry.
    runs_elsewhere: bool = False

    @abstractmethod
    def run(self, task: JobTask, on_event: EventListener, should_stop: StopCheck, report: Reporter) -> dict:
        """Run ``task`` to its end and return its result dict; never raises.

        ``on_event(event)`` for each progress event, ``should_stop()`` polled often
        (True: cancel cooperatively), ``report(info)`` to publish facts about the run
        in the job's status (e.g. ``{"worker_pid": …}``).
        """

    def trim(self) -> None:
        """Give back what has sat idle too long (worker processes); called between jobs."""

    def close(self, timeout: float = 5.0) -> None:
        """Give back what the executor holds (worker processes); jobs have ended by then."""
