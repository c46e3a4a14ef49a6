"""Training-throughput benchmark: is the input pipeline fast enough to keep the model busy?

    .venv/bin/python bench/train.py --size 128 --batch 16 --model efficientnet_b0 --n 512 --steps 30

In one run, side by side on the same records, size and batch:
  (a) images/s of the input pipeline alone: pipeline.train_dataset (read, parse, decode, augment, batch);
  (b) images/s of the model's training step alone: fit on one fixed in-memory batch;
  (c) images/s of fit fed from the TFRecords pipeline;
  (d) images/s of fit fed from the same images already decoded in memory, with the same augmentation map.
It prints (a)/(b) (must be >= 3 at 128 px on 2 CPU cores) and (c)/(d) (must be >= 0.90) with PASS/FAIL.
Each figure is timed after warm-up steps (the first training steps compile for 25-120 s on a CPU), and
(b), (c), (d) are measured in alternating rounds, keeping each one's best, because other processes on a
shared machine make single timings noisy.

`--gpu-figures` adds, where a GPU is visible, EfficientNetB0@256 and B5@384 training and TTA-inference
images/s with mixed precision (float16). That part is self-contained (gpu_figures) so it can be run alone
on a GPU box; `--gpu-force` runs it on the CPU too, only to check the code path (slow).

`--backends` adds the Keras backends side by side: training images/s of the same model, size and batch (one
fixed in-memory batch, the step alone; `--backend-augment` puts the augmentation layer in the model) on
TensorFlow and on JAX, each in its own process (the backend is fixed when Keras is imported), alternating
rounds, and prints JAX / TensorFlow; then the input pipeline at `--input-size` (384 px) as the TPU path feeds
it, uint8 (now) vs float32 (before), images/s and host bytes per image (bench/input.py).
`--backends-only` skips everything else.

Do not set TF_ENABLE_ONEDNN_OPTS=0 here: it cuts CPU training speed by about 40%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128, help="image side in pixels (records are stored at it)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--n", type=int, default=512, help="images written to the benchmark records")
    p.add_argument("--shards", type=int, default=8, help="TFRecord files the images are spread over")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed training steps before each measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of (b), (c), (d); best kept")
    p.add_argument("--pipeline-batches", type=int, default=200, help="timed batches for (a)")
    p.add_argument("--images", type=Path, default=ROOT / "data" / "demo" / "jpeg" / "train",
                   help="JPEGs to build the records from (default: the shipped demo set)")
    p.add_argument("--synthetic", action="store_true", help="random smooth blobs instead of the JPEGs")
    # The thresholds on 2 CPU cores at 128 px.
    p.add_argument("--min-pipeline-ratio", type=float, default=3.0, help="(a)/(b) must reach this")
    p.add_argument("--min-fit-ratio", type=float, default=0.90, help="(c)/(d) must reach this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--gpu-figures", action="store_true",
                   help="with a GPU: EfficientNetB0@256 and B5@384 train and TTA-inference img/s, float16")
    p.add_argument("--gpu-only", action="store_true", help="only the GPU figures (skip the CPU ratios)")
    p.add_argument("--gpu-force", action="store_true", help="run the GPU figures without a GPU (code check)")
    p.add_argument("--gpu-models", default="efficientnet_b0:256,efficientnet_b5:384", help="name:size,...")
    p.add_argument("--gpu-batch", type=int, default=32, help="batch for the GPU figures")
    p.add_argument("--gpu-steps", type=int, default=50, help="timed steps for each GPU figure")
    p.add_argument("--tta", type=int, default=4, help="augmented passes counted in the TTA-inference figure")
    p.add_argument("--backends", action="store_true", help="also: training img/s on TensorFlow vs JAX, as a ratio")
    p.add_argument("--backends-only", action="store_true", help="only the TensorFlow vs JAX comparison")
    p.add_argument("--backend-augment", action="store_true", help="backends: augmentation layer inside the model")
    p.add_argument("--input-size", type=int, default=384, help="backends: side of the input-pipeline comparison")
    p.add_argument("--step-only", choices=["tensorflow", "jax"], help=argparse.SUPPRESS)  # one backend's figure
    return p.parse_args(argv)


# ---------------------------------------------------------------- records

def source_images(folder: Path, n: int, size: int, synthetic: bool, seed: int):
    """n RGB uint8 (size, size, 3) arrays from the JPEGs in `folder` (center-cropped, Lanczos, as `prepare`
    does), repeated as needed, or random smooth blobs when there are none; and which of the two it was."""
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps

    paths = [] if synthetic else sorted(folder.glob("*.jpg"))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if paths:
            with Image.open(paths[i % len(paths)]) as img:
                img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.Resampling.LANCZOS)
                # Repeats get a flip or turn so the shards never hold byte-identical images.
                img = img.rotate(90 * (i // len(paths) % 4)) if i >= len(paths) else img
        else:
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
            img = img.filter(ImageFilter.GaussianBlur(size / 32))
        out.append(np.asarray(img, dtype=np.uint8))
    return out, f"JPEGs from {folder}" if paths else "synthetic"


def write_records(out_dir: Path, images, shards: int):
    """Shards in the competition schema through melanoma.data.records, every 10th image malignant.

    Returns the targets and the images exactly as the pipeline decodes them (for the in-memory source).
    """
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from melanoma.data.records import serialize_example, shard_name

    n = len(images)
    targets = np.array([int(i % 10 == 0) for i in range(n)], dtype=np.float32)
    decoded = np.empty((n,) + images[0].shape, dtype=np.uint8)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        lo, hi = bounds[s], bounds[s + 1]
        with tf.io.TFRecordWriter(str(out_dir / shard_name("train", s, hi - lo))) as w:
            for i in range(lo, hi):
                buf = io.BytesIO()
                Image.fromarray(images[i]).save(buf, format="JPEG", quality=95)  # prepare's default quality
                data = buf.getvalue()
                decoded[i] = tf.io.decode_jpeg(data, channels=3).numpy()
                w.write(serialize_example({"image": data, "image_name": f"BENCH_{i:07d}", "patient_id": i,
                                           "sex": i % 2, "age_approx": 40 + i % 40,
                                           "anatom_site_general_challenge": i % 6, "diagnosis": 0,
                                           "target": int(targets[i])}, "train"))
    return targets, decoded


# ---------------------------------------------------------------- measurements

def pipeline_rate(ds, batch: int, warmup: int, batches: int) -> float:
    """(a): images/s drawn from a dataset alone, after `warmup` batches (files opened, shuffle buffer filled)."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
    x.numpy()  # the last batch really materialised
    return batches * batch / (time.perf_counter() - start)


