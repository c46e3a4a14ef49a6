"""What this machine has, read without importing any framework: TPU device files and the TPU runtime's
environment, the accelerator a notebook was pushed with, and the installed framework versions."""

from __future__ import annotations

import glob
import importlib.metadata
import os
from collections.abc import Mapping


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


def expected_tpu(tpu: str = "auto", environ: Mapping[str, str] | None = None, dev: str = "/dev") -> str | None:
    """Why a TPU is expected here, or None: the accelerator the notebook was pushed with, a TPU VM's or
    Colab's TPU variables, TPU device files, or train.devices.tpu naming one."""
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
        return f"train.devices.tpu={tpu}"
    return None


def framework_versions() -> dict[str, str | None]:
    """Installed versions of what the backends need (without importing them)."""
    return {d: installed(d) for d in ("keras", "tensorflow", "tensorflow-cpu", "tensorflow-tpu", "jax", "jaxlib",
                                      "libtpu", "kagglehub", "matplotlib")}
