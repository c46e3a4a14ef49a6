"""Extra training sources: records that train some folds but are never validated and never in the OOF.

External data (`train.sources.external`), pseudo-labelled test images (`train.sources.pseudo`) and synthetic
images (issue 15: `train.sources.synthetic`) all come in through one type, `ExtraSource(kind, shards, share,
folds)`:

- `kind`: a name ("external", "pseudo", "synthetic", ...): the log and each fold's `done.json` (hence
  `metrics.json` "folds") count a fold's extra images per kind (`extra_images`).
- `shards`: training shards (`pipeline.Shard`); their records follow our FEATURES schema (data/records.py),
  where every field but `image` may be missing (public external TFRecords): `target` (or a float
  `soft_target` >= 0, which then is the label: soft labels) and the metadata fields as far as they exist.
- `share`: None mixes the source in at its natural rate (its images over all training images of the fold);
  a number caps the fraction of every training batch drawn from its kind: the streams are drawn by
  `tf.data.Dataset.sample_from_datasets` with weight min(share, natural rate) (`mix_weights`).
- `folds`: None = every fold trains on it; a frozenset = only those folds do (a synthetic image made from
  images of fold 3's training folds may train fold 3 only).
- `labels` (name -> target) replaces the records' own target where a companion CSV gives it, and `drop`
  (image names) leaves records out: duplicates of competition images.

Where sources come from:
- `sources_from_folder(kind, DIR, share)`: the training shards of DIR's Manifest (data/manifest.py: our
  manifest.json, else the files `train*.tfrec` of the public layout, counts from the names). A shard may carry
  the source tag "KIND:K" (for example "synthetic:3"): it then trains fold K only. Shards tagged with another
  kind are ignored.
- `configured_sources(cfg, ...)` (what `train` calls): train.sources.external, train.sources.pseudo, and
  train.sources.synthetic / train.sources.synthetic_share when the config has them.

A synthetic writer therefore writes its shards and a manifest.json like prepare's (image_size, n_folds,
shards: file, split "train", fold K, count, train_only true, source "synthetic:K") and sets
`train.sources.synthetic: DIR`; nothing else is needed for its shards to train fold K alone, at most at the share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from melanoma.data.manifest import read_manifest
from melanoma.errors import input_error

@dataclass(frozen=True)
class ExtraSource:
    kind: str
    shards: tuple  # pipeline.Shard
    share: float | None = None  # cap of a training batch's share; None = natural rate
    folds: frozenset[int] | None = None  # folds that may train on it; None = every fold
    origin: str = ""  # the folder, for messages
    labels: Mapping[str, int] | None = field(default=None, hash=False, compare=False)
    drop: frozenset[str] = frozenset()  # image names left out (duplicates of competition images)

    def trains(self, fold: int) -> bool:
        return self.folds is None or fold in self.folds

    @property
    def images(self) -> int:
        """Records in the shards less the dropped ones (counts from the manifest or file names)."""
        return max(0, sum(s.count for s in self.shards) - len(self.drop))

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.shards]


def for_fold(sources: list[ExtraSource], fold: int) -> list[ExtraSource]:
    return [s for s in sources if s.trains(fold) and s.images > 0]


def fold_counts(sources: list[ExtraSource], fold: int) -> dict[str, int]:
    """Extra images per kind that train `fold` (what the log and done.json report)."""
    counts: dict[str, int] = {}
    for s in for_fold(sources, fold):
        counts[s.kind] = counts.get(s.kind, 0) + s.images
    return counts


def mix_weights(base_images: int, sources: list[ExtraSource]) -> list[float]:
    """Sampling weights of [base, *sources]: each source at its natural rate (its images over all), a capped
    kind at most at its share in all (several external folders share one cap, in proportion to their size);
    the competition's own images take the rest."""
    total = base_images + sum(s.images for s in sources)
    natural = [s.images / total for s in sources]
    kind_rate: dict[str, float] = {}
    for s, w in zip(sources, natural):
        kind_rate[s.kind] = kind_rate.get(s.kind, 0.0) + w
    weights = [w if s.share is None or kind_rate[s.kind] <= s.share else w * s.share / kind_rate[s.kind]
               for s, w in zip(sources, natural)]
    return [max(0.0, 1.0 - sum(weights))] + weights


