"""cerebros-service: Cerebros-style neural architecture search for Elixir and Python callers.

The public API is loaded on first use, so ``import cerebros_service`` stays cheap and
never imports TensorFlow (a search imports it when it starts).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def _prefer_onednn() -> None:
    """TensorFlow's oneDNN CPU kernels, unless the operator chose (``TF_ENABLE_ONEDNN_OPTS``).

    TensorFlow 2.21 turns them on by itself only on CPUs with AVX-512 VNNI or newer; on
    the 2-core AVX2 machine measured they cut a 40-candidate fused digits chunk's step
    from 16.3 to 12.7 ms (5 paired runs; docs/benchmarks.md). TensorFlow reads the
    setting once, when it loads, so it is set here, before any search can import it: a
    process that imported TensorFlow first keeps TensorFlow's choice. Workers started
    from this process inherit it."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


_prefer_onednn()

# public name -> module that defines it
_EXPORTS = {
    "run_nas": ".api",
    "validate": ".api",
    "register_dataset": ".data.registry",
    "unregister_dataset": ".data.registry",
    "list_datasets": ".data.registry",
    "json_safe": ".jsonsafe",
    "scrub": ".boundary.results",
    # after the search (docs/using-the-result.md)
    "predict": ".prediction",
    "export": ".onnx_export",
    "report": ".reporting",
    "list_runs": ".run_store",
    "delete_run": ".run_store",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ loads lazily
    from .api import run_nas, validate
    from .boundary.results import scrub
    from .jsonsafe import json_safe
    from .data.registry import list_datasets, register_dataset, unregister_dataset
    from .onnx_export import export
    from .prediction import predict
    from .reporting import report
    from .run_store import delete_run, list_runs


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cerebros_service' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
