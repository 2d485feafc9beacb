"""Fused population training: K candidates trained together as ONE set of batched weights.

Training K small nets one after another pays Keras' per-model and per-op overhead
K times (tracing, thousands of tiny ops); here a chunk of candidates becomes a few
larger ops instead. Its layout (fused_plan.py): each unit position is a block
``(members, width, batch)`` of the candidates that have a unit there, and reads each
of its sources through a *link*, one batched matmul of the link's kernel ``(readers,
width, source width)`` over the source's block (its members picked in the readers'
order). Padding is zero and stays zero; only after an activation with f(0) != 0 are
a narrower member's extra rows masked. The trainable arrays live in a few flat
variables (packs) cut apart in ``call``, the batch-norm moving statistics in one.
The chunk is traced once and trained by train.fit_epochs; the loss is the sum of the
candidates' losses, so each candidate's gradients are exactly its own.

Per candidate: its own initial weights (build.initial_weights, the same draw the
sequential trainer uses), validation scores every epoch (scoring.py), patience
(a stopped candidate is frozen: its outputs pass through ``stop_gradient``), NaN
isolation (a candidate whose scores stop being finite stops; its best epoch
stands), and best-epoch weights kept as numpy slices. A finished candidate
becomes an ordinary Keras model (build.build_model with its weights sliced out)
only when it must be saved.

Only ``keras`` and ``keras.ops`` are used, so this runs on TensorFlow, JAX and
PyTorch; on TensorFlow the layout's constant picks and cuts use its own gather
and split (below: keras.ops' bookkeeping around them was half the forward graph).
"""
from __future__ import annotations

import functools

import numpy as np

from ..settings import Task, TrainSettings
from .fused_plan import INPUT_TAG, FusedPlan, Pack, packs, trainable, variable_shapes
from .optimizer import make_training_optimizer

BATCHNORM_MOMENTUM = 0.99  # Keras BatchNormalization's defaults, so a saved model behaves the same
BATCHNORM_EPSILON = 1e-3
# Activations with f(0) = 0: a narrower member's padded rows, whose kernel rows and bias are
# zero (and stay zero: their gradients are exactly zero), then read as zeros without a mask.
ZERO_AT_ZERO = frozenset({"elu", "relu", "selu", "gelu", "tanh", "swish", "silu", "softsign", "linear",
                          "leaky_relu", "mish", "relu6"})


class _TapeRecorder:
    """Records a forward computation on TensorFlow's gradient tape as ONE op with a given
    gradient. TensorFlow's internal tape API: where it is missing (another version),
    ``_tape_recorder`` gives None and the ops' own gradients are used."""

    def __init__(self, record):
        self.record = record

    def differentiable(self, forward, inputs, backward):
        """``forward()``'s result, whose gradient with respect to ``inputs`` is ``backward(upstream)``."""
        with self.record.stop_recording():
            output = forward()
        self.record.record_operation("CerebrosFusedLayout", [output], list(inputs), backward)
        return output


def _tape_recorder() -> _TapeRecorder | None:
    try:
        from tensorflow.python.eager import record
    except ImportError:
        return None
    if not all(hasattr(record, name) for name in ("stop_recording", "record_operation")):
        return None
    return _TapeRecorder(record)


def normalized_by(x, gamma, beta, mean, inv, use):
    """Batch norm as Keras computes it (x * scale + shift), scale and shift from the small
    (M, W, 1) statistics (``inv``: 1 / sqrt(variance + epsilon)); members whose ``use`` is 0
    pass through (scale 1, shift 0)."""
    scale = gamma * inv
    shift = beta - mean * scale
    if use is not None:
        scale, shift = use * scale + (1.0 - use), use * shift
    return x * scale + shift


