"""The Keras backend (TensorFlow or JAX) and the devices a run trains on.

Kaggle's and Colab's TPU images ship `tensorflow-cpu` beside `jax[tpu]`: TensorFlow cannot use their TPUs,
Keras on JAX can. So `train.backend: auto` picks JAX when a TPU is attached and no TPU build of TensorFlow is
installed, and TensorFlow otherwise. The backend is fixed when Keras is first imported, so `use_backend` must run
before that (the CLI calls it while loading the config); asking for another backend afterwards is an error.

On JAX, `keras.distribution.DataParallel` spreads each global batch over every device (a TPU v5e-8's eight
chips; in tests, CPU devices made by XLA_FLAGS). On TensorFlow, melanoma.image.strategy picks a tf.distribute
strategy. Either way a run sees a `Devices`: its backend, device kind and count, and the scope to build in.
`devices_scope` sets them up for the length of a `with` and puts back the distribution and dtype policy in
force before, so a later stage in the same process (the tabular MLP after a JAX run) runs as it would alone.

A TPU that cannot be opened makes JAX fall back to the CPU silently; `device_problem` turns that into one line
when the environment or the config says a TPU is meant to be there (`train.allow_cpu_fallback` accepts it).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from melanoma.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorflow", "jax")
REASON_ENV = "MELANOMA_BACKEND_REASON"
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"
# Environment variables that TPU VMs (Kaggle: ISTPUVM, TPU_PROCESS_ADDRESSES) and TPU nodes set.
TPU_ENV = ("ISTPUVM", "TPU_PROCESS_ADDRESSES", "TPU_ACCELERATOR_TYPE", "TPU_NAME", "COLAB_TPU_ADDR",
           "TPU_WORKER_ID")
# The accelerator a notebook was pushed with (`melanoma kaggle push` writes it into the notebook, which exports
# it): Kaggle may start a kernel pushed with TpuV5E8 on its CPU image, where no TPU variable above is set.
ACCELERATOR_ENV = "MELANOMA_ACCELERATOR"


def local_tpu_devices(environ: Mapping[str, str] | None = None, dev: str = "/dev") -> bool:
    """The device files of a TPU VM: /dev/accel* (v2-v4) or /dev/vfio/N with the TPU runtime's environment (v5e+)."""
    environ = os.environ if environ is None else environ
    if glob.glob(f"{dev}/accel[0-9]*"):
        return True
    return bool(glob.glob(f"{dev}/vfio/[0-9]*")) and any(k.startswith("TPU_") for k in environ)


def tpu_attached(environ: Mapping[str, str] | None = None, dev: str = "/dev") -> bool:
    """A TPU on this machine (its device files) or named by the environment (TPU VM variables, TPU node)."""
    environ = os.environ if environ is None else environ
    return local_tpu_devices(environ, dev) or any(environ.get(k) for k in TPU_ENV)


def installed(dist: str) -> str | None:
    """The version of an installed distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorflow_can_use_tpu() -> bool:
    """Only the TPU builds of TensorFlow (tensorflow-tpu, or tensorflow with libtpu beside it) drive a TPU;
    tensorflow-cpu, which Kaggle's and Colab's TPU images ship, does not."""
    if installed("tensorflow-tpu") or installed("tf-nightly-tpu"):
        return True
    return bool(installed("tensorflow") and installed("libtpu") and not installed("jax"))


def resolve_backend(setting: str, environ: Mapping[str, str] | None = None,
                    modules: Mapping[str, Any] | None = None, tpu: bool | None = None) -> tuple[str, str]:
    """(backend, why) for train.backend = auto | tensorflow | jax."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if setting not in BACKENDS:
        raise ConfigError(f"train.backend must be one of {BACKENDS}, got {setting!r}")
    running = _running_backend(modules)
    env = environ.get("KERAS_BACKEND")
    if setting != "auto":
        if running and running != setting:
            raise ConfigError(f"train.backend={setting}, but Keras is already running on {running} in this process: "
                              f"start a new process (the backend is fixed when Keras is imported)")
        if env and env != setting:
            raise ConfigError(f"train.backend={setting} conflicts with KERAS_BACKEND={env} in the environment: "
                              f"unset KERAS_BACKEND, or set train.backend to {env} or auto")
        return setting, "set in the config"
    if running:
        return running, "Keras was already imported with it"
    if env:
        if env not in BACKENDS[1:]:
            raise ConfigError(f"KERAS_BACKEND={env} is not supported: use tensorflow or jax")
        # use_backend leaves its reason beside KERAS_BACKEND, so later calls (and child processes) can say it.
        return env, environ.get(REASON_ENV, "KERAS_BACKEND in the environment")
    tpu = tpu_attached(environ) if tpu is None else tpu
    if tpu and not tensorflow_can_use_tpu():
        if not installed("jax"):
            raise ConfigError("a TPU is attached but neither a TPU build of TensorFlow nor JAX is installed: "
                              "pip install 'jax[tpu]' (Kaggle's and Colab's TPU images have it)")
        return "jax", "a TPU is attached and TensorFlow has no TPU build here"
    return "tensorflow", "no TPU that only JAX can drive" if tpu else "no TPU attached"


