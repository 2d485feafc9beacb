"""The run directory: unique per run, every file written atomically (temp file + os.replace).

Run folders live directly in the operator's artifacts root (``CEREBROS_ARTIFACTS_ROOT``):
``<root>/<run_id>``. A run_id is one plain folder name, a run folder is never a
symlink, and no write follows a symlink planted inside it, so nothing a request
says can make the service write outside the root.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ErrorDetail, ServiceError
from .jsonsafe import dumps

# The same rule as the request's opts.run_id (boundary/schema.py), checked again here.
RUN_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


class ArtifactsError(ServiceError):
    """The run folder cannot be made or written where the operator's root says."""


def confined_run_path(root: str | os.PathLike, name: str) -> Path:
    """``<root>/<name>`` for a plain folder name, refusing anything that could leave the root.

    The path need not exist; when it does, it must be a real folder (not a symlink)
    directly inside the resolved root.
    """
    _check_folder_name(name)
    root_path = Path(root).resolve()
    candidate = root_path / name
    if candidate.is_symlink() or (candidate.exists() and candidate.resolve().parent != root_path):
        raise ArtifactsError(f"run folder {name!r} in the artifacts root is a symlink; it is never used",
                             [ErrorDetail(("opts", "run_id"), "names a symlink in the artifacts root")])
    return candidate

ARTIFACT_NAMES = ("best_model.keras", "best_architecture.json", "trials.jsonl",
                  "population_history.json", "run.json",
                  "best_single_model.keras",  # the single best, when an ensemble is delivered
                  "refit_model.keras")  # only with spec.evaluation.refit (run.py)


def _check_folder_name(name: str) -> None:
    """ValueError (a caller's bug: requests are checked in boundary/schema.py first)."""
    if not isinstance(name, str) or not RUN_FOLDER_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"run_id must be a plain folder name, got {name!r:.80}")


@dataclass(frozen=True)
class RunDirectory:
    path: Path

    @classmethod
    def create(cls, root: str | os.PathLike, run_id: str) -> "RunDirectory":
        """Make ``<root>/<run_id>``, or ``<run_id>-2``, ``-3``… when the name is taken.

        A name taken by anything (a symlink included) is skipped, never entered.
        """
        _check_folder_name(run_id)
        root_path = Path(root).resolve()
        try:
            root_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArtifactsError(f"the artifacts root cannot be created ({exc.strerror})") from None
        suffix = 1
        while True:
            candidate = root_path / (run_id if suffix == 1 else f"{run_id}-{suffix}")
            try:
                candidate.mkdir()  # atomic: two runs never get the same folder
                return cls(candidate)
            except FileExistsError:
                suffix += 1
            except OSError as exc:
                raise ArtifactsError(f"the run folder cannot be created in the artifacts root "
                                     f"({exc.strerror})") from None

    @classmethod
    def exists(cls, root: str | os.PathLike, run_id: str) -> bool:
        """Whether ``<root>/<run_id>`` holds a run (its run.json)."""
        path = confined_run_path(root, run_id)
        return path.is_dir() and (path / "run.json").is_file()

    @classmethod
    def open(cls, root: str | os.PathLike, run_id: str) -> "RunDirectory":
        """The existing run folder ``<root>/<run_id>`` (to resume it)."""
        path = confined_run_path(root, run_id)
        if not path.is_dir():
            raise ArtifactsError(f"no run folder {run_id!r} in the artifacts root to resume",
                                 [ErrorDetail(("opts", "run_id"), "names no run folder")])
        return cls(path)

    def file(self, name: str) -> Path:
        if not RUN_FOLDER_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"artifact names are plain file names, got {name!r}")
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
        # O_NOFOLLOW: a symlink planted in the run folder is refused, not written through.
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o644)
        with os.fdopen(fd, "ab") as handle:
            handle.write(dumps(obj) + b"\n")
        return target

    def paths(self) -> dict[str, str]:
        """Absolute paths of the artifacts that exist now."""
        return {name: str(self.file(name)) for name in ARTIFACT_NAMES if self.file(name).exists()}
