"""Training candidates, sequentially and fused: best-epoch weights, failures isolated, budgets."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest

from cerebros_service.data.builtin import load_builtin
from cerebros_service.data.dataset import split_indices
from cerebros_service.search.metrics import output_units
from cerebros_service.search.records import Candidate
from cerebros_service.search.space import sample_architecture
from cerebros_service.search.tracking import EpochTracker
from cerebros_service.search.train import StopCheck, make_training_data, train_population
from cerebros_service.settings import ExecutionSettings, SpaceSettings, Standing
from conftest import make_tiny_dataset, tiny_space, tiny_training

FUSED = ExecutionSettings(mode="fused")
SEQUENTIAL = ExecutionSettings(mode="sequential")
MODES = [pytest.param(FUSED, id="fused"), pytest.param(SEQUENTIAL, id="sequential")]


def _data(task, dataset=None):
    dataset = dataset or make_tiny_dataset(task)
    train_idx, val_idx = split_indices(dataset.n_samples, 0.25, seed=0)
    return make_training_data(dataset, train_idx, val_idx)


def _candidates(data, n, space=None, seed=0, **fields):
    rng = np.random.default_rng(seed)
    units = output_units(data.task, data.n_classes)
    return [Candidate(trial=i, generation=0, architecture=sample_architecture(space or tiny_space(), data.input_dim,
                                                                                units, rng),
                      seed=1000 + i, **fields) for i in range(n)]


def _evaluate(path, data, metric):
    import keras

    model = keras.saving.load_model(path)
    scores = model.evaluate(data.x_val, data.targets(data.y_val), batch_size=32, verbose=0, return_dict=True)
    return scores[metric.removeprefix("val_")]


# --------------------------------------------------------------------------- pure bookkeeping

def test_tracker_keeps_the_best_epoch_and_stops_after_patience():
    tracker = EpochTracker("val_rmse", "min", patience=2, started=time.monotonic())
    values = [5.0, 3.0, 4.0, 2.5, 2.6, 2.7]
    improved = [tracker.epoch_end(e, {"loss": 1.0, "val_rmse": v}) for e, v in enumerate(values)]
    assert improved == [True, True, False, True, False, False]
    assert tracker.best_epoch == 4 and tracker.best_value == 2.5
    assert tracker.stop_reason == "patience" and tracker.failure is None
    assert tracker.history["val_rmse"] == values and tracker.first_epoch_s is not None


def test_tracker_breaks_a_tie_on_the_value_by_the_lower_validation_loss():
    tracker = EpochTracker("val_accuracy", "max", patience=2, started=time.monotonic())
    epochs = [(0.9, 0.50), (1.0, 0.40), (1.0, 0.30), (1.0, 0.35), (1.0, 0.20), (1.0, 0.25), (1.0, 0.26)]
    improved = [tracker.epoch_end(e, {"loss": 1.0, "val_accuracy": a, "val_loss": l})
                for e, (a, l) in enumerate(epochs)]
    assert improved == [True, True, True, False, True, False, False]
    assert tracker.best_epoch == 5 and tracker.best_value == 1.0 and tracker.best_loss == 0.20
    assert tracker.stop_reason == "patience"
    # monitoring the loss itself has no tie to break
    plain = EpochTracker("val_loss", "min", patience=2, started=time.monotonic())
    assert [plain.epoch_end(e, {"val_loss": v}) for e, v in enumerate([0.5, 0.5])] == [True, False]


@pytest.mark.parametrize("logs", [{"loss": float("nan"), "val_accuracy": 0.5},
                                  {"loss": 0.3, "val_loss": float("inf"), "val_accuracy": 0.5},
                                  {"loss": 0.3, "val_accuracy": float("nan")}])
def test_tracker_stops_on_non_finite_values(logs):
    tracker = EpochTracker("val_accuracy", "max", patience=5, started=time.monotonic())
    assert tracker.epoch_end(0, logs) is False
    assert tracker.stop_reason == "non_finite" and "became" in tracker.failure and tracker.best_value is None


def test_tracker_keeps_its_best_epoch_when_values_stop_being_finite_later():
    tracker = EpochTracker("val_accuracy", "max", patience=5, started=time.monotonic())
    tracker.epoch_end(0, {"loss": 0.5, "val_accuracy": 0.8})
    tracker.epoch_end(1, {"loss": float("nan"), "val_accuracy": 0.1})
    assert tracker.stop_reason == "non_finite" and tracker.failure is None
    assert tracker.best_value == 0.8 and tracker.best_epoch == 1 and tracker.history["loss"] == [0.5, None]


# --------------------------------------------------------------------------- both trainers

@pytest.mark.parametrize("execution", MODES)
@pytest.mark.parametrize("task, metric, direction", [("multiclass", "val_accuracy", "max"),
                                                      ("regression", "val_rmse", "min")])
def test_saved_weights_reproduce_the_reported_metric(tmp_path, execution, task, metric, direction):
    data = _data(task)
    # A large learning rate and short patience make training stop early, after the best
    # epoch: the kept weights must be the best epoch's, not the last one's.
    training = tiny_training(epochs=25, patience=2, learning_rate=0.05)
    records = train_population(_candidates(data, 2), data, training, metric, direction, execution=execution,
                               save_dir=str(tmp_path))
    assert [r.status for r in records] == ["completed", "completed"], [r.error for r in records]
    saved = [r for r in records if r.model_path]
    assert saved  # the better of the two beat "nothing yet", at least the first did
    for record in records:
        history = record.history[metric]
        assert len(history) == record.epochs_run and record.execution == execution.mode
        best = max(history) if direction == "max" else min(history)
        assert record.value == pytest.approx(best, rel=1e-6)
        assert history[record.best_epoch - 1] == pytest.approx(record.value, rel=1e-6)
        assert record.epochs_run < 25 and record.best_epoch == record.epochs_run - 2  # early stop happened
        assert record.stop_reason == "patience" and record.params > 0
        assert 0 < record.first_epoch_s and record.duration_s > 0
    for record in saved:
        assert record.model_path.startswith(str(tmp_path))
        assert _evaluate(record.model_path, data, metric) == pytest.approx(record.value, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("execution", MODES)
def test_a_failing_trial_is_recorded_and_the_others_run(execution):
    data = _data("binary")
    broken, good, other = _candidates(data, 3)
    broken.architecture["levels"][0]["units"][0]["neurons"] = 0  # rejected by the builder
    seen = []
    records = train_population([broken, good, other], data, tiny_training(), "val_auc", "max",
                               execution=execution, on_record=seen.append)
    assert [r.status for r in records] == ["failed", "completed", "completed"]
    assert "neurons" in records[0].error and records[0].value is None
    assert all(0.0 <= r.value <= 1.0 for r in records[1:])
    assert sorted(seen, key=lambda r: r.trial) == records


def test_a_candidate_over_the_operators_parameter_limit_is_never_built(monkeypatch):
    from cerebros_service.search.build import count_params

    data = _data("binary")
    candidates = _candidates(data, 3)
    sizes = [count_params(c.architecture, 1) for c in candidates]
    monkeypatch.setenv("CEREBROS_MAX_CANDIDATE_PARAMS", str(sorted(sizes)[1]))
    records = train_population(candidates, data, tiny_training(), "val_accuracy", "max", execution=FUSED)
    for record, size in zip(records, sizes):
        if size > sorted(sizes)[1]:
            assert record.status == "failed" and "max_candidate_params" in record.error
            assert record.epochs_run == 0
        else:
            assert record.status == "completed"


@pytest.mark.parametrize("execution", MODES)
def test_a_diverging_candidate_fails_alone(execution):
    data = _data("regression")
    # An absurd learning rate drives the weights to ~1e30: outputs overflow to inf/NaN.
    training = tiny_training(learning_rate=1e30, epochs=3)
    records = train_population(_candidates(data, 2), data, training, "val_rmse", "min", execution=execution)
    assert len(records) == 2
    for record in records:
        assert record.value is None or np.isfinite(record.value)
        if record.status == "failed":
            assert "nan" in record.error.lower() or "inf" in record.error.lower()
        assert all(v is None or np.isfinite(v) for values in record.history.values() for v in values)
    assert any(r.status == "failed" for r in records)


@pytest.mark.parametrize("execution", MODES)
def test_deadline_stops_training_inside_fit_and_no_new_chunk_starts(tmp_path, execution):
    data = _data("binary")
    training = tiny_training(epochs=10_000, patience=10_000)
    started = time.monotonic()
    records = train_population(_candidates(data, 2), data, training, "val_accuracy", "max", execution=execution,
                               stop=StopCheck(deadline=started + 3.0), save_dir=str(tmp_path),
                               save_threshold=Standing(1.5, None, -1))
    assert 1 <= len(records) <= 2 and time.monotonic() - started < 60
    for record in records:
        assert record.status == "completed" and record.epochs_run < 10_000
        assert record.stop_reason == "max_time_seconds"
        assert record.model_path is None  # did not beat the (impossible) threshold
    assert list(tmp_path.iterdir()) == []


def test_cancel_stops_a_fused_chunk_and_keeps_the_best_epochs():
    data = _data("binary")
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 40  # a few epochs in

    records = train_population(_candidates(data, 3), data, tiny_training(epochs=10_000, patience=10_000),
                               "val_accuracy", "max", execution=FUSED, stop=StopCheck(should_stop=cancelled))
    assert len(records) == 3
    assert all(r.status == "completed" and r.stop_reason == "cancelled" and r.best_epoch for r in records)


def test_no_trial_starts_after_the_deadline():
    data = _data("binary")
    for execution in (FUSED, SEQUENTIAL):
        records = train_population(_candidates(data, 2), data, tiny_training(), "val_accuracy", "max",
                                   execution=execution, stop=StopCheck(deadline=time.monotonic() - 1.0))
        assert records == []


# --------------------------------------------------------------------------- fused specifics

# f(0) = 0 everywhere (padded rows need no mask), and activations with f(0) != 0 without
# batch norm after them (they do)
@pytest.mark.parametrize("activations, normalization", [(("elu", "relu", "tanh"), "bnorm"),
                                                        (("sigmoid", "softplus", "elu"), "none")])
def test_fused_candidates_become_standalone_models_that_predict_the_same(activations, normalization):
    import keras

    from cerebros_service.search.fused import make_fused_model, to_probabilities
    from cerebros_service.search.fused_plan import from_fused, make_plan, to_fused, trainable
    from cerebros_service.search.build import initial_weights
    from cerebros_service.search.train import standalone_model

    data = _data("multiclass")
    space = SpaceSettings(min_levels=1, max_levels=3, max_units_per_level=3, min_neurons=3, max_neurons=9,
                          activations=activations, lateral_probability=0.9, bnorm_or_dropout=normalization)
    archs = [c.architecture for c in _candidates(data, 5, space=space, seed=3)]
    archs[2]["levels"][0]["units"][0]["batchnorm"] = True
    head = [len(archs[0]["levels"]) - 1, 0]
    archs[0]["edges"] = [e for e in archs[0]["edges"] if e != [[-1, 0], head]]  # the other heads read the input
    plan = make_plan(archs, data.output_units)
    # the layout's corners are all here: narrower members, members that skip a source they
    # have, the input read by some heads only, picks out of order
    assert any(r.ragged for r in plan.readers()) and any(r.partial_links for r in plan.slots)
    assert any(link.readers is not None for link in plan.head.links if link.source == "input")
    assert any(link.picks is not None for r in plan.readers() for link in r.links)
    model = make_fused_model(plan, "multiclass", feature_mean=data.feature_mean, feature_var=data.feature_var,
                             target_mean=0.0, target_std=1.0, training=tiny_training(learning_rate=0.01, weight_decay=0.0),
                             seed=0)
    # one trainable variable per reader (each unit position and the head), whatever its links
    assert len(model.trainable_variables) == len(plan.readers())
    model.set_arrays(to_fused(plan, [initial_weights(a, data.output_units, i) for i, a in enumerate(archs)]))
    model.fit(data.x_train, data.targets(data.y_train), epochs=2, batch_size=16, verbose=0)
    fused = to_probabilities("multiclass", model.predict_on_batch(data.x_val))
    arrays = model.get_arrays()
    for index, arch in enumerate(archs):
        standalone = standalone_model(arch, from_fused(plan, arrays, index), data, tiny_training())
        assert isinstance(standalone, keras.Model)
        np.testing.assert_allclose(standalone.predict_on_batch(data.x_val), fused[:, index, :], atol=1e-5)
    # and back: the standalone weights put into a fresh fused model predict the same again;
    # the padding trained nothing (what lies outside the candidates' slices is as it started)
    rebuilt = to_fused(plan, [from_fused(plan, arrays, i) for i in range(len(archs))])
    for name in filter(trainable, arrays):
        np.testing.assert_array_equal(arrays[name], rebuilt[name], err_msg=name)
    model.set_arrays(rebuilt)
    np.testing.assert_allclose(to_probabilities("multiclass", model.predict_on_batch(data.x_val)), fused, atol=1e-6)


@pytest.mark.parametrize("task", ["multiclass", "binary", "regression"])
def test_each_fused_candidate_gets_the_gradient_of_its_standalone_model(task):
    """The fused layout's own gradients (picked sources, partial links, batch norm with
    members that skip it, the summed loss) are each candidate's: one batch in training
    mode, compared with its standalone Keras model's autodiff."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the gradients are taken with TensorFlow's tape")
    import tensorflow as tf

    from cerebros_service.search.build import initial_weights
    from cerebros_service.search.fused import make_fused_model
    from cerebros_service.search.fused_plan import make_plan, packs, to_fused, trainable
    from cerebros_service.search.train import standalone_model

    data = _data(task)
    space = SpaceSettings(min_levels=1, max_levels=3, max_units_per_level=3, min_neurons=3, max_neurons=9,
                          activations=("elu", "relu", "tanh"), lateral_probability=0.9, bnorm_or_dropout="bnorm")
    archs = [c.architecture for c in _candidates(data, 5, space=space, seed=3)]
    for arch in archs[:2]:
        arch["levels"][0]["units"][0]["batchnorm"] = False
    plan = make_plan(archs, data.output_units)
    assert any(r.partial_links for r in plan.readers()) and any(s.ragged for s in plan.slots)
    assert any(link.picks is not None for r in plan.readers() for link in r.links)
    assert any(s.any_batchnorm and not s.batchnorm.all() for s in plan.slots)
    weights = [initial_weights(a, data.output_units, i) for i, a in enumerate(archs)]
    model = make_fused_model(plan, task, feature_mean=data.feature_mean, feature_var=data.feature_var,
                             target_mean=data.target_mean, target_std=data.target_std, training=tiny_training(),
                             seed=0)
    model.set_arrays(to_fused(plan, weights))
    x, y = data.x_train[:16], data.targets(data.y_train[:16])
    with tf.GradientTape() as tape:
        loss = model.loss(y, model(x, training=True))
    fused = {}
    for pack, gradient in zip(packs(plan), tape.gradient(loss, model.packed)):
        fused.update(pack.unpack(gradient.numpy()))

    def own_loss(out):
        if task == "multiclass":
            picked = tf.gather(out, tf.cast(tf.reshape(y, (-1,)), "int32"), axis=1, batch_dims=1)
            return -tf.reduce_mean(tf.math.log(picked))
        if task == "binary":
            return -tf.reduce_mean(y * tf.math.log(out) + (1.0 - y) * tf.math.log(1.0 - out))
        return tf.reduce_mean(tf.square(out - y))

    per_candidate = []
    for arch, start in zip(archs, weights):
        standalone = standalone_model(arch, start, data, tiny_training(), metrics=False)
        with tf.GradientTape() as tape:
            standalone_loss = own_loss(standalone(x, training=True))
        grads = {id(v): g for v, g in zip(standalone.trainable_weights,
                                          tape.gradient(standalone_loss, standalone.trainable_weights))}
        per_candidate.append({layer.name: [grads[id(w)].numpy() if id(w) in grads else np.zeros(w.shape, "float32")
                                           for w in layer.weights]
                              for layer in standalone.layers if layer.weights and layer.name != "normalize"})
    expected = to_fused(plan, per_candidate, identity=False)
    for name in filter(trainable, expected):
        scale = float(np.abs(expected[name]).max())  # regression gradients run to thousands
        np.testing.assert_allclose(fused[name], expected[name], rtol=1e-4, atol=1e-5 * scale + 1e-7, err_msg=name)


