"""Pick the device for training and describe it ("cpu (tensorflow backend)", "gpu:NVIDIA … (…)").

For "cpu" the GPUs are hidden through ``CUDA_VISIBLE_DEVICES`` before the backend
framework is imported; that setting lasts for the whole process (a framework cannot
un-see a GPU), so a long-lived worker that ran with "cpu" stays on the CPU.
The only framework calls here sit behind a backend check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ..errors import SearchFailed

log = logging.getLogger(__name__)

_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def keras_backend() -> str:
    """The backend Keras uses or will use, without importing Keras when it is not loaded yet."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def configure_device(preference: str = "auto") -> str:
    if preference not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {preference!r}")
    backend = keras_backend()
    if preference == "cpu":
        _hide_gpus(backend)
        return f"cpu ({backend} backend)"
    _grow_memory_on_demand(backend)
    gpus = _visible_gpus(backend)
    if gpus:
        return f"gpu:{gpus[0]} ({backend} backend)"
    if preference == "gpu":
        raise SearchFailed(
            f"device='gpu' was requested but the {backend} backend sees no GPU; "
            "install a GPU build of the backend and its drivers, or use device='auto' or 'cpu'"
        )
    return f"cpu ({backend} backend)"


def _hide_gpus(backend: str) -> None:
    module = _BACKEND_MODULES.get(backend)
    if module not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        return
    if backend == "tensorflow":
        import tensorflow as tf  # already imported; only hides devices, before any op runs

        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            log.warning("TensorFlow is already initialised; device='cpu' cannot hide its GPUs now")
    else:
        log.warning("%s is already imported; device='cpu' cannot hide its GPUs now", backend)


def _grow_memory_on_demand(backend: str) -> None:
    """Take GPU memory as needed rather than all of it at start, so several workers (or a
    worker and the caller's own work) can share a GPU."""
    if backend == "jax" and "jax" not in sys.modules:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    elif backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError):  # already initialised: too late, and harmless
                pass


def free_accelerator_bytes() -> int | None:
    """Free memory of the first GPU, or None on a CPU (or when the backend cannot say).

    Asks only a backend that is already imported: planning work must not import a
    framework into a process that does not train (an Elixir node, a Dask client).
    """
    backend = keras_backend()
    if _BACKEND_MODULES.get(backend) not in sys.modules:
        return None
    try:
        if backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            stats = gpus[0].memory_stats() if gpus else None
            return None if not stats else int(stats["bytes_limit"] - stats["bytes_in_use"])
        if backend == "torch":
            import torch

            return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                return None
            total = tf.config.experimental.get_device_details(gpus[0]).get("memory_limit")
            used = tf.config.experimental.get_memory_info("GPU:0")["current"]
            return None if total is None else int(total - used)
    except Exception as exc:  # no figure is better than a crash: the configured caps apply
        log.warning("could not read free GPU memory (%s backend): %s", backend, exc)
    return None


def training_on_gpu() -> bool:
    return bool(_visible_gpus(keras_backend()))


@contextlib.contextmanager
def compute_precision(mixed: bool):
    """Build and train under Keras' "mixed_float16" policy when asked and on a GPU; else as is."""
    import keras

    if not mixed or not training_on_gpu():
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _visible_gpus(backend: str) -> list[str]:
    """Names of the GPUs the backend can use (empty when none or the backend cannot tell)."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        if backend == "jax":
            import jax

            return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
        if backend == "torch":
            import torch

            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # a broken driver must read as "no GPU", not crash the search
        log.warning("could not list GPUs for the %s backend: %s", backend, exc)
    return []
