"""Reading TFRecord shards: discovery, parsing, decoding, the validation index (one reader for every stage).

Shards are found through the folder's Manifest (data/manifest.py: our `manifest.json`, or, for the public
Kaggle TFRecords that have none, the file names). Everything goes through tf.io.gfile, so gs:// paths work.
Images are decoded to uint8 (the models cast and scale inside).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma.data.manifest import MANIFEST, PSEUDO, SYNTHETIC, Manifest, Shard, read_manifest
from melanoma.data.schema import ID, TARGET
from melanoma.errors import input_error
from melanoma.data.records import feature_description

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


# Folders of extra training data: their fold-k shards train fold k only (or every fold), never folds to validate.
EXTRA_FORMATS = {SYNTHETIC: ("synth", "train.sources.synthetic"), PSEUDO: ("pseudo", "train.sources.pseudo")}


def find_shards(tfrec_dir: str, n_folds: int = 5) -> Manifest:
    """The Manifest of the TFRecords folder a stage trains or predicts on (`n_folds` deals the public layout's
    files; our manifest says its own); a folder of extra training data (synth, pseudo) is refused."""
    manifest = read_manifest(tfrec_dir, n_folds)
    if manifest.format in EXTRA_FORMATS:
        command, key = EXTRA_FORMATS[manifest.format]
        raise input_error(f"{manifest.folder}/{MANIFEST}", f"written by `melanoma {command}`: give it as {key}, "
                                                           "not as the TFRecords folder")
    return manifest


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
