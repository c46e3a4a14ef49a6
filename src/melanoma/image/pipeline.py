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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma.image.augment import augment_batch
from melanoma.config import AugmentConfig, TrainConfig
from melanoma.data.metadata import META_DIM, encode, tf_ops  # noqa: F401  (META_DIM: the models' input width)
from melanoma.data.schema import AGE, ID, SEX, SITE, TARGET
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


# ---------------------------------------------------------------- parsing

def read_records(paths: list[str], deterministic: bool) -> tf.data.Dataset:
    """Serialized records of the files, read interleaved in parallel; file order shuffled unless deterministic."""
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


def lenient_parse(names: tuple[str, ...]):
    """A training-record parser where every field but `image` may be missing (public external sets lack some):
    ints default to -1, bytes to "", floats to -1 (`target` -1 = no label)."""
    desc = {}
    for name, spec in feature_description("train", names).items():
        default = "" if spec.dtype == tf.string else -1
        desc[name] = spec if name == "image" else tf.io.FixedLenFeature([], spec.dtype, default_value=default)
    return lambda serialized: tf.io.parse_single_example(serialized, desc)


# ---------------------------------------------------------------- datasets

META_FIELDS = (SEX, AGE, SITE)


def meta_vector(ex: dict) -> tf.Tensor:
    """Metadata as the network sees it (melanoma.data.metadata.encode, layout 2: one-hot sex and site, each with
    a missing flag, a no-metadata flag, age / 100 and an age-missing flag), from the record codes, so the
    public Kaggle TFRecords work too."""
    return encode(ex[SEX], ex[AGE], ex[SITE], tf_ops())


def blank_metadata(ex: dict, field_rate: float, row_rate: float) -> dict:
    """Training only: each of sex, age and site set to missing (-1) with probability `field_rate`, and the whole
    row with probability `row_rate` (train.meta_dropout, train.meta_row_dropout), so the network learns to
    score images whose metadata is partly or wholly absent, as new photos often are."""
    row = tf.random.uniform([]) < row_rate
    out = dict(ex)
    for name in META_FIELDS:
        drop = tf.logical_or(row, tf.random.uniform([]) < field_rate)
        out[name] = tf.where(drop, tf.constant(-1, ex[name].dtype), ex[name])
    return out


def _inputs(ex: dict, size: int, stored_size: int | None, meta: bool):
    image = decode_image(ex["image"], size, stored_size)
    return {"image": image, "meta": meta_vector(ex)} if meta else image


def _augment_inputs(x, acfg: AugmentConfig, size: int):
    if isinstance(x, dict):
        return {**x, "image": augment_batch(x["image"], acfg, size)}
    return augment_batch(x, acfg, size)


