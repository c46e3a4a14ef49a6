"""The tf.data datasets train and predict read: training batches (augmentation in tf.data or not, minority
oversampling, extra sources mixed in, class weights as sample weights), validation and prediction batches
padded to the global batch. The shards themselves are read by melanoma.data.reader.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import tensorflow as tf

from melanoma.image.augment import augment_batch
from melanoma.config import AugmentConfig, TrainConfig
from melanoma.data.schema import AGE, ID, SEX, SITE, TARGET
from melanoma.data.metadata import encode, tf_ops
from melanoma.data.reader import AUTOTUNE, Shard, decode_image, parse_fn, read_records
from melanoma.runtime.hosts import Host

ONE_HOST = Host()

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- one host's part of the records


def host_records(paths: list[str], host: Host, deterministic: bool) -> tf.data.Dataset:
    """The serialized records this host reads: on several hosts, its own files when their count divides by the
    host count (disjoint reads), else every file read in a fixed order keeping every count-th record (still
    disjoint and complete; each host reads all bytes, the price of any shard count working)."""
    if host.count == 1:
        return read_records(paths, deterministic)
    paths = sorted(paths)
    if len(paths) % host.count == 0:
        return read_records(paths[host.index::host.count], deterministic)
    return read_records(paths, deterministic=True).shard(host.count, host.index)


def host_steps(n: int, batch: int, host: Host) -> int:
    """Batches of `batch` (this host's part of the global batch) every host runs over `n` records split
    record by record: the largest host's share decides, the others pad (equal_steps)."""
    return math.ceil(math.ceil(n / host.count) / batch)


def equal_steps(ds: tf.data.Dataset, steps: int, fill: dict[str, float] | None = None) -> tf.data.Dataset:
    """Exactly `steps` (padded, full-size) batches: blank batches (zeros, or `fill[key]`; weight 0 or idx -1)
    follow a host's own, so every host runs the same number of steps, as their collectives require."""
    fill = fill or {}

    def blank(spec, key=None):
        if isinstance(spec, dict):
            return {k: blank(v, k) for k, v in spec.items()}
        if isinstance(spec, tuple):
            return tuple(blank(v) for v in spec)
        return tf.fill(spec.shape, tf.cast(fill.get(key, 0), spec.dtype))

    empty = tf.data.Dataset.from_tensors(blank(ds.element_spec)).repeat()
    ds = ds.concatenate(empty).take(steps)
    return ds.apply(tf.data.experimental.assert_cardinality(steps))


# ---------------------------------------------------------------- datasets

META_FIELDS = (SEX, AGE, SITE)


def meta_vector(ex: dict) -> tf.Tensor:
    """Metadata as the network sees it (melanoma.data.metadata.encode: one-hot sex and site, each with a missing
    flag, a no-metadata flag, age / 100 and an age-missing flag), from the record codes, so the public Kaggle
    TFRecords work too."""
    return encode(ex[SEX], ex[AGE], ex[SITE], tf_ops())


def blank_metadata(ex: dict, field_rate: float, row_rate: float) -> dict:
    """Training only: each of sex, age and site set to missing (-1) with probability `field_rate`, and the whole
    row with probability `row_rate` (train.meta.field_dropout, train.meta.row_dropout), so the network learns to
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
    """Augmentation in tf.data (augment.where: data), back to uint8 for the transfer (rounding moves a pixel
    by at most half a grey level)."""
    def aug(images):
        out = augment_batch(images, acfg, size)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    return {**x, "image": aug(x["image"])} if isinstance(x, dict) else aug(x)


def train_dataset(shards: list[Shard], tcfg: TrainConfig, stored_size: int | None, batch: int,
                  pos_share: float | None, seed: int, augment: bool = True, extras: list | None = None,
                  base_images: int | None = None, labels=None,
                  class_weight: dict[int, float] | None = None, host: Host = ONE_HOST) -> tf.data.Dataset:
    """Endless, shuffled, augmented batches of (image, target); fixed shapes for TPU (drop_remainder).

    From `tcfg`: size, augment, shuffle_buffer, metadata (and its dropout: meta_dropout, meta_row_dropout),
    cache. With `pos_share`, positives and negatives are read as two streams and drawn at that rate
    (oversampling); with None they come at their natural rate.
    `augment` False: no augmentation here (it runs inside the model). With `tcfg.meta.enabled` the inputs are
    {"image", "meta"}. `tcfg.cache` keeps the encoded records in memory after the first pass (small
    datasets, or repeated epochs from slow storage). `extras` (image/extras.py ExtraSource, already chosen for
    the fold) are mixed in by sample_from_datasets, weighted against `base_images` (the shards' images drawn
    per epoch); a record's `soft_target` >= 0 is its label. `class_weight` (class -> loss weight) makes the
    batches (x, y, sample_weight), as Keras' own class_weight would (which it refuses for the device-prefetch
    generator, prefetch.py). On several hosts `batch` is this host's part of the global batch, read from its
    own part of the records (host_records).
    """
    size, meta, cache, shuffle_buffer = tcfg.size, tcfg.meta.enabled, tcfg.cache, tcfg.shuffle_buffer
    acfg = tcfg.augment if augment else None
    paths = [s.path for s in shards]
    fields = ("image", TARGET, "soft_target") + (META_FIELDS if meta else ())
    fields += labels.fields if labels is not None else ()  # the diagnosis head (heads.Labels): one-hot labels
    parse = parse_fn("train", fields)  # the competition's own records: a missing label is an error, not -1

    def stream(keep=None):
        ds = host_records(paths, host, deterministic=False).map(parse, num_parallel_calls=AUTOTUNE,
                                                                deterministic=False)
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
        ds = _mix_extras(ds, extras, base_images or sum(s.count for s in shards), fields, seed, labels)
        stored_size = None  # extra data may be stored at another side (ISIC 2019 at 512, ours at 384): resize all
    label = _label if labels is None else labels.one_hot
    if meta and (tcfg.meta.field_dropout > 0 or tcfg.meta.row_dropout > 0):
        ds = ds.map(lambda ex: blank_metadata(ex, tcfg.meta.field_dropout, tcfg.meta.row_dropout),
                    num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.map(lambda ex: (_inputs(ex, size, stored_size, meta), label(ex)),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.map(lambda x, y: (x if acfg is None else _augment_inputs(x, acfg, size),
                              y if labels is not None else y[:, None]),
                num_parallel_calls=AUTOTUNE, deterministic=False)
    if class_weight is not None:
        ds = ds.map(lambda x, y: (x, y, class_weights_of(y, class_weight)), num_parallel_calls=AUTOTUNE,
                    deterministic=False)
    return ds.prefetch(AUTOTUNE)


def _mix_extras(ds: tf.data.Dataset, extras: list, base_images: int, fields: tuple, seed: int,
                labels) -> tf.data.Dataset:
    """The competition stream with the extra sources (image/sources.py) drawn in at their shares."""
    from melanoma.image.sources import mix_weights, source_dataset

    weights = mix_weights(base_images, extras)
    streams = [ds] + [source_dataset(x, fields, seed + i + 1) for i, x in enumerate(extras)]
    if labels is not None:  # their diagnosis codes follow their own vocabularies: only their target counts
        streams = streams[:1] + [labels.without_diagnosis(s) for s in streams[1:]]
    return tf.data.Dataset.sample_from_datasets(streams, weights=weights, seed=seed)


def class_weights_of(y: tf.Tensor, class_weight: dict[int, float]) -> tf.Tensor:
    """Per-row loss weights, by Keras' own rule for `fit(class_weight=...)`: the class is the argmax of a
    one-hot (batch, K) label, else the rounded (batch, 1) label (a soft label counts as its nearer class)."""
    table = tf.constant([class_weight.get(c, 1.0) for c in range(max(class_weight) + 1)], tf.float32)
    if y.shape[-1] is not None and y.shape[-1] > 1:
        classes = tf.argmax(y, axis=-1, output_type=tf.int32)
    else:
        classes = tf.cast(tf.round(tf.squeeze(y, axis=-1)), tf.int32)
    return tf.gather(table, classes)


def _label(ex: dict) -> tf.Tensor:
    """The soft label where the record has one (>= 0), else the 0/1 target."""
    return tf.where(ex["soft_target"] >= 0, ex["soft_target"], tf.cast(ex[TARGET], tf.float32))


def with_batches(ds: tf.data.Dataset, shards: list[Shard], batch: int) -> tf.data.Dataset:
    """Declare the batch count known from the shard counts (interleave hides it), so Keras never guesses."""
    return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(sum(s.count for s in shards) / batch)))


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


def eval_records(shards: list[Shard], host: Host) -> tf.data.Dataset:
    """Validation and prediction records in a fixed order; on several hosts every count-th one from the
    host's index, so each record is seen by exactly one host whatever the shard count."""
    ds = read_records([s.path for s in shards], deterministic=True)
    return ds if host.count == 1 else ds.shard(host.count, host.index)


