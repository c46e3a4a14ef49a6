"""The `tabular` stage: metadata-only models (sex, age, anatomical site, patient context) on the CNNs' folds.

Three models, chosen by `tabular.model` (or `all`: every one, the best on OOF AUC at the top of the run folder):

    mlp_smote:  features (impute, one-hot, scale)  ->  SMOTE (minority oversampling)  ->  Keras MLP
    logreg:     features (impute, one-hot, scale)  ->  logistic regression, class_weight="balanced"
    gbm:        features (raw numbers with NaN, ordinal categories)  ->  HistGradientBoostingClassifier

Each is one scikit-learn / imbalanced-learn pipeline, fitted per fold on the training rows only. Imputers,
encoders and scalers learn their statistics from the training folds; SMOTE runs inside `Pipeline.fit` only
(imblearn skips samplers at predict time), so validation and test rows are never resampled and never leak
into a fitted transform. The test prediction is the mean over the folds' models.

Patient-context features describe an image relative to the other images of its patient (the competition's
"ugly duckling" idea: a lesion unlike the patient's others is suspicious). They use no labels and are
computed on the rows being transformed, grouped by patient_id: training rows with training rows, a
validation fold with itself (patients never span folds, so that is the whole patient) and test rows with
test rows only. A pipeline's `features` step computes them inside `transform`, so the same code serves
train, validation and test.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, OrdinalEncoder
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from melanoma import config as config_mod
from melanoma import results
from melanoma.config import Config, TabularConfig
from melanoma.data import AGE, ID, PATIENT, SEX, SITE, TARGET, read_test, read_train
from melanoma.errors import ConfigError, input_error
from melanoma.files import read_json, staged_dir, write_csv
from melanoma.folds import read_folds

log = logging.getLogger(__name__)

MODELS = ("mlp_smote", "logreg", "gbm")  # `all` trains them in this order (ties go to the first)
CATEGORICAL = [SEX, SITE]
NUMERIC = [AGE]
META = [SEX, AGE, SITE]  # the metadata columns, as read by melanoma.data
FEATURES = [PATIENT, SEX, AGE, SITE]  # the input columns every pipeline reads (patient_id: for the context)
SIZE = ["width", "height"]  # original image size columns (see add_image_sizes)
SIZES_CSV = "image_sizes.csv"  # written by `prepare` beside its manifest: image_name, split, width, height
MISSING = "missing"  # the category that stands for an absent sex or site
# Patient-context features, computed within each patient on the rows being transformed (see patient_context).
CONTEXT = [
    "patient_n_images",  # number of images of the patient
    "patient_age_min",  # the patient's youngest age_approx (NaN when the patient has no age at all)
    "patient_age_max",  # the patient's oldest age_approx
    "patient_age_rank",  # the image's age rank within the patient, as a fraction in (0, 1] (ties averaged)
    "age_minus_patient_mean",  # age_approx minus the patient's mean age_approx
    "patient_site_share",  # share of the patient's images at this image's site (a missing site is a site)
]


# --------------------------------------------------------------------------------------------- features

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


def patient_context(X: pd.DataFrame) -> pd.DataFrame:
    """The CONTEXT features of every row of X, computed among the rows of X grouped by patient_id.

    X needs none of its columns: without patient_id (or where it is missing) each row is its own patient,
    without age_approx the age features are NaN, without a site every image shares the 'missing' site. A
    one-image patient gets n_images 1, min = max = its age, rank 1, age minus mean 0 and site share 1.
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"patient_context needs a DataFrame with named columns, got {type(X).__name__}")
    n = len(X)
    own = np.array([f"\x00row{i}" for i in range(n)], dtype=object)  # one patient per row
    if PATIENT in X.columns:
        pid = X[PATIENT].to_numpy(dtype=object, na_value=None)
        pid = np.where(pd.isna(pid), own, pid)
    else:
        pid = own
    age = _to_float(X[[AGE]])[:, 0] if AGE in X.columns else np.full(n, np.nan)
    site = (_to_object(X[[SITE]])[:, 0] if SITE in X.columns else np.full(n, np.nan, dtype=object))
    site = np.where(pd.isna(site), MISSING, site)
    frame = pd.DataFrame({"pid": pd.Series(pid, dtype=object), "age": age, "site": pd.Series(site, dtype=object)})
    by_patient = frame.groupby("pid", sort=False)["age"]
    n_images = by_patient.transform("size").to_numpy(dtype=np.float64)
    same_site = frame.groupby(["pid", "site"], sort=False)["age"].transform("size").to_numpy(dtype=np.float64)
    out = pd.DataFrame({
        "patient_n_images": n_images,
        "patient_age_min": by_patient.transform("min").to_numpy(dtype=np.float64),
        "patient_age_max": by_patient.transform("max").to_numpy(dtype=np.float64),
        "patient_age_rank": by_patient.rank(method="average", pct=True).to_numpy(dtype=np.float64),
        "age_minus_patient_mean": age - by_patient.transform("mean").to_numpy(dtype=np.float64),
        "patient_site_share": same_site / n_images,
    })
    return out[CONTEXT]


