"""Reading the competition layout: `train.csv`, `test.csv`, `jpeg/train/*.jpg`, `jpeg/test/*.jpg` (SIIM-ISIC 2020),
or `train-metadata.csv`, `test-metadata.csv` and their HDF5 tiles (ISIC 2024): the competition's profile
(melanoma.data.competition) names the files and columns, and the tables come out in the package's own names.

All CSV validation lives here, so every stage reports bad input the same way: one line naming the file, the
line (the header is line 1), the value and the fix. The metadata columns (sex, age_approx,
anatom_site_general_challenge) must exist, since a misspelt one would silently become all-missing, but their
cells may be empty (missing). Values must be the competition's: sex male/female, age 0-120, a site from its
vocabulary. A patient_id column is required unless `data.patient_id: per_image` says that each image is its
own patient (the ISIC archive has no ids); empty ids always mean one patient per image.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.competition import SIIM2020, Competition, detect
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
# Read as text and converted here, so a bad value is reported as written (not as np.float64(...)).
STRING_COLUMNS = (ID, PATIENT, SEX, SITE, DIAGNOSIS, TARGET, AGE)
SEXES = ("male", "female")
# The competition's anatom_site_general_challenge values (train.csv and test.csv of SIIM-ISIC 2020).
SITES = ("head/neck", "upper extremity", "lower extremity", "torso", "palms/soles", "oral/genital")
AGE_RANGE = (0, 120)
PATIENT_POLICIES = ("required", "per_image")


def csv_line(index: int) -> int:
    """The file line of a data row read with a default RangeIndex (header is line 1)."""
    return int(index) + 2


def check_unique_ids(df: pd.DataFrame, path: str | Path, shown: str = ID) -> None:
    """An InputError at the first repeated image_name of a CSV read with a default RangeIndex (`shown`: the
    column's name in the user's file)."""
    dup = df[ID].duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((df[ID] == df[ID].iloc[i]).to_numpy())[0])
        raise input_error(
            path, f"duplicate {shown} '{df[ID].iloc[i]}' (first seen on line {csv_line(first)})", csv_line(i)
        )


def plain_name_problem(name: str) -> str | None:
    """Why an image_name is not a plain file name (it becomes jpeg/<split>/<name>.jpg), or None.

    A separator, `..` or an absolute path would make a stage read outside jpeg/; control characters would
    garble logs and file names.
    """
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if name in (".", "..") or name.startswith(".."):
        return "is a relative path"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "holds a control character"
    if len(name) > 200:
        return "is longer than 200 characters"
    return None


def _columns_hint(df: pd.DataFrame, col: str) -> str:
    """'did you mean Sex?' for a misspelt column, else the columns there are."""
    close = difflib.get_close_matches(col.lower(), [str(c).lower() for c in df.columns], n=1, cutoff=0.6)
    if close:
        actual = next(str(c) for c in df.columns if str(c).lower() == close[0])
        return f"(found '{actual}': rename it to '{col}')"
    return f"(columns: {', '.join(map(str, df.columns))}; add it, with empty cells where unknown)"


def _first_bad(path: Path, bad: pd.Series | np.ndarray, message) -> None:
    """An InputError at the first True of `bad` (row order), with message(i) for that row."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise input_error(path, message(i), csv_line(i))


