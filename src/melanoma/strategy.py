"""Choose a tf.distribute strategy: a TPU when one resolves, else all local GPUs, else the CPU."""

from __future__ import annotations

import glob
import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)


def _local_tpu_present() -> bool:
    # TPUClusterResolver(tpu="local") does not fail on a machine without a TPU, so look for the devices of a
    # TPU VM (v2-v4: /dev/accel*, v5e and later: /dev/vfio/N with the TPU runtime's environment) first.
    if glob.glob("/dev/accel[0-9]*"):
        return True
    return bool(glob.glob("/dev/vfio/[0-9]*")) and any(k.startswith("TPU_") for k in os.environ)


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
    if _local_tpu_present():
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    return None


def get_strategy(tpu: str = "auto") -> tf.distribute.Strategy:
    resolver = tpu_resolver(tpu)
    if resolver is not None:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        log.info("strategy: TPU with %d replicas", strategy.num_replicas_in_sync)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
        log.info("strategy: MirroredStrategy over %d GPU(s)", strategy.num_replicas_in_sync)
        return strategy
    log.info("strategy: default (CPU), 1 replica")
    return tf.distribute.get_strategy()
