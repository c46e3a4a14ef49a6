"""The devices a run trains on, set up for the length of a `with` (`devices_scope`).

On JAX, `keras.distribution.DataParallel` spreads each global batch over every device (a TPU v5e-8's eight
chips; in tests, CPU devices made by XLA_FLAGS). On TensorFlow, melanoma.runtime.strategy picks a tf.distribute
strategy. Either way a run sees a `Devices`: its backend, device kind and count, and the scope to build in.
`devices_scope` puts back the distribution and dtype policy in force before, so a later stage in the same
process (the tabular MLP after a JAX run) runs as it would alone.

A TPU that cannot be opened makes JAX fall back to the CPU silently; `device_problem` turns that into one line
when the environment or the config says a TPU is meant to be there (`train.devices.allow_cpu_fallback` accepts it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from melanoma.errors import ConfigError
from melanoma.runtime.machine import expected_tpu, tensorflow_can_use_tpu


@dataclass(frozen=True)
class Devices:
    backend: str  # tensorflow | jax
    kind: str  # tpu | gpu | cpu
    count: int  # replicas: the global batch is the per-device batch times this
    scope: Callable[[], contextlib.AbstractContextManager]
    detail: str  # for the log and run.json: the strategy or distribution and the device names


def setup_devices(tpu: str = "auto", cpu_replicas: int = 1) -> Devices:
    """The devices of the running backend, with DataParallel (JAX) or a tf.distribute strategy (TensorFlow)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_devices(cpu_replicas)
    if backend != "tensorflow":
        raise ConfigError(f"Keras backend {backend} is not supported: use tensorflow or jax")
    from melanoma.runtime.strategy import accelerated, get_strategy

    strategy = get_strategy(tpu, cpu_replicas)
    return Devices("tensorflow", accelerated(strategy), strategy.num_replicas_in_sync, strategy.scope,
                   type(strategy).__name__)


def _jax_devices(cpu_replicas: int) -> Devices:
    import jax
    import keras

    devices = jax.devices()  # every host's (runtime/hosts.py joined them); cpu_replicas counts this host's
    kind, local, hosts = devices[0].platform, jax.local_device_count(), jax.process_count()  # tpu | gpu | cpu
    if kind == "cpu" and cpu_replicas > 1 and local != cpu_replicas:
        raise ConfigError(f"train.devices.cpu_replicas={cpu_replicas}, but JAX started with {local} CPU device(s): "
                          "the device count is fixed when jax is imported (run through the melanoma command)")
    if kind == "cpu" and cpu_replicas == 1 and hosts == 1:
        devices = devices[:1]
    names = f"{len(devices)} x {devices[0].device_kind}" + (f" on {hosts} hosts" if hosts > 1 else "")
    if len(devices) == 1:
        keras.distribution.set_distribution(None)
        return Devices("jax", kind, 1, contextlib.nullcontext, f"one device ({names})")
    # Each host reads its own part of every batch (image/inputs.py), so Keras must not shard the datasets again.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=hosts == 1)
    # Models must be created after this, or JAX finds their variables on the wrong devices.
    keras.distribution.set_distribution(distribution)
    return Devices("jax", kind, len(devices), distribution.scope, f"DataParallel over {names}")


@contextlib.contextmanager
def devices_scope(tpu: str = "auto", cpu_replicas: int = 1) -> Iterator[Devices]:
    """`setup_devices` for the length of a `with`: the keras distribution and dtype policy in force before are
    put back on exit, exception included, so nothing the image model set up outlives it."""
    import keras

    distribution, policy = keras.distribution.distribution(), keras.config.dtype_policy()
    try:
        yield setup_devices(tpu, cpu_replicas)
    finally:
        keras.distribution.set_distribution(distribution)
        keras.config.set_dtype_policy(policy)


@contextlib.contextmanager
def _swapped(get: Callable, put: Callable, value) -> Iterator[None]:
    """A process-global Keras setting at `value` for the length of a `with`; the previous one comes back after."""
    previous = get()
    put(value)
    try:
        yield
    finally:
        put(previous)


def no_distribution():
    """No keras distribution for the length of a `with`: a model that needs no accelerator (the tabular MLP) is
    never built or fitted under another stage's DataParallel, whose batches must divide by the device count."""
    import keras

    return _swapped(keras.distribution.distribution, keras.distribution.set_distribution, None)


def dtype_policy(name: str):
    """Layers take the global dtype policy when built: `name` for the build, then the old one back."""
    import keras

    return _swapped(keras.config.dtype_policy, keras.config.set_dtype_policy, name)


def probe_devices(backend: str) -> tuple[str, int]:
    """(kind, count) of what the backend would train on, without setting anything up. On TensorFlow only a TPU
    build can drive a TPU (whether it opens is checked by the strategy itself)."""
    if backend == "jax":
        import jax

        devices = jax.devices()
        return devices[0].platform, len(devices)
    if tensorflow_can_use_tpu():
        return "tpu", 0
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ("gpu", len(gpus)) if gpus else ("cpu", 1)


def device_problem(tpu: str, allow_cpu_fallback: bool, backend: str, kind: str, count: int,
                   environ: Mapping[str, str] | None = None, dev: str = "/dev") -> str | None:
    """One line naming what was expected, what the backend sees and the fix; None when nothing is wrong."""
    why = expected_tpu(tpu, environ, dev)
    if why is None or kind == "tpu" or allow_cpu_fallback:
        return None
    if backend == "jax":
        cause = ("JAX could not open the TPU: another process holds it (a notebook kernel that imported jax), "
                 "libtpu does not match jax, or the notebook landed on a machine without one; restart the session "
                 "with the TPU accelerator, keep jax out of the notebook's own kernel and use the image's jax[tpu]")
    else:
        cause = "TensorFlow here has no TPU build: set train.devices.backend=auto (or jax)"
    return (f"a TPU is expected ({why}) but {backend} sees {count} x {kind}: {cause}; or set "
            f"train.devices.allow_cpu_fallback=true to train on the {kind} on purpose")


def check_devices(tpu: str, allow_cpu_fallback: bool, backend: str) -> None:
    """Refuse, before any work, a run that expects a TPU the backend cannot see."""
    if expected_tpu(tpu) is None or allow_cpu_fallback:
        return
    problem = device_problem(tpu, allow_cpu_fallback, backend, *probe_devices(backend))
    if problem:
        raise ConfigError(problem)


def jit_compile(setting: bool | None, device: str, backend: str = "tensorflow") -> bool | str:
    """XLA helps on GPUs and TPUs but makes TensorFlow's EfficientNet training steps about 10x slower on a CPU.
    JAX always compiles: uncompiled JAX runs op by op."""
    if setting is not None:
        return setting
    return "auto" if device != "cpu" or backend == "jax" else False


def augment_in_model(tcfg, device: str) -> bool:
    """Augmentation as a layer on the accelerator (train.augment.where: model, or auto off the CPU)."""
    return tcfg.augment.where == "model" or (tcfg.augment.where == "auto" and device != "cpu")
