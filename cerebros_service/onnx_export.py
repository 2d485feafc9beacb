"""``best_model.onnx``: the best model in a portable form, kept only when verified.

tf2onnx converts the Keras model (Keras 3.15's own ``model.export(format="onnx")``
turns the Normalization layer's statistics into extra graph inputs, which no caller
can feed). The ONNX graph is then run by onnxruntime on sample rows drawn around the
training data's mean (the model's Normalization layer holds it); the file is written
only when every output matches Keras's to within ``TOLERANCE``. Otherwise no
``best_model.onnx`` is left and the record says why.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import RunDirectory
from .boundary.normalize import normalize
from .boundary.results import failure_result
from .errors import ErrorDetail, InputError, ServiceError
from .jsonsafe import json_safe
from .run_store import resolve_run_dir, update_run_json

log = logging.getLogger(__name__)

ONNX_FILE = "best_model.onnx"
KERAS_FILE = "best_model.keras"
INPUT_NAME = "features"
OPSET = 17  # onnxruntime ≥ 1.14 and Ortex's bundled runtime run it
TOLERANCE = 1e-4  # absolute, and relative to the Keras output's magnitude
SAMPLE_ROWS = 64
FORMATS = ("onnx",)
INSTALL_HINT = "install the extra: pip install 'cerebros-service[onnx]'"


class ExportFailed(ServiceError):
    """The model could not be exported, or the export did not reproduce Keras's outputs."""

    error_type = "export_failed"


def export_onnx(run_dir: Path) -> dict:
    """Convert and verify; ``{"status": "done", "path", …}``, ``"skipped"`` or ``"failed"`` with a reason.

    Never leaves an unverified ``best_model.onnx`` behind; raises nothing but bugs.
    """
    target = run_dir / ONNX_FILE
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as exc:
        target.unlink(missing_ok=True)
        return {"status": "skipped", "reason": f"{exc.name or 'tf2onnx/onnxruntime'} is not installed; {INSTALL_HINT}"}
    import keras

    if keras.backend.backend() != "tensorflow":
        target.unlink(missing_ok=True)
        return {"status": "skipped",
                "reason": f"tf2onnx converts TensorFlow graphs; the Keras backend is {keras.backend.backend()!r}"}
    from .prediction import cached_model

    try:
        model = cached_model(run_dir / KERAS_FILE)
        sample = sample_rows(model, SAMPLE_ROWS)
        expected = np.asarray(model.predict_on_batch(sample), dtype=np.float64)
        proto = _convert(model, tf2onnx)
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        output_name = session.get_outputs()[0].name
        got = np.asarray(session.run([output_name], {INPUT_NAME: sample})[0], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - a failed export is a record, not a failed run
        target.unlink(missing_ok=True)
        log.warning("ONNX export of %s failed: %s", run_dir.name, exc)
        return {"status": "failed", "reason": f"conversion failed: {type(exc).__name__}: {str(exc)[:300]}"}
    record = {"tool": f"tf2onnx {_version('tf2onnx')}", "onnxruntime": _version("onnxruntime"),
              "opset": OPSET, "input": INPUT_NAME, "output": output_name,
              "input_shape": [None, int(sample.shape[1])], "output_shape": [None, *got.shape[1:]],
              "verified_rows": int(sample.shape[0]), "tolerance": TOLERANCE}
    if got.shape != expected.shape:
        target.unlink(missing_ok=True)
        return {"status": "failed", **record,
                "reason": f"onnxruntime gave shape {list(got.shape)}, Keras {list(expected.shape)}"}
    difference = np.abs(got - expected)
    record["max_abs_diff"] = float(difference.max())
    if not np.all(difference <= TOLERANCE * np.maximum(1.0, np.abs(expected))):
        target.unlink(missing_ok=True)
        return {"status": "failed", **record,
                "reason": f"onnxruntime's outputs differ from Keras's by up to {record['max_abs_diff']:.3g} "
                          f"(tolerance {TOLERANCE}) on {sample.shape[0]} sample rows; the file was not kept"}
    RunDirectory(run_dir).write_bytes(ONNX_FILE, proto.SerializeToString())
    return {"status": "done", "path": str(target), **record}


def _convert(model, tf2onnx):
    import tensorflow as tf

    signature = (tf.TensorSpec((None, int(model.inputs[0].shape[-1])), tf.float32, name=INPUT_NAME),)
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # it narrates every rewrite at INFO
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    return proto


def sample_rows(model, n_rows: int, seed: int = 0) -> np.ndarray:
    """Rows like the training data: its mean plus Gaussian spread of its standard deviation."""
    width = int(model.inputs[0].shape[-1])
    mean, variance = np.zeros(width), np.ones(width)
    normalization = next((layer for layer in _all_layers(model)
                          if layer.__class__.__name__ == "Normalization"), None)
    if normalization is not None:
        mean = np.asarray(normalization.mean, dtype=np.float64).reshape(-1)
        variance = np.asarray(normalization.variance, dtype=np.float64).reshape(-1)
    noise = np.random.default_rng(seed).normal(size=(n_rows, width))
    return (mean + noise * np.sqrt(np.maximum(variance, 0.0))).astype(np.float32)


def _all_layers(model):
    """Every layer, depth first, inside nested models too (an ensemble nests its members)."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- public API


def export(run: Any, format: str = "onnx") -> dict:
    """Export a finished run's best model (for runs made before export existed, or again).

    ``{"status": "success", "run_id", "format", "path", "verification": {…}}``, or a
    failed result: ``validation_error`` for a bad run or format, ``export_failed``
    when the tools are missing or the export does not reproduce Keras. Never raises.
    """
    run_id = None
    try:
        run_dir = resolve_run_dir(normalize(run, root="run"))
        run_id = run_dir.name
        format = normalize(format, root="format")
        if format not in FORMATS:
            raise InputError(f"format: must be one of {', '.join(FORMATS)}, got {format!r}",
                             [ErrorDetail(("format",), f"must be one of {', '.join(FORMATS)}")])
        if not (run_dir / KERAS_FILE).is_file():
            raise InputError(f"run {run_id!r} has no {KERAS_FILE} to export",
                             [ErrorDetail(("run",), f"has no {KERAS_FILE}")])
        record = export_onnx(run_dir)
        update_run_json(run_dir, ("after_run", "onnx"), json_safe(record))
        if record["status"] != "done":
            raise ExportFailed(f"ONNX export of run {run_id!r} {record['status']}: {record['reason']}",
                               [ErrorDetail(("format",), record["reason"])])
        verification = {key: record[key] for key in ("max_abs_diff", "tolerance", "verified_rows")}
        return json_safe({"status": "success", "run_id": run_id, "format": format, "path": record["path"],
                          "input": record["input"], "output": record["output"], "tool": record["tool"],
                          "opset": record["opset"], "verification": verification})
    except ServiceError as exc:
        return failure_result(exc, run_id)
    except Exception as exc:  # noqa: BLE001 - the front door never raises
        log.exception("export failed with an internal error (run=%s)", run_id)
        return failure_result(exc, run_id)
