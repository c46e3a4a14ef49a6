"""The Keras backend (TensorFlow or JAX) and the precision a run trains with.

Kaggle's and Colab's TPU images ship `tensorflow-cpu` beside `jax[tpu]`: TensorFlow cannot use their TPUs,
Keras on JAX can. So `train.devices.backend: auto` picks JAX when a TPU is attached and no TPU build of TensorFlow is
installed, and TensorFlow otherwise. The backend is fixed when Keras is first imported, so `use_backend` must run
before that (the CLI calls it while loading the config); asking for another backend afterwards is an error.
The devices themselves are melanoma.runtime.devices; what the machine has (TPU files, installed frameworks),
melanoma.runtime.machine.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from melanoma.errors import ConfigError
from melanoma.runtime.machine import installed, tensorflow_can_use_tpu, tpu_attached

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorflow", "jax")
REASON_ENV = "MELANOMA_BACKEND_REASON"
XLA_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def resolve_backend(setting: str, environ: Mapping[str, str] | None = None,
                    modules: Mapping[str, Any] | None = None, tpu: bool | None = None) -> tuple[str, str]:
    """(backend, why) for train.devices.backend = auto | tensorflow | jax."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if setting not in BACKENDS:
        raise ConfigError(f"train.devices.backend must be one of {BACKENDS}, got {setting!r}")
    running = _running_backend(modules)
    env = environ.get("KERAS_BACKEND")
    if setting != "auto":
        if running and running != setting:
            raise ConfigError(f"train.devices.backend={setting}, but Keras is already running on {running} in this "
                              f"process: start a new process (the backend is fixed when Keras is imported)")
        if env and env != setting:
            raise ConfigError(f"train.devices.backend={setting} conflicts with KERAS_BACKEND={env} in the environment: "
                              f"unset KERAS_BACKEND, or set train.devices.backend to {env} or auto")
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
        have = len(sys.modules["jax"].devices("cpu"))  # already started: too late to change its device count
        if have != n:
            raise ConfigError(f"train.devices.cpu_replicas={n}, but JAX already started with {have} CPU device(s) in "
                              "this process: set it before anything imports jax")


# --------------------------------------------------------------------------------------------------------
# a TPU that was meant to be there


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_precision(setting: str, device: str) -> str:
    """bfloat16 on TPUs (native; Keras keeps BatchNorm and the float32 output layer in float32), float16 on
    GPUs (tensor cores, with loss scaling), float32 on CPUs."""
    if setting not in PRECISIONS:
        raise ConfigError(f"train.devices.precision must be one of {PRECISIONS}, got {setting!r}")
    if setting != "auto":
        return setting
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(device, "float32")