def epoch_images(base_epoch_images: int, sources: list[ExtraSource]) -> int:
    """Images per epoch with the extras mixed in, so that an epoch still draws each base image about once."""
    base_weight = mix_weights(base_epoch_images, sources)[0]
    return int(round(base_epoch_images / base_weight)) if base_weight > 0 else base_epoch_images


def sources_from_folder(kind: str, folder: str, share: float | None = None) -> list[ExtraSource]:
    """The training shards of a folder (its Manifest) as sources of `kind`: one for the untagged shards (every
    fold) and one per fold K for shards tagged "KIND:K"; shards tagged with another kind are left out."""
    manifest = read_manifest(folder)
    groups: dict[frozenset[int] | None, list] = {}
    for s in manifest.train():
        tag_kind, _, tag_fold = s.source.partition(":")
        if tag_kind and tag_kind != kind:
            continue
        folds = frozenset([int(tag_fold)]) if tag_fold else None
        groups.setdefault(folds, []).append(dataclasses.replace(s, fold=-1, train_only=True))
    if not groups:
        raise input_error(manifest.folder, f"no training shards for {kind} data (expected manifest.json or "
                                           "train*-COUNT.tfrec files)")
    return [ExtraSource(kind, tuple(shards), share, folds, manifest.folder) for folds, shards in groups.items()]


# ---------------------------------------------------------------- the training stream

def source_dataset(source: ExtraSource, fields: tuple[str, ...], seed: int):
    """Endless shuffled parsed records of one source, each with `target` (int64) and `soft_target` (float),
    relabelled from `labels` and without the `drop` names; records with no label (target < 0) are left out."""
    import tensorflow as tf

    from melanoma.data.reader import AUTOTUNE, lenient_parse, read_records

    wanted = tuple(fields) + (() if "image_name" in fields else ("image_name",))
    ds = read_records(source.paths, deterministic=False).map(lenient_parse(wanted), num_parallel_calls=AUTOTUNE,
                                                             deterministic=False)
    if source.labels:
        names, values = zip(*source.labels.items())
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(names, tf.string), tf.constant(values, tf.int64)), default_value=-1)
        ds = ds.map(lambda ex: {**ex, "target": table.lookup(ex["image_name"])}, num_parallel_calls=AUTOTUNE,
                    deterministic=False)
    if source.drop:
        drop = tf.constant(sorted(source.drop), tf.string)
        ds = ds.filter(lambda ex: tf.logical_not(tf.reduce_any(tf.equal(drop, ex["image_name"]))))
    ds = ds.filter(lambda ex: tf.logical_or(ex["target"] >= 0, ex["soft_target"] >= 0))
    # The same structure as the competition stream, so sample_from_datasets can mix them.
    ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k in fields}, num_parallel_calls=AUTOTUNE,
                deterministic=False)
    return ds.repeat().shuffle(2048, seed=seed)


def describe(sources: list[ExtraSource], fold: int, base_images: int) -> str | None:
    """One log line: the fold's extra images per source and their share of a batch."""
    mine = for_fold(sources, fold)
    if not mine:
        return None
    weights = mix_weights(base_images, mine)[1:]
    parts = [f"{s.kind} {s.images} images from {s.origin or 'shards'} "
             f"({'natural rate' if s.share is None else f'share capped at {s.share:g}'}: {w:.1%} of each batch)"
             for s, w in zip(mine, weights)]
    return "extra training data: " + "; ".join(parts)


def hashes_of(folder: str) -> dict[str, str] | None:
    """image_name -> image_hash from the folder's image_hashes.csv, image_sizes.csv or train.csv (the first with
    an `image_hash` column); None when none has one."""
    import pandas as pd
    import tensorflow as tf

    for name in ("image_hashes.csv", "image_sizes.csv", "train.csv"):
        path = f"{str(folder).rstrip('/')}/{name}"
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path) as f:
            head = f.readline()
        if "image_hash" not in head.strip().split(","):
            continue
        with tf.io.gfile.GFile(path) as f:
            df = pd.read_csv(f, usecols=["image_name", "image_hash"], dtype=str).dropna()
        return dict(zip(df["image_name"], df["image_hash"]))
    return None