def _running_backend(modules: Mapping[str, Any]) -> str | None:
    keras = modules.get("keras")
    if keras is None or not hasattr(keras, "backend"):
        return None
    return keras.backend.backend()


def use_backend(setting: str, cpu_devices: int = 1, environ: dict[str, str] | None = None,
                modules: Mapping[str, Any] | None = None) -> str:
    """Fix the Keras backend before Keras is imported (and, on JAX, the CPU device count before JAX is)."""
    environ = os.environ if environ is None else environ
    name, why = resolve_backend(setting, environ, modules)
    if environ.get("KERAS_BACKEND") != name:
        environ["KERAS_BACKEND"], environ[REASON_ENV] = name, why
    # JAX logs a warning for every platform plugin it cannot load (libtpu on a machine without a TPU).
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    if name == "jax" and cpu_devices > 1:
        set_cpu_devices(cpu_devices, environ)
    log.debug("backend: %s (%s)", name, why)
    return name


def set_cpu_devices(n: int, environ: dict[str, str]) -> None:
    """Ask XLA for n host (CPU) devices: the stand-in for a TPU's chips in tests. Only works before jax loads."""
    flags = re.sub(rf"{XLA_DEVICES_FLAG}=\d+", "", environ.get("XLA_FLAGS", "")).strip()
    environ["XLA_FLAGS"] = f"{flags} {XLA_DEVICES_FLAG}={n}".strip()
    if "jax" in sys.modules and environ is os.environ:
        import jax

        have = len(jax.devices("cpu"))
        if have != n:
            raise ConfigError(f"train.cpu_replicas={n}, but JAX already started with {have} CPU device(s) in this "
                              "process: set it before anything imports jax")


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
    from melanoma.image.strategy import accelerated, get_strategy

    strategy = get_strategy(tpu, cpu_replicas)
    return Devices("tensorflow", accelerated(strategy), strategy.num_replicas_in_sync, strategy.scope,
                   type(strategy).__name__)


def _jax_devices(cpu_replicas: int) -> Devices:
    import jax
    import keras

    devices = jax.devices()
    kind = devices[0].platform  # tpu | gpu | cpu
    if kind == "cpu" and cpu_replicas > 1 and len(devices) != cpu_replicas:
        raise ConfigError(f"train.cpu_replicas={cpu_replicas}, but JAX started with {len(devices)} CPU device(s): "
                          "the device count is fixed when jax is imported (run through the melanoma command)")
    if kind == "cpu" and cpu_replicas == 1:
        devices = devices[:1]
    names = f"{len(devices)} x {devices[0].device_kind}"
    if len(devices) == 1:
        keras.distribution.set_distribution(None)
        return Devices("jax", kind, 1, contextlib.nullcontext, f"one device ({names})")
    distribution = keras.distribution.DataParallel(devices=devices)
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
def no_distribution() -> Iterator[None]:
    """No keras distribution for the length of a `with` (the previous one comes back after): a model that needs
    no accelerator (the tabular MLP) is never built or fitted under another stage's DataParallel, whose batches
    must divide by the device count."""
    import keras

    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


# --------------------------------------------------------------------------------------------------------
# a TPU that was meant to be there

def expected_tpu(tpu: str = "auto", environ: Mapping[str, str] | None = None, dev: str = "/dev") -> str | None:
    """Why a TPU is expected here, or None: the accelerator the notebook was pushed with, a TPU VM's or
    Colab's TPU variables, TPU device files, or train.tpu naming one."""
    environ = os.environ if environ is None else environ
    pushed = environ.get(ACCELERATOR_ENV, "")
    if pushed.lower().startswith("tpu"):
        return f"{ACCELERATOR_ENV}={pushed}"
    named = next((k for k in TPU_ENV if environ.get(k)), None)
    if named:
        return f"{named}={environ[named]} in the environment"
    if local_tpu_devices(environ, dev):
        return f"TPU device files in {dev}"
    if tpu not in ("auto", "none"):
        return f"train.tpu={tpu}"
    return None


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
        cause = "TensorFlow here has no TPU build: set train.backend=auto (or jax)"
    return (f"a TPU is expected ({why}) but {backend} sees {count} x {kind}: {cause}; or set "
            f"train.allow_cpu_fallback=true to train on the {kind} on purpose")


def check_devices(tpu: str, allow_cpu_fallback: bool, backend: str) -> None:
    """Refuse, before any work, a run that expects a TPU the backend cannot see."""
    if expected_tpu(tpu) is None or allow_cpu_fallback:
        return
    problem = device_problem(tpu, allow_cpu_fallback, backend, *probe_devices(backend))
    if problem:
        raise ConfigError(problem)


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_precision(setting: str, device: str) -> str:
    """bfloat16 on TPUs (native; Keras keeps BatchNorm and the float32 output layer in float32), float16 on
    GPUs (tensor cores, with loss scaling), float32 on CPUs."""
    if setting not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {setting!r}")
    if setting != "auto":
        return setting
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(device, "float32")


def framework_versions() -> dict[str, str | None]:
    """Installed versions of what the backends need (without importing them)."""
    return {d: installed(d) for d in ("keras", "tensorflow", "tensorflow-cpu", "tensorflow-tpu", "jax", "jaxlib",
                                      "libtpu", "kagglehub", "matplotlib")}