def _context_array(X: pd.DataFrame) -> np.ndarray:
    return patient_context(X).to_numpy(dtype=np.float64)


def _context_names(transformer: Any, input_features: Any) -> np.ndarray:
    return np.asarray(CONTEXT, dtype=object)


class _Present:
    """A ColumnTransformer column selector: those of `columns` that the DataFrame has (resolved at fit)."""

    def __init__(self, columns):
        self.columns = list(columns)

    def __call__(self, X) -> list[str]:
        have = set(getattr(X, "columns", []))
        return [c for c in self.columns if c in have]

    def __repr__(self) -> str:
        return f"_Present({self.columns!r})"


def feature_table(X: pd.DataFrame, context: bool = True) -> pd.DataFrame:
    """The engineered features of the rows of X before any imputing or scaling (what RUN/features.csv holds).

    sex and site as text (empty when missing), age_approx, width/height when X has them, and, with context,
    the CONTEXT features computed among the rows of X (see patient_context).
    """
    cols = [c for c in META + SIZE if c in X.columns]
    out = X[cols].reset_index(drop=True).copy()
    if context:
        out = pd.concat([out, patient_context(X)], axis=1)
    return out


def make_features(context: bool = True) -> ColumnTransformer:
    """Features for the MLP and the logistic regression, every statistic learned from the training rows.

    - sex and site: one-hot with 'missing' as its own category; a category never seen in training encodes as
      all zeros;
    - age: median-imputed, flagged when missing, scaled to [0, 1];
    - width and height (when the input has them): median-imputed, scaled to [0, 1];
    - with context: the CONTEXT features computed on the rows being transformed (see patient_context),
      median-imputed (they are NaN only where the age is, which the age flag marks) and scaled to [0, 1].

    The scalers clip, so a value beyond the training range (a test age, a larger patient) does not push the
    MLP into inputs it never saw. An entirely missing column still yields features: the categorical one
    becomes a single 'missing' category, and the imputers keep an empty numeric column (as 0).
    """
    categorical = SkPipeline([
        ("object", FunctionTransformer(_to_object, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])
    numeric = SkPipeline([
        ("float", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        ("scale", MinMaxScaler(clip=True)),  # ages outside the training range clamp to [0, 1]
    ])
    size = SkPipeline([
        ("float", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", MinMaxScaler(clip=True)),
    ])
    transformers: list[tuple[str, Any, Any]] = [("cat", categorical, CATEGORICAL), ("age", numeric, NUMERIC),
                                                ("size", size, _Present(SIZE))]
    if context:
        transformers.append(("context", SkPipeline([
            ("context", FunctionTransformer(_context_array, feature_names_out=_context_names)),
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", MinMaxScaler(clip=True)),
        ]), _Present([PATIENT, AGE, SITE])))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


def make_gbm_features(context: bool = True) -> ColumnTransformer:
    """Features for the gradient boosting: sex and site as ordinal codes (columns 0 and 1, declared
    categorical to the booster; 'missing' is a category, one never seen in training becomes NaN, which the
    booster treats as missing), then age, width/height and the CONTEXT features as raw numbers with NaN
    (the booster handles missing values natively, so nothing is imputed or scaled)."""
    categorical = SkPipeline([
        ("object", FunctionTransformer(_to_object, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True)),
        ("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)),
    ])
    transformers: list[tuple[str, Any, Any]] = [
        ("cat", categorical, CATEGORICAL),
        ("num", FunctionTransformer(_to_float, feature_names_out="one-to-one"), _Present(NUMERIC + SIZE)),
    ]
    if context:
        transformers.append(("context", FunctionTransformer(_context_array, feature_names_out=_context_names),
                             _Present([PATIENT, AGE, SITE])))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0,
                             verbose_feature_names_out=False)


# --------------------------------------------------------------------------------------------- model

class KerasMLPClassifier(ClassifierMixin, BaseEstimator):
    """A binary scikit-learn classifier around a small Keras 3 MLP (Dense relu + Dropout, sigmoid output).

    ClassifierMixin comes first so scikit-learn's tags mark it as a classifier (is_classifier, scorers).
    """

    def __init__(self, hidden=(64, 32), dropout=0.2, epochs=40, batch_size=256, learning_rate=1e-3,
                 seed=42, verbose=0):
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.verbose = verbose

    def _build(self, n_features: int):
        import keras

        layers: list[Any] = [keras.Input(shape=(n_features,))]
        for units in self.hidden:
            layers.append(keras.layers.Dense(int(units), activation="relu"))
            if self.dropout:
                layers.append(keras.layers.Dropout(float(self.dropout)))
        layers.append(keras.layers.Dense(1, activation="sigmoid"))
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=float(self.learning_rate)),
                      loss="binary_crossentropy")
        return model

    def fit(self, X, y):
        import keras

        X, y = validate_data(self, X, y, dtype=np.float32)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"KerasMLPClassifier is binary: y has {len(self.classes_)} class(es)")
        y01 = (y == self.classes_[1]).astype(np.float32)
        keras.utils.set_random_seed(int(self.seed))
        self.model_ = self._build(X.shape[1])
        self.model_.fit(X, y01, epochs=int(self.epochs), batch_size=int(self.batch_size), shuffle=True,
                        verbose=self.verbose)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if len(X) == 0:
            return np.zeros((0, 2))
        # A direct (eager) call rather than model.predict: no tf.function to trace per model, which is
        # both faster for these small inputs and free of TensorFlow's retracing warnings across folds.
        import keras

        step = 65536
        p = np.concatenate([keras.ops.convert_to_numpy(self.model_(X[i:i + step], training=False)).reshape(-1)
                            for i in range(0, len(X), step)])
        p = np.clip(p.astype(np.float64), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


# --------------------------------------------------------------------------------------------- SMOTE

class RecordingSMOTE(SMOTE):
    """SMOTE that remembers how many rows (and minority rows) went in and came out of its last fit_resample."""

    def fit_resample(self, X, y, **params):
        X_out, y_out = super().fit_resample(X, y, **params)
        y_in = np.asarray(y)
        self.n_in_ = int(len(y_in))
        self.n_out_ = int(len(y_out))
        self.positives_in_ = int((y_in == 1).sum())
        self.positives_out_ = int((np.asarray(y_out) == 1).sum())
        return X_out, y_out


def smote_plan(tcfg: TabularConfig, y: Any | None = None) -> dict[str, Any]:
    """Decide whether and how SMOTE runs on a training fold with labels y (None: the config as given).

    k_neighbors is lowered to n_minority - 1 for tiny minority classes; SMOTE is skipped when it is disabled,
    when the minority has fewer than 2 rows, or when the natural minority/majority ratio already reaches
    smote_ratio (imblearn would refuse to remove minority rows).
    """
    plan: dict[str, Any] = {"apply": bool(tcfg.smote), "k_neighbors": int(tcfg.smote_k),
                            "ratio": float(tcfg.smote_ratio), "reason": None if tcfg.smote else "disabled"}
    if not tcfg.smote or y is None:
        return plan
    _, counts = np.unique(np.asarray(y), return_counts=True)
    n_min, n_maj = (int(counts.min()), int(counts.max())) if len(counts) == 2 else (0, int(counts.sum()))
    plan.update(n_minority=n_min, n_majority=n_maj)
    if n_min < 2:
        plan.update(apply=False, reason=f"only {n_min} minority row(s) in the training folds")
    elif n_min / n_maj >= tcfg.smote_ratio:
        plan.update(apply=False, reason=f"natural ratio {n_min / n_maj:.3f} already >= smote_ratio")
    else:
        plan["k_neighbors"] = min(int(tcfg.smote_k), n_min - 1)
    return plan


def build_pipeline(tcfg: TabularConfig, seed: int, y: Any | None = None) -> Pipeline:
    """mlp_smote: features -> SMOTE -> MLP. With y (the training fold's labels) SMOTE is adapted to it."""
    plan = smote_plan(tcfg, y)
    steps: list[tuple[str, Any]] = [("features", make_features(context=tcfg.context))]
    if plan["apply"]:
        steps.append(("smote", RecordingSMOTE(sampling_strategy=plan["ratio"], k_neighbors=plan["k_neighbors"],
                                              random_state=seed)))
    steps.append(("clf", KerasMLPClassifier(hidden=tuple(tcfg.hidden), dropout=tcfg.dropout, epochs=tcfg.epochs,
                                            batch_size=tcfg.batch_size, learning_rate=tcfg.learning_rate,
                                            seed=seed)))
    return Pipeline(steps)


def build_model(name: str, tcfg: TabularConfig, seed: int, y: Any | None = None) -> Any:
    """The unfitted pipeline of model `name` (one of MODELS): every one takes the FEATURES columns (plus
    width/height when present) as a DataFrame and passes sklearn.base.clone."""
    if name == "mlp_smote":
        return build_pipeline(tcfg, seed, y)
    if name == "logreg":
        # The features are already scaled to [0, 1] (one-hot, clipped min-max), so no StandardScaler.
        return SkPipeline([
            ("features", make_features(context=tcfg.context)),
            ("clf", LogisticRegression(C=tcfg.logreg_C, class_weight="balanced", max_iter=5000,
                                       random_state=seed)),
        ])
    if name == "gbm":
        return SkPipeline([
            ("features", make_gbm_features(context=tcfg.context)),
            ("clf", HistGradientBoostingClassifier(
                learning_rate=tcfg.gbm_learning_rate, max_iter=tcfg.gbm_max_iter,
                max_leaf_nodes=tcfg.gbm_max_leaf_nodes, min_samples_leaf=tcfg.gbm_min_samples_leaf,
                l2_regularization=1.0, categorical_features=[0, 1],  # sex, site: the first two columns
                # early stopping on the log-loss of a fixed, seeded, stratified 10% of the training fold
                early_stopping=tcfg.gbm_early_stopping, validation_fraction=0.1, n_iter_no_change=20,
                random_state=seed)),
        ])
    raise ConfigError(f"tabular.model: expected one of {', '.join(MODELS)} or all, got {name!r}")


def _check_config(tcfg: TabularConfig) -> None:
    if tcfg.model not in (*MODELS, "all"):
        raise ConfigError(f"tabular.model: expected one of {', '.join(MODELS)} or all, got {tcfg.model!r}")
    if not tcfg.hidden or any(h < 1 for h in tcfg.hidden):
        raise ConfigError(f"tabular.hidden: expected a non-empty list of positive sizes, got {tcfg.hidden}")
    if not 0.0 <= tcfg.dropout < 1.0:
        raise ConfigError(f"tabular.dropout: expected a value in [0, 1), got {tcfg.dropout}")
    if tcfg.epochs < 1 or tcfg.batch_size < 1 or tcfg.learning_rate <= 0:
        raise ConfigError("tabular.epochs, tabular.batch_size and tabular.learning_rate must be positive")
    if tcfg.smote and tcfg.smote_k < 1:
        raise ConfigError(f"tabular.smote_k: expected at least 1, got {tcfg.smote_k}")
    if tcfg.smote and not 0.0 < tcfg.smote_ratio <= 1.0:
        raise ConfigError(f"tabular.smote_ratio: expected a value in (0, 1], got {tcfg.smote_ratio}")
    if tcfg.logreg_C <= 0:
        raise ConfigError(f"tabular.logreg_C: expected a positive value, got {tcfg.logreg_C}")
    if tcfg.gbm_max_iter < 1 or tcfg.gbm_learning_rate <= 0 or tcfg.gbm_min_samples_leaf < 1:
        raise ConfigError("tabular.gbm_max_iter, gbm_learning_rate and gbm_min_samples_leaf must be positive")
    if tcfg.gbm_max_leaf_nodes < 2:
        raise ConfigError(f"tabular.gbm_max_leaf_nodes: expected at least 2, got {tcfg.gbm_max_leaf_nodes}")
    if tcfg.image_size not in ("auto", "off"):
        raise ConfigError(f"tabular.image_size: expected auto or off, got {tcfg.image_size!r}")
    if tcfg.gbm_importance_repeats < 0:
        raise ConfigError(f"tabular.gbm_importance_repeats: expected 0 (off) or more, got "
                          f"{tcfg.gbm_importance_repeats}")


# --------------------------------------------------------------------------------------------- stage

@dataclasses.dataclass
class ModelRun:
    """One model's out-of-fold and test predictions and its metrics.json extras."""

    name: str
    oof: pd.DataFrame
    test_pred: pd.DataFrame
    extra: dict[str, Any]
    oof_auc: float | None


def _read_sizes(folder: Path) -> tuple[pd.DataFrame, str] | None:
    """image_name, width, height (one row per name, positive numbers) from FOLDER/image_sizes.csv, else from
    FOLDER/train.csv + test.csv when both have width and height (the public TFRecords' companion CSVs), and
    a description of the source; None when the folder has neither."""
    wanted = {ID, *SIZE}
    candidates = [[folder / SIZES_CSV], [folder / "train.csv", folder / "test.csv"]]
    for files in candidates:
        if not all(f.is_file() for f in files):
            continue
        try:
            parts = [pd.read_csv(f, usecols=lambda c: c in wanted, dtype={ID: "string"}) for f in files]
        except (OSError, ValueError) as e:
            log.warning("tabular: cannot read image sizes from %s: %s", ", ".join(map(str, files)), e)
            continue
        if not all(wanted <= set(part.columns) for part in parts):
            continue
        sizes = pd.concat(parts, ignore_index=True)
        for c in SIZE:
            sizes[c] = pd.to_numeric(sizes[c], errors="coerce")
        # A missing or non-positive size (the records' -1) is no size: that image counts as not covered.
        sizes = sizes[sizes[ID].notna() & (sizes[SIZE] > 0).all(axis=1)].drop_duplicates(ID)
        return sizes, " and ".join(str(f) for f in files)
    return None


def add_image_sizes(train: pd.DataFrame, test: pd.DataFrame, sizes_dir: str | Path | None, mode: str
                    ) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """train and test with width/height where known, and where they came from (None: not used).

    off: no size columns. auto: train.csv/test.csv's own when both have them; else, joined by image_name,
    those of SIZES_DIR (see _read_sizes), used only if they cover every training and test image: a partial
    cover would make the feature mean different things for the two (a warning says how many are missing).
    """
    if mode == "auto" and all(c in train.columns and c in test.columns for c in SIZE):
        log.info("tabular: image width/height from train.csv and test.csv")
        return train, test, "train.csv and test.csv"
    # A size column in only one of the two CSVs is no feature (the test rows would all be imputed).
    train, test = train.drop(columns=SIZE, errors="ignore"), test.drop(columns=SIZE, errors="ignore")
    if mode == "off":
        log.info("tabular: image width/height not used (tabular.image_size: off)")
        return train, test, None
    if sizes_dir is None:
        return train, test, None
    if "://" in str(sizes_dir):  # a bucket: read by TensorFlow only; the metadata stage stays without it
        log.info("tabular: image width/height not looked up in %s (remote folder)", sizes_dir)
        return train, test, None
    found = _read_sizes(Path(sizes_dir))
    if found is None:
        log.info("tabular: no image width/height (not in train.csv/test.csv, no %s or public train.csv/"
                 "test.csv with width and height in %s)", SIZES_CSV, sizes_dir)
        return train, test, None
    sizes, source = found
    known = set(sizes[ID])
    miss_train, miss_test = int((~train[ID].isin(known)).sum()), int((~test[ID].isin(known)).sum())
    if miss_train or miss_test:
        log.warning("tabular: image sizes in %s miss %d of %d training and %d of %d test images: width/height "
                    "not used", source, miss_train, len(train), miss_test, len(test))
        return train, test, None
    by_name = sizes.set_index(ID)
    train = train.assign(**{c: train[ID].map(by_name[c]).to_numpy(dtype=np.float64) for c in SIZE})
    test = test.assign(**{c: test[ID].map(by_name[c]).to_numpy(dtype=np.float64) for c in SIZE})
    log.info("tabular: image width/height from %s (%d training, %d test images)", source, len(train), len(test))
    return train, test, source


def input_columns(train: pd.DataFrame, test: pd.DataFrame) -> list[str]:
    """FEATURES, plus width and height when both tables have them (see add_image_sizes)."""
    return FEATURES + [c for c in SIZE if c in train.columns and c in test.columns]


def gbm_importance(pipe: Any, X: pd.DataFrame, y: np.ndarray, repeats: int, seed: int) -> dict[str, float] | None:
    """Permutation importance of a fitted gbm pipeline's features on rows X: the mean drop in ROC AUC when
    one engineered feature is shuffled (features computed from X first, so the context stays per patient).
    None when y holds a single class."""
    if repeats < 1 or len(np.unique(y)) < 2:
        return None
    features = pipe.named_steps["features"]
    Xf = features.transform(X)
    res = permutation_importance(pipe.named_steps["clf"], Xf, y, scoring="roc_auc", n_repeats=repeats,
                                 random_state=seed, n_jobs=1)
    return {str(n): float(v) for n, v in zip(features.get_feature_names_out(), res.importances_mean)}


def _fit_model(name: str, cfg: Config, df: pd.DataFrame, test: pd.DataFrame, inputs: list[str],
               fold_ids: list[int], folds_path: str | Path) -> ModelRun:
    """Train model `name` on every fold; predict its validation fold and the test set."""
    tcfg = cfg.tabular
    start = time.perf_counter()
    oof_parts, test_preds, smote_rows, importances = [], [], [], []
    encoded: dict[str, list[str]] = {}
    n_iter: dict[str, int] = {}
    for k in fold_ids:
        trn = df[df["fold"] != k]
        val = df[df["fold"] == k]
        y = trn[TARGET].to_numpy()
        if len(np.unique(y)) < 2:
            raise input_error(folds_path, f"fold {k}: the other folds hold a single class; cannot train")
        seed = cfg.seed + k
        if name == "mlp_smote":
            plan = smote_plan(tcfg, y)
            if tcfg.smote and not plan["apply"]:
                level = logging.WARNING if plan.get("n_minority", 0) < 2 else logging.INFO
                log.log(level, "tabular fold %d: SMOTE skipped: %s", k, plan["reason"])
        pipe = build_model(name, tcfg, seed, y)
        # One OpenMP/BLAS thread for scikit-learn (boosting, SMOTE's neighbours, lbfgs): at this size a fold
        # takes seconds on one thread, while several threads spin-wait badly on a busy machine (10x slower
        # measured on 2 shared cores). Keras/TensorFlow keep their own thread pools.
        with threadpool_limits(limits=1):
            pipe.fit(trn[inputs], y)
            pred = pipe.predict_proba(val[inputs])[:, 1]
            test_preds.append(pipe.predict_proba(test[inputs])[:, 1])
        encoded[str(k)] = [str(n) for n in pipe.named_steps["features"].get_feature_names_out()]

        rows_after = len(trn)
        if name == "mlp_smote":
            row: dict[str, Any] = {"fold": k, "applied": plan["apply"], "reason": plan["reason"],
                                   "k_neighbors": plan["k_neighbors"] if plan["apply"] else None,
                                   "rows_before": int(len(trn)), "positives_before": int((y == 1).sum()),
                                   "rows_after": int(len(trn)), "positives_after": int((y == 1).sum())}
            if plan["apply"]:
                sm = pipe.named_steps["smote"]
                row.update(rows_before=sm.n_in_, positives_before=sm.positives_in_,
                           rows_after=sm.n_out_, positives_after=sm.positives_out_)
            smote_rows.append(row)
            rows_after = row["rows_after"]
        if name == "gbm":
            n_iter[str(k)] = int(pipe.named_steps["clf"].n_iter_)
            with threadpool_limits(limits=1):
                imp = gbm_importance(pipe, val[inputs], val[TARGET].to_numpy(), tcfg.gbm_importance_repeats,
                                     seed)
            if imp is not None:
                importances.append(imp)

        fold_oof = pd.DataFrame({ID: val[ID].to_numpy(), TARGET: val[TARGET].to_numpy(), "pred": pred,
                                 "fold": k})
        oof_parts.append(fold_oof)
        smote_note = f" -> {rows_after} after SMOTE" if name == "mlp_smote" else ""
        log.info("tabular fold %d (%s): AUC %s (%d train rows%s, %d validation)", k, name,
                 results.fmt_auc(results.auc(fold_oof[TARGET], pred)), len(trn), smote_note, len(val))

    oof = pd.concat(oof_parts, ignore_index=True)
    test_pred = pd.DataFrame({ID: test[ID].to_numpy(), TARGET: np.mean(test_preds, axis=0)})
    extra: dict[str, Any] = {
        "model": name,
        "features": [c for c in META + SIZE if c in inputs],
        "context_features": list(CONTEXT) if tcfg.context else [],
        "encoded_features": encoded,
    }
    if name == "mlp_smote":
        extra["smote"] = {"enabled": bool(tcfg.smote), "k_neighbors": int(tcfg.smote_k),
                          "ratio": float(tcfg.smote_ratio), "folds": smote_rows}
        extra["mlp"] = {"hidden": list(tcfg.hidden), "dropout": tcfg.dropout, "epochs": tcfg.epochs,
                        "batch_size": tcfg.batch_size, "learning_rate": tcfg.learning_rate}
    elif name == "logreg":
        extra["logreg"] = {"C": tcfg.logreg_C, "class_weight": "balanced"}
    elif name == "gbm":
        extra["gbm"] = {"max_iter": tcfg.gbm_max_iter, "learning_rate": tcfg.gbm_learning_rate,
                        "max_leaf_nodes": tcfg.gbm_max_leaf_nodes, "min_samples_leaf": tcfg.gbm_min_samples_leaf,
                        "early_stopping": tcfg.gbm_early_stopping, "n_iter": n_iter}
        if importances:
            names = list(importances[0])
            mean = {n: float(np.mean([imp[n] for imp in importances])) for n in names}
            extra["importances"] = dict(sorted(mean.items(), key=lambda kv: -kv[1]))
            extra["importances_info"] = (f"permutation importance on each validation fold: mean drop in ROC AUC "
                                         f"over {tcfg.gbm_importance_repeats} shuffles, averaged over "
                                         f"{len(importances)} folds")
            log.info("tabular gbm: permutation importance (mean AUC drop, %d folds)\n%s", len(importances),
                     "\n".join(f"  {n:<32s} {v:+.4f}" for n, v in extra["importances"].items()))
    extra["n_test"] = int(len(test))
    extra["seconds"] = round(time.perf_counter() - start, 1)
    oof_auc = results.oof_metrics(oof)["oof_auc"]
    return ModelRun(name, oof, test_pred, extra, oof_auc)


def _features_csv(df: pd.DataFrame, test: pd.DataFrame, inputs: list[str], fold_ids: list[int],
                  context: bool) -> pd.DataFrame:
    """RUN/features.csv: image_name, fold (or 'test') and the engineered features before scaling, computed
    as the models see them at prediction time: each fold's rows among themselves, test rows among test rows."""
    parts = []
    for k in fold_ids:
        val = df[df["fold"] == k]
        parts.append(pd.concat([pd.DataFrame({ID: val[ID].to_numpy(), "fold": str(k)}),
                                feature_table(val[inputs], context)], axis=1))
    parts.append(pd.concat([pd.DataFrame({ID: test[ID].to_numpy(), "fold": "test"}),
                            feature_table(test[inputs], context)], axis=1))
    return pd.concat(parts, ignore_index=True)


def _remove_stale_model_dirs(out_dir: Path, keep: list[str]) -> None:
    """Drop RUN/<model>/ folders an earlier `all` run left, so a run folder never mixes two runs."""
    for name in MODELS:
        sub = out_dir / name
        if name in keep or not (sub / "run.json").is_file():
            continue
        try:
            if read_json(sub / "run.json").get("stage") == "tabular":
                shutil.rmtree(sub)
                log.info("tabular: removed %s from an earlier run", sub)
        except (OSError, ValueError):
            log.warning("tabular: %s is from an earlier run and could not be removed", sub)


def run_tabular(cfg: Config, data_dir: str | Path, folds_path: str | Path, out_dir: str | Path,
                sizes_dir: str | Path | None = None) -> dict[str, Any]:
    """The `tabular` stage: DATA/train.csv, DATA/test.csv, folds.csv -> a run folder; returns the metrics.

    sizes_dir (the TFRecords folder) supplies image width/height when the CSVs lack them (add_image_sizes).

    One model: RUN/ holds its oof.csv, test_pred.csv, metrics.json. `all`: each model in RUN/<model>/, and
    RUN/ holds the one with the best OOF AUC (metrics.json says which, and the AUC of every model).
    RUN/features.csv holds the engineered features either way.
    """
    tcfg = cfg.tabular
    _check_config(tcfg)
    start = time.perf_counter()
    train = read_train(data_dir, cfg.data.patient_id)
    test = read_test(data_dir, cfg.data.patient_id)
    folds = read_folds(folds_path, train)
    train, test, sizes_from = add_image_sizes(train, test, sizes_dir, tcfg.image_size)
    df = train.merge(folds[[ID, "fold"]], on=ID, how="inner", validate="one_to_one")
    df["fold"] = df["fold"].astype("int64")
    fold_ids = sorted(int(k) for k in df["fold"].unique())
    inputs = input_columns(train, test)
    names = list(MODELS) if tcfg.model == "all" else [tcfg.model]
    features = _features_csv(df, test, inputs, fold_ids, tcfg.context)

    runs = {name: _fit_model(name, cfg, df, test, inputs, fold_ids, folds_path) for name in names}
    scores = {name: run.oof_auc for name, run in runs.items()}
    best = max(names, key=lambda n: -np.inf if scores[n] is None else scores[n])  # first of equals wins
    top = runs[best]
    extra = dict(top.extra, models=scores, image_sizes_from=sizes_from)
    if len(names) > 1:
        extra["selection"] = (f"{best}: the best out-of-fold AUC of {', '.join(names)}; chosen on the OOF "
                              f"predictions themselves, so its oof_auc is slightly optimistic")
        log.info("tabular models, OOF AUC: %s", ", ".join(
            f"{n} {results.fmt_auc(s)} ({runs[n].extra['seconds']:.0f} s)" for n, s in scores.items()))
    extra["seconds"] = round(time.perf_counter() - start, 1)
    # Everything is computed; write the run into a staging folder and move it in only when all files exist.
    with staged_dir(out_dir) as stage:
        write_csv(stage / "features.csv", features)
        if len(names) > 1:
            for name, run in runs.items():
                results.write_run(stage / name, run.oof, run.test_pred, run.extra)
                sub_cfg = dataclasses.replace(cfg, tabular=dataclasses.replace(tcfg, model=name))
                config_mod.save_run_info(stage / name, sub_cfg, "tabular")
        metrics = results.write_run(stage, top.oof, top.test_pred, extra)
        config_mod.save_run_info(stage, cfg, "tabular")
    _remove_stale_model_dirs(Path(out_dir), names if len(names) > 1 else [])
    chosen = f" (best of {len(names)} models: {best})" if len(names) > 1 else ""
    log.info("tabular: OOF AUC %s%s over %d images, %d folds -> %s", results.fmt_auc(metrics["oof_auc"]), chosen,
             len(top.oof), len(fold_ids), out_dir)
    return metrics
