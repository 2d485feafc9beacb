"""What ``cerebros-service`` shows a person at a terminal: a progress bar and tables (rich).

Used only when stdout is a terminal and ``--json`` is not given; pipes and programs
keep getting the JSON protocol unchanged (cli.py).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any, TextIO

TOP_TRIALS = 5


def terminal_console(stream: TextIO):
    from rich.console import Console

    return Console(file=stream, force_terminal=True, highlight=False)


def eta_seconds(done: int, total: int, elapsed_s: float, max_time_s: float | None) -> float | None:
    """Seconds left: the mean time per trial so far times the trials left, capped by the time budget."""
    if done <= 0 or total <= done:
        estimate = 0.0 if total <= done else None
    else:
        estimate = elapsed_s / done * (total - done)
    if max_time_s is not None:
        left = max(0.0, max_time_s - elapsed_s)
        estimate = left if estimate is None else min(estimate, left)
    return estimate


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def _value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:#.4g}"


def run_with_progress(spec: Any, opts: Any, stream: TextIO) -> dict:
    """Run a search showing trials done / budget, the best so far and the ETA; then a summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .api import run_nas, validate

    console = terminal_console(stream)
    checked = validate(spec, opts)
    if checked.get("status") != "valid":
        print_failure(console, checked)
        return checked
    budget = checked["opts"]["budget"]
    total, max_time = int(budget["max_trials"]), budget.get("max_time_seconds")
    log_path = divert_terminal_stderr()
    with console.status("loading the search engine (TensorFlow)…"):
        import cerebros_service.run  # noqa: F401 - its import noise lands before the bar is drawn
    progress = Progress(TextColumn("[bold]searching[/]"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("trials · best {task.fields[best]} · failed {task.fields[failed]}"),
                        TimeElapsedColumn(), TextColumn("· ETA {task.fields[eta]}"),
                        console=console, transient=False)
    state = {"started": time.monotonic(), "done": 0, "failed": 0}

    def on_event(event: dict) -> None:
        if event.get("type") != "trial":
            return
        state["done"] += 1
        state["failed"] += event.get("status") == "failed"
        elapsed = time.monotonic() - state["started"]
        progress.update(task, completed=state["done"], best=_value(event.get("best_so_far")),
                        failed=state["failed"], eta=_clock(eta_seconds(state["done"], total, elapsed, max_time)))

    with progress:
        task = progress.add_task("search", total=total, best="–", failed=0, eta="–")
        result = run_nas(spec, _with_listener(opts, on_event))
        progress.update(task, completed=total if result.get("status") == "success" else state["done"], eta="0:00")
    if result.get("status") in ("success", "cancelled"):
        print_summary(console, result)
    else:
        print_failure(console, result)
    if log_path is not None:
        console.print(f"[dim]{'log':>10}  {log_path}[/]")
    return result


def divert_terminal_stderr() -> str | None:
    """When stderr is this terminal, send it to a log file instead (returns its path).

    TensorFlow's C++ logging writes straight to file descriptor 2 and ignores
    TF_CPP_MIN_LOG_LEVEL for its start-up messages; on a terminal they would tear
    through the progress bar. fd 1 (which the CLI points at stderr) follows.
    """
    if not os.isatty(2):
        return None
    fd, path = tempfile.mkstemp(prefix="cerebros-service-", suffix=".log")
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)
    return path


def _with_listener(opts: Any, listener) -> Any:
    if opts is None:
        return {"on_event": listener}
    if isinstance(opts, dict):
        previous = opts.get("on_event")
        if callable(previous):
            def both(event: dict) -> None:
                previous(event)
                listener(event)
            return {**opts, "on_event": both}
        return {**opts, "on_event": listener}
    return opts


def print_failure(console, result: dict) -> None:
    console.print(f"[bold red]{result.get('error_type', 'failed')}[/]: {result.get('error', '')}")
    for detail in (result.get("error_details") or [])[:10]:
        where = ".".join(str(part) for part in detail.get("loc") or []) or "request"
        console.print(f"  • [bold]{where}[/]: {detail.get('message')}")


