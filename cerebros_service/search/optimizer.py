"""The optimizer both trainers use: AdamW (Cerebros' choice), in two forms with the same update.

``make_optimizer`` gives Keras' own AdamW: what a saved model carries, so it loads
without custom objects. ``make_training_optimizer`` gives ``StepAdamW``, what the
trainers train with: the same arithmetic, with the step's scalars (bias corrections,
the decayed rate) computed once a step for all arrays and, on TensorFlow, each array's
moments and update applied by one kernel. Keras rebuilds a dozen scalar ops for every
array in every traced step, and applies the update as a dozen element-wise ops: on a
fused chunk's hundred arrays that was half its trace and a third of a step's kernel
time; on a sequential trial (34 arrays) half its trace (2 cores, TensorFlow 2.21: a
43k-parameter digits trial's first call 1.2 -> 0.9 s, a later epoch 95 -> 67 ms).
"""

from __future__ import annotations

import functools
from dataclasses import replace

from ..settings import TrainSettings


def trial_training(training: TrainSettings, arch: dict) -> TrainSettings:
    """``training`` with the learning rate ``arch`` drew, when the space searches it
    (SpaceSettings.learning_rates); else ``training`` itself."""
    rate = arch.get("learning_rate") if isinstance(arch, dict) else None
    return training if rate is None else replace(training, learning_rate=float(rate))


def make_optimizer(training: TrainSettings):
    """Keras' AdamW with ``training``'s learning rate, schedule and weight decay."""
    import keras

    return keras.optimizers.AdamW(learning_rate=_learning_rate(training), weight_decay=training.weight_decay)


def make_training_optimizer(training: TrainSettings):
    """``StepAdamW`` with ``training``'s settings: the same updates as ``make_optimizer``'s."""
    return _step_adamw()(learning_rate=_learning_rate(training), weight_decay=training.weight_decay)


def _learning_rate(training: TrainSettings):
    """``training.learning_rate``, or its cosine decay ("cosine" needs ``steps_per_epoch``,
    which the run loop sets)."""
    import keras

    if training.lr_schedule == "cosine" and training.steps_per_epoch:
        # Decays to 0 over the whole epoch budget; the schedule is a built-in, so saved
        # models load without custom objects.
        return keras.optimizers.schedules.CosineDecay(
            training.learning_rate, decay_steps=max(1, training.steps_per_epoch * training.epochs))
    return training.learning_rate


@functools.cache
def _step_adamw():
    import keras
    from keras import ops

    apply_adam = None
    if keras.backend.backend() == "tensorflow":  # JAX's XLA fuses the element-wise ops by itself
        import tensorflow as tf

        apply_adam = tf.raw_ops.ResourceApplyAdam

    class StepAdamW(keras.optimizers.AdamW):
        """Keras' AdamW update (weight decay first), its scalars computed once a step."""

        # Variable index -> per-element rate factor (fused.py: a variable that holds weight /
        # scale). Adam's step does not depend on the gradient's size, except through epsilon;
        # epsilon x scale and decay x scale make the update of the real weight exactly that
        # of its own rate.
        rate_scales: dict = {}

        def _apply_weight_decay(self, variables):
            pass  # folded into update_step, with the step's learning rate computed once

        def _backend_update_step(self, grads, trainable_variables, learning_rate):
            lr = ops.cast(learning_rate, "float32")
            step = ops.cast(self.iterations + 1, "float32")
            alpha = lr * ops.sqrt(1.0 - ops.power(self.beta_2, step)) / (1.0 - ops.power(self.beta_1, step))
            decay = lr * self.weight_decay if self.weight_decay else None
            constants = None
            if apply_adam is not None:  # zero powers: the kernel's step size is alpha, bias-corrected here
                constants = {"beta1_power": ops.zeros(()), "beta2_power": ops.zeros(()), "lr": alpha,
                             "beta1": ops.cast(self.beta_1, "float32"), "beta2": ops.cast(self.beta_2, "float32"),
                             "epsilon": ops.cast(self.epsilon, "float32")}
            self._step_scalars = (alpha, decay, constants)
            try:
                super()._backend_update_step(grads, trainable_variables, learning_rate)
            finally:
                self._step_scalars = None

        def update_step(self, gradient, variable, learning_rate):
            alpha, decay, constants = self._step_scalars
            index = self._get_variable_index(variable)
            m, v = self._momentums[index], self._velocities[index]
            gradient = ops.cast(gradient, variable.dtype)
            scale = self.rate_scales.get(index)
            if decay is not None and self._use_weight_decay(variable):
                step = decay if scale is None else ops.cast(decay, "float32") * scale
                self.assign_sub(variable, variable * ops.cast(step, variable.dtype))
            if scale is None and constants is not None and variable.dtype == "float32":
                # the kernel's constants are float32 scalars
                apply_adam(var=variable.handle, m=m.handle, v=v.handle, grad=gradient, **constants)
                return
            epsilon = self.epsilon if scale is None else ops.cast(self.epsilon * scale, variable.dtype)
            self.assign_add(m, (gradient - m) * (1.0 - self.beta_1))
            self.assign_add(v, (ops.square(gradient) - v) * (1.0 - self.beta_2))
            self.assign_sub(variable, m * ops.cast(alpha, variable.dtype) / (ops.sqrt(v) + epsilon))

    return StepAdamW
