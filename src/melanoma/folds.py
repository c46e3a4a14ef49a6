"""Patient-level folds: no patient in two folds, target rate balanced across folds.

Folds are computed once, saved as `folds.csv` (image_name, patient_id, target, fold) and read by every later
stage, so all models are validated on the same split and their OOF predictions can be blended.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from melanoma.data import ID, PATIENT, TARGET, check_unique_ids, read_train
from melanoma.config import Config, save_run_info
from melanoma.errors import input_error
from melanoma.files import write_csv

log = logging.getLogger(__name__)

FOLD_COLUMNS = [ID, PATIENT, TARGET, "fold"]


def assign_folds(train: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Return image_name, patient_id, target, fold for every training row, grouped by patient."""
    n_patients = train[PATIENT].nunique()
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n_patients < n_folds:
        raise ValueError(f"{n_patients} patients cannot fill {n_folds} folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(train), -1, dtype=np.int64)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(train)), train[TARGET], train[PATIENT])):
        fold[val_idx] = k
    out = train[[ID, PATIENT, TARGET]].copy()
    out["fold"] = fold
    return out.reset_index(drop=True)


def fold_summary(folds: pd.DataFrame) -> pd.DataFrame:
    g = folds.groupby("fold")
    return pd.DataFrame({
        "images": g.size(),
        "patients": g[PATIENT].nunique(),
        "positives": g[TARGET].sum(),
        "positive_rate": g[TARGET].mean().round(4),
    })


def make_folds(cfg: Config, data_dir: str | Path, out: str | Path) -> pd.DataFrame:
    """The `folds` stage: DATA/train.csv -> folds.csv (cfg.n_folds folds, cfg.seed)."""
    folds = assign_folds(read_train(data_dir), cfg.n_folds, cfg.seed)
    out = Path(out)
    write_csv(out, folds)
    save_run_info(out.parent, cfg, "folds", prefix=f"{out.stem}.")
    log.info("folds: %d images, %d patients -> %s\n%s", len(folds), folds[PATIENT].nunique(), out,
             fold_summary(folds).to_string())
    return folds


def read_folds(path: str | Path, train: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read folds.csv; when `train` is given, check it covers exactly the training images."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "folds file not found (run `melanoma folds` first)")
    folds = pd.read_csv(path, dtype={ID: "string", PATIENT: "string"})
    for col in FOLD_COLUMNS:
        if col not in folds.columns:
            raise input_error(path, f"missing column '{col}'", 1)
    check_unique_ids(folds, path)
    if train is not None:
        extra = sorted(set(folds[ID]) - set(train[ID]))
        missing = sorted(set(train[ID]) - set(folds[ID]))
        if extra or missing:
            detail = f"{len(missing)} training images have no fold (e.g. {missing[0]})" if missing else \
                f"{len(extra)} images are not in train.csv (e.g. {extra[0]})"
            raise input_error(path, f"does not match train.csv: {detail}")
    return folds
