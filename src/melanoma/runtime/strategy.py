"""Choose a tf.distribute strategy: a TPU when one resolves, else all local GPUs, else the CPU."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

from melanoma.errors import ConfigError
from melanoma.runtime.machine import local_tpu_devices

log = logging.getLogger(__name__)


def tpu_resolver(tpu: str = "auto") -> tf.distribute.cluster_resolver.TPUClusterResolver | None:
    """A resolver for `tpu` (auto | none | local | name | grpc:// address), or None when there is no TPU."""
    if tpu == "none":
        return None
    if tpu != "auto":
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)  # explicit: failures are errors
    try:
        # TPU_NAME, COLAB_TPU_ADDR or the GCE metadata of a TPU node; raises ValueError at once without one.
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except ValueError:
        pass
    # TPUClusterResolver(tpu="local") does not fail on a machine without a TPU: look for the devices first.
    if local_tpu_devices():
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    return None


def _multi_worker() -> bool:
    """True when TF_CONFIG describes a cluster of more than one worker (multi-host GPU training)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        raise ConfigError("TF_CONFIG is set but is not valid JSON") from None
    return sum(len(v) for k, v in cluster.items() if k in ("worker", "chief")) > 1


def split_cpu(n: int) -> None:
    """Present the CPU as n logical devices; must run before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # devices already initialised in this process: keep what exists
        pass
    have = len(tf.config.list_logical_devices("CPU"))
    if have != n:
        raise ConfigError(f"train.devices.cpu_replicas={n}, but TensorFlow already started with {have} CPU device(s): "
                          "set it before anything else uses TensorFlow in this process")


def get_strategy(tpu: str = "auto", cpu_replicas: int = 1) -> tf.distribute.Strategy:
    """TPU if one resolves; else MultiWorkerMirroredStrategy when TF_CONFIG names several workers; else
    MirroredStrategy over the local GPUs; else the CPU (split into `cpu_replicas` devices when > 1)."""
    resolver = tpu_resolver(tpu)
    if resolver is not None:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        log.info("strategy: TPU with %d replicas", strategy.num_replicas_in_sync)
        return strategy
    if _multi_worker():
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info("strategy: MultiWorkerMirroredStrategy (TF_CONFIG), %d replicas", strategy.num_replicas_in_sync)
        return strategy
    if cpu_replicas > 1 and not tf.config.list_physical_devices("GPU"):
        split_cpu(cpu_replicas)  # before anything lists logical devices, which fixes them
        strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
        log.info("strategy: MirroredStrategy over %d logical CPU devices", strategy.num_replicas_in_sync)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
        log.info("strategy: MirroredStrategy over %d GPU(s)", strategy.num_replicas_in_sync)
        return strategy
    log.info("strategy: default (CPU), 1 replica")
    return tf.distribute.get_strategy()


def accelerated(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'gpu' or 'cpu': what the strategy's replicas run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
