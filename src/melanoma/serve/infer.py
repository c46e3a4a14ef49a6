"""`melanoma infer --bundle BUNDLE --data DATA --out submission.csv`: the ISIC 2024 code competition's inference.

BUNDLE is what `melanoma kaggle upload-models` builds: bundle.json, the exported image models (imageK/, each a
`melanoma export` folder) and the tabular run's saved models (tabular/models/, melanoma.tabular.saved). DATA holds
test-metadata.csv and test-image.hdf5 (and sample_submission.csv on Kaggle):

1. every tile through each image model (melanoma.serve.predict.score_images: a progress bar, reading ahead);
2. the tabular models on the metadata with those predictions as their image-run features (image_run0 = image0);
   without a tabular part, the mean of the image models; without image models, the trees alone;
3. `isic_id,target`, checked against DATA/sample_submission.csv when there is one, written atomically.

Each step logs one line with its counts and seconds. The measured rate gives a projected time for 500,000 tiles
(the hidden test set is about that size; the notebook has 12 hours), logged and written to OUT's stem +
`.timing.json`. With a handful of tiles the rate includes the model's first-call compilation, so the projection
errs long.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma import __version__
from melanoma.config import Config
from melanoma.data.competition import ISIC2024
from melanoma.data.schema import ID, TARGET, read_test
from melanoma.errors import ConfigError, input_error
from melanoma.files import read_json, write_csv, write_json

log = logging.getLogger("melanoma.infer")
BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1
PROJECTED_TILES = 500_000
KAGGLE_LIMIT_HOURS = 12.0


def timing_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(f"{out.stem}.timing.json")


def read_bundle(bundle: str | Path) -> dict[str, Any]:
    """bundle.json, checked: its image model folders and tabular folder exist, and the tabular models take as
    many image predictions as there are image models."""
    bundle = Path(bundle)
    path = bundle / BUNDLE_FILE
    if not path.is_file():
        raise input_error(bundle, f"no {BUNDLE_FILE}: not a bundle of `melanoma kaggle upload-models`")
    info = read_json(path)
    if info.get("format_version") != BUNDLE_FORMAT:
        raise input_error(path, f"format_version {info.get('format_version')!r}: this melanoma reads "
                                f"{BUNDLE_FORMAT} (build the bundle again with this version)")
    images, tabular = list(info.get("image_models") or []), info.get("tabular")
    if not images and not tabular:
        raise input_error(path, "names neither image models nor a tabular run: nothing to predict with")
    for rel in [*images, *([tabular] if tabular else [])]:
        if not (bundle / rel).is_dir():
            raise input_error(bundle / rel, f"missing: {BUNDLE_FILE} names it (copy or mount the whole bundle)")
    return info


def _step(name: str, n: int, seconds: float, note: str = "") -> dict[str, Any]:
    log.info("infer: %s: %d tiles in %.1f s (%.1f tiles/s)%s", name, n, seconds, n / seconds if seconds else 0.0,
             note)
    return {"step": name, "tiles": n, "seconds": round(seconds, 3)}


def image_predictions(cfg: Config, bundle: Path, names: list[str], metadata: Path,
                      steps: list[dict]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """(the tiles' rows, one probability array per image model); an unreadable tile gets the model's mean."""
    from melanoma.serve.artifact import Artifact
    from melanoma.serve.predict import list_images, meta_vectors, score_images

    start = time.perf_counter()
    df = list_images(metadata, cfg.predict.image_dir)
    steps.append(_step("list tiles", len(df), time.perf_counter() - start))
    preds = []
    for name in names:
        start = time.perf_counter()
        art = Artifact.load(bundle / name)
        prob, errors = score_images(art, df, meta_vectors(art, df, metadata), cfg.predict.batch_size,
                                    cfg.predict.workers, desc=f"infer {name}")
        bad = int(np.isnan(prob).sum())
        if bad:  # a submission needs a value for every tile: the model's mean stands in (logged)
            first = next(e for e in errors if e)
            log.warning("infer: %s: %d of %d tiles unreadable (first: %s): scored with the mean prediction", name,
                        bad, len(prob), first)
            prob = np.where(np.isnan(prob), np.nanmean(prob) if bad < len(prob) else 0.0, prob)
        preds.append(prob)
        steps.append(_step(f"image model {name}", len(df), time.perf_counter() - start,
                           f", {bad} unreadable" if bad else ""))
    return df, preds


def _projection(steps: list[dict], n: int, bundle: Path, data: Path, out: Path) -> dict[str, Any]:
    """The run's timings and the projection to PROJECTED_TILES tiles (linear in the tiles)."""
    seconds = sum(s["seconds"] for s in steps)
    rate = n / seconds if seconds else None
    projected = seconds / n * PROJECTED_TILES if n else None
    report = {"tiles": n, "seconds": round(seconds, 3), "tiles_per_second": rate, "steps": steps,
              "projected_tiles": PROJECTED_TILES, "projected_seconds": projected,
              "projected_hours": None if projected is None else projected / 3600, "limit_hours": KAGGLE_LIMIT_HOURS,
              "within_limit": None if projected is None else projected / 3600 < KAGGLE_LIMIT_HOURS,
              "note": "linear in the tiles from this run's rate; a small run's rate includes model loading and "
                      "compilation, so the projection errs long",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "gpus": os.environ.get("NVIDIA_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES")},
              "bundle": str(bundle), "data": str(data), "melanoma": __version__}
    if projected is not None:
        log.info("infer: %.1f tiles/s over all steps: %d tiles would take about %.1f h (limit %.0f h)%s", rate,
                 PROJECTED_TILES, projected / 3600, KAGGLE_LIMIT_HOURS,
                 "" if report["within_limit"] else ": OVER THE LIMIT")
    write_json(timing_path(out), report)
    return report


