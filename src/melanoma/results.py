"""The outputs every model stage writes, and reads back for blending.

A run folder holds:
- `oof.csv`: image_name, target, pred, fold (one row per training image predicted out of fold);
- `test_pred.csv`: image_name, target (the test prediction, mean over the folds trained);
- `metrics.json`: oof_auc overall and fold_auc per fold, plus stage-specific figures;
- `config.yaml` and `run.json` (see melanoma.config.save_run_info).
Predictions are always joined by image_name, never by row order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma.data.schema import ID, TARGET, check_unique_ids
from melanoma.errors import input_error
from melanoma.files import read_json, write_csv, write_json

OOF_COLUMNS = [ID, TARGET, "pred", "fold"]
OPTIONAL_OOF_COLUMNS = ["pred_plain"]  # the image model's prediction without TTA
TEST_COLUMNS = [ID, TARGET]


def auc(y_true: Any, y_pred: Any) -> float | None:
    """ROC AUC, or None when only one class is present (a tiny fold can have no positive)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return None
    return float(roc_auc_score(y_true, np.asarray(y_pred, dtype=np.float64)))


def oof_metrics(oof: pd.DataFrame) -> dict[str, Any]:
    fold_auc = {str(int(k)): auc(g[TARGET], g["pred"]) for k, g in oof.groupby("fold")}
    return {"oof_auc": auc(oof[TARGET], oof["pred"]), "fold_auc": fold_auc, "n_oof": int(len(oof))}


def write_run(out_dir: str | Path, oof: pd.DataFrame, test_pred: pd.DataFrame,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and write oof.csv, test_pred.csv and metrics.json; return the metrics."""
    out_dir = Path(out_dir)
    oof = oof[OOF_COLUMNS + [c for c in OPTIONAL_OOF_COLUMNS if c in oof.columns]]
    oof = oof.sort_values(ID).reset_index(drop=True)
    test_pred = test_pred[TEST_COLUMNS].sort_values(ID).reset_index(drop=True)
    for name, df, col in (("oof", oof, "pred"), ("test_pred", test_pred, TARGET)):
        values = df[col].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{name} predictions contain NaN or infinity")
        if df[ID].duplicated().any():
            raise ValueError(f"{name} predictions repeat an image_name")
    metrics = oof_metrics(oof)
    metrics.update(extra or {})
    write_csv(out_dir / "oof.csv", oof)
    write_csv(out_dir / "test_pred.csv", test_pred)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a run folder's oof.csv and test_pred.csv, checking their columns."""
    run_dir = Path(run_dir)
    frames = []
    for name, cols in (("oof.csv", OOF_COLUMNS), ("test_pred.csv", TEST_COLUMNS)):
        path = run_dir / name
        if not path.is_file():
            raise input_error(path, "not found: is this a run folder written by `melanoma train` or `tabular`?")
        df = pd.read_csv(path, dtype={ID: "string"})
        for col in cols:
            if col not in df.columns:
                raise input_error(path, f"missing column '{col}'", 1)
        check_unique_ids(df, path)
        frames.append(df)
    return frames[0], frames[1]


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    return read_json(path) if path.is_file() else {}


def fmt_auc(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
