"""A finished run, read back from its folder: what the plots and the report show.

Only the run folder's files are read (run.json, trials.jsonl,
population_history.json, best_architecture.json, events.jsonl), so a report can be
made again at any time, for any run, without the search that made it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..run_store import read_run_json
from ..search.records import delivered_model
from ..settings import standing_key, trial_standing

EVENTS_FILE = "events.jsonl"


@dataclass(frozen=True)
class RunData:
    run_id: str
    run: dict  # run.json ({} when missing)
    trials: list[dict]  # trials.jsonl records, in trial order
    generations: list[dict]  # population_history.json
    best: dict | None  # best_architecture.json
    events: list[dict] = field(default_factory=list)  # events.jsonl (trial and generation events)

    @property
    def metric(self) -> str:
        return self.run.get("metric") or next((t.get("metric") for t in self.trials if t.get("metric")), "metric")

    @property
    def direction(self) -> str:
        return self.run.get("direction") or (self.best or {}).get("direction") or "max"

    @property
    def completed(self) -> list[dict]:
        return [t for t in self.trials if t.get("status") == "completed" and _finite(t.get("value"))]

    def ranked(self) -> list[dict]:
        """Completed trials, best first, in the search's own order (settings.Standing)."""
        return sorted(self.completed,
                      key=lambda t: standing_key(trial_standing(t["value"], t.get("trial", 0)), self.direction))

    def trial_end_times(self) -> list[float]:
        """Seconds from the search's start to each trial's end (events when recorded, else summed durations)."""
        by_trial = {e.get("trial"): e.get("elapsed_s") for e in self.events if e.get("type") == "trial"}
        if self.trials and all(_finite(by_trial.get(t.get("trial"))) for t in self.trials):
            return [float(by_trial[t["trial"]]) for t in self.trials]
        total, ends = 0.0, []
        for trial in self.trials:
            total += float(trial.get("duration_s") or 0.0)
            ends.append(total)
        return ends

    @property
    def times_are_wall_clock(self) -> bool:
        return any(e.get("type") == "trial" for e in self.events)

    @property
    def ensemble(self) -> dict | None:
        """run.json's ``ensemble`` (None for a run with the ensemble off, or one made before it existed)."""
        value = self.run.get("ensemble")
        return value if isinstance(value, dict) else None

    @property
    def delivered_model(self) -> str:
        """What best_model.keras holds: "ensemble" or "single_best".

        A run.json without ``delivered_model`` comes from before ensembles: its
        best_model.keras is the single best. Members decide when the key is missing
        but an ensemble is recorded, as they do in run.py."""
        recorded = self.run.get("delivered_model")
        if recorded in ("ensemble", "single_best"):
            return recorded
        return delivered_model(self.ensemble)

    def ensemble_members(self) -> list[dict]:
        """The delivered ensemble's members, each ``{"trial", "weight", "record"}`` with the
        trial's trials.jsonl record (None when the file lacks it), heaviest first."""
        if self.delivered_model != "ensemble":
            return []
        by_trial = {t.get("trial"): t for t in self.trials}
        members = [{"trial": m.get("trial"), "weight": m.get("weight"), "record": by_trial.get(m.get("trial"))}
                   for m in (self.ensemble or {}).get("members") or [] if isinstance(m, dict)]
        # sorted() is stable: equal weights (the "average" method) keep run.json's order, best-ranked first
        return sorted(members, key=lambda m: -m["weight"] if _finite(m["weight"]) else 0.0)


def load_run_data(run_dir: Path) -> RunData:
    return RunData(
        run_id=run_dir.name,
        run=read_run_json(run_dir),
        trials=sorted(_json_lines(run_dir / "trials.jsonl"), key=lambda t: t.get("trial", 0)),
        generations=_json_list(run_dir / "population_history.json"),
        best=_json_object(run_dir / "best_architecture.json"),
        events=_json_lines(run_dir / EVENTS_FILE),
    )


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_lines(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed run: the others still count
        if isinstance(record, dict):
            records.append(record)
    return records


def _json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _json_object(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
