"""The outputs every model stage writes, and reads back for blending.

A run folder holds:
- `oof.csv`: image_name, target, pred, fold (one row per training image predicted out of fold);
- `test_pred.csv`: image_name, target (the test prediction, mean over the folds trained);
  (ISIC 2024: isic_id instead of image_name, the competition's id column: melanoma.data.competition);
- `metrics.json`: oof_auc overall and fold_auc per fold, the competition's metric beside them (`metric`:
  "pauc" adds oof_pauc and fold_pauc), plus stage-specific figures;
- `config.yaml` and `run.json` (see melanoma.config.save_run_info).
Predictions are always joined by image_name, never by row order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.data.schema import ID, TARGET, check_unique_ids, csv_line, read_csv_file
from melanoma.errors import input_error
from melanoma.files import read_json, write_csv, write_json
from melanoma.data.competition import ID_COLUMNS, SIIM2020, Competition, internal_ids, profile_of_columns
from melanoma.scoring import METRICS

OOF_COLUMNS = [ID, TARGET, "pred", "fold"]
OPTIONAL_OOF_COLUMNS = ["pred_plain"]  # the image model's prediction without TTA
TEST_COLUMNS = [ID, TARGET]


def oof_metrics(oof: pd.DataFrame, competition: Competition = SIIM2020) -> dict[str, Any]:
    """AUC overall and per fold; for a competition scored otherwise (ISIC 2024: pAUC) its metric as well, as
    `oof_<metric>` and `fold_<metric>`, named by `metric` (the headline every later stage reads)."""
    out: dict[str, Any] = {"metric": competition.metric}
    for name in dict.fromkeys(("auc", competition.metric)):
        score = METRICS[name]
        out[f"oof_{name}"] = score(oof[TARGET], oof["pred"])
        out[f"fold_{name}"] = {str(int(k)): score(g[TARGET], g["pred"]) for k, g in oof.groupby("fold")}
    out["n_oof"] = int(len(oof))
    return out


def headline(metrics: dict[str, Any]) -> tuple[str, float | None]:
    """(metric, OOF value) of a run's metrics.json: its competition's metric, AUC for runs that name none."""
    metric = metrics.get("metric", "auc")
    return metric, metrics.get(f"oof_{metric}")


def write_run(out_dir: str | Path, oof: pd.DataFrame, test_pred: pd.DataFrame,
              extra: dict[str, Any] | None = None, competition: Competition = SIIM2020) -> dict[str, Any]:
    """Validate and write oof.csv, test_pred.csv (with the competition's id column) and metrics.json; return
    the metrics."""
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
    metrics = oof_metrics(oof, competition)
    metrics.update(extra or {})
    write_csv(out_dir / "oof.csv", competition.user_table(oof))
    write_csv(out_dir / "test_pred.csv", competition.user_table(test_pred))
    write_json(out_dir / "metrics.json", metrics)
    return metrics


# How a predictions file's values are read: probabilities in [0, 1], or logits (any finite value) where the run's
# metrics.json says so with "pred_scale": "logit".
PRED_SCALES = ("probability", "logit")


def read_predictions(path: str | Path, value: str, *, target: bool = False, required: tuple[str, ...] = (),
                     scale: str = "probability") -> pd.DataFrame:
    """The one reader of predictions files (oof.csv, test_pred.csv, submission.csv).

    Checks, each stopping with one line naming the file and the first bad row: readable CSV, the columns
    (image_name, `value`, target when `target`, `required`), non-empty unique ids, a finite `value` in [0, 1]
    (any finite value for scale "logit"), a target of 0 or 1. Returns the table with image_name as strings,
    `value` as float64 and the target as int64 (other columns as read)."""
    path = Path(path)
    df = internal_ids(read_csv_file(path, {c: "string" for c in ID_COLUMNS}, "not found"))
    for col in (ID, *((TARGET,) if target else ()), value, *required):
        if col not in df.columns:
            raise input_error(path, f"missing column '{col}'", 1)
    empty = (df[ID].isna() | (df[ID].str.strip() == "")).to_numpy(dtype=bool)
    if empty.any():
        raise input_error(path, "empty image_name", csv_line(int(np.flatnonzero(empty)[0])))
    check_unique_ids(df, path)
    df[value] = _finite(df, value, path)
    if scale == "probability":
        _within(df, value, path, lambda v: (v >= 0.0) & (v <= 1.0), "a probability in [0, 1] (a run that stores "
                "logits says so in its metrics.json: \"pred_scale\": \"logit\")")
    elif scale not in PRED_SCALES:
        raise input_error(path, f"pred_scale {scale!r} is not one of {', '.join(PRED_SCALES)}")
    if target and value != TARGET:
        df[TARGET] = _finite(df, TARGET, path)
        _within(df, TARGET, path, lambda v: (v == 0.0) | (v == 1.0), "0 or 1")
        df[TARGET] = df[TARGET].astype("int64")
    return df


def _finite(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, f"{col} must be a finite number, got {_shown(df[col].iloc[i])}", csv_line(i))
    return values


def _within(df: pd.DataFrame, col: str, path: Path, ok, what: str) -> None:
    bad = ~ok(df[col].to_numpy(dtype=np.float64))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, f"{col} must be {what}, got {_shown(df[col].iloc[i])} for "
                                f"{df[ID].iloc[i]!s} ({int(bad.sum())} such row(s))", csv_line(i))


def _shown(value: Any) -> str:
    """A cell as the user wrote it: 7.5, not np.float64(7.5)."""
    return repr(value.item()) if hasattr(value, "item") else repr(value)


def pred_scale(run_dir: str | Path) -> str:
    """"probability" unless the run's metrics.json says "pred_scale": "logit" (a damaged file says nothing)."""
    try:
        scale = read_metrics(run_dir).get("pred_scale", "probability")
    except (OSError, ValueError, AttributeError):
        return "probability"
    return scale if isinstance(scale, str) else "probability"


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run folder's oof.csv (image_name, target, pred, fold) and test_pred.csv (image_name, target: the
    prediction), validated by read_predictions."""
    run_dir = Path(run_dir)
    for name in ("oof.csv", "test_pred.csv"):
        if not (run_dir / name).is_file():
            raise input_error(run_dir / name, "not found: is this a run folder written by `melanoma train` or "
                                              "`tabular`?")
    scale = pred_scale(run_dir)
    oof = read_predictions(run_dir / "oof.csv", "pred", target=True, required=("fold",), scale=scale)
    test = read_predictions(run_dir / "test_pred.csv", TARGET, scale=scale)
    return oof, test


def run_competition(run_dir: str | Path) -> Competition:
    """The competition a run folder belongs to, by the id column of its oof.csv (siim2020 when it names neither
    or cannot be read: read_run says why)."""
    try:
        columns = pd.read_csv(Path(run_dir) / "oof.csv", nrows=0).columns
    except (OSError, ValueError):
        return SIIM2020
    return profile_of_columns(columns)


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    return read_json(path) if path.is_file() else {}