def compiled_model(name: str, size: int, jit: bool | str):
    """The model as train.py compiles it with the default config: no weights, AdamW, its loss, AUC."""
    import keras

    from melanoma.config import TrainConfig
    from melanoma.image.models import build_model
    from melanoma.image.schedules import make_loss

    tcfg = TrainConfig()
    model = build_model(name, size, weights=None, dropout=tcfg.dropout, bn_momentum=tcfg.bn_momentum)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=tcfg.optimizer.weight_decay),
                  loss=make_loss(tcfg), metrics=[keras.metrics.AUC(name="auc")], jit_compile=jit)
    return model


def fit_rate(model, ds, batch: int, warmup: int, steps: int) -> float:
    """Training images/s of one fit call over `warmup + steps` steps, timing only the last `steps`."""
    import keras

    marks = {}

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step in (warmup - 1, warmup + steps - 1):
                marks[step] = time.perf_counter()

    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[Timer()])
    first = marks.get(warmup - 1, start)  # warmup 0: the timing includes the start (and any compile)
    return steps * batch / (marks[warmup + steps - 1] - first)


def in_memory_dataset(images, targets, batch: int, acfg, size: int):
    """(d)'s source: the decoded images in memory, then the same batch/augment/prefetch as train_dataset
    (augmented in tf.data and rounded back to uint8, the models' input)."""
    import tensorflow as tf

    from melanoma.image.inputs import _augment_inputs

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).repeat().shuffle(len(images))
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y: (_augment_inputs(x, acfg, size), y[:, None]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE)


def fixed_batch_dataset(images, targets, batch: int):
    """(b)'s source: one batch, repeated: the training step with (almost) no input work."""
    import tensorflow as tf

    x = tf.constant(images[:batch])  # uint8, as the reader gives them
    y = tf.constant(targets[:batch])[:, None]
    return tf.data.Dataset.from_tensors((x, y)).repeat()


