"""tf.data input: shard discovery, parsing, on-device augmentation, minority oversampling, prediction sets.

Shards are found through our `manifest.json`, or, for the public Kaggle TFRecords that have none, from the
file names (`train07-2182.tfrec`): their training files are split into equal contiguous blocks, one per fold
(15 files and 5 folds give files 0-2 to fold 0, as the public notebooks do). Counts come from the manifest or
the names, never from a pass over the data. Everything goes through tf.io.gfile, so gs:// paths work.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma.config import AugmentConfig
from melanoma.data import ID, TARGET
from melanoma.errors import input_error
from melanoma.records import feature_description, parse_shard_name

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Shard:
    path: str
    split: str
    fold: int  # -1 for test shards and for external training data (in every fold's training set)
    count: int
    train_only: bool = False  # external data or upsampled copies: never validated, never in the OOF


@dataclass(frozen=True)
class ShardSet:
    shards: tuple[Shard, ...]
    image_size: int | None  # stored side length when known (our manifest); None = resize always
    n_folds: int

    def train(self, exclude: list[int] | None = None) -> list[Shard]:
        """The training pool when the folds in `exclude` are held out (train-only shards included)."""
        return [s for s in self.shards if s.split == "train" and (exclude is None or s.fold not in exclude)]

    def validation(self, folds: list[int] | None = None) -> list[Shard]:
        """Shards of the competition's own training images in `folds` (all folds by default): what OOF covers."""
        return [s for s in self.shards if s.split == "train" and not s.train_only and s.fold >= 0
                and (folds is None or s.fold in folds)]

    def test(self) -> list[Shard]:
        return [s for s in self.shards if s.split == "test"]


def find_shards(tfrec_dir: str, n_folds: int = 5) -> ShardSet:
    """Our shards (through manifest.json) or a directory of the public Kaggle TFRecords."""
    tfrec_dir = str(tfrec_dir).rstrip("/")
    manifest_path = f"{tfrec_dir}/manifest.json"
    if tf.io.gfile.exists(manifest_path):
        with tf.io.gfile.GFile(manifest_path) as f:
            manifest = json.load(f)
        shards = tuple(Shard(f"{tfrec_dir}/{s['file']}", s["split"], int(s["fold"]), int(s["count"]),
                             bool(s.get("train_only", False))) for s in manifest["shards"])
        missing = [s.path for s in shards if not tf.io.gfile.exists(s.path)]
        if missing:
            raise input_error(manifest_path, f"lists {missing[0]}, which does not exist; re-run `melanoma prepare`")
        return ShardSet(shards, int(manifest["image_size"]), int(manifest["n_folds"]))

    named = sorted((parse_shard_name(p), p) for p in tf.io.gfile.glob(f"{tfrec_dir}/*.tfrec"))
    named = [(n, p) for n, p in named if n is not None]
    train = [(n, p) for n, p in named if n[0] == "train"]
    if not train:
        raise input_error(tfrec_dir, "no manifest.json and no train*-COUNT.tfrec files: run `melanoma prepare`")
    if len(train) % n_folds:
        raise input_error(tfrec_dir, f"{len(train)} training files cannot be split evenly into {n_folds} folds "
                                     "(set n_folds to a divisor, or use `melanoma prepare`)")
    per_fold = len(train) // n_folds
    shards = [Shard(p, "train", i // per_fold, n[2]) for i, (n, p) in enumerate(train)]
    shards += [Shard(p, "test", -1, n[2]) for n, p in named if n[0] == "test"]
    log.info("%s: no manifest, %d training files read as %d folds of %d files (public Kaggle layout)",
             tfrec_dir, len(train), n_folds, per_fold)
    return ShardSet(tuple(shards), None, n_folds)


# ---------------------------------------------------------------- parsing

def _records(paths: list[str], deterministic: bool) -> tf.data.Dataset:
    files = tf.data.Dataset.from_tensor_slices(sorted(paths))
    if not deterministic:
        files = files.shuffle(len(paths))
    return files.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(paths)),
                            num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def decode_image(data: tf.Tensor, size: int, stored_size: int | None) -> tf.Tensor:
    """JPEG bytes -> float32 (size, size, 3) in [0, 255]; every model rescales inside itself."""
    img = tf.io.decode_jpeg(data, channels=3)
    if stored_size != size:
        img = tf.image.resize(img, [size, size], antialias=True)
    return tf.reshape(tf.cast(img, tf.float32), [size, size, 3])


def parse_fn(split: str, names: tuple[str, ...]):
    desc = feature_description(split, names)
    return lambda serialized: tf.io.parse_single_example(serialized, desc)


# ---------------------------------------------------------------- augmentation

def rotation_matrices(angles: tf.Tensor, size: int) -> tf.Tensor:
    """Projective transforms (batch, 8) that rotate images of side `size` by `angles` radians about the centre.

    The 8 numbers map output pixel (x, y) to input pixel, as ImageProjectiveTransformV3 expects.
    """
    c = (tf.cast(size, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angles), tf.sin(angles)
    zeros = tf.zeros_like(angles)
    x_offset = c - (cos * c - sin * c)
    y_offset = c - (sin * c + cos * c)
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)


def transform(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    size = tf.shape(images)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(images=images, transforms=transforms, output_shape=size,
                                                 interpolation="BILINEAR", fill_mode="REFLECT", fill_value=0.0)


def augment_batch(images: tf.Tensor, acfg: AugmentConfig, size: int) -> tf.Tensor:
    """Random flips, rotation, brightness and saturation on a batch (batch, size, size, 3) in [0, 255].

    Whole batches at once: one op per augmentation instead of one per image (much faster on CPU hosts).
    """
    batch = tf.shape(images)[0]
    uniform = tf.random.uniform
    if acfg.flip:
        lr = uniform([batch, 1, 1, 1]) < 0.5
        images = tf.where(lr, tf.reverse(images, axis=[2]), images)
        ud = uniform([batch, 1, 1, 1]) < 0.5
        images = tf.where(ud, tf.reverse(images, axis=[1]), images)
    if acfg.rotate > 0:
        max_rad = acfg.rotate * math.pi / 180.0
        angles = uniform([batch], -max_rad, max_rad)
        images = transform(images, rotation_matrices(angles, size))
    if acfg.saturation > 0:
        factor = uniform([batch, 1, 1, 1], 1.0 - acfg.saturation, 1.0 + acfg.saturation)
        gray = tf.reduce_mean(images, axis=-1, keepdims=True)
        images = gray + (images - gray) * factor
    if acfg.brightness > 0:
        images = images + uniform([batch, 1, 1, 1], -acfg.brightness, acfg.brightness) * 255.0
    return tf.clip_by_value(images, 0.0, 255.0)


# ---------------------------------------------------------------- datasets

def sampled_positive_share(n_pos: int, n_neg: int, oversample: float) -> float:
    """The share of positives per epoch when each positive is drawn `oversample` times as often."""
    return oversample * n_pos / (oversample * n_pos + n_neg)


def train_dataset(shards: list[Shard], size: int, stored_size: int | None, batch: int, acfg: AugmentConfig,
                  pos_share: float | None, shuffle_buffer: int, seed: int) -> tf.data.Dataset:
    """Endless, shuffled, augmented batches of (image, target); fixed shapes for TPU (drop_remainder).

    With `pos_share`, positives and negatives are read as two streams and drawn at that rate (oversampling);
    with None they come at their natural rate.
    """
    paths = [s.path for s in shards]
    parse = parse_fn("train", ("image", TARGET))

    def stream(keep=None):
        ds = _records(paths, deterministic=False).map(parse, num_parallel_calls=AUTOTUNE)
        if keep is not None:
            ds = ds.filter(lambda ex: tf.equal(ex[TARGET], keep))
        return ds.repeat().shuffle(shuffle_buffer, seed=seed)

    if pos_share is None:
        ds = stream()
    else:
        ds = tf.data.Dataset.sample_from_datasets([stream(0), stream(1)], weights=[1.0 - pos_share, pos_share],
                                                  seed=seed)
    ds = ds.map(lambda ex: (decode_image(ex["image"], size, stored_size), tf.cast(ex[TARGET], tf.float32)),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda x, y: (augment_batch(x, acfg, size), y[:, None]), num_parallel_calls=AUTOTUNE,
                deterministic=False)
    return ds.prefetch(AUTOTUNE)


def with_batches(ds: tf.data.Dataset, shards: list[Shard], batch: int) -> tf.data.Dataset:
    """Declare the batch count known from the shard counts (interleave hides it), so Keras never guesses."""
    return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(sum(s.count for s in shards) / batch)))


