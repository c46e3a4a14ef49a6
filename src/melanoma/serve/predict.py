"""`melanoma predict --model model/ --images DIR_OR_CSV --out preds.csv`: batch prediction on image files.

Images are read and preprocessed in a thread pool (PIL and TensorFlow release the GIL while decoding), one
batch ahead of the model. An unreadable image gets its reason in the `error` column and no score; the
others are still scored. Each row has the probability, the calibrated probability and a 0/1 label per
exported threshold (`label_<name>`).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.config import Config
from melanoma.data.schema import AGE, ID, SEX, SITE, csv_line
from melanoma.errors import input_error
from melanoma.files import write_csv
from melanoma.data.competition import ISIC2024, PROFILES
from melanoma.data.hdf5 import read_source, split_tile_source
from melanoma.data.images import BadImage
from melanoma.serve.artifact import Artifact, BadMetadata

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PATH = "path"
TILE_SUFFIXES = (".hdf5", ".h5")  # an ISIC 2024 tile file (melanoma.data.hdf5)


def list_images(source: str | Path, image_dir: str | Path | None = None) -> pd.DataFrame:
    """image_name, path (and any metadata columns) from a folder of images or a CSV.

    A CSV names each image by `path` (relative to the CSV's folder, or absolute) or by `image_name`, found
    as IMAGE_DIR/NAME.jpg (IMAGE_DIR: predict.image_dir, else the CSV's folder). ISIC 2024: an HDF5 tile file
    (every tile), or a metadata CSV with `isic_id` whose tiles are in its sibling `<name>-image.hdf5` (or the
    tile file predict.image_dir names); the predictions then carry `isic_id`.
    """
    source = Path(source)
    if source.suffix.lower() in TILE_SUFFIXES and source.is_file():
        return _tiles(source, None)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise input_error(source, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return pd.DataFrame({ID: [p.stem for p in files], PATH: [str(p) for p in files]})
    if not source.is_file():
        raise input_error(source, "not found: give a folder of images or a CSV")
    try:
        df = pd.read_csv(source, dtype={c: "string" for c in (ID, PATH, SEX, SITE, ISIC2024.id_column,
                                                                  ISIC2024.site_column)})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:  # EmptyDataError is a ValueError
        raise input_error(source, f"not a readable CSV: {' '.join(str(e).split())}") from None
    if ISIC2024.id_column in df.columns and PATH not in df.columns:
        return _tiles(_tile_file(source, image_dir), df)
    if PATH not in df.columns and ID not in df.columns:
        raise input_error(source, f"needs a '{PATH}' or an '{ID}' column (columns: {', '.join(df.columns)})", 1)
    if df.empty:
        raise input_error(source, f"no rows under the header: list at least one image ({PATH} or {ID})")
    base = Path(image_dir) if image_dir else source.parent
    if PATH in df.columns:
        paths = [str(p if Path(p).is_absolute() else source.parent / p) if isinstance(p, str) else None
                 for p in df[PATH]]
    else:
        paths = [str(base / f"{n}.jpg") if isinstance(n, str) else None for n in df[ID]]
    for i, p in enumerate(paths):
        if p is None:
            raise input_error(source, f"empty {PATH if PATH in df.columns else ID}", csv_line(i))
    df[PATH] = paths
    if ID not in df.columns:
        df[ID] = [Path(p).stem for p in paths]
    return df.reset_index(drop=True)


def _tile_file(csv: Path, image_dir: str | Path | None) -> Path:
    """The tile file of an ISIC 2024 metadata CSV: predict.image_dir when it is one, else the CSV's sibling
    (test-metadata.csv -> test-image.hdf5, as the competition ships them)."""
    if image_dir is not None and Path(image_dir).suffix.lower() in TILE_SUFFIXES:
        return Path(image_dir)
    stem = csv.stem[:-len("-metadata")] if csv.stem.endswith("-metadata") else csv.stem
    return Path(image_dir or csv.parent) / f"{stem}-image.hdf5"


def _tiles(path: Path, df: pd.DataFrame | None) -> pd.DataFrame:
    """Rows for ISIC 2024 tiles: every tile of the file, or the CSV's isic_ids (each must have a tile), with the
    CSV's metadata in the package's names (the 2024 site column, its torso halves as torso)."""
    from melanoma.data.hdf5 import TileFile, tile_source

    with TileFile(path) as tiles:
        if df is None:
            df = pd.DataFrame({ISIC2024.id_column: tiles.ids()})
        if df.empty:
            raise input_error(path, "no tiles to predict")
        tiles.require(df[ISIC2024.id_column].astype(str), "the CSV")
    df = ISIC2024.internal_table(df)
    df[PATH] = [tile_source(path, n) for n in df[ID]]
    df.attrs["competition"] = ISIC2024.name  # predictions are written with isic_id
    return df.reset_index(drop=True)


def meta_vectors(art: Artifact, df: pd.DataFrame, source: str | Path) -> np.ndarray | None:
    """The metadata vector per row (None for an image-only model); a bad value stops with its CSV line.
    Logs how many rows have no metadata at all (scored from the image alone) and how many have part of it."""
    if not art.uses_meta:
        return None
    absent = [c for c in (SEX, AGE, SITE) if c not in df.columns]
    if absent:
        log.warning("predict: the model uses metadata and %s has no %s column: treated as unknown", source,
                    ", ".join(absent))
    rows, empty, partial = [], 0, 0
    for i, row in enumerate(df.to_dict("records")):
        try:
            codes = art.meta.codes(row.get(SEX), row.get(AGE), row.get(SITE))
        except BadMetadata as e:
            raise input_error(source, str(e), csv_line(i)) from None
        empty += art.meta.is_empty(codes)
        partial += any(c < 0 for c in codes) and not art.meta.is_empty(codes)
        rows.append(art.meta.vector(codes))
    log.info("predict: %d of %d rows without metadata (scored from the image alone), %d with part of it",
             empty, len(df), partial)
    return np.stack(rows) if rows else np.zeros((0, art.meta_dim), np.float32)


def _read(art: Artifact, path: str) -> np.ndarray | str:
    """The model input of one file, or the reason it has none."""
    try:
        if split_tile_source(path) is not None:
            data = read_source(path)
        else:
            with open(path, "rb") as f:
                data = f.read()
        return art.preprocess(data)
    except BadImage as e:
        return str(e)
    except OSError as e:
        return f"cannot read: {e.strerror or e}"


def score_images(art: Artifact, df: pd.DataFrame, meta: np.ndarray | None, batch: int, workers: int | None,
                 desc: str = "predict") -> tuple[np.ndarray, list[str]]:
    """(probability per row of df, NaN where unreadable; the reason per row, "" where scored), under a progress
    bar. Images are read in a thread pool one batch ahead of the model."""
    from melanoma.progress import progress_bar

    n = len(df)
    prob = np.full(n, np.nan)
    errors = [""] * n
    starts = list(range(0, n, batch))
    with ThreadPoolExecutor(workers or (os.cpu_count() or 1)) as pool, progress_bar(n, desc) as bar:
        def submit(start: int) -> list[Future]:
            return [pool.submit(_read, art, p) for p in df[PATH].iloc[start:start + batch]]

        pending = submit(starts[0]) if starts else []
        for j, start in enumerate(starts):
            results = [f.result() for f in pending]
            pending = submit(starts[j + 1]) if j + 1 < len(starts) else []  # read ahead while the model runs
            ok = [i for i, r in enumerate(results) if not isinstance(r, str)]
            for i, r in enumerate(results):
                if isinstance(r, str):
                    errors[start + i] = r
            if ok:
                rows = np.array([start + i for i in ok])
                x = np.stack([results[i] for i in ok])
                prob[rows] = art.predict(x, None if meta is None else meta[rows])
            bar.update(len(results))
    return prob, errors


def run_predict(cfg: Config, model_dir: str | Path, images: str | Path, out: str | Path) -> pd.DataFrame:
    """The `predict` command: writes OUT (a row per image) and returns it."""
    pcfg = cfg.predict
    art = Artifact.load(model_dir)
    df = list_images(images, pcfg.image_dir)
    meta = meta_vectors(art, df, images)
    if art.settings.lesion != "none":  # the lesion step prepare applied, with the exported segmenter or classical
        log.info("predict: lesion %s before the resize (%s)", art.settings.lesion,
                 art.settings.segmenter or "classical mask")
    n = len(df)
    prob, errors = score_images(art, df, meta, pcfg.batch_size, pcfg.workers)
    result = _table(art, df, prob, errors)
    write_csv(out, PROFILES[df.attrs.get("competition", "siim2020")].user_table(result))
    bad = result[result["error"] != ""]
    for _, row in bad.head(20).iterrows():
        log.warning("predict: %s: %s", row[PATH], row["error"])
    log.info("predict: %d images scored, %d unreadable -> %s", n - len(bad), len(bad), out)
    return result


def _table(art: Artifact, df: pd.DataFrame, prob: np.ndarray, errors: list[str]) -> pd.DataFrame:
    scored = ~np.isnan(prob)
    out = pd.DataFrame({ID: df[ID], PATH: df[PATH], "probability": prob})
    cal = np.full(len(prob), np.nan)
    cal[scored] = art.calibrated(prob[scored])
    out["calibrated_probability"] = cal
    for name, labels in art.labels(np.nan_to_num(prob)).items():
        out[f"label_{name}"] = pd.Series(labels, dtype="Int64").where(scored, pd.NA)  # no label without a score
    out["error"] = errors
    return out