def test_the_training_optimizer_updates_weights_as_keras_adamw_does():
    import keras

    from cerebros_service.search.optimizer import make_optimizer, make_training_optimizer

    training = tiny_training(learning_rate=0.01, weight_decay=0.004, lr_schedule="cosine", steps_per_epoch=3)
    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype("float32") for shape in [(4, 3, 5), (4, 3)]]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(4)]
    results = []
    for optimizer in (make_optimizer(training), make_training_optimizer(training)):
        variables = [keras.Variable(w) for w in start]
        optimizer.build(variables)
        for step in grads:
            optimizer.apply(step, variables)
        results.append([keras.ops.convert_to_numpy(v) for v in variables])
    for ours, keras_own in zip(*results[::-1]):
        assert not np.allclose(ours, start[0] if ours.ndim == 3 else start[1])
        np.testing.assert_allclose(ours, keras_own, rtol=1e-5, atol=1e-6)


def test_a_saved_fused_model_loads_without_custom_objects(tmp_path):
    import keras

    data = _data("binary")
    records = train_population(_candidates(data, 3), data, tiny_training(), "val_accuracy", "max",
                               execution=FUSED, save_dir=str(tmp_path))
    assert all(r.execution == "fused" and r.chunk["size"] == 3 for r in records)
    saved = [r for r in records if r.model_path]
    model = keras.saving.load_model(saved[-1].model_path)  # no custom_objects
    assert model.output_shape == (None, 1)
    assert _evaluate(saved[-1].model_path, data, "val_accuracy") == pytest.approx(saved[-1].value, abs=1e-6)


