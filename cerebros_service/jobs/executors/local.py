"""``{"kind": "local"}``: the search runs in this process, on the job runner's thread.

Today's behaviour and plain ``run_nas``'s default. Searches in one interpreter run
one at a time (``api.run_checked`` holds a lock), because Keras keeps global state.
"""

from __future__ import annotations

from ._base import EventListener, Executor, JobTask, Reporter, StopCheck


class LocalExecutor(Executor):
    kind = "local"

    def run(self, task: JobTask, on_event: EventListener, should_stop: StopCheck, report: Reporter) -> dict:
        from ..worker import run_task

        return run_task(task, on_event, should_stop)
