"""Per-image statistics for the metadata models, read from the JPEGs or the TFRecords, without labels.

For each image: its file size in bytes and, on a 64x64 centre-cropped view (the framing `prepare` stores),
the mean and std of each channel on [0, 1] and the lesion-versus-skin contrast, the mean of the central half
minus the mean of an 8-pixel border (dermoscopy centres the lesion). The patient-context features then set
each against the patient's own mean (melanoma.tabular.features). A file that cannot be decoded gets NaN
statistics (and a warning); the boosters take NaN as missing and the other models impute it.

Decoding is the slow part (JPEG draft scaling keeps a 6000x4000 original at about 1/8 of the cost), so
several files are done at once in spawned worker processes, with a progress bar on a terminal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.schema import ID
from melanoma.progress import progress_bar
from melanoma.tabular.features import COLOR_STATS, FILE_SIZE

log = logging.getLogger("melanoma.tabular")

VIEW = 64  # side of the view the statistics are computed on
BORDER = 8  # width of the border that stands for the skin
CHUNK = 64  # files per worker job


def color_stats(rgb: np.ndarray) -> dict[str, float]:
    """COLOR_STATS of an RGB array (H, W, 3) with values 0-255."""
    x = np.asarray(rgb, dtype=np.float64) / 255.0
    h, w = x.shape[:2]
    centre = x[h // 4: h - h // 4, w // 4: w - w // 4].reshape(-1, 3)
    border = np.ones((h, w), dtype=bool)
    border[BORDER:h - BORDER, BORDER:w - BORDER] = False
    ring = x[border]
    flat = x.reshape(-1, 3)
    out: dict[str, float] = {}
    for i, ch in enumerate("rgb"):
        out[f"color_mean_{ch}"] = float(flat[:, i].mean())
        out[f"color_std_{ch}"] = float(flat[:, i].std())
        out[f"color_contrast_{ch}"] = float(centre[:, i].mean() - ring[:, i].mean())
    return out


def stats_of(source: str | bytes) -> dict[str, float]:
    """file_size and COLOR_STATS of one image file or its bytes; NaN statistics when it cannot be decoded."""
    from melanoma.data.images import BadImage, load_rgb, square

    size = float(len(source) if isinstance(source, bytes) else os.path.getsize(source))
    try:
        img, _, _ = load_rgb(source, VIEW)
        view = square(img, VIEW, "crop")
    except BadImage as e:
        where = "an image in the TFRecords" if isinstance(source, bytes) else source
        log.warning("tabular: image statistics: %s: %s (left missing)", where, e)
        return {FILE_SIZE: size, **{c: np.nan for c in COLOR_STATS}}
    return {FILE_SIZE: size, **color_stats(np.asarray(view))}


def _stats_chunk(paths: list[str]) -> list[dict[str, float]]:
    return [stats_of(p) for p in paths]


def _map_files(paths: list[str], workers: int) -> list[dict[str, float]]:
    """stats_of for every path, in order; in `workers` spawned processes when there is enough to share."""
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    results: list[list[dict[str, float]]] = [[] for _ in chunks]
    with progress_bar(len(paths), "tabular: image statistics") as bar:
        if workers <= 1 or len(chunks) < 2:
            for i, chunk in enumerate(chunks):
                results[i] = _stats_chunk(chunk)
                bar.update(len(chunk))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # Spawn, not fork: the parent may have TensorFlow loaded, which is not fork-safe.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
                futures = {pool.submit(_stats_chunk, chunk): i for i, chunk in enumerate(chunks)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(len(results[futures[fut]]))
    return [row for part in results for row in part]


def jpeg_stats(data_dir: str | Path, names: dict[str, list[str]], workers: int) -> pd.DataFrame | None:
    """image_name, file_size, COLOR_STATS for the images DATA/jpeg/<split>/<name>.jpg of every split in
    `names` (split -> image names); None, with the reason logged, unless every one of them exists."""
    paths, order = [], []
    for split, split_names in names.items():
        for name in split_names:
            paths.append(str(Path(data_dir) / "jpeg" / split / f"{name}.jpg"))
            order.append(name)
    missing = sum(not os.path.isfile(p) for p in paths)
    if missing:
        log.info("tabular: no image statistics from JPEGs: %d of %d images are not in %s/jpeg/", missing,
                 len(paths), data_dir)
        return None
    rows = _map_files(paths, workers)
    return pd.DataFrame(rows, columns=[FILE_SIZE, *COLOR_STATS]).assign(**{ID: order})[[ID, FILE_SIZE, *COLOR_STATS]]


def tfrecord_stats(tfrec_dir: str | Path, names: set[str]) -> pd.DataFrame | None:
    """image_name, file_size (of the stored JPEG), COLOR_STATS of the records in TFREC_DIR's shards whose
    names are in `names` (the first record of a name: upsampled copies repeat it); None, with the reason
    logged, unless every name is found."""
    from melanoma.data.records import parse_shard_name

    shards = sorted(str(p) for p in Path(tfrec_dir).glob("*.tfrec") if parse_shard_name(p))
    if not shards:
        log.info("tabular: no image statistics from TFRecords: no shards in %s", tfrec_dir)
        return None
    import tensorflow as tf

    desc = {"image": tf.io.FixedLenFeature([], tf.string), ID: tf.io.FixedLenFeature([], tf.string)}
    ds = tf.data.TFRecordDataset(shards).map(lambda r: tf.io.parse_single_example(r, desc))
    rows, seen = [], set()
    with progress_bar(len(names), "tabular: image statistics") as bar:
        for rec in ds.as_numpy_iterator():
            name = rec[ID].decode()
            if name in names and name not in seen:
                seen.add(name)
                rows.append({ID: name, **stats_of(bytes(rec["image"]))})
                bar.update(1)
    if len(seen) < len(names):
        log.info("tabular: no image statistics from TFRecords: %d of %d images are not in the shards of %s",
                 len(names) - len(seen), len(names), tfrec_dir)
        return None
    return pd.DataFrame(rows, columns=[ID, FILE_SIZE, *COLOR_STATS])
