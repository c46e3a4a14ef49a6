"""`train.sources.external`: public external TFRecords (e.g. ISIC 2019) as an extra training source of every fold.

An entry is a folder (local or gs://), a Kaggle dataset OWNER/SLUG, or a name of the one slug table
`kaggle.api.EXTERNAL_DATASETS` ("isic2019": Chris Deotte's `isic2019-{size}x{size}` sets, at prepare.size).
A slug is found where Kaggle mounts it (/kaggle/input/datasets/OWNER/SLUG today, /kaggle/input/SLUG before);
`melanoma kaggle push` attaches the same datasets.

Their schema is mapped to ours (image/extras.py parses every field but `image` as optional):
- the images: `image` JPEG bytes, `image_name`; test files (`test*.tfrec`) are never read;
- the label: where the folder has a companion train.csv (image_name with target, or with diagnosis), it wins:
  the public 2019 sets code `diagnosis` with their own integers, so a target is taken from the CSV's target
  column, else from its diagnosis text (MEL / melanoma = 1). Without a CSV the records' own `target` is used;
  records with neither are left out.
- the metadata fields (`sex`, `age_approx`, `anatom_site_general_challenge`) are read as coded in the records:
  the public sets share the 2020 sets' codes; `diagnosis` and `patient_id` are not used.

Duplicates between 2019 and 2020: when both this folder and the competition's TFRecords folder have image
hashes (an `image_hash` column in image_hashes.csv, image_sizes.csv or train.csv), external images whose hash is
a competition image's are dropped; otherwise the log says that they could not be.
"""

from __future__ import annotations

import logging
from pathlib import Path

from melanoma.errors import ConfigError, input_error
from melanoma.image.sources import ExtraSource, hashes_of, sources_from_folder

log = logging.getLogger("melanoma.image.train")

MELANOMA_NAMES = {"mel", "melanoma"}


def resolve_external(ref: str, size: int, place=None) -> str:
    """The folder of a train.sources.external entry; a dataset that is neither a folder nor attached is one clear
    error."""
    from melanoma.runtime.datasets import external_dataset
    from melanoma.runtime.place import detect, locate

    slug = external_dataset(ref, size)
    if slug is None:
        if "://" not in ref and not Path(ref).is_dir():
            raise ConfigError(f"train.sources.external: {ref} is not a folder")
        return ref
    if place is None:  # on Kaggle only the place matters here, and it needs no config (Colab's roots do)
        place = detect(None)
    found = locate(place, "dataset", slug) if place.name == "kaggle" else None
    if found is None:
        raise ConfigError(f"train.sources.external: dataset {slug} ({ref}) is not attached here: attach it to the "
                          "notebook (`melanoma kaggle push` does), or give the folder of its TFRecords")
    log.info("train.sources.external: %s -> %s (%s)", ref, found[0], found[1])
    return str(found[0])


def companion_labels(folder: str) -> dict[str, int] | None:
    """image_name -> 0/1 from the folder's train.csv (target column, else diagnosis text), or None."""
    import pandas as pd
    import tensorflow as tf

    path = f"{folder.rstrip('/')}/train.csv"
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            df = pd.read_csv(f, dtype={"image_name": str})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise input_error(path, f"not a readable CSV: {e}") from None
    if "image_name" not in df.columns or not {"target", "diagnosis"} & set(df.columns):
        return None
    if "target" in df.columns and df["target"].notna().all():
        target = df["target"].astype(int)
    else:
        target = df["diagnosis"].astype(str).str.strip().str.lower().isin(MELANOMA_NAMES).astype(int)
    return dict(zip(df["image_name"].astype(str), target.astype(int)))


def duplicate_names(folder: str, competition_tfrecords: str | None) -> frozenset[str] | None:
    """External image names whose hash is a competition image's; None when either side has no hashes."""
    if competition_tfrecords is None:
        return None
    theirs, ours = hashes_of(folder), hashes_of(str(competition_tfrecords))
    if theirs is None or ours is None:
        return None
    known = set(ours.values())
    return frozenset(name for name, h in theirs.items() if h in known)


def external_sources(cfg, place=None, competition_tfrecords: str | None = None) -> list[ExtraSource]:
    """A source per train.sources.external entry, relabelled from its companion CSV, competition duplicates dropped."""
    import dataclasses

    tcfg, sources = cfg.train, []
    share = tcfg.sources.external_share
    for ref in tcfg.sources.external:
        folder = resolve_external(ref, cfg.prepare.size, place)
        labels = companion_labels(folder)
        drop = duplicate_names(folder, competition_tfrecords)
        if drop is None:
            log.info("train.sources.external %s: no image hashes on both sides (an image_hash column): duplicates of "
                     "competition images are not dropped", ref)
        elif drop:
            log.info("train.sources.external %s: %d images are duplicates of competition images (same hash): dropped",
                     ref, len(drop))
        for s in sources_from_folder("external", folder, share):
            sources.append(dataclasses.replace(s, labels=labels, drop=drop or frozenset()))
    return sources


def configured_sources(cfg, tfrec_dir: str | None = None, place=None) -> list[ExtraSource]:
    """train.sources.external, train.sources.pseudo and (issue 15) train.sources.synthetic as sources; external
    images that duplicate a competition image of `tfrec_dir` are dropped where both have hashes."""
    tcfg = cfg.train
    sources = external_sources(cfg, place, tfrec_dir)
    if tcfg.sources.pseudo:
        sources += sources_from_folder("pseudo", tcfg.sources.pseudo, tcfg.sources.pseudo_share)
    if tcfg.sources.synthetic:
        sources += sources_from_folder("synthetic", tcfg.sources.synthetic, tcfg.sources.synthetic_share)
    return sources
