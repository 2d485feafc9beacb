"""A run's report: PNG plots under ``<run>/plots/`` and a self-contained ``<run>/report.html``.

``write_report(run_dir)`` makes both from the run folder's files alone; without
matplotlib (the ``plots`` extra) the page is still written, with its tables and a
note instead of pictures. ``report(run)`` is the public, never-raising form.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..artifacts import RunDirectory
from ..boundary.normalize import normalize
from ..boundary.results import failure_result
from ..errors import ServiceError
from ..jsonsafe import json_safe
from ..run_store import resolve_run_dir, update_run_json
from .run_data import load_run_data

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
PLOT_FILES = {
    "trials_by_index": "trials_by_index.png",
    "trials_by_time": "trials_by_time.png",
    "generations": "generations.png",
    "architecture": "architecture.png",
    "learning_curves": "learning_curves.png",
    "ensemble": "ensemble.png",  # only for a run that delivered an ensemble
}
INSTALL_HINT = "install the extra: pip install 'cerebros-service[plots]'"


def write_report(run_dir: Path) -> dict:
    """Draw the plots and write report.html; ``{"status": "done", "path", "plots": {name: path}, …}``."""
    data = load_run_data(run_dir)
    notes: list[str] = []
    plots: dict[str, Path] = {}
    record: dict = {"status": "done"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        record["plots_skipped"] = f"matplotlib is not installed; {INSTALL_HINT}"
        notes.append(f"No plots: {record['plots_skipped']}.")
    else:
        plots = _draw_all(data, run_dir / PLOTS_DIR, notes)
    from .html_report import render_report

    path = RunDirectory(run_dir).write_bytes(REPORT_FILE, render_report(data, plots, notes).encode("utf-8"))
    record.update(path=str(path), plots={name: str(p) for name, p in plots.items()})
    if notes:
        record["notes"] = notes
    return record


def _draw_all(data, folder: Path, notes: list[str]) -> dict[str, Path]:
    from .architecture_plot import plot_architecture
    from .plots import plot_ensemble, plot_generations, plot_learning_curves, plot_trials

    folder.mkdir(exist_ok=True)
    output_label = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}.get(
        (data.run.get("dataset") or {}).get("task"), "output")
    drawers = {
        "trials_by_index": lambda path: plot_trials(data, path, by="index"),
        "trials_by_time": lambda path: plot_trials(data, path, by="time"),
        "generations": lambda path: plot_generations(data, path),
        "architecture": lambda path: plot_architecture(data.best, path, output_label=output_label),
        "learning_curves": lambda path: plot_learning_curves(data, path),
    }
    if data.delivered_model == "ensemble":  # a single best (or an older run) has no members to draw
        drawers["ensemble"] = lambda path: plot_ensemble(data, path)
    drawn = {}
    for name, draw in drawers.items():
        try:
            drawn[name] = draw(folder / PLOT_FILES[name])
        except Exception as exc:  # noqa: BLE001 - one bad plot must not cost the others
            log.warning("plot %s of run %s failed: %s", name, data.run_id, exc)
            notes.append(f"The {name.replace('_', ' ')} plot failed: {type(exc).__name__}: {exc}")
    return drawn


def report(run: Any) -> dict:
    """(Re)make a run's plots and report.html: ``{"status": "success", "run_id", "report", "plots"}``; never raises."""
    run_id = None
    try:
        run_dir = resolve_run_dir(normalize(run, root="run"))
        run_id = run_dir.name
        record = write_report(run_dir)
        update_run_json(run_dir, ("after_run", "report"), json_safe(record))
        answer = {"status": "success", "run_id": run_id, "report": record["path"], "plots": record["plots"]}
        if record.get("notes"):
            answer["notes"] = record["notes"]
        return json_safe(answer)
    except ServiceError as exc:
        return failure_result(exc, run_id)
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("report failed with an internal error (run=%s)", run_id)
        return failure_result(exc, run_id)