def test_a_stopped_candidate_is_frozen_while_the_others_train():
    data = _data("binary")
    quick, slow = _candidates(data, 2)
    training = tiny_training(epochs=12, patience=1, learning_rate=0.05)
    records = train_population([quick, slow], data, training, "val_loss", "min", execution=FUSED,
                               keep_weights=True)
    # each stopped on its own epoch; the kept weights are each one's best epoch
    assert all(r.stop_reason in ("patience", "epochs") for r in records)
    for record in records:
        assert record.weights is not None and record.best_epoch <= record.epochs_run
        assert len(record.history["val_loss"]) == record.epochs_run


def test_warm_started_candidates_continue_from_their_weights():
    data = _data("multiclass")
    first = train_population(_candidates(data, 2), data, tiny_training(epochs=4, patience=100), "val_loss",
                             "min", execution=FUSED, keep_weights=True)
    continued = [Candidate(trial=10 + r.trial, generation=1, architecture=r.architecture, seed=0, epochs=1,
                           initial_weights=r.weights, parent_trial=r.trial) for r in first]
    for execution in (FUSED, SEQUENTIAL):
        again = train_population(continued, data, tiny_training(epochs=1), "val_loss", "min", execution=execution)
        for before, after in zip(first, again):
            assert after.parent_trial == before.trial and after.epochs_run == 1
            # one more epoch from the kept weights lands near them, far below a fresh start's loss
            assert after.value < before.history["val_loss"][0]


