"""tf.data for the CycleGAN of fold k: benign and malignant streams from k's training shards, and the benign
competition images of k's training folds to translate. Fold k's own shards are never opened here.

Pixels come from the train reader's own decode (pipeline.decode_image), scaled to [-1, 1] for the tanh
generators.
"""

from __future__ import annotations

import tensorflow as tf

from melanoma.data.schema import AGE, ID, PATIENT, SEX, SITE, TARGET
from melanoma.errors import ConfigError
from melanoma.data.reader import AUTOTUNE, Shard, ShardSet, count_targets, decode_image, parse_fn, read_records

SOURCE_FIELDS = (ID, PATIENT, SEX, AGE, SITE, "width", "height")


def training_pool(shardset: ShardSet, fold: int) -> list[Shard]:
    """Fold k's training shards: every other fold, plus train-only data (external images, upsampled copies of
    other folds). What `train` trains fold k on, so the CycleGAN sees nothing the classifier could not."""
    return shardset.train(exclude=[fold])


def source_shards(shardset: ShardSet, fold: int) -> list[Shard]:
    """The competition's own images of k's training folds: the benign ones become synthetic melanomas."""
    return shardset.validation([j for j in range(shardset.n_folds) if j != fold])


def to_unit(image: tf.Tensor) -> tf.Tensor:
    """[0, 255] (the reader's uint8) -> [-1, 1] float32."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def random_orientation(image: tf.Tensor) -> tf.Tensor:
    """One of the 8 right-angle orientations (flips and transpose): a lesion has no up."""
    image = tf.image.random_flip_left_right(tf.image.random_flip_up_down(image))
    return tf.cond(tf.random.uniform(()) < 0.5, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)


def domain(paths: list[str], target: int, size: int, stored_size: int | None, batch: int, seed: int,
           flip: bool) -> tf.data.Dataset:
    """Endless shuffled batches of one class, in [-1, 1]."""
    parse = parse_fn("train", ("image", TARGET))
    ds = read_records(paths, deterministic=False).map(parse, num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.filter(lambda ex: tf.equal(ex[TARGET], target)).shuffle(1024, seed=seed).repeat()
    ds = ds.map(lambda ex: to_unit(decode_image(ex["image"], size, stored_size)), num_parallel_calls=AUTOTUNE,
                deterministic=False)
    if flip:
        ds = ds.map(random_orientation, num_parallel_calls=AUTOTUNE, deterministic=False)
    return ds.batch(batch, drop_remainder=True)


def training_pairs(shards: list[Shard], size: int, stored_size: int | None, batch: int, seed: int, flip: bool,
                   fold: int) -> tf.data.Dataset:
    """(benign batch, malignant batch) pairs, endless: the unpaired domains A and B."""
    pos, neg = count_targets(shards)
    if pos == 0 or neg == 0:
        raise ConfigError(f"synth: fold {fold}'s training folds have {pos} malignant and {neg} benign images: "
                          "both are needed to learn the translation")
    paths = [s.path for s in shards]
    pairs = tf.data.Dataset.zip((domain(paths, 0, size, stored_size, batch, seed, flip),
                                 domain(paths, 1, size, stored_size, batch, seed + 1, flip)))
    return pairs.prefetch(AUTOTUNE)


def benign_sources(shards: list[Shard], size: int, stored_size: int | None, batch: int,
                   limit: int | None) -> tf.data.Dataset:
    """Batches of the benign images to translate, in a fixed order: {"pixels" in [-1, 1], and the record's
    name, patient, sex, age, site, original width and height}."""
    parse = parse_fn("train", ("image", TARGET) + SOURCE_FIELDS)
    ds = read_records([s.path for s in shards], deterministic=True).map(parse, num_parallel_calls=AUTOTUNE)
    ds = ds.filter(lambda ex: tf.equal(ex[TARGET], 0))
    if limit is not None:
        ds = ds.take(limit)
    ds = ds.map(lambda ex: {**{k: ex[k] for k in SOURCE_FIELDS},
                            "pixels": to_unit(decode_image(ex["image"], size, stored_size))},
                num_parallel_calls=AUTOTUNE)
    return ds.batch(batch).prefetch(AUTOTUNE)