def print_summary(console, result: dict) -> None:
    from rich.table import Table

    direction = result.get("direction", "max")
    completed = [t for t in result.get("trials", []) if t.get("status") == "completed" and t.get("value") is not None]
    top = sorted(completed, key=lambda t: t["value"], reverse=direction == "max")[:TOP_TRIALS]
    table = Table(title=f"Top {len(top)} trial{'' if len(top) == 1 else 's'} by {result.get('metric')} "
                        f"({'higher' if direction == 'max' else 'lower'} is better)", title_justify="left",
                  caption="epochs: best epoch/epochs run · neurons: per hidden level, units joined by commas",
                  caption_justify="left")
    for name, justify in (("#", "right"), ("trial", "right"), ("gen", "right"), (str(result.get("metric")), "right"),
                          ("params", "right"), ("epochs", "right"), ("time", "right"), ("neurons", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "neurons")
    for rank, trial in enumerate(top, start=1):
        neurons = " · ".join(",".join(map(str, level)) for level in (trial.get("neurons") or [])[:-1])
        table.add_row(str(rank), str(trial.get("trial")), str(trial.get("generation")), _value(trial.get("value")),
                      f"{trial.get('params') or 0:,}", f"{trial.get('best_epoch')}/{trial.get('epochs_run')}",
                      f"{trial.get('duration_s', 0):.1f} s", neurons,
                      style="bold" if rank == 1 else None)
    console.print(table)
    metadata = result.get("metadata") or {}
    artifacts = result.get("artifacts") or {}
    lines = [("best", f"{_value(result.get('best_metric'))} {result.get('metric')}"),
             ("delivered", _delivered(result.get("delivered_model"), result.get("ensemble"))),
             # test_metric is the delivered model's; None when the run held no test rows out
             ("test", None if result.get("test_metric") is None
              else f"{_value(result.get('test_metric'))} {str(result.get('metric')).removeprefix('val_')}"),
             ("trials", f"{result.get('completed_trials')} completed, {result.get('failed_trials')} failed "
                        f"(stopped by {metadata.get('stopped_because')})"),
             ("time", f"{metadata.get('duration_s', 0):.1f} s"),
             ("run folder", artifacts.get("run_dir")),
             ("report", artifacts.get("report")),
             ("ONNX model", artifacts.get("onnx_model") or _step_note(result, "onnx"))]
    mlflow = (result.get("tracking") or {}).get("mlflow")
    if mlflow:
        lines.append(("MLflow", f"run {mlflow.get('run_id')} in experiment {mlflow.get('experiment')!r}"))
    for name, text in lines:
        if text:
            console.print(f"[bold]{name:>10}[/]  {text}")


def _delivered(delivered_model: str | None, ensemble: dict | None) -> str | None:
    """What best_model.keras holds, in a few words (None for a result from before ensembles)."""
    if delivered_model == "ensemble":
        size = len((ensemble or {}).get("members") or [])
        return f"ensemble of {size} trial{'' if size == 1 else 's'}"
    return "single best trial" if delivered_model == "single_best" else None


def _step_note(result: dict, step: str) -> str | None:
    record = (result.get("after_run") or {}).get(step) or {}
    return f"{record['status']}: {record.get('reason')}" if record.get("status") not in (None, "done") else None


def print_runs(console, listing: dict) -> None:
    from rich.table import Table

    table = Table(title=f"Runs under {listing.get('root')}", title_justify="left")
    for name, justify in (("run id", "left"), ("dataset", "left"), ("status", "left"), ("metric", "left"),
                          ("best", "right"), ("model", "left"), ("test", "right"), ("started", "left"),
                          ("duration", "right")):
        table.add_column(name, justify=justify)
    for row in listing.get("runs", []):
        duration = row.get("duration_s")
        table.add_row(row["run_id"], str(row.get("dataset") or "–"), str(row.get("status")),
                      str(row.get("metric") or "–"), _value(row.get("best")), _model_cell(row),
                      _value(row.get("test_metric")),
                      (row.get("started") or "–")[:19].replace("T", " "),
                      _clock(duration) if isinstance(duration, (int, float)) else "–")
    console.print(table if listing.get("runs") else f"No runs under {listing.get('root')}.")


def _model_cell(row: dict) -> str:
    if row.get("delivered_model") == "ensemble":
        return f"ensemble of {row.get('ensemble_size')}"
    return "single best" if row.get("delivered_model") == "single_best" else "–"


def open_terminal_text(fd: int) -> TextIO:
    """A text stream on a duplicate of ``fd`` (the protocol's stdout), for rich to draw on."""
    return os.fdopen(os.dup(fd), "w", encoding="utf-8", buffering=1)
