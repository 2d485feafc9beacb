"""Continuing a run that ended before its budget did (a crash, a kill, a lost machine).

The run folder is the source of truth: ``trials.jsonl`` holds every finished trial
(appended one whole line at a time) and ``run.json`` the settings the run started
with. A resumed search replays its strategy over the stored records — asking it for
each generation exactly as the first run did (same seed, so the same proposals), and
telling it the stored outcomes instead of training them again — then goes on where
the records end. Trial seeds, the data order and the trainers' initial weights depend
only on the search seed and the trial index, so the continuation is the one the
uninterrupted run would have made.

A reader that finds ``status: "running"`` in run.json of a process that no longer
runs sees ``"interrupted"`` (``effective_status``).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from .errors import ErrorDetail, InputError
from .search.records import TrialRecord
from .settings import SearchSettings

WEIGHTS_DIR = ".weights"  # best-epoch weights of the trials a strategy may continue
# Settings a resumed run may change: how long it may go on, and how trials are executed
# (which does not change what a trial finds beyond rounding).
CHANGEABLE = ("max_trials", "max_time_seconds", "execution", "device")


def previous_trials(run_dir, settings: SearchSettings) -> list[TrialRecord]:
    """The finished trials of an earlier run in ``run_dir``, checked against ``settings``.

    Raises InputError when the earlier run searched with other settings (only the
    budget may change) or is not a run this version can continue.
    """
    run_json = _read_json(run_dir.file("run.json"))
    stored = run_json.get("settings")
    if not isinstance(stored, dict):
        raise _cannot("the run folder has no settings to compare with (run.json is missing or damaged)")
    asked = _comparable(asdict(settings))
    different = sorted(key for key in set(asked) | set(_comparable(stored))
                       if asked.get(key) != _comparable(stored).get(key))
    if different:
        raise _cannot(f"the run was started with other settings ({', '.join(different)}); "
                      "only max_trials, max_time_seconds, execution and device may change when resuming")
    return _read_records(run_dir.file("trials.jsonl"))


def _comparable(settings: dict) -> dict:
    # JSON round trips turn tuples into lists: compare in JSON's terms.
    return {key: value for key, value in json.loads(json.dumps(settings, default=list)).items()
            if key not in CHANGEABLE}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_records(path: Path) -> list[TrialRecord]:
    """Whole lines only: a line cut short by the crash is the trial that did not finish."""
    names = {f.name for f in fields(TrialRecord)}
    records = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict) and {"trial", "architecture", "status"} <= set(raw):
            records.append(TrialRecord(**{k: v for k, v in raw.items() if k in names}))
    return sorted(records, key=lambda r: r.trial)


def mismatch(trial: int) -> InputError:
    return _cannot(f"trial {trial} of the earlier run is not what this search proposes now "
                   "(a different version of the service, or edited files?)")


def _cannot(message: str) -> InputError:
    return InputError(f"cannot resume: {message}", [ErrorDetail(("opts", "resume"), message)])


# --------------------------------------------------------------------------- kept weights


def save_weights(run_dir, trial: int, weights: dict) -> None:
    """A trial's best-epoch weights on disk, for a strategy that continues it after a restart."""
    folder = run_dir.path / WEIGHTS_DIR
    folder.mkdir(exist_ok=True)
    arrays = {f"{layer}::{index}": array for layer, values in weights.items() for index, array in enumerate(values)}
    tmp = folder / f".trial-{trial:04d}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, folder / f"trial-{trial:04d}.npz")


def load_weights(run_dir, trial: int) -> dict | None:
    path = run_dir.path / WEIGHTS_DIR / f"trial-{trial:04d}.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            layers: dict[str, list] = {}
            for key in sorted(archive.files, key=lambda k: (k.rsplit("::", 1)[0], int(k.rsplit("::", 1)[1]))):
                layers.setdefault(key.rsplit("::", 1)[0], []).append(archive[key])
            return layers
    except (OSError, ValueError, KeyError):
        return None


def forget_weights(run_dir, keep: set[int]) -> None:
    """Remove kept weights of trials nobody will continue any more."""
    folder = run_dir.path / WEIGHTS_DIR
    if not folder.is_dir():
        return
    for path in folder.glob("trial-*.npz"):
        if int(path.stem.removeprefix("trial-")) not in keep:
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- readers


def owner() -> dict:
    """Who runs a search now: written into run.json so a reader can tell a dead run from a live one."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def effective_status(run_json: dict) -> str | None:
    """run.json's status, with "running" read as "interrupted" when its process is gone.

    A run on another host cannot be checked from here and stays "running".
    """
    status = run_json.get("status")
    owner_info = run_json.get("owner") or {}
    if status != "running" or owner_info.get("host") != socket.gethostname():
        return status
    pid = owner_info.get("pid")
    if not isinstance(pid, int):
        return status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:  # alive, another user's
        return status
    return status if _same_process(pid) else "interrupted"


def _same_process(pid: int) -> bool:
    """A reused pid is not our search: it must still be a Python process."""
    try:
        return "python" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").lower()
    except OSError:
        return True  # no /proc: trust the pid
