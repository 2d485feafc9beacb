"""The service runs on a machine without TensorFlow (issue 37): Keras 3 on JAX.

Each test runs a child Python process in which an import hook refuses ``tensorflow``
(and every ``tensorflow.*`` module), as on a GPU box that has JAX and no TensorFlow.
There a tiny search runs through ``run_nas`` on each trainer, then ``predict`` and
``report`` on the finished run; ONNX export (tf2onnx, TensorFlow graphs) is skipped
with its reason. A module that imports TensorFlow unconditionally fails these tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import required


@pytest.fixture(autouse=True)
def _jax_installed():
    required("jax")  # the `test` extra installs it: missing, these tests fail rather than skip


# Put first on sys.meta_path: refuses the named top-level packages and their submodules.
BLOCK_HOOK = """
import sys
BLOCKED = {blocked!r}

class RefuseImports:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {{name!r}} (refused by the test's import hook)", name=name)
        return None

sys.meta_path.insert(0, RefuseImports())
"""

SEARCH = """
import json, sys
try:
    import tensorflow  # noqa: F401
    hook = "tensorflow imported"
except ImportError:
    hook = "refused"
import cerebros_service
from sklearn.datasets import load_wine

mode = sys.argv[1]
# The fused run delivers the default ensemble of its trials; the sequential one (a trace
# per trial, the slower of the two) the single best.
result = cerebros_service.run_nas(
    {"dataset_id": "wine", "training": {"epochs": 2, "patience": 2},
     "search_space": {"max_levels": 2, "max_units_per_level": 2, "max_neurons": 16}},
    {"seed": 0, "budget": {"max_trials": 2, "population_size": 2}, "execution": mode,
     **({} if mode == "fused" else {"ensemble": False})})
out = {"hook": hook, "result": result}
if result["status"] == "success":
    x = load_wine().data[:5].tolist()
    out["predict"] = cerebros_service.predict(result["run_id"], x)
    out["report"] = cerebros_service.report(result["run_id"])
    with open(result["artifacts"]["trials"]) as lines:
        out["records"] = [json.loads(line) for line in lines if line.strip()]
import keras
out["backend"] = keras.backend.backend()
out["tensorflow_loaded"] = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
print("RESULT " + json.dumps(out))
"""


def run_child(code: str, root: Path, blocked: tuple[str, ...], backend: str | None, *args: str,
              timeout: float = 300) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(CEREBROS_ARTIFACTS_ROOT=str(root), KERAS_HOME=str(root / "keras-home"), JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="2")
    if backend:
        env["KERAS_BACKEND"] = backend
    done = subprocess.run([sys.executable, "-c", BLOCK_HOOK.format(blocked=set(blocked)) + code, *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"child failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("mode", ["fused", "sequential"])
def test_search_predict_report_without_tensorflow(tmp_path, mode):
    out = run_child(SEARCH, tmp_path, ("tensorflow",), "jax", mode)
    assert out["hook"] == "refused"  # the hook works, so nothing below could have used TensorFlow
    assert out["backend"] == "jax" and out["tensorflow_loaded"] == []
    result = out["result"]
    assert result["status"] == "success", result.get("error")
    assert result["completed_trials"] == 2 and result["failed_trials"] == 0
    assert 0.0 <= result["best_metric"] <= 1.0
    assert Path(result["artifacts"]["best_model"]).is_file()
    # the trainer asked for is the one that ran: fused trials record their chunk
    assert [bool(record.get("chunk")) for record in out["records"]] == [mode == "fused"] * 2

    onnx = result["after_run"]["onnx"]
    assert onnx["status"] in ("skipped", "done"), onnx
    if onnx["status"] == "skipped":
        assert "tensorflow" in onnx["reason"].lower() and not (Path(result["artifacts"]["run_dir"]) / "best_model.onnx").exists()

    predicted = out["predict"]
    assert predicted["status"] == "success", predicted
    assert predicted["n_samples"] == 5 and len(predicted["predictions"]) == 5
    assert set(predicted["predictions"]) <= set(predicted["classes"])
    report = out["report"]
    assert report["status"] == "success", report
    html = Path(report["report"]).read_text()
    assert "<html" in html.lower() and result["run_id"] in html


NO_BACKEND = """
import json, cerebros_service
result = cerebros_service.run_nas({"dataset_id": "iris", "training": {"epochs": 1}}, {"budget": {"max_trials": 1}})
print("RESULT " + json.dumps(result))
"""


@pytest.mark.parametrize("blocked, backend, advice", [
    (("tensorflow", "jax", "jaxlib"), None, "cerebros-service[tensorflow]"),
    (("tensorflow",), None, "KERAS_BACKEND=jax"),  # JAX is there: say how to use it
    (("tensorflow", "jax", "jaxlib"), "jax", "cerebros-service[jax]"),
])
def test_missing_backend_is_a_clear_error(tmp_path, blocked, backend, advice):
    result = run_child(NO_BACKEND, tmp_path, blocked, backend, timeout=120)
    assert result["status"] == "failed" and result["error_type"] == "search_failed"
    assert "not installed" in result["error"] and advice in result["error"], result["error"]
    assert "Traceback" not in result["error"] and result["completed_trials"] == 0
    assert not list(tmp_path.glob("run-*")), "no run folder is left for a search that could not start"
