"""``predict(run, x, opts)``: the best model of a finished run, applied to new samples.

The answer speaks the user's language: class labels as the training data had them
(``run.json``'s ``dataset.class_labels``), regression in the target's original units
(the saved model rescales its output itself). The model runs as ``best_model.onnx``
in onnxruntime when the run has one (verified against Keras when it was written, and
no TensorFlow import: what an Elixir node embedding Python wants), else as the Keras
model. Models are loaded once per run and kept in a small LRU cache, keyed by the
model file's identity so a replaced model is reloaded.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from .boundary.errors_text import describe_errors, summary_sentence
from .boundary.normalize import normalize
from .boundary.results import failure_result
from .boundary.schema import _Strict
from .errors import ErrorDetail, InputError, ServiceError
from .jsonsafe import json_safe
from .prediction_input import features_from
from .run_store import read_run_json, resolve_run_dir

log = logging.getLogger(__name__)

BEST_MODEL = "best_model.keras"
ONNX_MODEL = "best_model.onnx"
MODEL_CACHE_SIZE = 8  # models of distinct runs kept loaded; each is a few MB at most


class PredictOpts(_Strict):
    # Class probabilities next to the labels (classification only).
    probabilities: bool = True
    # Samples per forward pass: bounds the memory a large x needs at once.
    batch_size: int = Field(4096, ge=1, le=1_000_000)
    # "onnx" runs best_model.onnx with onnxruntime (no TensorFlow import: what an Elixir
    # node embedding Python wants); "keras" the saved Keras model; "auto" the ONNX model
    # when the run has one and onnxruntime is installed, else Keras.
    engine: Literal["auto", "onnx", "keras"] = "auto"


def predict(run: Any, x: Any, opts: Any = None) -> dict:
    """Predict with a run's best model; always returns a JSON-safe dict, never raises.

    ``run``: a run id under the artifacts root, or a run folder's path. ``x``: rows,
    records, a numpy array or a source object (see ``prediction_input``). Answer:
    ``{"status": "success", "run_id", "task", "n_samples", "engine", "predictions",
    "probabilities"?, "classes"?}`` or a failed result.
    """
    run_id = None
    try:
        run_dir = resolve_run_dir(normalize(run, root="run"))
        run_id = run_dir.name
        options = _checked_opts(opts)
        facts = model_facts(run_dir)
        features = features_from(normalize(x, root="x"), facts["n_features"], facts["feature_names"])
        engine = _engine(run_dir, options.engine)
        forward = _onnx_forward if engine == "onnx" else _keras_forward
        outputs = forward(run_dir, features, options.batch_size)
        return json_safe({"status": "success", "run_id": run_id, "task": facts["task"],
                          "n_samples": int(features.shape[0]), "engine": engine,
                          **decode_outputs(outputs, facts, options.probabilities)})
    except ServiceError as exc:
        return failure_result(exc, run_id)
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("predict failed with an internal error (run=%s)", run_id)
        return failure_result(exc, run_id)


def engine_for(run: Any, opts: Any = None) -> str | None:
    """The engine ``predict(run, x, opts)`` would run the model with (``"onnx"`` or
    ``"keras"``), or None when it would refuse the run or the opts before loading any
    model. Loads nothing and never raises: the job protocol asks it to keep the Keras
    model (and TensorFlow) out of its own process (jobs/protocol.py)."""
    try:
        run_dir = resolve_run_dir(normalize(run, root="run"))
        options = _checked_opts(opts)
        model_facts(run_dir)
        return _engine(run_dir, options.engine)
    except Exception:  # noqa: BLE001 - predict itself then answers the refusal
        return None


def _checked_opts(opts: Any) -> PredictOpts:
    try:
        return PredictOpts.model_validate({} if opts is None else normalize(opts, root="opts"))
    except ValidationError as exc:
        details = describe_errors(exc, PredictOpts, "opts")
        raise InputError(summary_sentence(details), details) from None


def _engine(run_dir: Path, asked: str) -> str:
    onnx_file = run_dir / ONNX_MODEL
    if asked == "keras":
        return "keras"
    try:
        import onnxruntime  # noqa: F401
        has_runtime = True
    except ImportError:
        has_runtime = False
    if asked == "auto":
        return "onnx" if has_runtime and onnx_file.is_file() else "keras"
    if not onnx_file.is_file():
        raise InputError(f"opts.engine: run {run_dir.name!r} has no {ONNX_MODEL}; export it first "
                         "(cerebros_service.export) or use engine \"keras\"",
                         [ErrorDetail(("opts", "engine"), f"the run has no {ONNX_MODEL}")])
    if not has_runtime:
        raise InputError("opts.engine: onnxruntime is not installed; pip install 'cerebros-service[onnx]'",
                         [ErrorDetail(("opts", "engine"), "onnxruntime is not installed")])
    return "onnx"


def model_facts(run_dir: Path) -> dict:
    """What decoding needs: task, class labels, feature count and names (from run.json, else the architecture)."""
    if not (run_dir / BEST_MODEL).is_file():
        status = read_run_json(run_dir).get("status", "unknown")
        raise InputError(f"run {run_dir.name!r} has no {BEST_MODEL} (run status: {status})",
                         [ErrorDetail(("run",), f"has no {BEST_MODEL}: the run kept no model (status: {status})")])
    dataset = read_run_json(run_dir).get("dataset") or {}
    n_features = dataset.get("n_features")
    if not isinstance(n_features, int):
        n_features = _architecture_input_dim(run_dir)
    task = dataset.get("task")
    labels = dataset.get("class_labels")
    if task in ("binary", "multiclass") and labels is None:  # runs from before labels were recorded
        labels = list(range(dataset.get("n_classes") or 2))
    return {"task": task or "unknown", "class_labels": labels, "n_features": n_features,
            "feature_names": dataset.get("feature_names")}


def _architecture_input_dim(run_dir: Path) -> int:
    try:
        best = json.loads((run_dir / "best_architecture.json").read_text(encoding="utf-8"))
        return int(best["architecture"]["input_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"run {run_dir.name!r} records no feature count (run.json and best_architecture.json "
                         "are missing or unreadable)",
                         [ErrorDetail(("run",), "records no feature count")]) from None


def decode_outputs(outputs: np.ndarray, facts: dict, with_probabilities: bool) -> dict:
    """Model outputs → predictions in the user's labels or units."""
    task = facts["task"]
    if task == "regression":
        return {"predictions": outputs.reshape(-1).tolist()}
    labels = list(facts["class_labels"])
    if task == "binary":
        positive = outputs.reshape(-1).astype(np.float64)
        probabilities = np.stack([1.0 - positive, positive], axis=1)
    else:
        probabilities = outputs.astype(np.float64)
    if probabilities.shape[1] != len(labels):
        raise ServiceError(f"the model gives {probabilities.shape[1]} class scores but the run records "
                           f"{len(labels)} classes")
    decoded = {"predictions": [labels[i] for i in np.argmax(probabilities, axis=1)], "classes": labels}
    if with_probabilities:
        decoded["probabilities"] = probabilities.tolist()
    return decoded


