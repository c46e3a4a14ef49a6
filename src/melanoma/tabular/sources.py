"""Where the image-derived columns come from: original width/height (add_image_sizes) and the file size and
colour statistics of the images (add_image_stats), joined to train.csv/test.csv rows by image_name.

Either is used only when it covers every training and test image: a partial cover would make the feature
mean different things for the two.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.schema import ID
from melanoma.tabular import imagestats
from melanoma.tabular.features import FEATURE_COLUMNS, IMAGE_COLUMNS, SIZE, present

log = logging.getLogger("melanoma.tabular")

SIZES_CSV = "image_sizes.csv"  # written by `prepare` beside its manifest: image_name, split, width, height
STATS_CSV = "image_stats.csv"  # written by `tabular` into its run folder, and reused from there


def _read_sizes(folder: Path) -> tuple[pd.DataFrame, str] | None:
    """image_name, width, height (one row per name, positive numbers) from FOLDER/image_sizes.csv, else from
    FOLDER/train.csv + test.csv when both have width and height (the public TFRecords' companion CSVs), and
    a description of the source; None when the folder has neither."""
    wanted = {ID, *SIZE}
    candidates = [[folder / SIZES_CSV], [folder / "train.csv", folder / "test.csv"]]
    for files in candidates:
        if not all(f.is_file() for f in files):
            continue
        try:
            parts = [pd.read_csv(f, usecols=lambda c: c in wanted, dtype={ID: "string"}) for f in files]
        except (OSError, ValueError) as e:
            log.warning("tabular: cannot read image sizes from %s: %s", ", ".join(map(str, files)), e)
            continue
        if not all(wanted <= set(part.columns) for part in parts):
            continue
        sizes = pd.concat(parts, ignore_index=True)
        for c in SIZE:
            sizes[c] = pd.to_numeric(sizes[c], errors="coerce")
        # A missing or non-positive size (the records' -1) is no size: that image counts as not covered.
        sizes = sizes[sizes[ID].notna() & (sizes[SIZE] > 0).all(axis=1)].drop_duplicates(ID)
        return sizes, " and ".join(str(f) for f in files)
    return None


def add_image_sizes(train: pd.DataFrame, test: pd.DataFrame, sizes_dir: str | Path | None, mode: str
                    ) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """train and test with width/height where known, and where they came from (None: not used).

    off: no size columns. auto: train.csv/test.csv's own when both have them; else, joined by image_name,
    those of SIZES_DIR (see _read_sizes), used only if they cover every training and test image (a warning
    says how many are missing).
    """
    if mode == "auto" and all(c in train.columns and c in test.columns for c in SIZE):
        log.info("tabular: image width/height from train.csv and test.csv")
        return train, test, "train.csv and test.csv"
    # A size column in only one of the two CSVs is no feature (the test rows would all be imputed).
    train, test = train.drop(columns=SIZE, errors="ignore"), test.drop(columns=SIZE, errors="ignore")
    if mode == "off":
        log.info("tabular: image width/height not used (tabular.image_size: off)")
        return train, test, None
    if sizes_dir is None:
        return train, test, None
    if "://" in str(sizes_dir):  # a bucket: read by TensorFlow only; the metadata stage stays without it
        log.info("tabular: image width/height not looked up in %s (remote folder)", sizes_dir)
        return train, test, None
    found = _read_sizes(Path(sizes_dir))
    if found is None:
        log.info("tabular: no image width/height (not in train.csv/test.csv, no %s or public train.csv/"
                 "test.csv with width and height in %s)", SIZES_CSV, sizes_dir)
        return train, test, None
    sizes, source = found
    known = set(sizes[ID])
    miss_train, miss_test = int((~train[ID].isin(known)).sum()), int((~test[ID].isin(known)).sum())
    if miss_train or miss_test:
        log.warning("tabular: image sizes in %s miss %d of %d training and %d of %d test images: width/height "
                    "not used", source, miss_train, len(train), miss_test, len(test))
        return train, test, None
    by_name = sizes.set_index(ID)
    train = train.assign(**{c: train[ID].map(by_name[c]).to_numpy(dtype=np.float64) for c in SIZE})
    test = test.assign(**{c: test[ID].map(by_name[c]).to_numpy(dtype=np.float64) for c in SIZE})
    log.info("tabular: image width/height from %s (%d training, %d test images)", source, len(train), len(test))
    return train, test, source


def _cached_stats(out_dir: Path | None, source: str, names: set[str]) -> pd.DataFrame | None:
    """An earlier run's RUN/image_stats.csv when it is from the same source and covers every name."""
    path = None if out_dir is None else Path(out_dir) / STATS_CSV
    if path is None or not path.is_file():
        return None
    try:
        cached = pd.read_csv(path, dtype={ID: "string", "source": "string"})
    except (OSError, ValueError):
        return None
    if not {ID, "source", *IMAGE_COLUMNS} <= set(cached.columns) or set(cached["source"].dropna()) != {source}:
        return None
    cached = cached[cached[ID].isin(names)].drop_duplicates(ID)
    if len(cached) != len(names):
        return None
    log.info("tabular: image statistics reused from %s", path)
    return cached[[ID, *IMAGE_COLUMNS]]


def load_image_stats(train: pd.DataFrame, test: pd.DataFrame, data_dir: str | Path,
                     tfrec_dir: str | Path | None, out_dir: str | Path | None, workers: int
                     ) -> tuple[pd.DataFrame, str] | None:
    """image_name + IMAGE_COLUMNS for every training and test image, and the source (the JPEG folders of
    DATA, else the TFRecords folder when given), or None when neither has every image."""
    names = {"train": list(train[ID]), "test": list(test[ID])}
    wanted = set(names["train"]) | set(names["test"])
    jpeg_root = Path(data_dir) / "jpeg"
    if (jpeg_root / "train").is_dir() and (jpeg_root / "test").is_dir():
        source = f"JPEGs in {jpeg_root}"
        stats = _cached_stats(out_dir, source, wanted)
        if stats is None:
            stats = imagestats.jpeg_stats(data_dir, names, workers)
        if stats is not None:
            return stats, source
    if tfrec_dir is not None and "://" not in str(tfrec_dir) and Path(tfrec_dir).is_dir():
        source = f"TFRecords in {tfrec_dir}"
        stats = _cached_stats(out_dir, source, wanted)
        if stats is None:
            stats = imagestats.tfrecord_stats(tfrec_dir, wanted)
        if stats is not None:
            return stats, source
    return None


def add_image_stats(train: pd.DataFrame, test: pd.DataFrame, data_dir: str | Path, tfrec_dir: str | Path | None,
                    mode: str, out_dir: str | Path | None = None, workers: int | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """train and test with file_size and the colour statistics joined by image_name when the images are
    there (tabular.image_stats: auto), and the table itself with its source (to write as RUN/image_stats.csv);
    without images (or with off) the tables come back unchanged and the models go without these columns."""
    train = train.drop(columns=IMAGE_COLUMNS, errors="ignore")
    test = test.drop(columns=IMAGE_COLUMNS, errors="ignore")
    if mode == "off":
        log.info("tabular: image statistics not used (tabular.image_stats: off)")
        return train, test, None
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    found = load_image_stats(train, test, data_dir, tfrec_dir, out_dir, workers)
    if found is None:
        log.info("tabular: no image statistics (file size, colour): the images are not available")
        return train, test, None
    stats, source = found
    by_name = stats.drop_duplicates(ID).set_index(ID)
    train = train.assign(**{c: train[ID].map(by_name[c]).to_numpy(dtype=np.float64) for c in IMAGE_COLUMNS})
    test = test.assign(**{c: test[ID].map(by_name[c]).to_numpy(dtype=np.float64) for c in IMAGE_COLUMNS})
    log.info("tabular: file size and colour statistics from %s (%d training, %d test images)", source,
             len(train), len(test))
    return train, test, stats.assign(source=source)


def input_columns(train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """FEATURE_COLUMNS, plus width/height, file size, colour statistics and the image runs' columns when both
    tables have them."""
    both = [c for c in train.columns if c in set(test.columns)]
    return FEATURE_COLUMNS + present(both, SIZE + IMAGE_COLUMNS)
