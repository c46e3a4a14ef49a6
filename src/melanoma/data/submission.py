"""A submission against the competition's sample submission: the same ids, targets in [0, 1].

Used by `blend` before it writes the submission, and by `melanoma submit` before anything is uploaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.schema import ID, TARGET, check_unique_ids, csv_line
from melanoma.errors import SubmissionError, input_error

SUBMISSION_COLUMNS = [ID, TARGET]


def example_id(values: pd.Series | pd.Index) -> str:
    first = values.iloc[0] if isinstance(values, pd.Series) else values[0]
    return repr(str(first))


def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, name: str = "submission") -> None:
    """Raise SubmissionError (one line) unless `sub` has exactly the sample's ids and valid targets.

    Checks: columns exactly image_name,target; no missing or duplicated image_name; no id of the sample
    missing; no id outside the sample; every target a finite number in [0, 1]. Row order is not checked
    (Kaggle joins by image_name).
    """
    cols = [str(c) for c in sub.columns]
    if cols != SUBMISSION_COLUMNS:
        raise SubmissionError(
            f"{name}: columns must be exactly {','.join(SUBMISSION_COLUMNS)}, got {','.join(cols) or '(none)'}"
        )
    if ID not in sample.columns:
        raise SubmissionError(f"{name}: the sample submission has no '{ID}' column")
    no_id = sub[ID].isna()
    if no_id.any():
        raise SubmissionError(f"{name}: {int(no_id.sum())} row(s) have no image_name")
    ids = sub[ID].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise SubmissionError(
            f"{name}: {len(dup)} duplicate image_name value(s), e.g. {example_id(dup)}"
        )
    sample_ids = sample[ID].dropna().astype(str)
    missing = sample_ids[~sample_ids.isin(ids)]
    if len(missing):
        raise SubmissionError(
            f"{name}: {len(missing)} of the {len(sample_ids)} ids of the sample submission are missing, "
            f"e.g. {example_id(missing)}"
        )
    extra = ids[~ids.isin(sample_ids)]
    if len(extra):
        raise SubmissionError(
            f"{name}: {len(extra)} image_name value(s) are not in the sample submission, e.g. {example_id(extra)}"
        )
    raw = sub[TARGET]
    values = pd.to_numeric(raw, errors="coerce")
    not_number = values.isna() & raw.notna()
    if not_number.any():
        i = int(np.flatnonzero(not_number.to_numpy())[0])
        raise SubmissionError(
            f"{name}: {int(not_number.sum())} target(s) are not numbers, "
            f"e.g. {raw.iloc[i]!r} for {ids.iloc[i]!r}"
        )
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    nan = np.isnan(v)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise SubmissionError(f"{name}: {int(nan.sum())} target(s) are NaN/missing, e.g. for {ids.iloc[i]!r}")
    inf = np.isinf(v)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise SubmissionError(f"{name}: {int(inf.sum())} target(s) are infinite, e.g. for {ids.iloc[i]!r}")
    out = (v < 0.0) | (v > 1.0)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise SubmissionError(
            f"{name}: {int(out.sum())} target(s) are outside [0, 1], e.g. {float(v[i])!r} for {ids.iloc[i]!r}"
        )


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """Read the competition's sample_submission.csv (image_name,target): the ids and order to submit."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "sample submission not found")
    try:
        df = pd.read_csv(path, dtype={ID: "string"})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise input_error(path, f"not a readable CSV: {e}") from None
    for col in SUBMISSION_COLUMNS:
        if col not in df.columns:
            raise input_error(path, f"missing column '{col}' (expected {','.join(SUBMISSION_COLUMNS)})", 1)
    if len(df) == 0:
        raise input_error(path, "no rows: the sample submission lists the test ids to predict")
    empty = df[ID].isna() | (df[ID].str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise input_error(path, "empty image_name", csv_line(i))
    check_unique_ids(df, path)
    return df[SUBMISSION_COLUMNS].reset_index(drop=True)


def check_submission_file(path: Path, sample_path: str | Path) -> int:
    """Read a submission CSV and check it against the sample submission (one-line errors); the id count."""
    if path.stat().st_size == 0:
        raise input_error(path, "empty file (0 bytes): expected a CSV with image_name,target rows")
    from melanoma.data.runs import read_predictions

    sample = read_sample_submission(sample_path)
    # The rows first (ids, finite targets in [0, 1], with the line), then the file against the sample.
    sub = read_predictions(path, TARGET)
    validate_submission(sub, sample, name=str(path))
    return len(sample)
