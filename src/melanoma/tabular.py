"""The `tabular` stage: a metadata-only model (sex, age, anatomical site) trained on the same folds as the CNNs.

Everything is one imbalanced-learn pipeline, fitted per fold on the training rows only:

    features (impute, one-hot, scale)  ->  SMOTE (minority oversampling)  ->  Keras MLP

Imputers, encoders and the scaler learn their statistics from the training folds; SMOTE runs inside
`Pipeline.fit` only (imblearn skips samplers at predict time), so validation and test rows are never resampled
and never leak into a fitted transform. The test prediction is the mean over the folds' models.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder
from sklearn.utils.validation import check_is_fitted, validate_data

from melanoma import config as config_mod
from melanoma import results
from melanoma.config import Config, TabularConfig
from melanoma.data import AGE, ID, SEX, SITE, TARGET, read_test, read_train
from melanoma.errors import ConfigError, input_error
from melanoma.files import staged_dir
from melanoma.folds import read_folds

log = logging.getLogger(__name__)

CATEGORICAL = [SEX, SITE]
NUMERIC = [AGE]
FEATURES = [SEX, AGE, SITE]  # the input columns, as read by melanoma.data
MISSING = "missing"  # the category that stands for an absent sex or site


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


def make_features() -> ColumnTransformer:
    """sex and site: one-hot with 'missing' as its own category; age: median-imputed, flagged, scaled to [0, 1].

    The scaler clips, so a test age beyond the training range does not push the MLP into inputs it never saw.

    An entirely missing column still yields features: the categorical one becomes a single 'missing'
    category, and the age imputer keeps the empty column (as 0) instead of dropping it.
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
    return ColumnTransformer(
        [("cat", categorical, CATEGORICAL), ("age", numeric, NUMERIC)],
        remainder="drop",
        sparse_threshold=0.0,
    )


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
    """features -> SMOTE -> MLP. With y (the training fold's labels) SMOTE is adapted to it (see smote_plan)."""
    plan = smote_plan(tcfg, y)
    steps: list[tuple[str, Any]] = [("features", make_features())]
    if plan["apply"]:
        steps.append(("smote", RecordingSMOTE(sampling_strategy=plan["ratio"], k_neighbors=plan["k_neighbors"],
                                              random_state=seed)))
    steps.append(("clf", KerasMLPClassifier(hidden=tuple(tcfg.hidden), dropout=tcfg.dropout, epochs=tcfg.epochs,
                                            batch_size=tcfg.batch_size, learning_rate=tcfg.learning_rate,
                                            seed=seed)))
    return Pipeline(steps)


def _check_config(tcfg: TabularConfig) -> None:
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


# --------------------------------------------------------------------------------------------- stage

def run_tabular(cfg: Config, data_dir: str | Path, folds_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """The `tabular` stage: DATA/train.csv, DATA/test.csv, folds.csv -> a run folder; returns the metrics."""
    tcfg = cfg.tabular
    _check_config(tcfg)
    start = time.perf_counter()
    train = read_train(data_dir)
    test = read_test(data_dir)
    folds = read_folds(folds_path, train)
    df = train.merge(folds[[ID, "fold"]], on=ID, how="inner", validate="one_to_one")
    df["fold"] = df["fold"].astype("int64")
    fold_ids = sorted(int(k) for k in df["fold"].unique())

    oof_parts = []
    test_preds = []
    smote_rows = []
    encoded: dict[str, list[str]] = {}
    for k in fold_ids:
        trn = df[df["fold"] != k]
        val = df[df["fold"] == k]
        y = trn[TARGET].to_numpy()
        if len(np.unique(y)) < 2:
            raise input_error(folds_path, f"fold {k}: the other folds hold a single class; cannot train")
        seed = cfg.seed + k
        plan = smote_plan(tcfg, y)
        if tcfg.smote and not plan["apply"]:
            if plan.get("n_minority", 0) < 2:
                log.warning("tabular fold %d: SMOTE skipped: %s", k, plan["reason"])
            else:
                log.info("tabular fold %d: SMOTE skipped: %s", k, plan["reason"])
        pipe = build_pipeline(tcfg, seed, y)
        pipe.fit(trn[FEATURES], y)
        pred = pipe.predict_proba(val[FEATURES])[:, 1]
        test_preds.append(pipe.predict_proba(test[FEATURES])[:, 1])

        row: dict[str, Any] = {"fold": k, "applied": plan["apply"], "reason": plan["reason"],
                               "k_neighbors": plan["k_neighbors"] if plan["apply"] else None,
                               "rows_before": int(len(trn)), "positives_before": int((y == 1).sum()),
                               "rows_after": int(len(trn)), "positives_after": int((y == 1).sum())}
        if plan["apply"]:
            sm = pipe.named_steps["smote"]
            row.update(rows_before=sm.n_in_, positives_before=sm.positives_in_,
                       rows_after=sm.n_out_, positives_after=sm.positives_out_)
        smote_rows.append(row)
        encoded[str(k)] = [str(n) for n in pipe.named_steps["features"].get_feature_names_out()]

        fold_oof = pd.DataFrame({ID: val[ID].to_numpy(), TARGET: val[TARGET].to_numpy(), "pred": pred,
                                 "fold": k})
        oof_parts.append(fold_oof)
        log.info("tabular fold %d: AUC %s (%d train rows -> %d after SMOTE, %d validation)", k,
                 results.fmt_auc(results.auc(fold_oof[TARGET], pred)), row["rows_before"], row["rows_after"],
                 len(val))

    oof = pd.concat(oof_parts, ignore_index=True)
    test_pred = pd.DataFrame({ID: test[ID].to_numpy(), TARGET: np.mean(test_preds, axis=0)})
    extra = {
        "model": "mlp_smote",
        "features": list(FEATURES),
        "encoded_features": encoded,
        "smote": {"enabled": bool(tcfg.smote), "k_neighbors": int(tcfg.smote_k),
                  "ratio": float(tcfg.smote_ratio), "folds": smote_rows},
        "mlp": {"hidden": list(tcfg.hidden), "dropout": tcfg.dropout, "epochs": tcfg.epochs,
                "batch_size": tcfg.batch_size, "learning_rate": tcfg.learning_rate},
        "n_test": int(len(test)),
        "seconds": round(time.perf_counter() - start, 1),
    }
    # Everything is computed; write the run into a staging folder and move it in only when all files exist.
    with staged_dir(out_dir) as stage:
        metrics = results.write_run(stage, oof, test_pred, extra)
        config_mod.save_run_info(stage, cfg, "tabular")
    log.info("tabular: OOF AUC %s over %d images, %d folds -> %s", results.fmt_auc(metrics["oof_auc"]),
             len(oof), len(fold_ids), out_dir)
    return metrics
