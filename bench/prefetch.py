"""Device prefetch on JAX with DataParallel: does batch n+1 reach the devices while step n runs?

    .venv/bin/python bench/prefetch.py --devices 8 --size 192 --batch 128 --steps 30

Keras' JAX trainer looks a batch ahead only without a distribution; under DataParallel it reads a batch
from tf.data and places it on the devices when the step asks for it (keras/src/backend/jax/trainer.py,
`_get_distributed_iterator`). On simulated CPU devices this runs, side by side in one process (alternating
rounds, best kept), `fit` over the same uint8 batches fed
  (A) by Keras itself from tf.data,
  (B) by melanoma.image.prefetch.DevicePrefetch (a thread places batches 2 ahead with the same sharding),
  (C) from one batch already on the devices (the step alone: what perfect overlap would give),
and, per step, the time the training loop itself spent getting its batch: in (A) Keras' iterator reads and
places it in line (timed by wrapping that iterator here); in (B) the loop only waits on the queue while the
thread reads and places batches ahead (DevicePrefetch.stats). The wait in (B) staying near zero while the
thread's work per batch is what (A) pays in line is the overlap, whatever else loads the machine; the ms/step
figures show what it is worth here. Run in a JAX process of its own (it sets KERAS_BACKEND).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=64, help="global batch")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--width", type=int, default=8, help="conv width of the model (sets the step time)")
    return p.parse_args(argv)


def build(size: int, width: int):
    """A small conv net on uint8 input: the step's cost is set by --width, the input's by --size/--batch."""
    import keras

    inp = keras.Input((size, size, 3), dtype="uint8")
    x = keras.ops.cast(inp, "float32") / 255.0
    for i in range(3):
        x = keras.layers.Conv2D(width * 2 ** i, 3, strides=2, padding="same", activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    return model


def dataset(size: int, batch: int):
    """Endless uint8 batches with per-batch host work (a cast and a flip), prefetched as train_dataset is."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pool = tf.constant(rng.integers(0, 256, (batch * 2, size, size, 3), dtype=np.uint8))
    y = tf.constant((rng.random((batch * 2, 1)) < 0.2).astype("float32"))
    ds = tf.data.Dataset.from_tensor_slices((pool, y)).repeat().batch(batch, drop_remainder=True)
    ds = ds.map(lambda a, b: (tf.reverse(a, [2]), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_seconds(model, data, steps: int) -> float:
    """Seconds per step over `steps` steps after 3 warm-up steps, waiting for the devices at both ends."""
    import jax
    import keras

    marks = {}

    class Mark(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step in (2, 2 + steps):
                jax.block_until_ready(logs["loss"]) if logs and "loss" in logs else None
                marks[step] = time.perf_counter()

    model.fit(data, epochs=1, steps_per_epoch=3 + steps, verbose=0, shuffle=False, callbacks=[Mark()])
    return (marks[2 + steps] - marks[2]) / steps


def host_seconds(size: int, batch: int, n: int = 10) -> float:
    """Fetch a batch from tf.data and place it on the devices, alone: seconds per batch."""
    import jax
    import keras

    dist = keras.distribution.distribution()
    it = dataset(size, batch).as_numpy_iterator()
    x, y = next(it)
    layout = dist.get_data_layout(x.shape).backend_layout
    start = time.perf_counter()
    for _ in range(n):
        x, y = next(it)
        jax.block_until_ready(jax.make_array_from_process_local_data(layout, x))
    return (time.perf_counter() - start) / n


def keras_inline_timer() -> dict:
    """Time each batch Keras' distributed iterator hands the training loop (it reads and places in line)."""
    from keras.src.backend.jax import trainer

    timer = {"s": 0.0, "n": 0}
    original = trainer.JAXEpochIterator._get_distributed_iterator

    def timed(self, distribution):
        it = original(self, distribution)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            timer["s"] += time.perf_counter() - start
            timer["n"] += 1
            yield item

    trainer.JAXEpochIterator._get_distributed_iterator = timed
    return timer


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT / "src"))
    from melanoma.image.backend import set_cpu_devices

    set_cpu_devices(args.devices, os.environ)
    import jax
    import keras
    import numpy as np

    from melanoma.image.backend import setup_devices
    from melanoma.image.prefetch import DevicePrefetch

    devices = setup_devices(cpu_replicas=args.devices)
    inline = keras_inline_timer()
    print(f"bench/prefetch.py: {devices.detail}, jax {jax.__version__}, keras {keras.__version__}; "
          f"batch {args.batch} x {args.size}px uint8 ({args.batch * args.size ** 2 * 3 / 1e6:.0f} MB)", flush=True)
    model = build(args.size, args.width)
    x0, y0 = next(dataset(args.size, args.batch).as_numpy_iterator())
    dist = keras.distribution.distribution()
    placed = tuple(jax.make_array_from_process_local_data(dist.get_data_layout(a.shape).backend_layout, a)
                   for a in (x0, y0))

    def fixed():  # the same batch, already on the devices: Keras' own placement of it is then a no-op
        while True:
            yield placed

    fit_seconds(model, dataset(args.size, args.batch), 2)  # compile
    best = {"A": [], "B": [], "C": [], "host": [], "A_inline": [], "B_wait": [], "B_fill": []}
    for r in range(args.rounds):
        order = ["A", "B", "C"] if r % 2 == 0 else ["C", "B", "A"]
        for key in order:
            if key == "B":
                ahead = DevicePrefetch(dataset(args.size, args.batch))
                try:
                    best[key].append(fit_seconds(model, ahead.batches(), args.steps))
                finally:
                    ahead.close()
                n = max(1, ahead.stats["batches"])
                best["B_wait"].append(ahead.stats["wait_s"] / n)
                best["B_fill"].append(ahead.stats["fill_s"] / n)
            elif key == "A":
                inline.update(s=0.0, n=0)
                best[key].append(fit_seconds(model, dataset(args.size, args.batch), args.steps))
                best["A_inline"].append(inline["s"] / max(1, inline["n"]))
            else:
                best[key].append(fit_seconds(model, fixed(), args.steps))
        best["host"].append(host_seconds(args.size, args.batch))
        print(f"round {r + 1}: " + ", ".join(f"{k} {best[k][-1] * 1000:.1f} ms" for k in best), flush=True)
    a, b, c, h = (min(best[k]) * 1000 for k in ("A", "B", "C", "host"))
    a_in, b_wait, b_fill = (float(np.median(best[k])) * 1000 for k in ("A_inline", "B_wait", "B_fill"))
    print(f"\n{'feeding':<58}{'ms/step':>9}{'img/s':>9}")
    for label, ms in (("(A) Keras from tf.data (its distributed iterator)", a),
                      ("(B) DevicePrefetch (2 batches ahead, a thread)", b),
                      ("(C) one batch already on the devices (step alone)", c)):
        print(f"{label:<58}{ms:>9.1f}{args.batch / ms * 1000:>9.0f}")
    print(f"host time to fetch and place one batch alone: {h:.1f} ms")
    print(f"per step, the training loop's own time getting its batch: (A) {a_in:.1f} ms in line (read + place); "
          f"(B) {b_wait:.1f} ms waiting, while the thread spent {b_fill:.1f} ms per batch beside the steps")
    print(f"A - C = {a - c:.1f} ms, B - C = {b - c:.1f} ms per step (time not hidden behind the step)")
    print(f"load average {[round(v, 2) for v in os.getloadavg()]} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
