"""What happens after a successful search: ONNX export, TensorBoard logs, the report, MLflow.

``api`` makes one ``AfterRun`` per search: its ``listen`` wraps the search's event
sink (so per-trial MLflow metrics and the report's time axis come from the event
stream, also written to ``events.jsonl``), and ``finish`` runs the steps once the
search has succeeded. Each step runs in its own thread with a time limit and its
outcome is recorded (result ``after_run``, run.json ``after_run``) as ``done``,
``skipped`` (an optional extra is missing, or the step is off) or ``failed`` with
the reason. Nothing here can turn a successful search into a failed result.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .artifacts import RunDirectory
from .jsonsafe import json_safe
from .reporting.run_data import EVENTS_FILE
from .run_store import update_run_json

log = logging.getLogger(__name__)

Listener = Callable[[dict], None]


class AfterRun:
    def __init__(self, opts: Any, run_dir: Path):
        self.opts = opts
        self.run_dir = Path(run_dir)
        self.events: list[dict] = []

    def listen(self, forward: Listener | None) -> Listener:
        """A listener for ``run_search``: records each event, then hands it to ``forward``."""

        def listener(event: dict) -> None:
            try:
                stamped = {**json_safe(event), "time": time.time()}  # wall clock, for MLflow's timestamps
                self.events.append(stamped)
                RunDirectory(self.run_dir).append_jsonl(EVENTS_FILE, stamped)
            except Exception:  # noqa: BLE001 - recording must never cost the caller their events
                log.exception("recording a %s event failed", event.get("type"))
            if forward is not None:
                forward(event)

        return listener

    def finish(self, result: dict, deadline: float | None = None) -> dict:
        """``result`` with ``after_run`` (and artifacts, tracking) added; never raises.

        ``deadline`` (``time.monotonic()``): the call's time budget ends there, so a step
        gets only what is left of it, and none starts after it (recorded as skipped).
        """
        started = time.monotonic()
        try:
            records = {}
            for name, step in self._steps(result):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    record = {"status": "skipped", "reason": "the time budget (budget.max_time_seconds) was spent"}
                else:
                    limit = self.opts.after_run.timeout_s if left is None else min(self.opts.after_run.timeout_s, left)
                    record = json_safe(bounded(step, limit, name))
                records[name] = record
                update_run_json(self.run_dir, ("after_run", name), record)  # the report shows earlier steps
            _merge_into(result, records, self.run_dir)
        except Exception as exc:  # noqa: BLE001 - the search succeeded; that stays the answer
            log.exception("the after-run steps failed")
            result["after_run"] = {"error": f"{type(exc).__name__}: {exc}"}
        result.setdefault("metadata", {})["after_run_s"] = time.monotonic() - started
        return result

    def _steps(self, result: dict) -> list[tuple[str, Callable[[], dict]]]:
        run_dir, settings, tracking = self.run_dir, self.opts.after_run, self.opts.tracking
        steps: list[tuple[str, Callable[[], dict]]] = []
        if settings.onnx:
            from .onnx_export import export_onnx

            steps.append(("onnx", lambda: export_onnx(run_dir)))
        if tracking.tensorboard:
            from .tracking_tensorboard import write_tensorboard

            steps.append(("tensorboard", lambda: write_tensorboard(run_dir)))
        if settings.report:
            from .reporting import write_report

            steps.append(("report", lambda: write_report(run_dir)))
        if tracking.mlflow is not None:
            from .tracking_mlflow import log_to_mlflow

            mlflow = tracking.mlflow
            events = list(self.events)
            # The named server's URI is looked up when the step runs (the operator's, never the request's).
            steps.append(("mlflow", lambda: log_to_mlflow(run_dir, result, events, mlflow.store_uri(),
                                                          mlflow.experiment)))
        return steps


def bounded(step: Callable[[], dict], timeout_s: float, name: str) -> dict:
    """Run ``step`` in a thread for at most ``timeout_s``; any exception becomes a failed record."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["record"] = step()
        except Exception as exc:  # noqa: BLE001 - recorded, never raised
            log.warning("after-run step %s failed: %s", name, exc, exc_info=True)
            outcome["record"] = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc)[:500]}"}

    started = time.monotonic()
    # Not a daemon: a step left running past its limit must end before the interpreter
    # does. Frozen mid-step at exit (a daemon), it can hold h5py's lock while the
    # interpreter's teardown waits for it, and the process never exits.
    worker = threading.Thread(target=target, name=f"cerebros-after-run-{name}", daemon=False)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        # A thread cannot be stopped from outside: it is left to end on its own; what it
        # writes later is not recorded.
        return {"status": "failed", "reason": f"did not finish within {timeout_s:g} s "
                                              "(opts.after_run.timeout_s); left running in the background",
                "seconds": time.monotonic() - started}
    return {**outcome.get("record", {"status": "failed", "reason": "ended without a record"}),
            "seconds": time.monotonic() - started}


def _merge_into(result: dict, records: dict, run_dir: Path) -> None:
    result["after_run"] = records
    artifacts = result.setdefault("artifacts", {})
    events = run_dir / EVENTS_FILE
    if events.is_file():
        artifacts["events"] = str(events)
    onnx = records.get("onnx", {})
    if onnx.get("status") == "done":
        artifacts["onnx_model"] = onnx["path"]
    report = records.get("report", {})
    if report.get("status") == "done":
        artifacts["report"] = report["path"]
        artifacts["plots"] = report.get("plots", {})
    board = records.get("tensorboard", {})
    if board.get("status") == "done":
        artifacts["tensorboard"] = board["path"]
    mlflow = records.get("mlflow", {})
    if mlflow.get("status") == "done":
        result["tracking"] = {"mlflow": {key: mlflow.get(key) for key in
                                         ("run_id", "run_name", "experiment", "experiment_id",
                                          "tracking_uri", "artifact_uri")}}
