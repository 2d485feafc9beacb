"""The run directory: unique per run, every file written atomically (temp file + os.replace)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .jsonsafe import dumps

ARTIFACT_NAMES = ("best_model.keras", "best_architecture.json", "trials.jsonl",
                  "population_history.json", "run.json")


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @classmethod
    def create(cls, root: str | os.PathLike, run_id: str) -> "RunDirectory":
        """Make ``<root>/<run_id>``, or ``<run_id>-2``, ``-3``… when the name is taken."""
        if not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id or "\0" in run_id:
            raise ValueError(f"run_id must be a plain folder name, got {run_id!r}")
        root_path = Path(root).resolve()
        root_path.mkdir(parents=True, exist_ok=True)
        suffix = 1
        while True:
            candidate = root_path / (run_id if suffix == 1 else f"{run_id}-{suffix}")
            try:
                candidate.mkdir()  # atomic: two runs never get the same folder
                return cls(candidate)
            except FileExistsError:
                suffix += 1

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj) -> Path:
        return self.write_bytes(name, dumps(obj, indent=True) + b"\n")

    def write_bytes(self, name: str, data: bytes) -> Path:
        target = self.file(name)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def append_jsonl(self, name: str, obj) -> Path:
        """One line per call, written with a single write so readers never see half a record."""
        target = self.file(name)
        with open(target, "ab") as handle:
            handle.write(dumps(obj) + b"\n")
        return target

    def paths(self) -> dict[str, str]:
        """Absolute paths of the artifacts that exist now."""
        return {name: str(self.file(name)) for name in ARTIFACT_NAMES if self.file(name).exists()}