def test_the_planner_counts_a_chunk_as_its_layout_does():
    from cerebros_service.search.fused_plan import PaddedSize, make_plan, unit_shapes

    data = _data("multiclass")
    space = SpaceSettings(max_levels=3, max_units_per_level=3, lateral_probability=0.9)
    archs = [c.architecture for c in _candidates(data, 12, space=space, seed=7)]
    size = PaddedSize()
    for count, arch in enumerate(archs, start=1):
        expected = make_plan(archs[:count], data.output_units).padded_params()
        assert size.total(unit_shapes(arch, data.output_units)) == expected
        size.add(unit_shapes(arch, data.output_units))
        assert size.total() == expected


def test_chunks_respect_the_caps_and_fall_back_to_sequential_for_one():
    from cerebros_service.search.fused_train import plan_chunks

    data = _data("binary")
    candidates = _candidates(data, 5)
    sizes = [len(c) for c in plan_chunks(candidates, data, tiny_training(), ExecutionSettings(max_fused_candidates=2))]
    assert sizes == [2, 2, 1]
    tiny_cap = ExecutionSettings(max_fused_params=1)
    assert [len(c) for c in plan_chunks(candidates, data, tiny_training(), tiny_cap)] == [1] * 5
    mixed = candidates[:2] + [Candidate(9, 0, candidates[2].architecture, 1, epochs=7)]
    assert [len(c) for c in plan_chunks(mixed, data, tiny_training(), FUSED)] == [2, 1]
    records = train_population(candidates[:3], data, tiny_training(), "val_accuracy", "max",
                               execution=ExecutionSettings(max_fused_candidates=2))
    assert [r.execution for r in records] == ["fused", "fused", "sequential"]