def train_dataset(shards: list[Shard], tcfg: TrainConfig, stored_size: int | None, batch: int,
                  pos_share: float | None, seed: int, augment: bool = True, extras: list | None = None,
                  base_images: int | None = None, labels=None) -> tf.data.Dataset:
    """Endless, shuffled, augmented batches of (image, target); fixed shapes for TPU (drop_remainder).

    From `tcfg`: size, augment, shuffle_buffer, metadata (and its dropout: meta_dropout, meta_row_dropout),
    cache. With `pos_share`, positives and negatives are read as two streams and drawn at that rate
    (oversampling); with None they come at their natural rate.
    `augment` False: no augmentation here (it runs inside the model). With `tcfg.metadata` the inputs are
    {"image", "meta"}. `tcfg.cache` keeps the encoded records in memory after the first pass (small
    datasets, or repeated epochs from slow storage). `extras` (image/extras.py ExtraSource, already chosen for
    the fold) are mixed in by sample_from_datasets, weighted against `base_images` (the shards' images drawn
    per epoch); a record's `soft_target` >= 0 is its label.
    """
    size, meta, cache, shuffle_buffer = tcfg.size, tcfg.metadata, tcfg.cache, tcfg.shuffle_buffer
    acfg = tcfg.augment if augment else None
    paths = [s.path for s in shards]
    fields = ("image", TARGET, "soft_target") + (META_FIELDS if meta else ())
    fields += labels.fields if labels is not None else ()  # the diagnosis head (heads.Labels): one-hot labels
    parse = parse_fn("train", fields)  # the competition's own records: a missing label is an error, not -1

    def stream(keep=None):
        ds = read_records(paths, deterministic=False).map(parse, num_parallel_calls=AUTOTUNE, deterministic=False)
        if keep is not None:
            ds = ds.filter(lambda ex: tf.equal(ex[TARGET], keep))
        if cache:
            ds = ds.cache()
        return ds.repeat().shuffle(shuffle_buffer, seed=seed)

    if pos_share is None:
        ds = stream()
    else:
        ds = tf.data.Dataset.sample_from_datasets([stream(0), stream(1)], weights=[1.0 - pos_share, pos_share],
                                                  seed=seed)
    if extras:
        from melanoma.image.extras import mix_weights, source_dataset

        weights = mix_weights(base_images or sum(s.count for s in shards), extras)
        streams = [ds] + [source_dataset(x, fields, seed + i + 1) for i, x in enumerate(extras)]
        if labels is not None:  # their diagnosis codes follow their own vocabularies: only their target counts
            streams = streams[:1] + [labels.without_diagnosis(s) for s in streams[1:]]
        ds = tf.data.Dataset.sample_from_datasets(streams, weights=weights, seed=seed)
        stored_size = None  # extra data may be stored at another side (ISIC 2019 at 512, ours at 384): resize all
    label = _label if labels is None else labels.one_hot
    if meta and (tcfg.meta_dropout > 0 or tcfg.meta_row_dropout > 0):
        ds = ds.map(lambda ex: blank_metadata(ex, tcfg.meta_dropout, tcfg.meta_row_dropout),
                    num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.map(lambda ex: (_inputs(ex, size, stored_size, meta), label(ex)),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(lambda x, y: (x if acfg is None else _augment_inputs(x, acfg, size),
                              y if labels is not None else y[:, None]),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    return ds.prefetch(AUTOTUNE)


def _label(ex: dict) -> tf.Tensor:
    """The soft label where the record has one (>= 0), else the 0/1 target."""
    return tf.where(ex["soft_target"] >= 0, ex["soft_target"], tf.cast(ex[TARGET], tf.float32))


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


def pad_batch(tree, batch: int, fill: dict[str, float] | None = None):
    """Fill a (last, short) batch up to `batch` rows: zeros, or `fill[key]` for the named entries of a dict.

    JAX's DataParallel splits every batch evenly over the devices and does not pad (keras issue 21167), so
    validation and prediction batches are padded to the full global batch and the padding is ignored
    (sample weight 0, idx -1). One batch shape also means one compiled step.
    """
    fill = fill or {}

    def pad(x, value=0):
        missing = batch - tf.shape(x)[0]
        filler = tf.fill(tf.concat([[missing], tf.shape(x)[1:]], 0), tf.cast(value, x.dtype))
        return tf.ensure_shape(tf.concat([x, filler], 0), [batch, *x.shape[1:]])

    if isinstance(tree, dict):
        return {k: pad(v, fill.get(k, 0)) for k, v in tree.items()}
    return pad(tree)


def validation_dataset(shards: list[Shard], size: int, stored_size: int | None, batch: int,
                       meta: bool = False, pad: bool = False, labels=None) -> tf.data.Dataset:
    """Batches of (image, target) for Keras' validation during fit; with `pad`, (image, target, weight) with
    the last batch padded to full size at weight 0 (see pad_batch). `labels` (heads.Labels): one-hot labels."""
    fields = ("image", TARGET) + (META_FIELDS if meta else ()) + (labels.fields if labels is not None else ())
    parse = parse_fn("train", fields)
    ds = read_records([s.path for s in shards], deterministic=True).map(parse, num_parallel_calls=AUTOTUNE)
    label = (lambda ex: tf.cast(ex[TARGET], tf.float32)[None]) if labels is None else labels.one_hot
    ds = ds.map(lambda ex: (_inputs(ex, size, stored_size, meta), label(ex)),
                num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch)
    if pad:
        ds = ds.map(lambda x, y: (pad_batch(x, batch), pad_batch(y, batch), pad_batch(tf.ones_like(y[:, 0]), batch)),
                    num_parallel_calls=AUTOTUNE)
    return with_batches(ds, shards, batch).prefetch(AUTOTUNE)


View = Callable[[tf.Tensor], tf.Tensor]


def predict_dataset(shards: list[Shard], names: np.ndarray, size: int, stored_size: int | None, batch: int,
                    view: AugmentConfig | View | None, meta: bool = False, pad: bool = False) -> tf.data.Dataset:
    """Batches of {"image", "idx"} (and "meta"): idx is the row of the image's name in `names`, looked up per
    record. `view` is None (plain), an AugmentConfig (a random TTA pass) or a function of the image batch
    (a deterministic TTA view such as a flip).

    The prediction model passes idx through beside its output, so each prediction carries its own id: the
    alignment holds whatever order the records are read in (no reliance on an order-preserving predict).
    With `pad`, the last batch is filled up to `batch` with rows of idx -1 (see pad_batch).
    """
    split = shards[0].split
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(names), tf.string),
                                            tf.range(len(names), dtype=tf.int32)), default_value=-1)
    parse = parse_fn(split, ("image", ID) + (META_FIELDS if meta else ()))
    ds = read_records([s.path for s in shards], deterministic=True).map(parse, num_parallel_calls=AUTOTUNE)

    def features(ex):
        x = _inputs(ex, size, stored_size, meta)
        return {**(x if meta else {"image": x}), "idx": table.lookup(ex[ID])}

    ds = with_batches(ds.map(features, num_parallel_calls=AUTOTUNE).batch(batch), shards, batch)
    if view is not None:
        fn = (lambda x: augment_batch(x, view, size)) if isinstance(view, AugmentConfig) else view
        ds = ds.map(lambda d: {**d, "image": fn(d["image"])}, num_parallel_calls=AUTOTUNE)
    if pad:
        ds = ds.map(lambda d: pad_batch(d, batch, {"idx": -1}), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