def read_index(shards: list[Shard]) -> pd.DataFrame:
    """image_name (and target, fold for training shards) of every record, parsed without decoding images."""
    frames = []
    for s in shards:
        fields = (ID, TARGET) if s.split == "train" else (ID,)
        ds = tf.data.TFRecordDataset(s.path).map(parse_fn(s.split, fields), num_parallel_calls=AUTOTUNE)
        parts = list(ds.batch(8192).as_numpy_iterator())
        df = pd.DataFrame({ID: [n.decode() for p in parts for n in p[ID]]})
        if s.split == "train":
            df[TARGET] = np.concatenate([p[TARGET] for p in parts]).astype(np.int64) if parts else []
            df["fold"] = s.fold
        frames.append(df)
    index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({ID: []})
    dup = index[ID].duplicated()
    if dup.any():
        raise input_error(shards[0].path, f"image_name {index[ID][dup].iloc[0]!r} appears in two records")
    return index


def validation_dataset(shards: list[Shard], size: int, stored_size: int | None, batch: int) -> tf.data.Dataset:
    """Batches of (image, target) for Keras' validation during fit."""
    parse = parse_fn("train", ("image", TARGET))
    ds = _records([s.path for s in shards], deterministic=True).map(parse, num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda ex: (decode_image(ex["image"], size, stored_size), tf.cast(ex[TARGET], tf.float32)[None]),
                num_parallel_calls=AUTOTUNE)
    return with_batches(ds.batch(batch), shards, batch).prefetch(AUTOTUNE)


def predict_dataset(shards: list[Shard], names: np.ndarray, size: int, stored_size: int | None, batch: int,
                    acfg: AugmentConfig | None) -> tf.data.Dataset:
    """Batches of {"image", "idx"}: idx is the row of the image's name in `names`, looked up per record.

    The prediction model passes idx through beside its output, so each prediction carries its own id: the
    alignment holds whatever order the records are read in (no reliance on an order-preserving predict).
    """
    split = shards[0].split
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(names), tf.string),
                                            tf.range(len(names), dtype=tf.int32)), default_value=-1)
    parse = parse_fn(split, ("image", ID))
    ds = _records([s.path for s in shards], deterministic=True).map(parse, num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda ex: {"image": decode_image(ex["image"], size, stored_size), "idx": table.lookup(ex[ID])},
                num_parallel_calls=AUTOTUNE)
    ds = with_batches(ds.batch(batch), shards, batch)
    if acfg is not None:
        ds = ds.map(lambda d: {"image": augment_batch(d["image"], acfg, size), "idx": d["idx"]},
                    num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