def read_csv_file(path: str | Path, dtype: dict[str, str], not_found: str = "file not found") -> pd.DataFrame:
    """A user's CSV file, or one line naming it: not there, or not readable as CSV (the parser's reason)."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, not_found)
    try:
        # low_memory=False: the types of a column are inferred from all of it, not chunk by chunk (ISIC 2024's
        # mostly empty mel_mitotic_index would otherwise come out mixed, with a DtypeWarning)
        return pd.read_csv(path, dtype=dtype, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise input_error(path, f"not a readable CSV: {' '.join(str(e).split())}") from None


def read_table(path: str | Path, split: str, patient_id: str = "required",
               competition: Competition = SIIM2020) -> pd.DataFrame:
    """Read and validate train.csv (split='train') or test.csv (split='test'), or the competition's files.

    patient_id: required (a missing patient_id column is an error) or per_image (then each image is its own
    patient), as `data.patient_id` says. The competition's id and site columns come out as image_name and
    anatom_site_general_challenge, its site values as the package's six (errors name the file's own columns).
    """
    path = Path(path)
    renames = {competition.id_column: ID, competition.site_column: SITE}
    df = read_csv_file(path, {c: "string" for c in (*STRING_COLUMNS, *renames)})
    df = competition.internal_table(df)
    required = [ID, TARGET, *META_COLUMNS] if split == "train" else [ID, *META_COLUMNS]
    if patient_id == "required":
        required.insert(1, PATIENT)
    for col in required:
        if col == PATIENT and col not in df.columns:
            raise input_error(path, f"missing column '{col}' {_columns_hint(df, col)}: without patient ids a "
                                    "patient's images can land in several folds; add the column, or set "
                                    "data.patient_id: per_image to make each image its own patient", 1)
        if col not in df.columns:
            shown = {v: k for k, v in renames.items()}.get(col, col)
            raise input_error(path, f"missing column '{shown}' {_columns_hint(df, shown)}", 1)
    if df.empty:
        raise input_error(path, "no rows: it lists no images")

    names = df[ID].str.strip()
    idc = competition.id_column
    _first_bad(path, names.isna() | (names == "").fillna(True), lambda i: f"empty {idc}")
    problems = [plain_name_problem(n) for n in names]
    _first_bad(path, [p is not None for p in problems], lambda i: (
        f"{idc} {names.iloc[i]!r} {problems[i]}: it must be a plain file name like ISIC_0000000"))
    df[ID] = names
    check_unique_ids(df, path, idc)

    if split == "train":
        target = pd.to_numeric(df[TARGET].str.strip(), errors="coerce")
        _first_bad(path, ~target.isin([0, 1]), lambda i: f"target must be 0 or 1, got {df[TARGET].iloc[i]!r}")
        df[TARGET] = target.astype("int64")
        if df[TARGET].nunique() < 2:
            raise input_error(path, "target has a single class; AUC needs both 0 and 1")

    _normalise_metadata(df, path, competition)
    return df


def _normalise_metadata(df: pd.DataFrame, path: Path, competition: Competition) -> None:
    """Check and normalise sex, age and site (empty = missing); fill empty patient ids one per image."""
    for col, allowed in ((SEX, SEXES), (SITE, SITES), (DIAGNOSIS, None)):
        if col not in df.columns:
            df[col] = pd.Series(pd.NA, index=df.index, dtype="string")
        raw = df[col].str.strip()
        df[col] = raw.str.lower().replace("", pd.NA)
        if allowed is None:
            continue
        shown = competition.site_column if col == SITE else col
        _first_bad(path, df[col].notna() & ~df[col].isin(allowed), lambda i: (
            f"{shown} {raw.iloc[i]!r} is not one of {', '.join(allowed)}: use one of them, or leave it empty "
            "for missing"))
    text = df[AGE].str.strip()
    age = pd.to_numeric(text, errors="coerce")
    _first_bad(path, age.isna() & text.notna() & (text != ""), lambda i: (
        f"age_approx is not a number: {df[AGE].iloc[i]!r} (leave it empty for missing)"))
    lo, hi = AGE_RANGE
    _first_bad(path, age.notna() & ((age < lo) | (age > hi)), lambda i: (
        f"age_approx {df[AGE].iloc[i].strip()} is outside {lo}-{hi} years (leave it empty if unknown)"))
    df[AGE] = age.astype("float64")

    if PATIENT not in df.columns:
        log.warning("%s: no patient_id column: each image is its own patient (data.patient_id: per_image)", path)
        df[PATIENT] = pd.Series(pd.NA, index=df.index, dtype="string")
    pid = df[PATIENT].str.strip().replace("", pd.NA)
    missing = pid.isna()
    if missing.any():
        # Without a patient id the only safe assumption is one patient per image.
        log.warning("%s: patient_id missing for %d of %d rows: each such image is its own patient",
                    path, int(missing.sum()), len(df))
        pid = pid.where(~missing, "IMG_" + df[ID])
    df[PATIENT] = pid


def competition_in(data_dir: str | Path, competition: Competition | None) -> Competition:
    """The given profile, else the one whose files are in data_dir (siim2020 when none is)."""
    if competition is not None:
        return competition
    found = detect(data_dir)
    return found[0] if found is not None else SIIM2020


def read_train(data_dir: str | Path, patient_id: str = "required", competition: Competition | None = None
               ) -> pd.DataFrame:
    competition = competition_in(data_dir, competition)
    return read_table(competition.csv_path(data_dir, "train"), "train", patient_id, competition)


def read_test(data_dir: str | Path, patient_id: str = "required", competition: Competition | None = None
              ) -> pd.DataFrame:
    competition = competition_in(data_dir, competition)
    return read_table(competition.csv_path(data_dir, "test"), "test", patient_id, competition)


def image_path(data_dir: str | Path, split: str, name: str, competition: Competition = SIIM2020) -> str:
    """Where one image is: a JPEG file, or a tile in the split's HDF5 file (melanoma.data.hdf5.tile_source)."""
    if competition.images == "hdf5":
        from melanoma.data.hdf5 import tile_source

        return tile_source(competition.image_file(data_dir, split), name)
    return str(Path(data_dir) / "jpeg" / split / f"{name}.jpg")


def check_images_exist(data_dir: str | Path, split: str, df: pd.DataFrame, competition: Competition = SIIM2020
                       ) -> list[str]:
    """Where every listed image is; the first one that is absent is an error naming its CSV line (or, for
    tiles, the HDF5 file and the first id it lacks)."""
    if competition.images == "hdf5":
        from melanoma.data.hdf5 import TileFile

        with TileFile(competition.image_file(data_dir, split)) as tiles:
            tiles.require(df[ID], f"{competition.csv_path(data_dir, split).name}")
        return [image_path(data_dir, split, n, competition) for n in df[ID]]
    paths = [image_path(data_dir, split, n) for n in df[ID]]
    for i, p in enumerate(paths):
        if not Path(p).is_file():
            raise input_error(competition.csv_path(data_dir, split), f"image {p} is listed but does not exist",
                              csv_line(df.index[i]))
    return paths