def run_infer(cfg: Config, bundle: str | Path, data: str | Path, out: str | Path) -> pd.DataFrame:
    """The `infer` command: writes OUT (isic_id,target) and OUT's .timing.json; returns the submission."""
    bundle, data, out = Path(bundle), Path(data), Path(out)
    info = read_bundle(bundle)
    metadata = data / "test-metadata.csv"
    if not metadata.is_file():
        raise input_error(data, "no test-metadata.csv: give the competition's folder (isic-2024-challenge)")
    steps: list[dict] = []
    images, tabular = list(info.get("image_models") or []), info.get("tabular")
    models = None
    if tabular:
        from melanoma.tabular.saved import TabularModels

        models = TabularModels.load(bundle / tabular)
        if models.n_image_runs != len(images):
            raise ConfigError(f"{bundle / BUNDLE_FILE}: the tabular models take {models.n_image_runs} image "
                              f"prediction(s) and the bundle has {len(images)} image model(s): build it again")
    tiles, preds = image_predictions(cfg, bundle, images, metadata, steps) if images else (None, [])
    start = time.perf_counter()
    if models is not None:
        test = read_test(data, models.patient_id, ISIC2024)
        if tiles is not None:  # by id, never by row order
            preds = [pd.Series(p, index=tiles[ID]).reindex(test[ID]).to_numpy() for p in preds]
        ids, target = test[ID].to_numpy(), models.predict(test, preds)
        steps.append(_step(f"tabular models ({len(models.members)} member(s), {len(preds)} image feature(s))",
                           len(test), time.perf_counter() - start))
    else:
        ids, target = tiles[ID].to_numpy(), np.mean(preds, axis=0)
    sub = pd.DataFrame({ID: ids, TARGET: np.clip(target, 0.0, 1.0)})
    _check(sub, data / "sample_submission.csv", out)
    write_csv(out, ISIC2024.user_table(sub))
    _projection(steps, len(sub), bundle, data, out)
    log.info("infer: %d tiles -> %s (%s)", len(sub), out, ", ".join(
        [f"{len(images)} image model(s)"] + (["tabular models"] if models is not None else [])))
    return sub


def _check(sub: pd.DataFrame, sample_path: Path, out: Path) -> None:
    if not sample_path.is_file():
        log.info("infer: no %s to check the submission against", sample_path)
        return
    from melanoma.data.submission import read_sample_submission, validate_submission

    validate_submission(sub, read_sample_submission(sample_path), str(out), ISIC2024.id_column)
    log.info("infer: the submission matches %s (%d ids)", sample_path, len(sub))
