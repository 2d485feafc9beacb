"""Architecture → Keras model: output shapes per task, statistics baked in, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cerebros_service.search.metrics import head_for, output_units
from cerebros_service.search.space import sample_architecture
from conftest import tiny_space


def _build(task, n_classes, input_dim=6, seed=0, **stats):
    from cerebros_service.search.build import build_model

    arch = sample_architecture(tiny_space(), input_dim, output_units(task, n_classes),
                               np.random.default_rng(seed))
    defaults = dict(feature_mean=np.zeros(input_dim), feature_var=np.ones(input_dim))
    defaults.update(stats)
    return arch, build_model(arch, task, n_classes, **defaults)


@pytest.mark.parametrize("task, n_classes, width", [("binary", 2, 1), ("multiclass", 5, 5), ("regression", None, 1)])
def test_output_shape_and_head_per_task(task, n_classes, width):
    arch, model = _build(task, n_classes)
    x = np.random.default_rng(0).normal(size=(7, 6)).astype("float32")
    y = np.asarray(model.predict(x, verbose=0))
    assert y.shape == (7, width)
    assert np.isfinite(y).all()
    if task == "binary":
        assert ((y > 0) & (y < 1)).all()
    if task == "multiclass":
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    # one Dense per hidden unit plus the head
    hidden_units = sum(len(level["units"]) for level in arch["levels"][:-1])
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert len(dense) == hidden_units + 1
    assert model.loss == head_for(task, n_classes).loss


def test_model_normalizes_raw_features_and_rescales_regression_output():
    mean, var = np.full(6, 1000.0), np.full(6, 400.0)
    _, model = _build("regression", None, feature_mean=mean, feature_var=var,
                      target_mean=5000.0, target_std=0.001)
    norm = model.get_layer("normalize")
    x = np.full((3, 6), 1000.0, dtype="float32")  # exactly the mean: normalizes to 0
    np.testing.assert_allclose(np.asarray(norm(x)), 0.0, atol=1e-5)
    # With a tiny target std the head's output is squeezed around the target mean.
    y = np.asarray(model.predict(np.random.default_rng(1).normal(1000, 20, size=(16, 6)).astype("float32"), verbose=0))
    np.testing.assert_allclose(y, 5000.0, atol=1.0)


def test_build_rejects_a_broken_architecture():
    from cerebros_service.search.build import build_model

    arch = sample_architecture(tiny_space(), 6, 1, np.random.default_rng(0))
    arch["edges"] = []
    with pytest.raises(ValueError, match="predecessor"):
        build_model(arch, "binary", 2, feature_mean=np.zeros(6), feature_var=np.ones(6))


def test_importing_the_engine_does_not_import_a_framework():
    code = (
        "import sys\n"
        "import cerebros_service.run, cerebros_service.search.build, cerebros_service.search.train\n"
        "import cerebros_service.search.device, cerebros_service.search.metrics, cerebros_service.strategies\n"
        "import cerebros_service.artifacts, cerebros_service.data.builtin\n"
        "loaded = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