# ---------------------------------------------------------------- TensorFlow vs JAX

def step_only(args: argparse.Namespace) -> dict:
    """In a process whose KERAS_BACKEND is already set: the training step's img/s on one fixed batch."""
    import keras
    import numpy as np

    from melanoma.runtime.devices import setup_devices
    from melanoma.config import TrainConfig, to_dict
    from melanoma.image.models import build_model
    from melanoma.image.schedules import make_loss
    from melanoma.image.train import jit_compile

    devices = setup_devices("none")
    keras.utils.set_random_seed(args.seed)
    tcfg = TrainConfig()
    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, 256, (args.batch, args.size, args.size, 3)).astype("uint8")
    y = (rng.random((args.batch, 1)) < 0.3).astype("float32")
    with devices.scope():
        model = build_model(args.model, args.size, None, tcfg.dropout,
                            augment=to_dict(tcfg.augment) if args.backend_augment else None)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=tcfg.optimizer.weight_decay),
                      loss=make_loss(tcfg), metrics=[keras.metrics.AUC(name="auc")],
                      jit_compile=jit_compile(None, devices.kind, devices.backend))
    t = time.perf_counter()
    model.train_on_batch(x, y)  # compiles
    compile_s = time.perf_counter() - t
    rates = []
    for _ in range(args.rounds):
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        t = time.perf_counter()
        for _ in range(args.steps):
            loss = model.train_on_batch(x, y)
        float(np.asarray(loss[0] if isinstance(loss, (list, tuple)) else loss))  # wait for the device
        rates.append(args.steps * args.batch / (time.perf_counter() - t))
    return {"backend": devices.backend, "device": devices.kind, "img_s": round(max(rates), 2),
            "rounds": [round(r, 2) for r in rates], "compile_s": round(compile_s, 1)}


def backend_figures(args: argparse.Namespace) -> dict:
    """Each backend's step-alone figure in its own process, alternating twice, best kept; then the ratio."""
    import json
    import subprocess

    argv = [sys.executable, str(Path(__file__).resolve()), "--model", args.model, "--size", str(args.size),
            "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--rounds", str(args.rounds), "--seed", str(args.seed)] + (["--backend-augment"] if args.backend_augment
                                                                        else [])
    best: dict[str, dict] = {}
    for order in (("tensorflow", "jax"), ("jax", "tensorflow")):
        for backend in order:
            env = {**os.environ, "KERAS_BACKEND": backend}
            res = subprocess.run(argv + ["--step-only", backend], capture_output=True, text=True, env=env)
            if res.returncode != 0:
                raise RuntimeError(f"{backend} figure failed: {res.stderr[-1500:]}")
            fig = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"  {backend:<10} {fig['img_s']:8.1f} img/s on {fig['device']} (compiled in {fig['compile_s']} s)",
                  flush=True)
            if backend not in best or fig["img_s"] > best[backend]["img_s"]:
                best[backend] = fig
    ratio = best["jax"]["img_s"] / best["tensorflow"]["img_s"]
    return {"tensorflow": best["tensorflow"], "jax": best["jax"], "ratio_jax_to_tensorflow": round(ratio, 3),
            "augment_in_model": args.backend_augment}