# --------------------------------------------------------------------------- the model cache


def cached_model(path: Path):
    """The Keras model at ``path``, loaded once while its file stays the same."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise InputError(f"cannot read {path.name}: {exc.strerror}",
                         [ErrorDetail(("run",), f"{path.name} cannot be read")]) from None
    return _load_model(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_model(path: str, mtime_ns: int, size: int):  # the file's identity is part of the key
    import keras

    return keras.saving.load_model(path, compile=False)


def model_cache_info() -> dict:
    """Hits and misses of the Keras-model and ONNX-session caches together."""
    keras_info, onnx_info = _load_model.cache_info(), _load_onnx.cache_info()
    return {"hits": keras_info.hits + onnx_info.hits, "misses": keras_info.misses + onnx_info.misses,
            "size": keras_info.currsize + onnx_info.currsize, "max_size": 2 * MODEL_CACHE_SIZE}


def clear_model_cache() -> None:
    _load_model.cache_clear()
    _load_onnx.cache_clear()


def cached_onnx_session(path: Path):
    """An onnxruntime session for ``path``, made once while its file stays the same."""
    stat = path.stat()
    return _load_onnx(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _load_onnx(path: str, mtime_ns: int, size: int):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def _batches(features: np.ndarray, batch_size: int):
    return (features[start:start + batch_size] for start in range(0, features.shape[0], batch_size))


def _keras_forward(run_dir: Path, features: np.ndarray, batch_size: int) -> np.ndarray:
    model = cached_model(run_dir / BEST_MODEL)
    # predict_on_batch skips fit-style callbacks and progress: ~1 ms per call once traced.
    return np.concatenate([np.asarray(model.predict_on_batch(part)) for part in _batches(features, batch_size)])


def _onnx_forward(run_dir: Path, features: np.ndarray, batch_size: int) -> np.ndarray:
    session = cached_onnx_session(run_dir / ONNX_MODEL)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: part})[0] for part in _batches(features, batch_size)])
