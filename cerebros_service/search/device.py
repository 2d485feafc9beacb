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


def configure_device(preference: str = "auto", cpu_threads: int | None = None) -> str:
    """``cpu_threads``: the cores this process may use (a pinned worker's share); all it sees when None."""
    if preference not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {preference!r}")
    backend = keras_backend()
    if preference == "cpu":
        _hide_gpus(backend)
        _set_cpu_threads(backend, cpu_threads)
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
    _set_cpu_threads(backend, cpu_threads)
    return f"cpu ({backend} backend)"


# Up to this many cores, TensorFlow runs one op per core, several side by side. A step of
# these models (a fused chunk most of all) is many small independent ops, so running them
# side by side beats splitting each across the cores. Measured on 2 cores (TensorFlow 2.21,
# a 40-candidate fused digits chunk, ms a step): TensorFlow's default (inter-op 2,
# intra-op 2) 38-46, inter-op 2 / intra-op 1 30, inter-op 1 / intra-op 2 62.
# Above it (unmeasured) each op may use all the cores, as TensorFlow's default does.
FEW_CORES = 4


def cpu_thread_pools(cores: int) -> tuple[int, int]:
    """(inter-op, intra-op) threads for TensorFlow on ``cores`` CPU cores."""
    cores = max(1, cores)
    return cores, 1 if cores <= FEW_CORES else cores


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _set_cpu_threads(backend: str, cores: int | None) -> None:
    """Size TensorFlow's thread pools for CPU training (``cpu_thread_pools``), unless the
    operator set ``TF_NUM_INTEROP_THREADS`` / ``TF_NUM_INTRAOP_THREADS``. TensorFlow sizes
    them once, when it starts: a process that already ran TensorFlow keeps its own.
    (Not through those variables: a worker process started from this one would inherit them
    as if the operator had set them.)"""
    if backend != "tensorflow" or "TF_NUM_INTEROP_THREADS" in os.environ or "TF_NUM_INTRAOP_THREADS" in os.environ:
        return
    inter, intra = cpu_thread_pools(cores or available_cores())
    import tensorflow as tf  # about to train on it

    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    except RuntimeError:  # TensorFlow has started: its pools stay as they are
        log.debug("TensorFlow's thread pools are already running; keeping their sizes")


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


@contextlib.contextmanager
def graph_optimizer_off():
    """Run TensorFlow functions called in this thread without its graph optimizer (grappler),
    on a CPU; elsewhere, or on another backend, as they are.

    Grappler rewrites a function's graph when it is first called. On these small graphs it
    bought nothing and cost a second or more per model (2 cores, TensorFlow 2.21, pairs of
    runs): a 10-candidate fused digits chunk's first call 1.1-1.9 -> 0.7-0.8 s, a
    40-candidate one 2.0-2.2 -> 0.7-0.8 s, a sequential trial's 1.2-1.3 -> 0.5-0.6 s, the
    first prediction 0.7 -> 0.4-0.5 s; later steps the same within noise. On a GPU it was
    not measured, so it stays on there. The setting is this thread's function-call options
    (TensorFlow keeps an optimized instance of a function per options, so switching back
    costs nothing), not the process-wide ``tf.config.optimizer``: the caller's own
    TensorFlow work, in this process or this thread afterwards, is optimized as before.
    It reaches those options through TensorFlow's eager context, not a public API: if
    they are missing, functions are optimized as usual.
    """
    if keras_backend() != "tensorflow" or training_on_gpu():
        yield
        return
    try:
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.eager import context

        eager = context.context()
        previous = eager.function_call_options  # the caller's, with their own config
        config = config_pb2.ConfigProto()
        config.ParseFromString(previous.config_proto_serialized or b"")
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        options = context.FunctionCallOptions(executor_type=previous.executor_type, config_proto=config)
    except Exception as exc:  # a TensorFlow without these internals: optimize as usual
        log.debug("cannot turn TensorFlow's graph optimizer off here: %s", exc)
        yield
        return
    eager.function_call_options = options
    try:
        yield
    finally:
        eager.function_call_options = previous

