"""Keras' backend framework (TensorFlow, JAX, PyTorch): which one a search will use, and
a clear error, before anything is trained, when it is not installed.

TensorFlow is an extra (``pip install 'cerebros-service[tensorflow]'``, the README's
install); a machine with JAX alone runs with ``KERAS_BACKEND=jax``. Without the check
a missing framework surfaced as an ``ImportError`` traceback from deep inside Keras.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from .errors import SearchFailed

# Keras backend -> the module it needs, and this package's extra that installs it.
FRAMEWORKS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
EXTRAS = {"tensorflow": "tensorflow", "jax": "jax"}


def configured_backend() -> str:
    """The backend Keras uses or will use, as Keras chooses it (``KERAS_BACKEND``, then
    ``$KERAS_HOME/keras.json`` or ``~/.keras/keras.json``, then TensorFlow), without importing Keras."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _installed(module: str) -> bool:
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook refusing it, or a broken entry
        return False


def missing_backend(backend: str | None = None) -> str | None:
    """Why Keras cannot run here (its backend's framework is not installed), or None."""
    backend = backend or configured_backend()
    module = FRAMEWORKS.get(backend)
    if module is None or _installed(module):  # another backend: Keras itself says what it lacks
        return None
    how = (f"install it: pip install 'cerebros-service[{EXTRAS[backend]}]'" if backend in EXTRAS
           else f"install {module}")
    others = [name for name, extra in EXTRAS.items() if name != backend and _installed(FRAMEWORKS[name])]
    if others:
        how += f", or use the installed {others[0]} backend: KERAS_BACKEND={others[0]}"
    elif backend == "tensorflow":
        how += ", or install JAX (pip install 'cerebros-service[jax]') and set KERAS_BACKEND=jax"
    source = "KERAS_BACKEND" if os.environ.get("KERAS_BACKEND") else "Keras' default or keras.json"
    return f"Keras' {backend} backend ({source}) needs {module}, which is not installed; {how}"


def require_backend() -> None:
    """Raise SearchFailed saying what to install when Keras' backend framework is missing."""
    problem = missing_backend()
    if problem:
        raise SearchFailed(problem)
