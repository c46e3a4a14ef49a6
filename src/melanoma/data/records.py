"""The TFRecord schema, shared by the writer (`prepare`) and the reader (`train`).

It is the schema of the widely shared Kaggle SIIM-ISIC TFRecords, so those datasets work unchanged:
training records hold `image` (JPEG bytes), `image_name` (bytes) and int64 `patient_id`, `sex`, `age_approx`,
`anatom_site_general_challenge`, `diagnosis`, `target`; test records the same less `diagnosis` and `target`.
Categorical fields are integer codes (-1 = missing) whose vocabularies our own `manifest.json` records.
We add the optional `width` and `height` of the original image (readers default them to -1) and, on training
records, `source` (default ""), so records without them (the public datasets) still parse. Shards are named
`train07-2182.tfrec`: index, then count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.data.schema import AGE, DIAGNOSIS, ID, PATIENT, SEX, SEXES, SITE, SITES, TARGET

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # "bytes", "int64" or "float"
    splits: tuple[str, ...] = SPLITS
    required: bool = True  # optional features get `default` when a record lacks them
    default: Any = None
    write_default: bool = True  # False: a record that lacks the value is written without the feature


FEATURES: tuple[Feature, ...] = (
    Feature("image", "bytes"),
    Feature(ID, "bytes"),
    Feature(PATIENT, "int64"),
    Feature(SEX, "int64"),
    Feature(AGE, "int64"),
    Feature(SITE, "int64"),
    Feature(DIAGNOSIS, "int64", ("train",)),
    Feature(TARGET, "int64", ("train",)),
    Feature("width", "int64", required=False, default=-1),
    Feature("height", "int64", required=False, default=-1),
    # Where a training record comes from: "" for the competition's own images (and the public datasets, which
    # lack the field), else the external data set's name (e.g. "isic2019"). External records are train-only.
    Feature("source", "bytes", ("train",), required=False, default=""),
    # A soft label in [0, 1] (pseudo-labelled test images, image/pseudo.py); -1 = none: the loss uses `target`.
    Feature("soft_target", "float", ("train",), required=False, default=-1.0, write_default=False),
)

# Known values first, so codes are stable across datasets; values not listed are appended, sorted.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    SEX: SEXES,
    SITE: SITES,
    DIAGNOSIS: ("unknown", "nevus", "melanoma", "seborrheic keratosis", "lentigo nos", "lichenoid keratosis",
                "solar lentigo", "cafe-au-lait macule", "atypical melanocytic proliferation"),
}

# The metadata vector of the image models (and of the exported model) one-hot encodes the public schema's codes
# below these; any other code (-1 = missing) sets the "other" column.
N_SEX, N_SITE = 2, 6

SHARD_RE = re.compile(r"^(train|test)(\d+)-(\d+)\.tfrec$")


def features_for(split: str) -> tuple[Feature, ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return tuple(f for f in FEATURES if split in f.splits)


def schema(split: str) -> dict[str, str]:
    return {f.name: f.dtype for f in features_for(split)}


def feature_description(split: str, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The `tf.io.parse_single_example` description of a split (optionally only some fields)."""
    import tensorflow as tf

    wanted = set(names) if names is not None else None
    desc = {}
    for f in features_for(split):
        if wanted is not None and f.name not in wanted:
            continue
        dtype = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}[f.dtype]
        desc[f.name] = tf.io.FixedLenFeature([], dtype, default_value=None if f.required else f.default)
    return desc


