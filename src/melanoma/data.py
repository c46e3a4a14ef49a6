"""Reading the competition layout: `train.csv`, `test.csv`, `jpeg/train/*.jpg`, `jpeg/test/*.jpg`.

All CSV validation lives here, so every stage reports bad input the same way: one line naming the file and the
line (the header is line 1). Metadata columns may be absent or empty (the ISIC archive has no patient id or
site): a missing patient id makes each image its own patient, and missing metadata stays missing (NaN).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.errors import input_error

log = logging.getLogger(__name__)

ID = "image_name"
PATIENT = "patient_id"
TARGET = "target"
SEX = "sex"
AGE = "age_approx"
SITE = "anatom_site_general_challenge"
DIAGNOSIS = "diagnosis"
META_COLUMNS = (SEX, AGE, SITE)
STRING_COLUMNS = (ID, PATIENT, SEX, SITE, DIAGNOSIS)


def csv_line(index: int) -> int:
    """The file line of a data row read with a default RangeIndex (header is line 1)."""
    return int(index) + 2


def check_unique_ids(df: pd.DataFrame, path: str | Path) -> None:
    """An InputError at the first repeated image_name of a CSV read with a default RangeIndex."""
    dup = df[ID].duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((df[ID] == df[ID].iloc[i]).to_numpy())[0])
        raise input_error(
            path, f"duplicate image_name '{df[ID].iloc[i]}' (first seen on line {csv_line(first)})", csv_line(i)
        )


def read_table(path: str | Path, split: str) -> pd.DataFrame:
    """Read and validate train.csv (split='train') or test.csv (split='test')."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "file not found")
    try:
        df = pd.read_csv(path, dtype={c: "string" for c in STRING_COLUMNS})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise input_error(path, f"not a readable CSV: {e}") from None
    required = [ID, TARGET] if split == "train" else [ID]
    for col in required:
        if col not in df.columns:
            raise input_error(path, f"missing column '{col}' (columns: {', '.join(map(str, df.columns))})", 1)

    names = df[ID].str.strip()
    for i in np.flatnonzero(names.isna().to_numpy() | (names == "").fillna(True).to_numpy()):
        raise input_error(path, "empty image_name", csv_line(i))
    df[ID] = names
    check_unique_ids(df, path)

    if split == "train":
        target = pd.to_numeric(df[TARGET], errors="coerce")
        bad = ~target.isin([0, 1])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise input_error(path, f"target must be 0 or 1, got {df[TARGET].iloc[i]!r}", csv_line(i))
        df[TARGET] = target.astype("int64")
        if df[TARGET].nunique() < 2:
            raise input_error(path, "target has a single class; AUC needs both 0 and 1")

    _normalise_metadata(df, path)
    return df


def _normalise_metadata(df: pd.DataFrame, path: Path) -> None:
    """Fill absent columns with missing values and patient ids with one patient per image."""
    for col in (SEX, SITE, DIAGNOSIS):
        if col not in df.columns:
            df[col] = pd.Series(pd.NA, index=df.index, dtype="string")
        df[col] = df[col].str.strip().str.lower().replace("", pd.NA)
    if AGE not in df.columns:
        df[AGE] = np.nan
    age = pd.to_numeric(df[AGE], errors="coerce")
    bad = age.isna() & df[AGE].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise input_error(path, f"age_approx is not a number: {df[AGE].iloc[i]!r}", csv_line(i))
    df[AGE] = age.astype("float64")

    if PATIENT not in df.columns:
        df[PATIENT] = pd.Series(pd.NA, index=df.index, dtype="string")
    pid = df[PATIENT].str.strip().replace("", pd.NA)
    missing = pid.isna()
    if missing.any():
        # Without a patient id the only safe assumption is one patient per image.
        log.warning("%s: patient_id missing for %d of %d rows: each such image is its own patient",
                    path, int(missing.sum()), len(df))
        pid = pid.where(~missing, "IMG_" + df[ID])
    df[PATIENT] = pid


def read_train(data_dir: str | Path) -> pd.DataFrame:
    return read_table(Path(data_dir) / "train.csv", "train")


def read_test(data_dir: str | Path) -> pd.DataFrame:
    return read_table(Path(data_dir) / "test.csv", "test")


def image_path(data_dir: str | Path, split: str, name: str) -> Path:
    return Path(data_dir) / "jpeg" / split / f"{name}.jpg"


def check_images_exist(data_dir: str | Path, split: str, df: pd.DataFrame) -> list[Path]:
    """Paths of every listed image; the first one that is absent is an error naming its CSV line."""
    paths = [image_path(data_dir, split, n) for n in df[ID]]
    for i, p in enumerate(paths):
        if not p.is_file():
            raise input_error(Path(data_dir) / f"{split}.csv", f"image {p} is listed but does not exist",
                              csv_line(df.index[i]))
    return paths
