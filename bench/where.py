"""augment.where on the JAX backend: the augmentation in the model (on the device) or in tf.data (on the host)?

    .venv/bin/python bench/where.py --model efficientnet_b0 --size 64 --batch 16 --steps 8

Keras users report JAX TPU training going from minutes to hours with augmentation layers inside the model
(keras issue 23229: the built-in random layers say supports_jit=False and drop the whole step out of XLA).
Ours is keras.ops in one jit-compatible layer. In one JAX process (its own: it sets KERAS_BACKEND), on the same
synthetic records, alternating rounds and keeping the best of each:
  (1) fit, augmentation in tf.data (augment.where: data), the model without the layer;
  (2) fit, augmentation in the model (augment.where: model), tf.data without it;
  (3) the training step alone on one fixed batch, without augmentation (the floor of both);
  (4) the augmentation alone: the layer jitted on the device vs augment_batch in tf.data, images/s;
and whether the step with the layer is compiled (jit) at all. On a CPU the host and the "device" share the same
cores, so this shows the cost of each, not the TPU's overlap: there the host work of (1) runs beside the chips.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--devices", type=int, default=1, help="simulated CPU devices (DataParallel when > 1)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--images", type=int, default=128)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench")]
    from melanoma.runtime.backend import set_cpu_devices

    set_cpu_devices(args.devices, os.environ)
    import importlib.util

    import jax
    import keras
    import numpy as np
    import tensorflow as tf

    from melanoma.config import TrainConfig, to_dict
    from melanoma.image.augment import Augment, augment_batch
    from melanoma.runtime.devices import setup_devices
    from melanoma.image.models import build_model
    from melanoma.image.inputs import train_dataset
    from melanoma.data.reader import find_shards
    from melanoma.image.prefetch import DevicePrefetch, wanted
    from melanoma.image.schedules import make_loss

    spec = importlib.util.spec_from_file_location("bench_input", ROOT / "bench" / "input.py")
    bench_input = importlib.util.module_from_spec(spec)
    sys.modules["bench_input"] = bench_input  # registered: autograph reads its functions' source
    spec.loader.exec_module(bench_input)

    devices = setup_devices(cpu_replicas=args.devices)
    tcfg = TrainConfig(model=args.model, size=args.size, weights="none", cache=True)
    print(f"bench/where.py: {devices.detail}, jax {jax.__version__}, keras {keras.__version__}, "
          f"{args.model}@{args.size}, global batch {args.batch}", flush=True)

    def compiled(augment: bool):
        with devices.scope():
            m = build_model(args.model, args.size, None, tcfg.dropout, augment=to_dict(tcfg.augment) if augment else None)
            m.compile(optimizer=keras.optimizers.AdamW(1e-4), loss=make_loss(tcfg), jit_compile=True)
        return m

    def fit_rate(model, ds) -> float:
        marks = {}

        class Mark(keras.callbacks.Callback):
            def on_train_batch_end(self, step, logs=None):
                if step in (1, 1 + args.steps):
                    float(keras.ops.convert_to_numpy(logs["loss"]))
                    marks[step] = time.perf_counter()

        ahead = DevicePrefetch(ds) if wanted("jax") else None
        try:
            model.fit(ahead.batches() if ahead else ds, epochs=1, steps_per_epoch=2 + args.steps, verbose=0,
                      shuffle=False, callbacks=[Mark()])
        finally:
            if ahead is not None:
                ahead.close()
        return args.steps * args.batch / (marks[1 + args.steps] - marks[1])

    with tempfile.TemporaryDirectory(prefix="bench-where-") as tmp:
        bench_input.write_records(Path(tmp), args.images, args.size, 4)
        shardset = find_shards(tmp, 1)

        def data(augment: bool):
            return train_dataset(shardset.train(), tcfg, args.size, args.batch, None, 0, augment=augment)

        x0, y0 = next(data(False).as_numpy_iterator())
        fixed = tf.data.Dataset.from_tensors((x0, y0)).repeat()
        plain, with_layer = compiled(False), compiled(True)
        t = time.perf_counter()
        fit_rate(plain, fixed)
        compile_plain = time.perf_counter() - t
        t = time.perf_counter()
        fit_rate(with_layer, data(False))
        compile_layer = time.perf_counter() - t
        print(f"compiled: without the layer {compile_plain:.0f} s, with it {compile_layer:.0f} s; "
              f"jit_compile {plain.jit_compile} / {with_layer.jit_compile}", flush=True)

        layer = Augment(to_dict(tcfg.augment), args.size, seed=0)
        layer(x0, training=True)  # built: its seed state exists
        images = jax.numpy.asarray(np.asarray(x0))
        jitted = jax.jit(lambda v, x: layer.stateless_call([], v, x, training=True))
        host = tf.data.Dataset.from_tensors(tf.constant(x0)).repeat().map(
            lambda x: augment_batch(x, tcfg.augment, args.size), num_parallel_calls=tf.data.AUTOTUNE)

        def device_aug_rate(n=10):
            v = [s.value for s in layer.non_trainable_variables]
            out, v = jitted(v, images)
            jax.block_until_ready(out)
            t = time.perf_counter()
            for _ in range(n):
                out, v = jitted(v, images)
            jax.block_until_ready(out)
            return n * args.batch / (time.perf_counter() - t)

        def host_aug_rate(n=10):
            it = iter(host.prefetch(2))
            next(it)
            t = time.perf_counter()
            for _ in range(n):
                next(it).numpy()
            return n * args.batch / (time.perf_counter() - t)

        best = {k: 0.0 for k in ("data", "model", "step", "aug_device", "aug_host")}
        for r in range(args.rounds):
            got = {"data": fit_rate(plain, data(True)), "model": fit_rate(with_layer, data(False)),
                   "step": fit_rate(plain, fixed), "aug_device": device_aug_rate(), "aug_host": host_aug_rate()}
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in got.items()) + " img/s", flush=True)
            best = {k: max(best[k], got[k]) for k in best}
    print(f"\n{'measure (img/s, best of rounds)':<62}{'img/s':>8}")
    for label, key in (("(1) fit, augmentation in tf.data (where: data)", "data"),
                       ("(2) fit, augmentation in the model (where: model)", "model"),
                       ("(3) training step alone, no augmentation", "step"),
                       ("(4a) augmentation alone, jitted layer on the device", "aug_device"),
                       ("(4b) augmentation alone, tf.data on the host", "aug_host")):
        print(f"{label:<62}{best[key]:>8.1f}")
    print(f"(2)/(1) = {best['model'] / best['data']:.2f}x; load average "
          f"{[round(v, 2) for v in os.getloadavg()]} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
