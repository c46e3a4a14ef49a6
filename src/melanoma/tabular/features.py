"""Feature building for the metadata models: column lists, the patient-context ("ugly duckling") features and
the ColumnTransformers that turn a metadata DataFrame into model inputs.

Patient-context features describe an image relative to the other images of its patient (a lesion unlike the
patient's others is suspicious). They use no labels and are computed on the rows being transformed, grouped
by patient_id: training rows with training rows, a validation fold with itself (patients never span folds, so
that is the whole patient) and test rows with test rows only. A pipeline's `features` step computes them
inside `transform`, so the same code serves train, validation and test.

Which context features exist depends on the input columns: the metadata ones always (CONTEXT), the size ones
when width/height are known (SIZE_CONTEXT), the file-size ones with file_size (FILE_CONTEXT) and the colour
ones with the colour statistics of the images (COLOR_CONTEXT; see melanoma.tabular.imagestats).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, OrdinalEncoder

from melanoma.data.schema import AGE, PATIENT, SEX, SITE

CATEGORICAL = [SEX, SITE]
NUMERIC = [AGE]
META = [SEX, AGE, SITE]  # the metadata columns, as read by melanoma.data.schema
FEATURE_COLUMNS = [PATIENT, SEX, AGE, SITE]  # the input columns every pipeline reads (patient_id: for the context)
SIZE = ["width", "height"]  # original image size columns (see melanoma.tabular.sources.add_image_sizes)
FILE_SIZE = "file_size"  # bytes of the image file (see imagestats)
# Colour statistics of an image (see imagestats): per channel mean and std on [0, 1], and the lesion-versus-
# skin contrast, the mean of the centre minus the mean of the border.
COLOR_STATS = [f"color_{stat}_{ch}" for stat in ("mean", "std", "contrast") for ch in "rgb"]
IMAGE_COLUMNS = [FILE_SIZE, *COLOR_STATS]  # per-image columns from the images themselves, when available
# Columns of image runs' predictions and their within-patient z-score and rank (melanoma.tabular.image_runs):
# image_run0, image_run0_pz, image_run0_prank, image_run1, ... as many as tabular.image_runs lists.
IMAGE_RUN_PREFIX = "image_run"
MISSING = "missing"  # the category that stands for an absent sex or site

# Patient-context features, computed within each patient on the rows being transformed (see patient_context).
CONTEXT = [
    "patient_n_images",  # number of images of the patient
    "patient_age_min",  # the patient's youngest age_approx (NaN when the patient has no age at all)
    "patient_age_max",  # the patient's oldest age_approx
    "patient_age_rank",  # the image's age rank within the patient, as a fraction in (0, 1] (ties averaged)
    "age_minus_patient_mean",  # age_approx minus the patient's mean age_approx
    "patient_site_share",  # share of the patient's images at this image's site (a missing site is a site)
    "patient_n_sites",  # number of distinct sites among the patient's images (missing counts as one)
    "patient_image_share",  # the image's share of its patient's images, 1 / n_images
    "patient_age_spread",  # the patient's oldest minus youngest age_approx
]
SIZE_CONTEXT = [
    "patient_mode_width",  # the patient's most common image size (ties: the smallest)
    "patient_mode_height",
    "size_is_patient_mode",  # 1 when the image has its patient's most common size
    "patient_n_sizes",  # number of distinct image sizes of the patient
    "width_rank", "width_z",  # rank (fraction in (0, 1]) and z-score of the width within the patient
    "height_rank", "height_z",
]
FILE_CONTEXT = ["file_size_rank", "file_size_z"]
COLOR_CONTEXT = [f"{c}_minus_patient" for c in COLOR_STATS]  # the stat minus the patient's mean of it
CONTEXT_INPUTS = [PATIENT, AGE, SITE, *SIZE, *IMAGE_COLUMNS]  # the columns patient_context may read


def _to_object(X: Any) -> np.ndarray:
    """Categorical columns as an object array with np.nan for every kind of missing (pd.NA, None, NaN).

    pandas string columns hold pd.NA, which scikit-learn's imputers cannot compare; object + np.nan they can.
    """
    arr = np.asarray(X.astype(object) if hasattr(X, "astype") else X, dtype=object)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    arr = arr.copy()
    arr[pd.isna(arr)] = np.nan
    return arr


def _to_float(X: Any) -> np.ndarray:
    """Numeric columns as float64, with pd.NA / None as np.nan."""
    if isinstance(X, pd.DataFrame):
        return X.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(X, dtype=np.float64)


def context_columns(columns: Any) -> list[str]:
    """The names patient_context gives for input columns `columns`: CONTEXT, then the size, file-size and
    colour context when all of their inputs are present."""
    have = set(columns)
    names = list(CONTEXT)
    if set(SIZE) <= have:
        names += SIZE_CONTEXT
    if FILE_SIZE in have:
        names += FILE_CONTEXT
    if set(COLOR_STATS) <= have:
        names += COLOR_CONTEXT
    return names


def _patient_ids(X: pd.DataFrame) -> np.ndarray:
    """patient_id per row; a row without one (or without the column) is its own patient."""
    own = np.array([f"\x00row{i}" for i in range(len(X))], dtype=object)
    if PATIENT not in X.columns:
        return own
    pid = X[PATIENT].to_numpy(dtype=object, na_value=None)
    return np.where(pd.isna(pid), own, pid)


def _rank_and_z(values: np.ndarray, pid: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Rank (fraction in (0, 1], ties averaged) and z-score (0 where the patient's values do not vary) of
    each value within its patient; NaN where the value is."""
    s = pd.Series(values, index=pid.index)
    grouped = s.groupby(pid, sort=False)
    rank = grouped.rank(method="average", pct=True).to_numpy(dtype=np.float64)
    mean = grouped.transform("mean").to_numpy(dtype=np.float64)
    std = grouped.transform("std", ddof=0).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(std > 0, (values - mean) / np.where(std > 0, std, 1.0), 0.0)
    return rank, np.where(np.isnan(values), np.nan, z)