@functools.cache
def _classes():
    import keras
    from keras import ops

    # The layout's picks and cuts are constants, never negative: on TensorFlow, gathered
    # and split directly. keras.ops' take and split build index bookkeeping around them
    # (a negative-index fix, sizes from cut points): 560 of the 1,250 ops of a
    # 10-candidate chunk's forward graph, each traced twice a chunk (train, predict).
    # Their gradients are written out too: TensorFlow's own, general (IndexedSlices,
    # negative ids, dynamic shapes), built 15 ops per gather and 37 per concatenated
    # segment sum, 700 of a 10-candidate train step's 2,600 ops; here one or two, the
    # same arithmetic, recorded on the tape directly (tf.custom_gradient's IdentityN
    # and the zeros it fills for its pass-through outputs cost time every step).
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tape = _tape_recorder()

        def take_rows(x, indices, training):
            if not training or tape is None:
                return tf.gather(x, indices)
            rows = int(x.shape[0])
            return tape.differentiable(lambda: tf.gather(x, indices), [x],
                                       lambda upstream: [tf.math.unsorted_segment_sum(upstream, indices, rows)])

        def add_segments(pieces, segments, count, training):
            """The pieces stacked row-wise, each row added into member ``segments[row]``."""
            def forward():
                stacked = pieces[0] if len(pieces) == 1 else tf.concat(pieces, 0)
                return tf.math.unsorted_segment_sum(stacked, segments, count)

            if not training or tape is None:
                return forward()
            sizes = [int(piece.shape[0]) for piece in pieces]

            def backward(upstream):
                rows = tf.gather(upstream, segments)
                return tf.split(rows, sizes) if len(sizes) > 1 else [rows]

            return tape.differentiable(forward, pieces, backward)

        def normalize_batch(x, gamma, beta, use):
            """Training-mode batch normalization of a block over its batch axis, as
            ``_batchnorm`` computes it, with its gradient written out (autodiff through the
            moments and broadcasts built ~35 ops a unit position, this 12): (normalized block,
            batch mean, batch variance), the statistics in float32 under mixed precision."""
            half = x.dtype in (tf.float16, tf.bfloat16)
            kept = {}

            def forward():
                mean, var = tf.nn.moments(tf.cast(x, tf.float32) if half else x, axes=[2], keepdims=True)
                if half:
                    mean, var = tf.cast(mean, x.dtype), tf.cast(var, x.dtype)
                inv = tf.math.rsqrt(var + BATCHNORM_EPSILON)
                kept.update(mean=mean, var=var, inv=inv)
                return normalized_by(x, gamma, beta, mean, inv, use)

            def backward(upstream):
                wide = (lambda t: tf.cast(t, tf.float32)) if half else (lambda t: t)
                up, inv = wide(upstream), wide(kept["inv"])
                normalized = (wide(x) - wide(kept["mean"])) * inv
                dbeta = tf.reduce_sum(up, axis=2, keepdims=True)
                dgamma = tf.reduce_sum(up * normalized, axis=2, keepdims=True)
                count = tf.cast(tf.shape(up)[2], up.dtype)
                dx = (wide(gamma) * inv) * (up - (dbeta + normalized * dgamma) / count)
                if use is not None:
                    member = wide(use)
                    dx, dgamma, dbeta = member * dx + (1.0 - member) * up, member * dgamma, member * dbeta
                return [tf.cast(dx, x.dtype), tf.cast(dgamma, gamma.dtype), tf.cast(dbeta, beta.dtype)]

            out = tape.differentiable(forward, [x, gamma, beta], backward)
            return out, kept["mean"], kept["var"]

        if tape is None:
            normalize_batch = None

        def split_pack(flat, pack):
            return tf.split(flat, pack.sizes)
    else:
        normalize_batch = None

        def take_rows(x, indices, training):
            return ops.take(x, indices, axis=0)

        def add_segments(pieces, segments, count, training):
            stacked = pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=0)
            return ops.segment_sum(stacked, segments, num_segments=count)

        def split_pack(flat, pack):
            return ops.split(flat, pack.cuts)

    def unpack(flat, pack) -> dict:
        """A pack's arrays out of its flat variable, (M, W) ones as (M, W, 1): broadcasting
        over a block's batch axis."""
        pieces = split_pack(flat, pack) if len(pack.names) > 1 else [flat]
        return {name: ops.reshape(piece, shape if len(shape) == 3 else (*shape, 1))
                for name, piece, shape in zip(pack.names, pieces, pack.shapes)}

    activations = {}

    def activation(name: str):
        if name not in activations:
            activations[name] = keras.activations.get(name)
        return activations[name]

    class FusedPopulation(keras.Model):
        """K candidates in one model: input (B, D) raw features, output (B, K, out) logits/values.

        Inside, each unit position's output is a block (members, width, B)
        (fused_plan.py); a position reads each of its sources with one batched
        ``matmul`` over the source's block, its members picked with one ``take``.
        """

        def __init__(self, plan: FusedPlan, task: Task, feature_mean, feature_var,
                     target_mean: float, target_std: float, seed: int, rate_scales=None):
            super().__init__(name="fused_population")
            self.plan, self.task = plan, task
            self.target_mean, self.target_std = float(target_mean), float(target_std)
            self.normalize = keras.layers.Normalization(
                mean=np.asarray(feature_mean, "float32"), variance=np.asarray(feature_var, "float32"))
            # A reader's trainable arrays live in ONE flat variable, cut apart by one split in
            # ``call``: the optimizer then updates ten arrays, not a hundred (its trace, per
            # array, was a second of a 40-candidate chunk's first epoch), and a split's
            # gradient is one concatenation.
            self.packs = packs(plan)
            self.packed = [self.add_weight(shape=(pack.size,), initializer="zeros", name=f"{pack.tag}__packed")
                           for pack in self.packs]
            # Candidates at different learning rates (fused_train.rate_scales): a packed
            # variable holds weight / scale and ``call`` multiplies it back, so the one
            # optimizer's step moves each weight by its own candidate's rate.
            self.rate_scales = None if rate_scales is None else [np.asarray(s, np.float32) for s in rate_scales]
            # Every unit's batch-norm moving statistics in one flat variable too, updated by one
            # assignment a step (per unit, they were a hundred small ops of a 10-candidate step).
            shapes = variable_shapes(plan)
            statistics = tuple(name for name in shapes if not trainable(name))
            self.moving_pack = Pack("moving", statistics, tuple(shapes[name] for name in statistics))
            self.moving = self.add_weight(shape=(self.moving_pack.size,), initializer="zeros", trainable=False,
                                          name="batchnorm_moving") if statistics else None
            self.constants = {}
            for reader in plan.readers():
                for link in reader.links:
                    if link.picks is not None:
                        self._constant(f"{link.kernel_name(reader.tag)}/picks", link.picks, "int32")
                if reader.partial_links:  # the member each row of those links' pieces adds into
                    segments = np.concatenate([reader.links[n].readers for n in reader.partial_links])
                    self._constant(f"{reader.tag}/segments", segments, "int32")
                if self._masks_rows(reader):
                    rows = np.arange(reader.width)[None, :] < reader.widths[:, None]
                    self._constant(f"{reader.tag}/rows", rows[:, :, None])  # (M, W, 1)
            for slot in plan.slots:
                if len(slot.activations) > 1:
                    onehot = np.eye(len(slot.activations), dtype=np.float32)[slot.activation_index]
                    self._constant(f"{slot.tag}/activation", onehot.T[:, :, None, None])  # (A, M, 1, 1)
                if slot.any_batchnorm and not slot.batchnorm.all():
                    self._constant(f"{slot.tag}/batchnorm", slot.batchnorm[:, None, None])
                if slot.any_dropout:
                    self._constant(f"{slot.tag}/dropout", slot.dropout[:, None, None])
            # 1.0 while a candidate trains; 0.0 freezes it (patience, failure).
            self.active = self.add_weight(shape=(plan.size, 1, 1), initializer="ones", trainable=False,
                                          name="active")
            self.seed_generator = keras.random.SeedGenerator(seed)
            self.normalize.build((None, plan.input_dim))
            self.built = True

        @staticmethod
        def _masks_rows(reader) -> bool:
            """A narrower member's padded rows need zeroing: only after an activation with f(0) != 0."""
            return reader.ragged and not set(getattr(reader, "activations", ())) <= ZERO_AT_ZERO

        def _constant(self, name: str, value: np.ndarray, dtype: str | None = None) -> None:
            # Plain arrays, not variables: baked into the traced graph, where TensorFlow folds
            # what depends on them alone (``take``'s negative-index fix, for one); float ones
            # in the compute dtype, so mixed precision does not promote a block to float32.
            self.constants[name] = np.asarray(value, dtype or self.compute_dtype)

        def call(self, features, training=False):
            x = ops.transpose(self.normalize(features))  # (D, B)
            arrays = self._unpacked()
            statistics = {} if training else self._moving_statistics()
            blocks = {INPUT_TAG: x}
            for slot in self.plan.slots:
                out = self._activate(slot, self._dense(slot, blocks, arrays, training))  # (M, W, B)
                if slot.any_batchnorm:
                    out = self._batchnorm(slot.tag, out, arrays, statistics, training)
                if slot.any_dropout and training:
                    rate = self.constants[f"{slot.tag}/dropout"]
                    keep = keras.random.uniform(ops.shape(out), seed=self.seed_generator) >= rate
                    out = ops.where(keep, out / (1.0 - rate), 0.0)
                if self._masks_rows(slot):  # a narrower member's extra rows read as zeros
                    out = out * self.constants[f"{slot.tag}/rows"]
                blocks[slot.tag] = out
            if training and statistics:
                self._update_moving(statistics)
            logits = ops.cast(self._dense(self.plan.head, blocks, arrays, training), "float32")  # (K, out, B); loss in float32
            if self.task == "regression":
                logits = logits * self.target_std + self.target_mean
            active = ops.cast(self.active, "float32")  # autocast reads it in the compute dtype
            logits = active * logits + (1.0 - active) * ops.stop_gradient(logits)
            return ops.transpose(logits, (2, 0, 1))

        def _unpacked(self) -> dict:
            arrays = {}
            for index, (pack, variable) in enumerate(zip(self.packs, self.packed)):
                if self.rate_scales is not None:
                    variable = variable * ops.cast(self.rate_scales[index], self.compute_dtype)
                arrays.update(unpack(variable, pack))
            return arrays

        def _dense(self, reader, blocks, arrays, training):
            members = len(reader.members)
            total = arrays[f"{reader.tag}/bias"]  # (M, W, 1)
            partial = []
            for link in reader.links:
                name = link.kernel_name(reader.tag)
                kernel = arrays[name]  # (readers, W, source width)
                source = blocks[link.source]
                if link.source == INPUT_TAG:  # one (n*W, D) x (D, B) product for every reader
                    count = link.count(members)
                    piece = ops.reshape(ops.matmul(ops.reshape(kernel, (count * reader.width, link.width)), source),
                                        (count, reader.width, ops.shape(source)[1]))
                else:
                    if link.picks is not None:
                        source = take_rows(source, self.constants[f"{name}/picks"], training)
                    piece = ops.matmul(kernel, source)
                if link.readers is None:
                    total = total + piece
                else:
                    partial.append(piece)
            if partial:
                total = total + add_segments(partial, self.constants[f"{reader.tag}/segments"], members, training)
            return total

        def _activate(self, slot, pre):
            if len(slot.activations) == 1:
                return activation(slot.activations[0])(pre)
            onehot = self.constants[f"{slot.tag}/activation"]
            out = 0.0
            for index, name in enumerate(slot.activations):
                out = out + onehot[index] * activation(name)(pre)
            return out

        def _batchnorm(self, tag, out, arrays, statistics, training):
            """Keras' own arithmetic (x * scale + shift), scale and shift computed on the small
            (M, W, 1) statistics: two ops over the block. ``statistics``: the moving ones when
            predicting; in training, this batch's are added to it for ``_update_moving``."""
            mean_name, var_name = f"{tag}/moving_mean", f"{tag}/moving_variance"
            use = self.constants.get(f"{tag}/batchnorm")
            if training and normalize_batch is not None:
                out, statistics[mean_name], statistics[var_name] = normalize_batch(
                    out, arrays[f"{tag}/gamma"], arrays[f"{tag}/beta"], use)
                return out
            if training:
                mean, var = ops.moments(out, axes=[2], keepdims=True)
                statistics[mean_name], statistics[var_name] = mean, var
            else:
                mean, var = statistics[mean_name], statistics[var_name]
            return normalized_by(out, arrays[f"{tag}/gamma"], arrays[f"{tag}/beta"], mean,
                                 ops.rsqrt(var + BATCHNORM_EPSILON), use)

        def _moving_statistics(self) -> dict:
            return {} if self.moving is None else unpack(self.moving, self.moving_pack)

        def _update_moving(self, statistics: dict) -> None:
            batch = ops.concatenate([ops.reshape(statistics[name], (-1,)) for name in self.moving_pack.names])
            self.moving.assign(self.moving * BATCHNORM_MOMENTUM + batch * (1.0 - BATCHNORM_MOMENTUM))

        def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
            """Every array by name (``variable_shapes``), trainable or not."""
            if self.moving is not None:
                self.moving.assign(self.moving_pack.pack(arrays))
            if self.rate_scales is None:
                self.set_packed(self.packed, arrays)
                return
            for pack, variable, scale in zip(self.packs, self.packed, self.rate_scales):
                variable.assign(pack.pack(arrays) / scale)

        def get_arrays(self) -> dict[str, np.ndarray]:
            arrays = {} if self.moving is None else self.moving_pack.unpack(keras.ops.convert_to_numpy(self.moving))
            if self.rate_scales is None:
                return {**arrays, **self.get_packed(self.packed)}
            for pack, variable, scale in zip(self.packs, self.packed, self.rate_scales):
                arrays.update(pack.unpack(keras.ops.convert_to_numpy(variable) * scale))
            return arrays

        def get_packed(self, variables) -> dict[str, np.ndarray]:
            """The trainable arrays by name out of ``variables``, one per pack: the model's own
            (``self.packed``) or per-variable state alongside them (an optimizer's moments)."""
            arrays = {}
            for pack, variable in zip(self.packs, variables):
                arrays.update(pack.unpack(keras.ops.convert_to_numpy(variable)))
            return arrays

        def set_packed(self, variables, arrays: dict[str, np.ndarray]) -> None:
            for pack, variable in zip(self.packs, variables):
                variable.assign(pack.pack(arrays))

        def set_active(self, active: np.ndarray) -> None:
            self.active.assign(np.asarray(active, np.float32).reshape(-1, 1, 1))

    class FusedLoss(keras.losses.Loss):
        """Sum over candidates of each one's loss, per sample: y_true (B,) or (B, 1), y_pred (B, K, out)."""

        def __init__(self, task: Task):
            super().__init__(name=f"fused_{task}")
            self.task = task

        def call(self, y_true, y_pred):
            if self.task == "multiclass":
                # The label's log-probability picked by a one-hot product: take_along_axis
                # with its broadcast indices traced ~230 ops (forward and gradient), this 4.
                labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
                log_probs = ops.log_softmax(y_pred, axis=-1)
                return -ops.sum(log_probs * labels[:, None, :], axis=(1, 2))
            target = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, 1, 1))
            if self.task == "binary":
                per = ops.maximum(y_pred, 0.0) - y_pred * target + ops.log1p(ops.exp(-ops.abs(y_pred)))
            else:
                per = ops.square(y_pred - target)
            return ops.sum(per, axis=(1, 2))

    return FusedPopulation, FusedLoss


