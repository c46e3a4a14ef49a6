"""Reading TFRecord shards: discovery, parsing, decoding, the validation index (one reader for every stage).

Shards are found through our `manifest.json`, or, for the public Kaggle TFRecords that have none, from the
file names (`train07-2182.tfrec`): their training files are split into equal contiguous blocks, one per fold
(15 files and 5 folds give files 0-2 to fold 0, as the public notebooks do). Counts come from the manifest or
the names, never from a pass over the data. Everything goes through tf.io.gfile, so gs:// paths work.
Images are decoded to uint8 (the models cast and scale inside).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma.data.schema import ID, TARGET
from melanoma.errors import input_error
from melanoma.data.records import check_prepared, feature_description, parse_shard_name

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Shard:
    path: str
    split: str
    fold: int  # -1 for test shards and for external training data (in every fold's training set)
    count: int
    train_only: bool = False  # external data or upsampled copies: never validated, never in the OOF
    positives: int | None = None  # malignant records, when the manifest says (spares reading the shard)


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
    check_prepared(tfrec_dir)  # an unfinished prepare folder would train on partial shards
    manifest_path = f"{tfrec_dir}/manifest.json"
    if tf.io.gfile.exists(manifest_path):
        with tf.io.gfile.GFile(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("format") == "melanoma-synthetic":  # its fold-k shards train fold k only: not folds
            raise input_error(manifest_path, "written by `melanoma synth`: give it as train.synthetic, not as "
                                             "the TFRecords folder")
        shards = tuple(Shard(f"{tfrec_dir}/{s['file']}", s["split"], int(s["fold"]), int(s["count"]),
                             bool(s.get("train_only", False)),
                             int(s["positives"]) if s.get("positives") is not None else None)
                       for s in manifest["shards"])
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


def read_records(paths: list[str], deterministic: bool) -> tf.data.Dataset:
    """Serialized records of the files, read interleaved in parallel; file order shuffled unless deterministic."""
    files = tf.data.Dataset.from_tensor_slices(sorted(paths))
    if not deterministic:
        files = files.shuffle(len(paths))
    return files.interleave(tf.data.TFRecordDataset, cycle_length=min(16, len(paths)),
                            num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def decode_image(data: tf.Tensor, size: int, stored_size: int | None = None) -> tf.Tensor:
    """JPEG bytes -> uint8 (size, size, 3): the pixels every model takes (each casts and scales inside itself,
    models.Pixels), so batches cross the host and reach the devices at one byte per value, not four.

    An image already `size` pixels square is not resized (the public 384-px records at 384 px: an antialiased
    resize to the same size only costs time); others are resized with antialiasing and rounded back to uint8.
    `stored_size` (the side the manifest says, None when unknown) only spares the shape test.
    """
    img = tf.io.decode_jpeg(data, channels=3)
    if stored_size != size:
        def resized():
            out = tf.image.resize(img, [size, size], antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

        same = tf.logical_and(tf.equal(tf.shape(img)[0], size), tf.equal(tf.shape(img)[1], size))
        img = tf.cond(same, lambda: img, resized)
    return tf.reshape(img, [size, size, 3])


def parse_fn(split: str, names: tuple[str, ...]):
    desc = feature_description(split, names)
    return lambda serialized: tf.io.parse_single_example(serialized, desc)


def lenient_parse(names: tuple[str, ...]):
    """A training-record parser where every field but `image` may be missing (public external sets lack some):
    ints default to -1, bytes to "", floats to -1 (`target` -1 = no label)."""
    desc = {}
    for name, spec in feature_description("train", names).items():
        default = "" if spec.dtype == tf.string else -1
        desc[name] = spec if name == "image" else tf.io.FixedLenFeature([], spec.dtype, default_value=default)
    return lambda serialized: tf.io.parse_single_example(serialized, desc)


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


def count_targets(shards: list[Shard]) -> tuple[int, int]:
    """(malignant, benign) records in training shards: from the manifest's counts when every shard has them,
    else by reading only the target field (external data can be tens of thousands of records on GCS)."""
    if not shards:
        return 0, 0
    if all(s.positives is not None for s in shards):
        pos = sum(s.positives for s in shards)
        return pos, sum(s.count for s in shards) - pos
    ds = read_records([s.path for s in shards], deterministic=True).map(parse_fn("train", (TARGET,)),
                                                                     num_parallel_calls=AUTOTUNE)
    pos = total = 0
    for part in ds.batch(8192).as_numpy_iterator():
        pos += int(part[TARGET].sum())
        total += len(part[TARGET])
    return pos, total - pos