def _size_context(X: pd.DataFrame, pid: pd.Series) -> dict[str, np.ndarray]:
    w, h = _to_float(X[["width"]])[:, 0], _to_float(X[["height"]])[:, 0]
    sizes = pd.DataFrame({"pid": pid, "w": w, "h": h}).dropna()
    counts = sizes.groupby(["pid", "w", "h"], sort=False).size().rename("n").reset_index()
    # The most common size per patient; ties go to the smallest, so the row order never matters.
    counts = counts.sort_values(["pid", "n", "w", "h"], ascending=[True, False, True, True], kind="stable")
    mode = counts.drop_duplicates("pid").set_index("pid")
    n_sizes = counts.groupby("pid").size()
    mode_w = pid.map(mode["w"]).to_numpy(dtype=np.float64)
    mode_h = pid.map(mode["h"]).to_numpy(dtype=np.float64)
    out = {"patient_mode_width": mode_w, "patient_mode_height": mode_h,
           "size_is_patient_mode": np.where(np.isnan(w) | np.isnan(h), np.nan,
                                            ((w == mode_w) & (h == mode_h)).astype(np.float64)),
           "patient_n_sizes": pid.map(n_sizes).fillna(0).to_numpy(dtype=np.float64)}
    out["width_rank"], out["width_z"] = _rank_and_z(w, pid)
    out["height_rank"], out["height_z"] = _rank_and_z(h, pid)
    return out