def input_comparison(args: argparse.Namespace) -> list[dict]:
    """bench/input.py's rows: the reader at --input-size, uint8 vs float32, side by side (it prints them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_input", Path(__file__).resolve().parent / "input.py")
    bench_input = importlib.util.module_from_spec(spec)
    sys.modules["bench_input"] = bench_input  # registered: autograph reads its functions' source
    spec.loader.exec_module(bench_input)
    print(f"input pipeline at {args.input_size}px, uint8 (now) vs float32 (before):", flush=True)
    rows = bench_input.input_figures(size=args.input_size, batch=args.batch * 4, n=256,
                                     log=lambda m: print("  " + m, flush=True))
    bench_input.print_table(rows, args.input_size, args.batch * 4)
    return rows


# ---------------------------------------------------------------- GPU figures (separate path)

def gpu_figures(models: list[tuple[str, int]], batch: int, steps: int, warmup: int, tta: int) -> list[dict]:
    """Training and TTA-inference images/s per model with mixed precision (float16), on random images.

    Inference runs plain + `tta` augmented views made on the device by the TTA prediction model, as training's
    prediction does; `infer_img_s` counts every view, `tta_img_s` counts each original image once.
    """
    from dataclasses import replace

    import keras
    import tensorflow as tf

    from melanoma.config import TrainConfig
    from melanoma.image.tta import tta_model

    results = []
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for name, size in models:
            keras.backend.clear_session()
            model = compiled_model(name, size, jit="auto")  # XLA where it compiles, as train.py on GPUs
            x = tf.cast(tf.random.uniform([batch, size, size, 3], 0, 256, tf.int32), tf.uint8)
            y = tf.cast(tf.random.uniform([batch, 1]) < 0.1, tf.float32)
            train = fit_rate(model, tf.data.Dataset.from_tensors((x, y)).repeat(), batch, warmup, steps)

            tm = tta_model(model, replace(TrainConfig(size=size), tta=tta, tta_flips=False))
            per_step = max(1, batch // (1 + tta))
            feed = tf.data.Dataset.from_tensors({"image": x[:per_step], "idx": tf.range(per_step)}).repeat()
            tm.predict(feed, steps=max(warmup, 1), verbose=0)
            start = time.perf_counter()
            tm.predict(feed, steps=steps, verbose=0)
            infer = steps * per_step * (1 + tta) / (time.perf_counter() - start)
            results.append({"model": name, "size": size, "batch": batch, "precision": "mixed_float16",
                            "train_img_s": round(train, 1), "infer_img_s": round(infer, 1),
                            "tta_passes": 1 + tta, "tta_img_s": round(infer / (1 + tta), 1)})
            print(f"  {name}@{size}: train {train:.1f} img/s, inference {infer:.1f} img/s "
                  f"({infer / (1 + tta):.1f} images/s with {1 + tta} TTA passes)", flush=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return results


# ---------------------------------------------------------------- report

def machine_info() -> dict:
    import keras
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "cpu_count": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu": _cpu_model(), "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "gpus": gpus, "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.step_only:
        import json

        print(json.dumps(step_only(args)))
        return 0
    # Keras notes on every fit that a Dataset is not reshuffled by it: expected here, and noise in the report.
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    import keras

    from dataclasses import replace

    from melanoma.config import Config
    from melanoma.files import write_json
    from melanoma.image.inputs import train_dataset
    from melanoma.data.reader import find_shards
    from melanoma.image.train import jit_compile

    keras.utils.set_random_seed(args.seed)
    info = machine_info()
    results: dict = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in vars(args).items()}, "load_before": _load()}
    print(f"bench/train.py  {info['date']}  {info['cpu']}, {info['cores_usable']} cores usable, "
          f"TensorFlow {info['tensorflow']}, Keras {info['keras']}, GPUs: {info['gpus'] or 'none'}; "
          f"load average {results['load_before']}", flush=True)

    if args.backends or args.backends_only:
        print(f"backends: {args.model}@{args.size}, batch {args.batch}, training step alone"
              + (", augmentation in the model" if args.backend_augment else ""), flush=True)
        results["backends"] = backend_figures(args)
        results["input"] = input_comparison(args)
    if not (args.gpu_only or args.backends_only):
        cfg = Config()
        acfg = cfg.train.augment
        jit = jit_compile(None, "gpu" if info["gpus"] else "cpu")  # as train.py (no XLA on a CPU)
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            t = time.perf_counter()
            images, kind = source_images(args.images, args.n, args.size, args.synthetic, args.seed)
            targets, decoded = write_records(Path(tmp), images, args.shards)
            shards = find_shards(tmp, n_folds=1).train()
            print(f"records: {args.n} images ({kind}) at {args.size}px in "
                  f"{len(shards)} shards ({time.perf_counter() - t:.1f} s)", flush=True)

            def tfrecord_ds():
                return train_dataset(shards=shards, tcfg=replace(cfg.train, size=args.size), stored_size=args.size,
                                     batch=args.batch, pos_share=None, seed=args.seed)

            # (a) twice, best kept, before any model exists: the pipeline alone on an otherwise idle process.
            a = max(pipeline_rate(tfrecord_ds(), args.batch, 20, args.pipeline_batches) for _ in range(2))
            print(f"(a) input pipeline alone: {a:.0f} img/s", flush=True)

            t = time.perf_counter()
            model = compiled_model(args.model, args.size, jit)
            fixed = fixed_batch_dataset(decoded, targets, args.batch)
            # The first fit compiles the training step (25-120 s on a CPU): a throw-away call absorbs it.
            fit_rate(model, fixed, args.batch, 1, 2)
            print(f"model built and compiled in {time.perf_counter() - t:.0f} s", flush=True)
            memory = in_memory_dataset(decoded, targets, args.batch, acfg, args.size)
            b, c, d = [], [], []
            for r in range(args.rounds):
                # Alternate the three so a burst of load from elsewhere does not fall on one of them only.
                order = [("b", fixed, b), ("c", None, c), ("d", memory, d)]
                for key, ds, store in order if r % 2 == 0 else order[::-1]:
                    store.append(fit_rate(model, tfrecord_ds() if ds is None else ds, args.batch, args.warmup,
                                          args.steps))
                print(f"round {r + 1}: (b) {b[-1]:.1f}  (c) {c[-1]:.1f}  (d) {d[-1]:.1f} img/s", flush=True)
        results.update({
            "pipeline_img_s": round(a, 1), "step_img_s": round(max(b), 1), "fit_tfrecord_img_s": round(max(c), 1),
            "fit_memory_img_s": round(max(d), 1), "rounds": {"b": b, "c": c, "d": d},
            "ratio_pipeline_to_step": round(a / max(b), 2), "ratio_tfrecord_to_memory": round(max(c) / max(d), 3),
        })

    if args.gpu_figures:
        if info["gpus"] or args.gpu_force:
            print("GPU figures (mixed_float16):" if info["gpus"] else "GPU figures on the CPU (code check only):",
                  flush=True)
            models = [(m.split(":")[0], int(m.split(":")[1])) for m in args.gpu_models.split(",")]
            results["gpu"] = gpu_figures(models, args.gpu_batch, args.gpu_steps, args.warmup, args.tta)
        else:
            print("GPU figures: no GPU visible, skipped (--gpu-force runs them on the CPU)", flush=True)
    results["load_after"] = _load()

    print()
    if "pipeline_img_s" in results:
        print(f"{'measure':<60}{'img/s':>8}")
        rows = [("(a) input pipeline alone (read, decode, augment, batch)", results["pipeline_img_s"]),
                (f"(b) training step alone ({args.model}@{args.size}, batch {args.batch})", results["step_img_s"]),
                ("(c) fit fed from TFRecords", results["fit_tfrecord_img_s"]),
                ("(d) fit fed from decoded images in memory", results["fit_memory_img_s"])]
        for label, value in rows:
            print(f"{label:<60}{value:>8.1f}")
        r1, r2 = results["ratio_pipeline_to_step"], results["ratio_tfrecord_to_memory"]
        lo1, lo2 = args.min_pipeline_ratio, args.min_fit_ratio
        results["pass"] = {"pipeline_to_step": r1 >= lo1, "tfrecord_to_memory": r2 >= lo2}
        print(f"(a)/(b) = {r1:.1f}x   (must be >= {lo1:g}x)   {verdict(r1 >= lo1)}")
        print(f"(c)/(d) = {r2:.1%}   (must be >= {lo2:.0%})   {verdict(r2 >= lo2)}")
    if "backends" in results:
        bk = results["backends"]
        print(f"JAX / TensorFlow training img/s ({args.model}@{args.size}, batch {args.batch}): "
              f"{bk['jax']['img_s']:.1f} / {bk['tensorflow']['img_s']:.1f} = {bk['ratio_jax_to_tensorflow']:.2f}x "
              f"on {bk['jax']['device']}")
    for g in results.get("gpu", []):
        print(f"{g['model']}@{g['size']} {g['precision']}: train {g['train_img_s']} img/s, "
              f"inference {g['infer_img_s']} img/s, {g['tta_img_s']} images/s with {g['tta_passes']} TTA passes")
    print(f"load average before {results['load_before']}, after {results['load_after']} "
          f"({info['cores_usable']} cores): figures are noisy when it exceeds the cores")
    if args.json:
        write_json(args.json, results)
        print(f"results -> {args.json}")
    ok = all(results.get("pass", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing, too
    sys.exit(main())
