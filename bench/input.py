"""Input-pipeline benchmark: images/s the host delivers to the model, uint8 (now) vs float32 (before).

    .venv/bin/python bench/input.py --size 384 --batch 64 --n 256

On the same records, side by side in one run (alternating rounds, best of each kept), the batches as Keras
receives them (numpy, after tf.data):
  before, float32: decode, cast to float32 per image, sequential batch; with the public Kaggle records (no
      manifest, stored size unknown) also an antialiased resize to the same size;
  now, uint8: pipeline.train_dataset with the augmentation in the model (the TPU default): decode, no resize
      when the image already has the target size, parallel batch, uint8.
Each row gives images/s, host bytes per image, and the time to place one batch on the devices with
jax.device_put where JAX is installed (on a CPU that is a memory copy: the figure to compare is the ratio).
No augmentation in either path: on the TPU it runs in the model; `--augment` adds the tf.data augmentation
(augment.where: data) to both, for the CPU/GPU path.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=384, help="image side (records are stored at it)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n", type=int, default=256, help="images in the records (read in a loop)")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--batches", type=int, default=24, help="timed batches per measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds, best kept")
    p.add_argument("--augment", action="store_true", help="also augment in tf.data (augment.where: data)")
    return p.parse_args(argv)


def write_records(folder: Path, n: int, size: int, shards: int) -> None:
    """Smooth random images as JPEG (quality 95, as prepare), in our schema, with our manifest."""
    import json

    import numpy as np
    import tensorflow as tf
    from PIL import Image, ImageFilter

    from melanoma.data.records import serialize_example, shard_name

    rng = np.random.default_rng(0)
    manifest = []
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        name = shard_name("train", s, int(bounds[s + 1] - bounds[s]))
        with tf.io.TFRecordWriter(str(folder / name)) as w:
            for i in range(bounds[s], bounds[s + 1]):
                small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
                img = small.resize((size, size), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(3))
                buf = io.BytesIO()
                img.save(buf, format="JPEG", quality=95)
                w.write(serialize_example({"image": buf.getvalue(), "image_name": f"B{i:06d}", "patient_id": i,
                                           "sex": 0, "age_approx": 50, "anatom_site_general_challenge": 0,
                                           "diagnosis": 0, "target": int(i % 10 == 0)}, "train"))
        manifest.append({"file": name, "split": "train", "fold": 0, "count": int(bounds[s + 1] - bounds[s])})
    (folder / "manifest.json").write_text(json.dumps({"image_size": size, "n_folds": 1, "shards": manifest}))


def float32_dataset(paths: list[str], size: int, stored_size: int | None, batch: int, acfg):
    """The reader before uint8: float32 per image (resized when the stored size is not known), a sequential
    batch; augmentation (when asked) on the float batch."""
    import tensorflow as tf

    from melanoma.image.augment import augment_batch
    from melanoma.data.reader import AUTOTUNE, parse_fn, read_records

    parse = parse_fn("train", ("image", "target"))

    def decode(ex):
        img = tf.io.decode_jpeg(ex["image"], channels=3)
        if stored_size != size:
            img = tf.image.resize(img, [size, size], antialias=True)
        return tf.reshape(tf.cast(img, tf.float32), [size, size, 3]), tf.cast(ex["target"], tf.float32)

    ds = read_records(paths, deterministic=False).map(parse, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.repeat().map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda x, y: (x if acfg is None else augment_batch(x, acfg, size), y[:, None]),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    return ds.prefetch(AUTOTUNE)


def uint8_dataset(shards, size: int, stored_size: int | None, batch: int, acfg):
    """Today's reader: pipeline.train_dataset (uint8, no same-size resize, parallel batch)."""
    from melanoma.config import TrainConfig
    from melanoma.image.inputs import train_dataset

    tcfg = TrainConfig(size=size)
    if acfg is not None:
        tcfg = dataclasses.replace(tcfg, augment=acfg)
    return train_dataset(shards, tcfg, stored_size, batch, pos_share=None, seed=0, augment=acfg is not None)


def measure(ds, batches: int) -> tuple[float, int, float | None]:
    """(images/s as numpy batches, bytes per image, ms per jax.device_put of one batch or None)."""
    it = ds.as_numpy_iterator()
    for _ in range(3):  # files open, buffers filled
        x, _ = next(it)
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
    rate = batches * len(x) / (time.perf_counter() - start)
    put = None
    try:
        import jax

        jax.block_until_ready(jax.device_put(x))
        t = time.perf_counter()
        for _ in range(5):
            jax.block_until_ready(jax.device_put(x))
        put = (time.perf_counter() - t) / 5 * 1000
    except ImportError:
        pass
    return rate, x.nbytes // len(x), put


def input_figures(size: int = 384, batch: int = 64, n: int = 256, shards: int = 8, batches: int = 24,
                  rounds: int = 2, augment: bool = False, log=print) -> list[dict]:
    """The rows of the comparison (see the module docstring), each the best of `rounds` alternating rounds."""
    from melanoma.config import AugmentConfig
    from melanoma.data.reader import find_shards

    acfg = AugmentConfig() if augment else None
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        t = time.perf_counter()
        write_records(Path(tmp), n, size, shards)
        found = find_shards(tmp, 1)
        paths = [s.path for s in found.train()]
        log(f"records: {n} synthetic JPEGs at {size}px in {shards} shards ({time.perf_counter() - t:.1f} s)")
        cases = [("before: float32, our records (size known)", lambda: float32_dataset(paths, size, size, batch, acfg)),
                 ("before: float32, public records (resized to the same size)",
                  lambda: float32_dataset(paths, size, None, batch, acfg)),
                 ("now: uint8, our records", lambda: uint8_dataset(found.train(), size, size, batch, acfg)),
                 ("now: uint8, public records (no resize at the same size)",
                  lambda: uint8_dataset(found.train(), size, None, batch, acfg))]
        best: dict[str, tuple] = {}
        for r in range(rounds):
            for label, make in cases if r % 2 == 0 else cases[::-1]:
                got = measure(make(), batches)
                log(f"  round {r + 1}: {label}: {got[0]:.0f} img/s")
                if label not in best or got[0] > best[label][0]:
                    best[label] = got
    return [{"path": label, "img_s": round(best[label][0], 1), "bytes_per_image": best[label][1],
             "device_put_ms_per_batch": None if best[label][2] is None else round(best[label][2], 2)}
            for label, _ in cases]


def print_table(rows: list[dict], size: int, batch: int) -> None:
    print(f"\ninput pipeline at {size}px, batch {batch} (numpy batches as Keras receives them)")
    print(f"{'path':<62}{'img/s':>9}{'bytes/img':>12}{'put ms/batch':>14}")
    for r in rows:
        put = "-" if r["device_put_ms_per_batch"] is None else f"{r['device_put_ms_per_batch']:.1f}"
        print(f"{r['path']:<62}{r['img_s']:>9.0f}{r['bytes_per_image']:>12,}{put:>14}")
    base, now = rows[0], rows[2]
    print(f"uint8 / float32: {now['img_s'] / base['img_s']:.2f}x images/s, "
          f"{base['bytes_per_image'] / now['bytes_per_image']:.0f}x fewer host bytes per image")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = input_figures(args.size, args.batch, args.n, args.shards, args.batches, args.rounds, args.augment)
    print_table(rows, args.size, args.batch)
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []
    print(f"load average {load} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing, too
    sys.exit(main())
