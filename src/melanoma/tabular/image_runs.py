"""Image runs as features of the tabular stage (`tabular.image_runs`, `tabular --image-runs RUN [RUN ...]`).

Each run folder's oof.csv (id, target, pred, fold) and test_pred.csv (id, target: the prediction), as `train`
writes them (isic_id or image_name), are joined to the training and test rows by id, never by row order. Run i
gives three columns: `image_run{i}` (its prediction), `image_run{i}_pz` and `image_run{i}_prank` (its z-score and
percentile rank among the patient's tiles: a lesion the image model finds odder than the patient's others).
Training rows take the out-of-fold prediction and are normalised among the training rows of their patient
(a patient lies in one fold, so every value of a patient comes from the same fold's model); test rows take the
test prediction, normalised among the test rows.

Refused, in one line naming the file (and its line where there is one):
- a run that lacks a training id of folds.csv or a test id: a feature missing for some rows means something
  else for them;
- a run whose fold of an id differs from folds.csv: its out-of-fold prediction of a tabular training row would
  come from a model that saw the tabular validation fold's labels, and the stacked model's validation score
  would be optimistic (train the image run on the same folds.csv);
- a run whose target of an id differs from the training file's (another train file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.data.runs import headline, read_metrics, read_run
from melanoma.data.schema import ID, PATIENT, TARGET, csv_line
from melanoma.errors import ConfigError, input_error
from melanoma.tabular.features import IMAGE_RUN_PREFIX
from melanoma.tabular.isic2024 import patient_codes, within_patient

log = logging.getLogger("melanoma.tabular")


def column(i: int) -> str:
    return f"{IMAGE_RUN_PREFIX}{i}"


def image_run_columns(n: int) -> list[str]:
    """The feature names of n image runs."""
    return [f"{column(i)}{suffix}" for i in range(n) for suffix in ("", "_pz", "_prank")]


def _first(ids: pd.Index) -> str:
    return repr(str(ids[0]))


def _check(run: Path, oof: pd.DataFrame, test: pd.DataFrame, train: pd.DataFrame, test_ids: pd.Series,
           folds_path: str | Path) -> None:
    """The one-line refusals of the module docstring."""
    missing = pd.Index(train[ID]).difference(pd.Index(oof[ID]))
    if len(missing):
        raise input_error(run / "oof.csv", f"lacks {len(missing)} of the {len(train)} training ids of {folds_path}, "
                                           f"e.g. {_first(missing)}: an image run used as features must predict "
                                           "every training image out of fold (all folds trained)")
    missing = pd.Index(test_ids).difference(pd.Index(test[ID]))
    if len(missing):
        raise input_error(run / "test_pred.csv", f"lacks {len(missing)} of the {len(test_ids)} test ids, e.g. "
                                                 f"{_first(missing)}: was the run made on this data folder?")
    mine = oof.reset_index().merge(train[[ID, TARGET, "fold"]], on=ID, suffixes=("", "_train"))
    for col, what in (("fold", "its fold"), (TARGET, "its target")):
        other = pd.to_numeric(mine[col], errors="coerce")
        differ = (other != mine[f"{col}_train"]).to_numpy()
        if not differ.any():
            continue
        i = int(np.flatnonzero(differ)[0])
        row = mine.iloc[i]
        where = f"{folds_path} says fold {row[f'{col}_train']}" if col == "fold" else \
            f"the training file says target {row[f'{col}_train']}"
        fix = ("its out-of-fold predictions come from other folds and as features would leak the validation "
               f"folds' labels: train the image run on {folds_path}") if col == "fold" else \
            "the run was trained on another training file"
        raise input_error(run / "oof.csv", f"{what} for {row[ID]!r} is {row[col]} where {where} "
                                           f"({int(differ.sum())} such id(s)): {fix}", csv_line(int(row['index'])))


def normalised(values: dict[str, np.ndarray], index: pd.Index, patients: pd.Series) -> pd.DataFrame:
    num = pd.DataFrame(values, index=index, dtype=np.float64)
    z, rank = within_patient(num, patient_codes(patients))
    return pd.concat([num.astype("float32"), z, rank], axis=1)


def image_run_features(run_dirs: list[str | Path], train: pd.DataFrame, test: pd.DataFrame,
                       folds_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """(training features, test features, what metrics.json says of each run) for the image runs; the feature
    tables are indexed by id (train: image_name, target, fold, patient_id; test: image_name, patient_id)."""
    runs = [Path(r) for r in run_dirs]
    seen = [str(r.resolve()) for r in runs]
    if len(set(seen)) < len(seen):
        twice = next(str(r) for r, s in zip(runs, seen) if seen.count(s) > 1)
        raise ConfigError(f"tabular.image_runs: {twice} is listed twice; each image run gives its features once")
    train_values, test_values, info = {}, {}, []
    for i, run in enumerate(runs):
        oof, pred = read_run(run)
        _check(run, oof, pred, train, test[ID], folds_path)
        train_values[column(i)] = train[ID].map(oof.set_index(ID)["pred"]).to_numpy(dtype=np.float64)
        test_values[column(i)] = test[ID].map(pred.set_index(ID)[TARGET]).to_numpy(dtype=np.float64)
        metric, value = headline(read_metrics(run))
        info.append({"path": str(run), "column": column(i), "n_oof": int(len(oof)), "n_test": int(len(pred)),
                     "metric": metric, f"oof_{metric}": value})
        log.info("tabular: image run %s -> features %s, %s_pz, %s_prank", run, column(i), column(i), column(i))
    return (normalised(train_values, pd.Index(train[ID]), train[PATIENT]),
            normalised(test_values, pd.Index(test[ID]), test[PATIENT]), info)
