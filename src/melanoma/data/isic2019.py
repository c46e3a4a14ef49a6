"""External training data (`prepare --external DIR`): the ISIC 2019 challenge layout or the competition layout.

External images only ever go into train-only shards: they are in every fold's training set, never validated,
never in the OOF predictions. target = melanoma (ISIC 2019: the MEL column). Images of one lesion (ISIC 2019
`lesion_id`) or one patient (competition layout) form one group, and patient ids are prefixed with the
source so they never merge with the competition's patients.

ISIC 2019 layout:
    ISIC_2019_Training_GroundTruth.csv   image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK (one-hot)
    ISIC_2019_Training_Metadata.csv      image, age_approx, anatom_site_general, lesion_id, sex (optional)
    ISIC_2019_Training_Input/IMAGE.jpg
Its sites are mapped to the competition's vocabulary: anterior, posterior and lateral torso -> torso; the
others (head/neck, upper extremity, lower extremity, palms/soles, oral/genital) are the same words.
Diagnoses: MEL melanoma, NV nevus, BKL benign keratosis, and the others by name (appended to the vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma.data.schema import AGE, DIAGNOSIS, ID, PATIENT, SEX, SITE, TARGET, csv_line, image_path, read_train
from melanoma.errors import input_error

ISIC2019_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_META = "ISIC_2019_Training_Metadata.csv"
ISIC2019_IMAGES = "ISIC_2019_Training_Input"
ISIC2019_CLASSES = {"MEL": "melanoma", "NV": "nevus", "BCC": "basal cell carcinoma", "AK": "actinic keratosis",
                    "BKL": "benign keratosis", "DF": "dermatofibroma", "VASC": "vascular lesion",
                    "SCC": "squamous cell carcinoma", "UNK": "unknown"}
SITE_MAP = {"anterior torso": "torso", "posterior torso": "torso", "lateral torso": "torso"}


@dataclass
class ExternalSet:
    source: str  # the `source` field of its records
    csv: Path  # the file its rows (and their line numbers) come from
    rows: pd.DataFrame  # image_name, patient_id, sex, age_approx, site, diagnosis, target, line, path


def read_external(folder: str | Path) -> ExternalSet:
    folder = Path(folder)
    if (folder / ISIC2019_TRUTH).is_file():
        return _read_isic2019(folder)
    if (folder / "train.csv").is_file():
        return _read_competition(folder)
    raise input_error(folder, f"not an external data folder: expected {ISIC2019_TRUTH} (ISIC 2019 layout) or "
                              "train.csv with jpeg/train/ (competition layout)")


def _read_isic2019(folder: Path) -> ExternalSet:
    truth_path = folder / ISIC2019_TRUTH
    try:
        truth = pd.read_csv(truth_path, dtype={"image": "string"})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise input_error(truth_path, f"not a readable CSV: {e}") from None
    for col in ("image", "MEL"):
        if col not in truth.columns:
            raise input_error(truth_path, f"missing column '{col}'", 1)
    classes = [c for c in ISIC2019_CLASSES if c in truth.columns]
    onehot = truth[classes].apply(pd.to_numeric, errors="coerce")
    bad = onehot.isna().any(axis=1) | ~onehot.isin([0, 1]).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise input_error(truth_path, "class columns must be 0 or 1 (or 0.0 / 1.0)", csv_line(i))
    onehot = onehot.astype(int)
    rows = pd.DataFrame({ID: truth["image"].str.strip(), TARGET: onehot["MEL"].to_numpy()})
    hot = onehot.to_numpy()
    rows[DIAGNOSIS] = [ISIC2019_CLASSES[classes[int(np.argmax(r))]] if r.any() else "unknown" for r in hot]
    rows["line"] = [csv_line(i) for i in range(len(rows))]

    meta_path = folder / ISIC2019_META
    meta = pd.read_csv(meta_path, dtype="string") if meta_path.is_file() else pd.DataFrame({"image": []})
    meta = meta.rename(columns={"image": ID, "anatom_site_general": SITE})
    if ID in meta.columns:
        meta[ID] = meta[ID].str.strip()
        rows = rows.merge(meta.drop_duplicates(ID), on=ID, how="left")
    for col in (SEX, SITE, "lesion_id"):
        if col not in rows.columns:
            rows[col] = pd.Series(pd.NA, index=rows.index, dtype="string")
        rows[col] = rows[col].astype("string").str.strip().str.lower().replace("", pd.NA)
    rows[SITE] = rows[SITE].replace(SITE_MAP)
    rows[AGE] = pd.to_numeric(rows[AGE] if AGE in rows.columns else np.nan, errors="coerce").astype("float64")
    lesion = rows["lesion_id"]
    rows[PATIENT] = ("isic2019:" + lesion).where(lesion.notna(), "isic2019:img:" + rows[ID])
    rows["path"] = [str(folder / ISIC2019_IMAGES / f"{n}.jpg") for n in rows[ID]]
    cols = [ID, PATIENT, SEX, AGE, SITE, DIAGNOSIS, TARGET, "line", "path"]
    return ExternalSet("isic2019", truth_path, rows[cols].reset_index(drop=True))


def _read_competition(folder: Path) -> ExternalSet:
    train = read_train(folder)
    source = folder.name.lower() or "external"
    rows = train[[ID, PATIENT, SEX, AGE, SITE, DIAGNOSIS, TARGET]].copy()
    rows[PATIENT] = f"{source}:" + rows[PATIENT]
    rows["line"] = [csv_line(i) for i in train.index]
    rows["path"] = [str(image_path(folder, "train", n)) for n in train[ID]]
    return ExternalSet(source, folder / "train.csv", rows.reset_index(drop=True))