def serialize_example(values: Mapping[str, Any], split: str) -> bytes:
    """One record as bytes; every required feature of the split must be present."""
    import tensorflow as tf

    feats = {}
    for f in features_for(split):
        if f.name not in values and not (f.required or f.write_default):
            continue  # (prepare's shards stay byte-identical to those written before the feature existed)
        value = values.get(f.name, None if f.required else f.default)
        if value is None:
            raise KeyError(f"record for split {split!r} lacks feature {f.name!r}")
        if f.dtype == "bytes":
            value = value.encode() if isinstance(value, str) else bytes(value)
            feats[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif f.dtype == "float":
            feats[f.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
        else:
            feats[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    # deterministic: map fields in key order, so a shard's bytes do not depend on the process's hash seed
    # (a resumed prepare must reproduce an uninterrupted one exactly).
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)


def build_vocabularies(*frames: pd.DataFrame) -> dict[str, list[str]]:
    vocab = {}
    for col, known in VOCABULARIES.items():
        seen = set()
        for df in frames:
            if col in df.columns:
                seen.update(v for v in df[col].dropna().unique())
        vocab[col] = list(known) + sorted(seen - set(known))
    return vocab


def encode_metadata(df: pd.DataFrame, vocab: Mapping[str, list[str]], patient_codes: Mapping[str, int]
                    ) -> pd.DataFrame:
    """Integer codes for the record fields (-1 = missing), one row per image, same index as df."""
    out = pd.DataFrame(index=df.index)
    for col, values in vocab.items():
        if col not in df.columns:
            continue
        lookup = {v: i for i, v in enumerate(values)}
        out[col] = np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in df[col]], dtype=np.int64)
    out[AGE] = df[AGE].round().fillna(-1).astype(np.int64)
    out[PATIENT] = df[PATIENT].map(patient_codes).astype(np.int64)
    if TARGET in df.columns:
        out[TARGET] = df[TARGET].astype(np.int64)
    return out


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}{index:02d}-{count}.tfrec"


def parse_shard_name(path: str | Path) -> tuple[str, int, int] | None:
    """(split, index, count) from a shard file name, or None when it does not follow the convention."""
    m = SHARD_RE.match(Path(str(path)).name)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def check_prepared(tfrec_dir: str) -> None:
    """Refuse a `prepare` output folder that is not finished: no manifest.json, but prepare's work folder,
    lock or run.json is there (an interrupted or running prepare). Its shards are partial: training on them
    would silently miss images. Public Kaggle TFRecord folders have none of these and pass."""
    import tensorflow as tf

    from melanoma.errors import input_error

    folder = str(tfrec_dir).rstrip("/")
    if tf.io.gfile.exists(f"{folder}/manifest.json"):
        return
    for name, what in ((".prepare.lock", "a `melanoma prepare` is writing into it"),
                       (".prepare-work", "a `melanoma prepare` into it was interrupted"),
                       ("run.json", "its `melanoma prepare` did not finish")):
        if tf.io.gfile.exists(f"{folder}/{name}"):
            raise input_error(folder, f"no manifest.json: {what}; re-run the same prepare command to finish it "
                                      "(it resumes) before training")


# ---------------------------------------------------------------- damaged shards met while training

def damaged_shard(paths: Iterable[str]) -> tuple[str, str] | None:
    """(path, problem) of the first shard whose records cannot all be read (a truncated or corrupted file: the
    record checksums catch both), or None. Reads record bytes only, nothing decoded: fast even for GBs."""
    import tensorflow as tf

    for path in paths:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as e:
            return path, " ".join(str(e.message).split())[:200]
    return None


def shard_read_error(error: Exception, fold: int | None, paths: list[str]) -> Exception | None:
    """The one-line InputError for a TFRecord that broke while training `fold` (None: while reading the index
    before any fold), or None for any other error: names the damaged shard, found by a pass over the shards
    read, and says how to repair it and go on."""
    import tensorflow as tf

    from melanoma.errors import InputError

    if not isinstance(error, tf.errors.DataLossError):
        return None
    found = damaged_shard(paths)
    when = f"while training fold {fold}" if fold is not None else "while reading the validation index"
    where, problem = found if found else (f"one of the {len(paths)} shards read {when}",
                                          " ".join(str(error.message).split())[:200])
    return InputError(f"{where}: damaged TFRecord file ({problem}), met {when}: re-run the "
                      "`melanoma prepare` that wrote it (it checks every shard's checksum and rewrites damaged "
                      "ones; re-download public TFRecords), then the same `melanoma train`: finished folds are "
                      "kept and this fold resumes from its last epoch")
