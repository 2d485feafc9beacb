"""Shared pytest fixtures. Each part of the project keeps its fixtures in its own section."""

from __future__ import annotations

import importlib

import numpy as np
import pytest


def required(module: str):
    """A test dependency the ``test`` extra installs: missing, it FAILS the test (a broken
    install must not pass as a green skip, as ``pytest.importorskip`` would let it)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is not importable ({exc}); the test extra installs it: pip install -e '.[test]'",
                    pytrace=False)


# ---------------------------------------------------------------------------
# Search engine (search/, strategies/, run.py): tiny data and fast settings so
# every trial trains in a second or two on a 2-core CPU.
# ---------------------------------------------------------------------------

def make_tiny_dataset(task: str, n: int = 120, features: int = 6, seed: int = 0):
    """A small learnable dataset of the given task kind (numpy only, seeded)."""
    from cerebros_service.data.dataset import make_dataset

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)) * 3.0 + 5.0  # off-centre: the model must normalize
    score = x[:, 0] - x[:, 1] + 0.5 * x[:, 2]
    if task == "binary":
        y = (score > np.median(score)).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    else:
        y = 20.0 * score + 100.0 + rng.normal(scale=1.0, size=n)
    return make_dataset(f"tiny_{task}", x, y, task=task)


def tiny_space():
    from cerebros_service.settings import SpaceSettings

    # No BatchNormalization: it doubles a tiny model's trace time; the tests of it ask for it.
    return SpaceSettings(min_levels=1, max_levels=2, min_units_per_level=1, max_units_per_level=2,
                         min_neurons=4, max_neurons=12, activations=("elu", "relu"), bnorm_or_dropout="none")


def tiny_training(**overrides):
    from cerebros_service.settings import TrainSettings

    values = dict(epochs=2, batch_size=32, learning_rate=0.01, patience=3, validation_split=0.25)
    values.update(overrides)
    return TrainSettings(**values)


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset


@pytest.fixture
def fast_settings():
    """SearchSettings factory: tiny space, 2 epochs; pass overrides as keywords."""
    from cerebros_service.settings import SearchSettings

    def make(training: dict | None = None, **overrides):
        values = dict(max_trials=2, population_size=2, space=tiny_space(),
                      training=tiny_training(**(training or {})))
        values.update(overrides)
        return SearchSettings(**values)

    return make


# ---------------------------------------------------------------------------
# After the search (predict, ONNX, report, tracking, runs): finished runs made
# once per session under their own artifacts root, shared by those tests. Tests
# that resolve run ids take `after_root`, which points CEREBROS_ARTIFACTS_ROOT at it.
# ---------------------------------------------------------------------------

AFTER_SPACE = {"max_levels": 2, "max_units_per_level": 2, "min_neurons": 4, "max_neurons": 16}
IRIS_NAMES = ("setosa", "versicolor", "virginica")


@pytest.fixture(scope="session")
def after_root_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("after-runs")


@pytest.fixture
def after_root(after_root_dir, monkeypatch):
    monkeypatch.setenv("CEREBROS_ARTIFACTS_ROOT", str(after_root_dir))
    return after_root_dir


def _finished_run(root, spec: dict, opts: dict) -> dict:
    from cerebros_service import run_nas

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CEREBROS_ARTIFACTS_ROOT", str(root))
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to use a plain folder
        result = run_nas(spec, opts)
    assert result["status"] == "success", result
    return result


@pytest.fixture(scope="session")
def labelled_run(after_root_dir):
    """Iris with its species names as labels (2 trials x 2 epochs), MLflow (a local file store) and
    TensorBoard on: {"result", "run_dir", "x", "labels", "mlruns"}."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    labels = [IRIS_NAMES[i] for i in iris.target]
    mlruns = after_root_dir / ".mlflow"  # a local store must lie under the artifacts root
    result = _finished_run(after_root_dir, {
        "dataset": {"source": "inline", "x": iris.data.tolist(), "y": labels},
        "training": {"epochs": 2}, "search_space": AFTER_SPACE,
    }, {"run_id": "iris-labelled", "budget": {"max_trials": 2, "population_size": 2},
        "tracking": {"mlflow": {"tracking_uri": ".mlflow", "experiment": "after-tests"},
                     "tensorboard": True}})
    from pathlib import Path

    return {"result": result, "run_dir": Path(result["artifacts"]["run_dir"]), "x": iris.data,
            "labels": labels, "mlruns": mlruns}


@pytest.fixture(scope="session")
def regression_run(after_root_dir):
    """Diabetes regression (1 trial x 1 epoch), default after-run steps: {"result", "run_dir"}."""
    from pathlib import Path

    result = _finished_run(after_root_dir, {"dataset_id": "diabetes", "training": {"epochs": 1},
                                            "search_space": AFTER_SPACE},
                           {"run_id": "diabetes-regression", "budget": {"max_trials": 1, "population_size": 1}})
    return {"result": result, "run_dir": Path(result["artifacts"]["run_dir"])}


# ---------------------------------------------------------------------------
# Data (data/, register_dataset): datasets a test registers are unregistered after it.
# ---------------------------------------------------------------------------

@pytest.fixture
def registered():
    """register_dataset(name, x, y, **kwargs), remembering what got registered."""
    from cerebros_service import register_dataset, unregister_dataset

    names: list[str] = []

    def register(name, x, y, **kwargs):
        result = register_dataset(name, x, y, **kwargs)
        if result["status"] == "registered":
            names.append(name)
        return result

    yield register
    for name in names:
        unregister_dataset(name)


# ---------------------------------------------------------------------------
# CLI: runs main() as `cerebros-service` / `python -m cerebros_service` do, then
# reports on stderr whether TensorFlow got imported (stdout belongs to the protocol).
# ---------------------------------------------------------------------------

MAIN_WITH_TF_REPORT = (
    "import sys\n"
    "from cerebros_service.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    "    sys.stderr.write('\\nTF_LOADED=%s\\n' % ('tensorflow' in sys.modules))\n"
    "sys.exit(code)\n"
)