def test_fused_and_sequential_reach_the_same_validation_metric_on_digits():
    dataset = load_builtin("digits")
    data = _data("multiclass", dataset)
    # BatchNormalization, not the default dropout: the two trainers draw different dropout masks
    space = SpaceSettings(max_levels=2, max_units_per_level=2, min_neurons=16, max_neurons=32,
                          bnorm_or_dropout="bnorm")
    candidates = _candidates(data, 2, space=space, seed=5)
    training = tiny_training(epochs=3, patience=10, learning_rate=0.005, batch_size=32)
    fused = train_population(candidates, data, training, "val_accuracy", "max", execution=FUSED)
    sequential = train_population(candidates, data, training, "val_accuracy", "max", execution=SEQUENTIAL)
    for a, b in zip(fused, sequential):
        assert (a.execution, b.execution) == ("fused", "sequential")
        assert a.value == pytest.approx(b.value, abs=0.01)
        assert a.history["val_loss"][0] == pytest.approx(b.history["val_loss"][0], rel=1e-2)  # same start, same batches


def test_compacting_a_chunk_carries_weights_and_optimizer_state(monkeypatch):
    from cerebros_service.search import fused_train

    data = _data("multiclass")
    candidates = _candidates(data, 4, seed=2)
    training = tiny_training(epochs=8, patience=1, learning_rate=0.05)
    plain = train_population(candidates, data, training, "val_loss", "min",
                             execution=ExecutionSettings(compact=False))
    # compact as soon as half have stopped, whatever it costs
    monkeypatch.setattr(fused_train._ChunkMonitor, "_compaction_pays", lambda self, epoch: self.active.mean() <= 0.5)
    compacted = train_population(candidates, data, training, "val_loss", "min", execution=FUSED)
    if max(r.epochs_run for r in plain) == min(r.epochs_run for r in plain):
        pytest.skip("all candidates stopped together: nothing to compact")  # pragma: no cover
    assert max(r.chunk["phases"] for r in compacted) >= 2
    for a, b in zip(plain, compacted):
        assert a.epochs_run == b.epochs_run and a.best_epoch == b.best_epoch
        assert a.history["val_loss"] == pytest.approx(b.history["val_loss"], rel=1e-4)


