"""Device prefetch on JAX with DataParallel: does batch n+1 reach the devices while step n runs?

    .venv/bin/python bench/prefetch.py                  # the mechanism, on 8 simulated CPU devices
    .venv/bin/python bench/prefetch.py --real --size 128 --batch 64   # real uint8 batches (noisy on shared CPUs)

Keras' JAX trainer looks a batch ahead only without a distribution; under DataParallel it reads a batch from
tf.data and places it on the devices when the loop asks for it (keras/src/backend/jax/trainer.py,
`_get_distributed_iterator`). The loop asks right after dispatching the previous step, and JAX dispatches
asynchronously, so the two overlap, unless something in the loop waits for each step (a progress bar with
verbose=1, any callback that reads the step's logs).

The mechanism (default): the input takes a fixed time without using the CPU (the tf.data map sleeps --input-ms
in the thread that pulls the batch, standing for the numpy copy and the placement, which tf.data's own prefetch
does not take off the loop), the step is real compute (--work). Side by side, ms per step of `fit`, fed
  (C) without the input time (the step alone),
  (A) by Keras itself from tf.data, (B) by melanoma.image.prefetch.DevicePrefetch (a thread, 2 batches ahead),
(A) and (B) with the loop left alone and with a per-step wait (as verbose=1 does). Overlap gives about
max(step, input); none gives step + input.

--real: the same comparison on real uint8 batches and a small conv net, with the training loop's own time
getting its batch, per step (Keras' iterator, timed by wrapping it here; the queue wait of DevicePrefetch).
Run in a process of its own: it sets KERAS_BACKEND and the simulated device count.
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
    p.add_argument("--work", type=int, default=12, help="mechanism: matmul rounds per step (sets its time)")
    p.add_argument("--per-device", type=int, default=64, help="mechanism: images per device")
    p.add_argument("--input-ms", type=float, default=120.0, help="mechanism: the host time to get one batch")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--real", action="store_true", help="real uint8 batches and a small conv net instead")
    p.add_argument("--size", type=int, default=128, help="--real: image side")
    p.add_argument("--batch", type=int, default=64, help="--real: global batch")
    p.add_argument("--width", type=int, default=8, help="--real: conv width (sets the step time)")
    return p.parse_args(argv)


def per_step_ms(model, data, steps: int, wait_each_step: bool) -> float:
    """ms per step over `steps` steps after 2 warm-up steps; with `wait_each_step`, the loop reads each step's
    loss (what verbose=1's progress bar does)."""
    import keras

    marks = {}

    class Mark(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if wait_each_step or step in (1, 1 + steps):
                float(keras.ops.convert_to_numpy(logs["loss"]))
            if step in (1, 1 + steps):
                marks[step] = time.perf_counter()

    model.fit(data, epochs=1, steps_per_epoch=2 + steps, verbose=0, shuffle=False, callbacks=[Mark()])
    return (marks[1 + steps] - marks[1]) / steps * 1000


def mechanism(args) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from melanoma.image.prefetch import DevicePrefetch

    input_s = args.input_ms / 1000

    class Work(keras.layers.Layer):
        """--work rounds of a 512 x 512 matmul per image: a step of real compute (JAX dispatches it
        asynchronously; a host callback, which would leave the CPU free, is run synchronously on a CPU)."""

        def build(self, shape):
            self.w = self.add_weight((512, 512), initializer="orthogonal", trainable=False)

        def call(self, x):
            h = keras.ops.tile(keras.ops.reshape(x, (-1, 192)), (1, 3))[:, :512]
            for _ in range(args.work):
                h = keras.ops.tanh(keras.ops.matmul(h, self.w))
            return h

    inp = keras.Input((8, 8, 3), dtype="uint8")
    out = keras.layers.Dense(1)(Work()(keras.ops.cast(inp, "float32") / 255.0))
    model = keras.Model(inp, out)
    model.compile("sgd", "mse")
    n = args.devices * args.per_device
    x, y = np.zeros((n, 8, 8, 3), np.uint8), np.zeros((n, 1), np.float32)

    def slow_input():
        time.sleep(input_s)
        return np.uint8(0)

    def dataset(slow: bool = True):
        """The thread that pulls a batch waits input_s for it (unless not `slow`): no parallel map, and tf.data's own look-ahead
        (autotune, an injected prefetch) off. It stands for the work that stays in line in Keras' feeding
        even after tf.data's prefetch: the copy of the batch into numpy and its placement on the devices."""
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        if slow:
            ds = ds.map(lambda a, b: (a + tf.numpy_function(slow_input, [], tf.uint8), b))
        options = tf.data.Options()
        options.autotune.enabled = False
        options.experimental_optimization.inject_prefetch = False
        return ds.with_options(options)

    per_step_ms(model, dataset(), 1, False)  # compile
    best: dict[tuple, float] = {}
    for r in range(args.rounds):
        for key, wait in (("C", False), ("A", False), ("B", False), ("A", True), ("B", True)):
            ahead = DevicePrefetch(dataset()) if key == "B" else None
            try:
                data = ahead.batches() if ahead else dataset(slow=key == "A")
                ms = per_step_ms(model, data, args.steps, wait)
            finally:
                if ahead is not None:
                    ahead.close()
            best[(key, wait)] = min(best.get((key, wait), ms), ms)
            print(f"round {r + 1}: {key} {'waiting each step' if wait else 'loop left alone'}: {ms:.0f} ms/step",
                  flush=True)
    step = best[("C", False)]
    print(f"\nthe step alone {step:.0f} ms, input {args.input_ms:.0f} ms per batch: overlap gives about "
          f"{max(step, args.input_ms):.0f} ms/step, none {step + args.input_ms:.0f}")
    print(f"{'feeding':<52}{'loop left alone':>17}{'waiting each step':>19}")
    for key, label in (("A", "(A) Keras from tf.data (its distributed iterator)"),
                       ("B", "(B) DevicePrefetch (a thread, 2 batches ahead)")):
        print(f"{label:<52}{best[(key, False)]:>14.0f} ms{best[(key, True)]:>16.0f} ms")


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


def real(args) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from melanoma.image.prefetch import DevicePrefetch

    inline = keras_inline_timer()
    inp = keras.Input((args.size, args.size, 3), dtype="uint8")
    h = keras.ops.cast(inp, "float32") / 255.0
    for i in range(3):
        h = keras.layers.Conv2D(args.width * 2 ** i, 3, strides=2, padding="same", activation="relu")(h)
    model = keras.Model(inp, keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(h)))
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    rng = np.random.default_rng(0)
    pool = tf.constant(rng.integers(0, 256, (args.batch * 2, args.size, args.size, 3), dtype=np.uint8))
    labels = tf.constant((rng.random((args.batch * 2, 1)) < 0.2).astype("float32"))

    def dataset():  # per-batch host work (a flip), prefetched as train_dataset is
        ds = tf.data.Dataset.from_tensor_slices((pool, labels)).repeat().batch(args.batch, drop_remainder=True)
        return ds.map(lambda a, b: (tf.reverse(a, [2]), b), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

    per_step_ms(model, dataset(), 1, False)  # compile
    got: dict[str, list] = {"A": [], "B": [], "A_inline": [], "B_wait": [], "B_fill": []}
    for r in range(args.rounds):
        inline.update(s=0.0, n=0)
        got["A"].append(per_step_ms(model, dataset(), args.steps, False))
        got["A_inline"].append(inline["s"] / max(1, inline["n"]) * 1000)
        ahead = DevicePrefetch(dataset())
        try:
            got["B"].append(per_step_ms(model, ahead.batches(), args.steps, False))
        finally:
            ahead.close()
        n = max(1, ahead.stats["batches"])
        got["B_wait"].append(ahead.stats["wait_s"] / n * 1000)
        got["B_fill"].append(ahead.stats["fill_s"] / n * 1000)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in got.items()), flush=True)
    print(f"\n{args.batch} x {args.size}px uint8 per batch; best of {args.rounds} rounds, ms")
    print(f"(A) Keras' own feeding: {min(got['A']):.1f} ms/step; the loop spent {min(got['A_inline']):.1f} ms per "
          "step reading and placing its batch in line")
    print(f"(B) DevicePrefetch: {min(got['B']):.1f} ms/step; the loop waited {min(got['B_wait']):.1f} ms per step "
          f"for its batch, the thread spent {min(got['B_fill']):.1f} ms per batch beside the steps")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT / "src"))
    from melanoma.runtime.backend import set_cpu_devices

    set_cpu_devices(args.devices, os.environ)
    import jax
    import keras

    from melanoma.runtime.devices import setup_devices

    devices = setup_devices(cpu_replicas=args.devices)
    print(f"bench/prefetch.py: {devices.detail}, jax {jax.__version__}, keras {keras.__version__}", flush=True)
    real(args) if args.real else mechanism(args)
    print(f"load average {[round(v, 2) for v in os.getloadavg()]} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