def _batch_count(ds: tf.data.Dataset, shards: list[Shard], batch: int, host: Host, fill=None) -> tf.data.Dataset:
    n = sum(s.count for s in shards)
    return with_batches(ds, shards, batch) if host.count == 1 else equal_steps(ds, host_steps(n, batch, host), fill)


def validation_dataset(shards: list[Shard], size: int, stored_size: int | None, batch: int,
                       meta: bool = False, pad: bool = False, labels=None, host: Host = ONE_HOST) -> tf.data.Dataset:
    """Batches of (image, target) for Keras' validation during fit; with `pad`, (image, target, weight) with
    the last batch padded to full size at weight 0 (see pad_batch). `labels` (heads.Labels): one-hot labels."""
    fields = ("image", TARGET) + (META_FIELDS if meta else ()) + (labels.fields if labels is not None else ())
    parse = parse_fn("train", fields)
    ds = eval_records(shards, host).map(parse, num_parallel_calls=AUTOTUNE)
    label = (lambda ex: tf.cast(ex[TARGET], tf.float32)[None]) if labels is None else labels.one_hot
    ds = ds.map(lambda ex: (_inputs(ex, size, stored_size, meta), label(ex)),
                num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch, num_parallel_calls=AUTOTUNE)
    if pad:
        ds = ds.map(lambda x, y: (pad_batch(x, batch), pad_batch(y, batch), pad_batch(tf.ones_like(y[:, 0]), batch)),
                    num_parallel_calls=AUTOTUNE)
    return _batch_count(ds, shards, batch, host).prefetch(AUTOTUNE)


