"""A submission against the competition's sample submission: the same ids, targets in [0, 1].

Used by `blend` before it writes the submission, and by `melanoma submit` before anything is uploaded. The
sample names the competition's id column (image_name for SIIM-ISIC 2020, isic_id for ISIC 2024); inside, the
tables use the package's (image_name), and the messages the competition's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.competition import ID_COLUMNS, internal_ids, profile_of_columns
from melanoma.data.schema import ID, TARGET, check_unique_ids, csv_line, read_csv_file
from melanoma.errors import SubmissionError, input_error

SUBMISSION_COLUMNS = [ID, TARGET]


def example_id(values: pd.Series | pd.Index) -> str:
    first = values.iloc[0] if isinstance(values, pd.Series) else values[0]
    return repr(str(first))


def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, name: str = "submission",
                        id_name: str = ID) -> None:
    """Raise SubmissionError (one line) unless `sub` has exactly the sample's ids and valid targets.

    Checks: columns exactly image_name,target (the package's names; `id_name` is the competition's, for the
    messages); no missing or duplicated id; no id of the sample missing; no id outside the sample; every target
    a finite number in [0, 1]. Row order is not checked (Kaggle joins by id).
    """
    cols = [str(c) for c in sub.columns]
    if cols != SUBMISSION_COLUMNS:
        raise SubmissionError(
            f"{name}: columns must be exactly {id_name},{TARGET}, got {','.join(cols) or '(none)'}"
        )
    if ID not in sample.columns:
        raise SubmissionError(f"{name}: the sample submission has no '{id_name}' column")
    no_id = sub[ID].isna()
    if no_id.any():
        raise SubmissionError(f"{name}: {int(no_id.sum())} row(s) have no {id_name}")
    ids = sub[ID].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise SubmissionError(
            f"{name}: {len(dup)} duplicate {id_name} value(s), e.g. {example_id(dup)}"
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
            f"{name}: {len(extra)} {id_name} value(s) are not in the sample submission, e.g. {example_id(extra)}"
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


def sample_id_name(sample_path: str | Path) -> str:
    """The id column a sample submission names (isic_id for ISIC 2024, else image_name)."""
    try:
        columns = pd.read_csv(sample_path, nrows=0).columns
    except (OSError, ValueError):
        return ID
    return profile_of_columns(columns).id_column


def read_sample_submission(path: str | Path) -> pd.DataFrame:
    """Read the competition's sample_submission.csv (image_name,target, or ISIC 2024's isic_id,target): the ids
    and order to submit, under the package's column names."""
    path = Path(path)
    raw = read_csv_file(path, {c: "string" for c in ID_COLUMNS}, "sample submission not found")
    shown = profile_of_columns(raw.columns).id_column
    df = internal_ids(raw)
    for col, as_named in ((ID, shown), (TARGET, TARGET)):
        if col not in df.columns:
            raise input_error(path, f"missing column '{as_named}' (expected {shown},{TARGET})", 1)
    if len(df) == 0:
        raise input_error(path, "no rows: the sample submission lists the test ids to predict")
    empty = df[ID].isna() | (df[ID].str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise input_error(path, f"empty {shown}", csv_line(i))
    check_unique_ids(df, path, shown)
    return df[SUBMISSION_COLUMNS].reset_index(drop=True)


def check_submission_file(path: Path, sample_path: str | Path) -> int:
    """Read a submission CSV and check it against the sample submission (one-line errors); the id count."""
    if path.stat().st_size == 0:
        raise input_error(path, "empty file (0 bytes): expected a CSV with image_name,target rows")
    from melanoma.data.runs import read_predictions

    sample = read_sample_submission(sample_path)
    # The rows first (ids, finite targets in [0, 1], with the line), then the file against the sample.
    sub = read_predictions(path, TARGET)
    validate_submission(sub, sample, name=str(path), id_name=sample_id_name(sample_path))
    return len(sample)