# --------------------------------------------------------------------------- thread pools

_POOLS = ("import tensorflow as tf; from cerebros_service.search.device import configure_device; "
          "configure_device('cpu', cpu_threads={cores}); "
          "print(tf.config.threading.get_inter_op_parallelism_threads(), "
          "tf.config.threading.get_intra_op_parallelism_threads())")


def _pools(cores: int, **env: str) -> tuple[int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
    done = subprocess.run([sys.executable, "-c", _POOLS.format(cores=cores)], env={**clean, **env},
                          capture_output=True, text=True, timeout=120, check=True)
    inter, intra = done.stdout.split()[-2:]
    return int(inter), int(intra)


def test_a_few_cpu_cores_run_tensorflow_ops_side_by_side_unless_the_operator_says_otherwise():
    from cerebros_service.search.device import cpu_thread_pools

    assert cpu_thread_pools(2) == (2, 1) and cpu_thread_pools(16) == (16, 16)
    assert _pools(3) == (3, 1)
    assert _pools(3, TF_NUM_INTRAOP_THREADS="2") == (0, 0)  # TensorFlow's own reading of the variable


def test_the_step_loop_runs_every_batch_in_order_traced_once_and_stops_when_asked():
    import keras

    from cerebros_service.search.step_loop import FIRST_CALL_STEPS, _loops, run_epoch

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the compiled step loop is TensorFlow's; other backends train with fit")
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(12, 8, 3)).astype("float32"), rng.normal(size=(12, 8, 1)).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    asked = []
    assert run_epoch(model, xs, ys, lambda: asked.append(1) and False, steps_per_call=5) is False
    assert int(model.optimizer.iterations) == 12 and len(asked) == 3  # calls of 5, 5 and 2 steps
    for x, y in zip(xs, ys):  # the same steps, one by one, give the same weights
        twin.train_on_batch(x, y)
    for ours, theirs in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert _loops[model].function.experimental_get_tracing_count() == 1  # whatever the slice's length
    # a stop is honoured after the call: a fresh model's first call is FIRST_CALL_STEPS long
    assert run_epoch(twin, xs, ys, lambda: True) is True
    assert int(twin.optimizer.iterations) == 12 + FIRST_CALL_STEPS
    # a loop does not keep its model alive (the trainers make a model per candidate)
    gone = [weakref.ref(model), weakref.ref(twin)]
    del model, twin
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def test_the_graph_optimizer_is_off_only_inside_and_only_in_this_thread():
    import threading

    import keras

    from cerebros_service.search.device import graph_optimizer_off

    if keras.backend.backend() != "tensorflow":
        pytest.skip("grappler is TensorFlow's")
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    def rewrite_options():
        config = config_pb2.ConfigProto()
        config.ParseFromString(context.context().function_call_options.config_proto_serialized or b"")
        return config.graph_options.rewrite_options

    callers = context.context().function_call_options
    double = tf.function(lambda x: 2.0 * x + 1.0)
    outside = double(tf.constant([1.0, 2.0])).numpy()
    seen_elsewhere = []
    with graph_optimizer_off():
        assert rewrite_options().disable_meta_optimizer
        worker = threading.Thread(target=lambda: seen_elsewhere.append(rewrite_options().disable_meta_optimizer))
        worker.start()
        worker.join()
        np.testing.assert_array_equal(double(tf.constant([1.0, 2.0])).numpy(), outside)
    assert seen_elsewhere == [False]  # another thread's functions are optimized as before
    assert context.context().function_call_options is callers and not rewrite_options().disable_meta_optimizer