def predict_dataset(shards: list[Shard], names: np.ndarray, size: int, stored_size: int | None, batch: int,
                    meta: bool = False, pad: bool = False, host: Host = ONE_HOST) -> tf.data.Dataset:
    """Batches of {"image", "idx"} (and "meta"): idx is the row of the image's name in `names`, looked up per
    record. Plain uint8 images: the test-time views (flips, random augmentation) are made on the device by the
    prediction model (tta.tta_model), so the host decodes each image once whatever the number of views.

    The prediction model passes idx through beside its output, so each prediction carries its own id: the
    alignment holds whatever order the records are read in (no reliance on an order-preserving predict).
    With `pad`, the last batch is filled up to `batch` with rows of idx -1 (see pad_batch).
    """
    split = shards[0].split
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(names), tf.string),
                                            tf.range(len(names), dtype=tf.int32)), default_value=-1)
    parse = parse_fn(split, ("image", ID) + (META_FIELDS if meta else ()))
    ds = eval_records(shards, host).map(parse, num_parallel_calls=AUTOTUNE)

    def features(ex):
        x = _inputs(ex, size, stored_size, meta)
        return {**(x if meta else {"image": x}), "idx": table.lookup(ex[ID])}

    ds = ds.map(features, num_parallel_calls=AUTOTUNE).batch(batch, num_parallel_calls=AUTOTUNE)
    if host.count == 1:
        ds = with_batches(ds, shards, batch)
    if pad:
        ds = ds.map(lambda d: pad_batch(d, batch, {"idx": -1}), num_parallel_calls=AUTOTUNE)
    if host.count > 1:  # after the padding: the blank batches take the padded batches' shapes
        ds = equal_steps(ds, host_steps(sum(s.count for s in shards), batch, host), {"idx": -1})
    return ds.prefetch(AUTOTUNE)
