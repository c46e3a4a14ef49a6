"""The `prepare` stage: competition layout -> resized, sharded TFRecords with patient-level folds.

Each training shard holds one fold only, so a fold is a set of files. Shards are planned up front (a list of
images per file, sized to a target in MB), then each is written independently, to a temporary name that is
renamed when complete; `workers > 1` writes shards in parallel processes. Images are read one at a time, so
memory stays flat however many there are. The manifest is written last: a folder with a manifest is complete.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from melanoma import __version__
from melanoma.config import Config, save_run_info
from melanoma.data import ID, PATIENT, TARGET, check_images_exist, csv_line, read_test, read_train
from melanoma.errors import ConfigError, input_error
from melanoma.files import staged_dir, write_csv, write_json
from melanoma.folds import assign_folds, fold_summary, read_folds
from melanoma.records import build_vocabularies, encode_metadata, parse_shard_name, schema, serialize_example, \
    shard_name

log = logging.getLogger(__name__)

RESIZE_MODES = ("crop", "pad", "stretch")
_EXIF_ORIENTATION = 0x0112


@dataclass
class ImageTask:
    """One image to write: where it is, where it was listed (for errors) and its record fields."""

    path: str
    csv: str
    line: int
    fields: dict[str, Any]


@dataclass
class ShardTask:
    split: str
    index: int
    fold: int  # -1 for test shards
    images: list[ImageTask]


# ---------------------------------------------------------------- images

def load_rgb(path: str | Path, size: int, csv: str | Path = "", line: int | None = None
             ) -> tuple[Image.Image, int, int]:
    """Decode an image to RGB, upright per its EXIF orientation; return it with the original width, height.

    `draft` lets libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale, never below `size`: a 6000x4000
    competition image is then decoded at a fraction of the cost.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            img.draft("RGB", (size, size))
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")  # grayscale, RGBA, CMYK, palette -> RGB; also forces the full decode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise input_error(csv or path, f"cannot read image {path}: {e}", line) from None
    return img, width, height


def square(img: Image.Image, size: int, mode: str) -> Image.Image:
    if mode == "crop":
        return ImageOps.fit(img, (size, size), method=Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(img, (size, size), method=Image.Resampling.LANCZOS, color=(0, 0, 0))
    if mode == "stretch":
        return img.resize((size, size), Image.Resampling.LANCZOS)
    raise ConfigError(f"prepare.resize must be one of {RESIZE_MODES}, got {mode!r}")


def encode_image(path: str | Path, size: int, mode: str, quality: int, csv: str | Path = "",
                 line: int | None = None) -> tuple[bytes, int, int]:
    img, width, height = load_rgb(path, size, csv, line)
    buf = io.BytesIO()
    square(img, size, mode).save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), width, height


# ---------------------------------------------------------------- shards

def write_shard(task: ShardTask, out_dir: str, size: int, mode: str, quality: int, progress=None) -> dict:
    """Write one shard to a temporary name and rename it to `split{index}-{count}.tfrec` when complete."""
    import tensorflow as tf

    final = Path(out_dir) / shard_name(task.split, task.index, len(task.images))
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for item in task.images:
                data, width, height = encode_image(item.path, size, mode, quality, item.csv, item.line)
                writer.write(serialize_example({**item.fields, "image": data, "width": width, "height": height},
                                               task.split))
                if progress is not None:
                    progress(1)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    positives = sum(int(i.fields.get(TARGET, 0)) for i in task.images)
    return {"file": final.name, "split": task.split, "fold": task.fold, "count": len(task.images),
            "positives": positives, "bytes": final.stat().st_size}


def _write_shard_in_worker(args: tuple) -> dict:
    # Runs in a spawned process: quiet TensorFlow before it is imported there.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return write_shard(*args)