def _with_rate(candidate: Candidate, rate: float | None) -> Candidate:
    from dataclasses import replace as replaced

    arch = {k: v for k, v in candidate.architecture.items() if k != "learning_rate"}
    if rate is not None:
        arch["learning_rate"] = rate
    return replaced(candidate, architecture=arch)


def _flat_weights(records) -> list[np.ndarray]:
    return [np.concatenate([np.ravel(a) for layer in sorted(r.weights) for a in r.weights[layer]]) for r in records]


def test_one_fused_chunk_trains_each_candidate_at_its_own_learning_rate():
    """Candidates that drew different rates share a chunk, and each trains as the whole
    chunk would at its rate."""
    from cerebros_service.search.fused_train import plan_chunks

    data = _data("binary")
    base = _candidates(data, 2)
    mixed = [_with_rate(base[0], 0.05), _with_rate(base[1], None)]  # the second at the settings' 0.01
    assert [len(chunk) for chunk in plan_chunks(mixed, data, tiny_training(), FUSED)] == [2]

    def train(candidates, learning_rate):
        records = train_population(candidates, data, tiny_training(learning_rate=learning_rate), "val_accuracy",
                                   "max", execution=FUSED, keep_weights=True)
        assert [(r.execution, r.chunk["size"]) for r in records] == [("fused", 2)] * 2
        return _flat_weights(records)

    together = train(mixed, 0.01)
    np.testing.assert_allclose(together[0], train(base, 0.05)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(together[1], train(base, 0.01)[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(together[0], train(base, 0.01)[0], atol=1e-3)


@pytest.mark.parametrize("execution", MODES)
def test_a_trial_trains_at_the_learning_rate_its_architecture_drew(execution):
    """The same two candidates give the same weights whether the rate comes from the
    training settings or from their architectures, and other weights at another rate."""
    data = _data("binary")
    base = _candidates(data, 2)

    def weights(candidates, learning_rate):
        records = train_population(candidates, data, tiny_training(learning_rate=learning_rate), "val_accuracy",
                                   "max", execution=execution, keep_weights=True)
        assert [r.execution for r in records] == [execution.mode] * 2
        return _flat_weights(records)

    from_settings = weights(base, 0.05)
    from_architecture = weights([_with_rate(c, 0.05) for c in base], 0.001)
    at_settings_rate = weights(base, 0.001)
    for mine, theirs, other in zip(from_architecture, from_settings, at_settings_rate):
        # w / 50 * 50 rounds, and the scaled update is not the fused Adam kernel's op order
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-4)
        assert not np.allclose(mine, other, atol=1e-3)
