"""numpy arrays that worker processes on this machine open without a copy per job.

A registered dataset lives in the memory of the process that registered it (the
Pythonx interpreter inside the BEAM, or a ``serve`` process). A job that runs in a
worker process gets a *descriptor* instead, ``{"kind": "npy", "path": …}``, and
maps that ``.npy`` file read-only: every worker shares the same pages of the page
cache. An array that already is an ``.npy`` file (the subprocess bridge writes
one) is shared as that file; any other is written once, at the first job in a
worker, to a private file in the temporary folder, which ``SharedArray.release()``
deletes when the dataset is unregistered or replaced (and at exit).

Files rather than ``multiprocessing.shared_memory``: before Python 3.13 a worker
that attaches a shared-memory block registers it with a resource tracker of its
own, which unlinks the block when that worker exits.
"""

from __future__ import annotations

import atexit
import os
import secrets
import tempfile
from dataclasses import dataclass

import numpy as np

_owned: set[str] = set()  # files this process wrote, removed at exit at the latest


@dataclass
class SharedArray:
    """The owner's side: the descriptor to hand out, and the file to delete later (if ours)."""

    descriptor: dict
    owned_path: str | None = None

    def release(self) -> None:
        if self.owned_path is not None:
            path, self.owned_path = self.owned_path, None
            _remove(path)


def share(array: np.ndarray, npy_path: str | None = None) -> SharedArray:
    """A descriptor for ``array``: its ``.npy`` file when it is one (``npy_path``), else a
    file written now (the only copy, whatever the number of jobs)."""
    if npy_path is not None:
        return SharedArray({"kind": "npy", "path": os.fspath(npy_path)})
    path = os.path.join(tempfile.gettempdir(), f"cerebros-shared-{os.getpid()}-{secrets.token_hex(6)}.npy")
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return adopt(path)


def adopt(path: str) -> SharedArray:
    """An ``.npy`` file this process now owns: shared as it is, deleted on release (or at exit)."""
    if not _owned:
        atexit.register(_remove_all)
    _owned.add(path)
    return SharedArray({"kind": "npy", "path": path}, path)


def remove(path: str) -> None:
    _remove(path)


def attach(descriptor: dict) -> np.ndarray:
    """The read-only array a descriptor stands for, mapped (not copied) into this process."""
    if descriptor.get("kind") != "npy":
        raise ValueError(f"unknown shared array kind {descriptor.get('kind')!r}")
    return np.load(descriptor["path"], mmap_mode="r", allow_pickle=False)


def _remove(path: str) -> None:
    _owned.discard(path)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_all() -> None:
    for path in list(_owned):
        _remove(path)