def make_fused_model(plan: FusedPlan, task: Task, *, feature_mean, feature_var, target_mean: float,
                     target_std: float, training: TrainSettings, seed: int,
                     jit_compile="auto", steps_per_execution: int = 1, rate_scales=None):
    """``rate_scales``: per pack, each parameter's learning rate over ``training``'s
    (fused_train.rate_scales); None: all at ``training``'s."""
    population_class, loss_class = _classes()
    model = population_class(plan, task, feature_mean, feature_var, target_mean, target_std, seed, rate_scales)
    model.compile(
        optimizer=make_training_optimizer(training),
        loss=loss_class(task),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    # Built now, not inside the first traced step: TensorFlow retraces a function that
    # creates variables, which nearly doubled a chunk's first epoch.
    model.optimizer.build(model.trainable_variables)
    if rate_scales is not None:
        # the optimizer's epsilon and decay act on the stored weight / scale (optimizer.py)
        optimizer = model.optimizer
        optimizer.rate_scales = {optimizer._get_variable_index(variable): scale
                                 for variable, scale in zip(model.packed, model.rate_scales)}
    return model


def to_probabilities(task: Task, outputs: np.ndarray) -> np.ndarray:
    """Fused outputs (n, K, out) as the saved models would give them (sigmoid/softmax/values)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    with np.errstate(all="ignore"):
        if task == "binary":
            return 1.0 / (1.0 + np.exp(-outputs))
        if task == "multiclass":
            shifted = outputs - np.max(outputs, axis=-1, keepdims=True)
            e = np.exp(shifted)
            return e / np.sum(e, axis=-1, keepdims=True)
    return outputs