def patient_context(X: pd.DataFrame) -> pd.DataFrame:
    """The context features (context_columns(X.columns)) of every row of X, computed among the rows of X
    grouped by patient_id.

    X needs none of its columns: without patient_id (or where it is missing) each row is its own patient,
    without age_approx the age features are NaN, without a site every image shares the 'missing' site. A
    one-image patient gets n_images 1, min = max = its age, rank 1, age minus mean 0, site share 1, z-scores 0
    and colour differences 0.
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"patient_context needs a DataFrame with named columns, got {type(X).__name__}")
    n = len(X)
    pid = pd.Series(_patient_ids(X), dtype=object)
    age = _to_float(X[[AGE]])[:, 0] if AGE in X.columns else np.full(n, np.nan)
    site = (_to_object(X[[SITE]])[:, 0] if SITE in X.columns else np.full(n, np.nan, dtype=object))
    site = pd.Series(np.where(pd.isna(site), MISSING, site), dtype=object)
    frame = pd.DataFrame({"pid": pid, "age": age, "site": site})
    by_patient = frame.groupby("pid", sort=False)["age"]
    n_images = by_patient.transform("size").to_numpy(dtype=np.float64)
    same_site = frame.groupby(["pid", "site"], sort=False)["age"].transform("size").to_numpy(dtype=np.float64)
    age_min = by_patient.transform("min").to_numpy(dtype=np.float64)
    age_max = by_patient.transform("max").to_numpy(dtype=np.float64)
    out: dict[str, np.ndarray] = {
        "patient_n_images": n_images,
        "patient_age_min": age_min,
        "patient_age_max": age_max,
        "patient_age_rank": by_patient.rank(method="average", pct=True).to_numpy(dtype=np.float64),
        "age_minus_patient_mean": age - by_patient.transform("mean").to_numpy(dtype=np.float64),
        "patient_site_share": same_site / n_images,
        "patient_n_sites": frame.groupby("pid", sort=False)["site"].transform("nunique").to_numpy(np.float64),
        "patient_image_share": 1.0 / n_images,
        "patient_age_spread": age_max - age_min,
    }
    names = context_columns(X.columns)
    if "width_rank" in names:
        out.update(_size_context(X, pid))
    if "file_size_rank" in names:
        out["file_size_rank"], out["file_size_z"] = _rank_and_z(_to_float(X[[FILE_SIZE]])[:, 0], pid)
    if COLOR_CONTEXT[0] in names:
        stats = pd.DataFrame(_to_float(X[COLOR_STATS]), columns=COLOR_STATS)
        means = stats.groupby(pid, sort=False).transform("mean")
        for c in COLOR_STATS:
            out[f"{c}_minus_patient"] = (stats[c] - means[c]).to_numpy(dtype=np.float64)
    return pd.DataFrame(out)[names]


def _context_array(X: pd.DataFrame) -> np.ndarray:
    return patient_context(X).to_numpy(dtype=np.float64)


def _context_names(transformer: Any, input_features: Any) -> np.ndarray:
    return np.asarray(context_columns(input_features), dtype=object)


class _Present:
    """A ColumnTransformer column selector: those of `columns` that the DataFrame has, then those whose name
    starts with `prefix` (resolved at fit)."""

    def __init__(self, columns, prefix: str | None = None):
        self.columns = list(columns)
        self.prefix = prefix

    def __call__(self, X) -> list[str]:
        return present(getattr(X, "columns", []), self.columns, self.prefix)

    def __repr__(self) -> str:
        return f"_Present({self.columns!r}, prefix={self.prefix!r})"


def present(have: Any, columns: list[str], prefix: str | None = IMAGE_RUN_PREFIX) -> list[str]:
    """Those of `columns` in `have`, then the names in `have` that start with `prefix` (the image runs')."""
    have = [str(c) for c in have]
    found = [c for c in columns if c in set(have)]
    return found + [c for c in have if prefix and c.startswith(prefix) and c not in found]


def feature_table(X: pd.DataFrame, context: bool = True) -> pd.DataFrame:
    """The engineered features of the rows of X before any imputing or scaling (what RUN/features.csv holds).

    sex and site as text (empty when missing), age_approx, width/height, file size and colour statistics when
    X has them, and, with context, the context features computed among the rows of X (see patient_context).
    """
    cols = present(X.columns, META + SIZE + IMAGE_COLUMNS)
    out = X[cols].reset_index(drop=True).copy()
    if context:
        out = pd.concat([out, patient_context(X)], axis=1)
    return out


def make_features(context: bool = True) -> ColumnTransformer:
    """Features for the MLP and the logistic regression, every statistic learned from the training rows.

    - sex and site: one-hot with 'missing' as its own category; a category never seen in training encodes as
      all zeros;
    - age: median-imputed, flagged when missing, scaled to [0, 1];
    - width/height, file size and colour statistics (when the input has them): median-imputed, scaled;
    - with context: the context features computed on the rows being transformed (see patient_context),
      median-imputed (they are NaN only where their inputs are) and scaled to [0, 1].

    The scalers clip, so a value beyond the training range (a test age, a larger patient) does not push the
    MLP into inputs it never saw. An entirely missing column still yields features: the categorical one
    becomes a single 'missing' category, and the imputers keep an empty numeric column (as 0).
    """
    categorical = SkPipeline([
        ("object", FunctionTransformer(_to_object, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])

    def scaled(indicator: bool = False) -> SkPipeline:
        return SkPipeline([
            ("float", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
            ("impute", SimpleImputer(strategy="median", add_indicator=indicator, keep_empty_features=True)),
            ("scale", MinMaxScaler(clip=True)),  # values outside the training range clamp to [0, 1]
        ])

    transformers: list[tuple[str, Any, Any]] = [("cat", categorical, CATEGORICAL), ("age", scaled(True), NUMERIC),
                                                ("size", scaled(), _Present(SIZE)),
                                                ("image", scaled(), _Present(IMAGE_COLUMNS)),
                                                ("runs", scaled(), _Present([], IMAGE_RUN_PREFIX))]
    if context:
        transformers.append(("context", SkPipeline([
            ("context", FunctionTransformer(_context_array, feature_names_out=_context_names)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", MinMaxScaler(clip=True)),
        ]), _Present(CONTEXT_INPUTS)))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def make_gbm_features(context: bool = True) -> ColumnTransformer:
    """Features for the boosted trees: sex and site as ordinal codes (columns 0 and 1, declared categorical to
    the booster; 'missing' is a category, one never seen in training becomes NaN, which the booster treats as
    missing), then age, width/height, file size, colour statistics and the context features as raw numbers
    with NaN (boosters handle missing values natively, so nothing is imputed or scaled)."""
    categorical = SkPipeline([
        ("object", FunctionTransformer(_to_object, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True)),
        ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)),
    ])
    transformers: list[tuple[str, Any, Any]] = [
        ("cat", categorical, CATEGORICAL),
        ("num", FunctionTransformer(_to_float, feature_names_out="one-to-one"),
         _Present(NUMERIC + SIZE + IMAGE_COLUMNS, IMAGE_RUN_PREFIX)),
    ]
    if context:
        transformers.append(("context", FunctionTransformer(_context_array, feature_names_out=_context_names),
                             _Present(CONTEXT_INPUTS)))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0,
                             verbose_feature_names_out=False)