def estimate_image_bytes(paths: list[str], size: int, mode: str, quality: int, sample: int = 8) -> float:
    """Mean encoded size of a few images, to turn the shard target in MB into images per shard."""
    picks = paths[:: max(1, len(paths) // sample)][:sample]
    return float(np.mean([len(encode_image(p, size, mode, quality)[0]) for p in picks])) if picks else 1.0


def plan_shards(train_items: dict[int, list[ImageTask]], test_items: list[ImageTask], per_shard: int
                ) -> list[ShardTask]:
    """Split each fold (and the test set) into near-equal shards; train shards are numbered fold by fold."""
    tasks: list[ShardTask] = []
    index = 0
    for fold in sorted(train_items):
        items = train_items[fold]
        for chunk in np.array_split(np.arange(len(items)), max(1, math.ceil(len(items) / per_shard))):
            tasks.append(ShardTask("train", index, fold, [items[i] for i in chunk]))
            index += 1
    n_test = max(1, math.ceil(len(test_items) / per_shard)) if test_items else 0
    for index, chunk in enumerate(np.array_split(np.arange(len(test_items)), n_test) if n_test else []):
        tasks.append(ShardTask("test", index, -1, [test_items[i] for i in chunk]))
    return tasks


def _image_tasks(df: pd.DataFrame, codes: pd.DataFrame, paths: list[Path], csv: Path) -> list[ImageTask]:
    fields = codes.to_dict("records")
    tasks = []
    for (idx, name), path, f in zip(df[ID].items(), paths, fields):
        tasks.append(ImageTask(str(path), str(csv), csv_line(idx), {ID: name, **f}))
    return tasks


# ---------------------------------------------------------------- stage

def prepare(cfg: Config, data_dir: str | Path, out_dir: str | Path, folds_path: str | Path | None = None
            ) -> dict:
    """The `prepare` stage. Returns the manifest it wrote to OUT/manifest.json."""
    pcfg = cfg.prepare
    if pcfg.resize not in RESIZE_MODES:
        raise ConfigError(f"prepare.resize must be one of {RESIZE_MODES}, got {pcfg.resize!r}")
    if not 16 <= pcfg.size <= 4096:
        raise ConfigError(f"prepare.size must be between 16 and 4096, got {pcfg.size}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    train, test = read_train(data_dir), read_test(data_dir)
    if folds_path is not None:
        folds = read_folds(folds_path, train)
    else:
        folds = assign_folds(train, cfg.n_folds, cfg.seed)
    n_folds = int(folds["fold"].max()) + 1
    leaked = sorted(set(train[PATIENT]) & set(test[PATIENT]))
    if leaked:
        log.warning("%d patients appear in both train and test (e.g. %s)", len(leaked), leaked[0])

    train_paths = check_images_exist(data_dir, "train", train)
    test_paths = check_images_exist(data_dir, "test", test)
    vocab = build_vocabularies(train, test)
    patients = sorted(set(train[PATIENT]) | set(test[PATIENT]))
    patient_codes = {p: i for i, p in enumerate(patients)}
    train_tasks = _image_tasks(train, encode_metadata(train, vocab, patient_codes), train_paths,
                               data_dir / "train.csv")
    test_tasks = _image_tasks(test, encode_metadata(test, vocab, patient_codes), test_paths,
                              data_dir / "test.csv")

    # Shuffle within each fold so a shard is not one contiguous block of ids.
    fold_of = dict(zip(folds[ID], folds["fold"]))
    rng = np.random.default_rng(cfg.seed)
    by_fold: dict[int, list[ImageTask]] = {k: [] for k in range(n_folds)}
    for i in rng.permutation(len(train_tasks)):
        by_fold[int(fold_of[train_tasks[i].fields[ID]])].append(train_tasks[i])

    est = estimate_image_bytes([t.path for t in train_tasks], pcfg.size, pcfg.resize, pcfg.quality)
    per_shard = max(1, int(pcfg.shard_mb * 1e6 // est))
    tasks = plan_shards(by_fold, test_tasks, per_shard)
    workers = pcfg.workers if pcfg.workers > 0 else (os.cpu_count() or 1)
    workers = min(workers, len(tasks))
    log.info("prepare: %d train + %d test images -> %d shards of <= %d images (~%.0f KB each at %dpx), "
             "%d worker(s)", len(train_tasks), len(test_tasks), len(tasks), per_shard, est / 1e3, pcfg.size,
             workers)

    import tensorflow  # noqa: F401  (imported before the clock and the bar start: it takes seconds)

    start = time.perf_counter()
    total = len(train_tasks) + len(test_tasks)
    # In a log file rather than a terminal, redraw the bar every few seconds, not ten times a second.
    bar = tqdm(total=total, unit="img", desc="prepare", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 5.0)
    with staged_dir(out_dir) as stage, bar:
        args = [(t, str(stage), pcfg.size, pcfg.resize, pcfg.quality) for t in tasks]
        if workers <= 1:
            shards = [write_shard(*a, progress=bar.update) for a in args]
        else:
            shards = []
            # spawn, not fork: TensorFlow is not fork-safe once initialised.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {pool.submit(_write_shard_in_worker, a): a[0] for a in args}
                for fut in as_completed(futures):
                    shards.append(fut.result())
                    bar.update(len(futures[fut].images))
        shards.sort(key=lambda s: (s["split"] != "train", s["file"]))
        seconds = time.perf_counter() - start

        summary = fold_summary(folds)
        manifest = {
            "format": "melanoma-tfrecords",
            "version": __version__,
            "image_size": pcfg.size,
            "resize": pcfg.resize,
            "quality": pcfg.quality,
            "n_folds": n_folds,
            "seed": cfg.seed,
            "counts": {"train": len(train_tasks), "test": len(test_tasks)},
            "folds": {str(k): {c: row[c] for c in summary.columns} for k, row in summary.iterrows()},
            "shards": shards,
            "schema": {"train": schema("train"), "test": schema("test")},
            "vocab": vocab,
            "seconds": round(seconds, 1),
        }
        write_csv(stage / "folds.csv", folds)
        save_run_info(stage, cfg, "prepare")
        write_json(stage / "manifest.json", manifest)
        # The folder now belongs to this run: drop shards of an earlier run so readers never mix them.
        for old in Path(out_dir).glob("*.tfrec"):
            if parse_shard_name(old):
                old.unlink()
    log.info("prepare: wrote %d shards to %s in %.1f s (%.1f img/s)\n%s", len(shards), out_dir, seconds,
             total / max(seconds, 1e-9), summary.to_string())
    return manifest
