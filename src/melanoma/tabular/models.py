"""The metadata models: scikit-learn estimators (fit returns self, learned attributes end in `_`) and the
registry TABULAR_MODELS of pipelines, name -> factory(tcfg, seed, y).

    mlp_smote:  features (impute, one-hot, scale)  ->  SMOTE (minority oversampling)  ->  Keras MLP
    logreg:     features (impute, one-hot, scale)  ->  logistic regression, class_weight="balanced"
    gbm:        features (raw numbers with NaN, ordinal categories)  ->  HistGradientBoostingClassifier
    lgbm:       the same features  ->  LightGBM, early stopping on a patient-grouped inner split
    hgb:        the same features  ->  tuned HistGradientBoosting, early stopping on a patient-grouped split

SMOTE runs inside `Pipeline.fit` only (imblearn skips samplers at predict time), so validation and test rows
are never resampled. lgbm and hgb take the training rows' patient ids (`fit(X, y, groups=...)`, passed as
`clf__groups` through the pipeline): their early-stopping rows are whole patients held out of the training
folds, because rows of one patient share their context features and would make a row-level split optimistic.
They then refit on all the training rows with the number of rounds found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.utils.validation import check_is_fitted, validate_data

from melanoma.config import TabularConfig
from melanoma.errors import ConfigError
from melanoma.runtime.devices import no_distribution
from melanoma.tabular.features import make_features, make_gbm_features

CATEGORY_COLUMNS = (0, 1)  # sex and site: the first two columns of make_gbm_features


class KerasMLPClassifier(ClassifierMixin, BaseEstimator):
    """A binary scikit-learn classifier around a small Keras 3 MLP (Dense relu + Dropout, sigmoid output).

    ClassifierMixin comes first so scikit-learn's tags mark it as a classifier (is_classifier, scorers).
    """

    def __init__(self, hidden=(64, 32), dropout=0.2, epochs=40, batch_size=256, learning_rate=1e-3,
                 seed=42, verbose=0):
        # scikit-learn's contract: every argument stored as given, under its own name (get_params, clone)
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def _build(self, n_features: int):
        import keras

        layers: list[Any] = [keras.Input(shape=(n_features,))]
        for units in self.hidden:
            layers.append(keras.layers.Dense(int(units), activation="relu"))
            if self.dropout:
                layers.append(keras.layers.Dropout(float(self.dropout)))
        layers.append(keras.layers.Dense(1, activation="sigmoid"))
        model = keras.Sequential(layers)
        # Several steps per device call: the same updates, fewer host round trips (1.4x faster on 2 cores).
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=float(self.learning_rate)),
                      loss="binary_crossentropy", steps_per_execution=32)
        return model

    def fit(self, X, y):
        import keras

        X, y = validate_data(self, X, y, dtype=np.float32)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"KerasMLPClassifier is binary: y has {len(self.classes_)} class(es)")
        y01 = (y == self.classes_[1]).astype(np.float32)
        keras.utils.set_random_seed(int(self.seed))
        # Never under the image model's distribution (a JAX run's DataParallel in the same process), whose
        # batches must divide by the device count: this MLP runs on one device wherever it is.
        with no_distribution():
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
        with no_distribution():
            p = np.concatenate([keras.ops.convert_to_numpy(self.model_(X[i:i + step], training=False)).reshape(-1)
                                for i in range(0, len(X), step)])
        p = np.clip(p.astype(np.float64), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


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


def inner_split(y: np.ndarray, groups: Any, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Row indices (fit, early-stopping) holding out about `fraction` of the patients (stratified by label,
    whole patients only); without groups, rows. None when there are too few rows of either class to hold
    some out (the caller then trains without early stopping)."""
    n_splits = max(2, int(round(1.0 / fraction)))
    if np.bincount(y.astype(int), minlength=2).min() < n_splits:
        return None
    X0 = np.zeros((len(y), 1))
    if groups is not None and len(np.unique(np.asarray(groups, dtype=object).astype(str))) >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        fit_idx, val_idx = next(splitter.split(X0, y, np.asarray(groups, dtype=object).astype(str)))
    else:
        fit_idx, val_idx = next(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X0, y))
    if len(np.unique(y[val_idx])) < 2 or len(np.unique(y[fit_idx])) < 2:
        return None
    return fit_idx, val_idx


class _EarlyStoppedBooster(ClassifierMixin, BaseEstimator):
    """Shared fit: classes, the inner split, rounds found on it, then a refit on every training row."""

    def fit(self, X, y, groups=None):
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"{type(self).__name__} is binary: y has {len(self.classes_)} class(es)")
        y01 = (y == self.classes_[1]).astype(np.int64)
        split = inner_split(y01, groups, self.validation_fraction, self.seed) if self.early_stopping else None
        self.early_stopped_ = split is not None
        if split is None:  # no held-out rows: a fixed, modest number of rounds
            self.best_iteration_ = int(min(self.max_rounds, self.rounds_without_validation))
        else:
            self.best_iteration_ = int(self._best_rounds(X, y01, split))
        self.model_ = self._fit_rounds(X, y01, self.best_iteration_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        p = np.clip(self._positive_proba(X).astype(np.float64), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


class LightGBMClassifier(_EarlyStoppedBooster):
    """LightGBM (binary) with early stopping on a patient-grouped inner split, then a refit.

    The stopping metric is the log-loss by default: with the few positives of a held-out fifth of the
    patients (about 100) the AUC is noisy enough to stop after a handful of rounds in some folds.
    """

    def __init__(self, max_rounds=2000, learning_rate=0.02, num_leaves=7, min_child_samples=100,
                 feature_fraction=0.6, bagging_fraction=0.8, lambda_l2=5.0, early_stopping=True,
                 early_stopping_rounds=50, validation_fraction=0.2, rounds_without_validation=200,
                 metric="binary_logloss", seed=42):
        # scikit-learn's contract: every argument stored as given, under its own name (get_params, clone)
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def _params(self) -> dict[str, Any]:
        return {"objective": "binary", "metric": self.metric, "learning_rate": float(self.learning_rate),
                "num_leaves": int(self.num_leaves), "min_data_in_leaf": int(self.min_child_samples),
                "feature_fraction": float(self.feature_fraction), "bagging_fraction": float(self.bagging_fraction),
                "bagging_freq": 1, "lambda_l2": float(self.lambda_l2), "seed": int(self.seed),
                "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
                "min_data_per_group": 20, "cat_smooth": 10.0}

    def _dataset(self, X: np.ndarray, y: np.ndarray, reference=None):
        lgb = _lightgbm()
        cats = [c for c in CATEGORY_COLUMNS if c < X.shape[1]]
        return lgb.Dataset(X, label=y, categorical_feature=cats, reference=reference, free_raw_data=True,
                           params={"verbose": -1})

    def _best_rounds(self, X, y01, split) -> int:
        lgb = _lightgbm()
        fit_idx, val_idx = split
        train = self._dataset(X[fit_idx], y01[fit_idx])
        valid = self._dataset(X[val_idx], y01[val_idx], reference=train)
        booster = lgb.train(self._params(), train, num_boost_round=int(self.max_rounds), valid_sets=[valid],
                            callbacks=[lgb.early_stopping(int(self.early_stopping_rounds), verbose=False)])
        self.validation_score_ = float(booster.best_score["valid_0"][self.metric])
        return max(1, int(booster.best_iteration or booster.current_iteration()))

    def _fit_rounds(self, X, y01, rounds: int):
        return _lightgbm().train(self._params(), self._dataset(X, y01), num_boost_round=int(rounds))

    def _positive_proba(self, X) -> np.ndarray:
        return self.model_.predict(X)

    def gain_importance(self) -> np.ndarray:
        """Total split gain of each input feature (the booster's own importance)."""
        check_is_fitted(self, "model_")
        return np.asarray(self.model_.feature_importance(importance_type="gain"), dtype=np.float64)


class TunedHGBClassifier(_EarlyStoppedBooster):
    """HistGradientBoosting tuned for this data (slow learning rate, small regularised trees, feature
    subsampling), early stopping on the AUC of a patient-grouped inner split, then a refit."""

    def __init__(self, max_rounds=1000, learning_rate=0.03, max_leaf_nodes=7, min_samples_leaf=100,
                 l2_regularization=5.0, max_features=0.6, early_stopping=True, early_stopping_rounds=50,
                 validation_fraction=0.2, rounds_without_validation=200, seed=42):
        # scikit-learn's contract: every argument stored as given, under its own name (get_params, clone)
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def _booster(self, rounds: int, **kw) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate, max_iter=int(rounds), max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            max_features=self.max_features, categorical_features=list(CATEGORY_COLUMNS),
            random_state=self.seed, **kw)

    def _best_rounds(self, X, y01, split) -> int:
        fit_idx, val_idx = split
        model = self._booster(self.max_rounds, early_stopping=True, scoring="roc_auc",
                              n_iter_no_change=int(self.early_stopping_rounds))
        model.fit(X[fit_idx], y01[fit_idx], X_val=X[val_idx], y_val=y01[val_idx])
        scores = np.asarray(model.validation_score_)  # [0] is before the first round
        self.validation_score_ = float(scores.max())
        return max(1, int(np.argmax(scores)))

    def _fit_rounds(self, X, y01, rounds: int):
        return self._booster(rounds, early_stopping=False).fit(X, y01)

    def _positive_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(X)[:, 1]


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise ConfigError("tabular.model lgbm needs the lightgbm package: pip install lightgbm") from None
    return lightgbm


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


def _logreg(tcfg: TabularConfig, seed: int, y: Any | None = None) -> SkPipeline:
    # The features are already scaled to [0, 1] (one-hot, clipped min-max), so no StandardScaler.
    return SkPipeline([
        ("features", make_features(context=tcfg.context)),
        ("clf", LogisticRegression(C=tcfg.logreg_C, class_weight="balanced", max_iter=5000, random_state=seed)),
    ])


def _on_gbm_features(tcfg: TabularConfig, clf) -> SkPipeline:
    """The tree models' pipeline: their feature set (categories kept as codes), then the classifier."""
    return SkPipeline([("features", make_gbm_features(context=tcfg.context)), ("clf", clf)])


def _gbm(tcfg: TabularConfig, seed: int, y: Any | None = None) -> SkPipeline:
    return _on_gbm_features(tcfg, HistGradientBoostingClassifier(
        learning_rate=tcfg.gbm_learning_rate, max_iter=tcfg.gbm_max_iter,
        max_leaf_nodes=tcfg.gbm_max_leaf_nodes, min_samples_leaf=tcfg.gbm_min_samples_leaf,
        l2_regularization=1.0, categorical_features=list(CATEGORY_COLUMNS),
        # early stopping on the log-loss of a fixed, seeded, stratified 10% of the training fold
        early_stopping=tcfg.gbm_early_stopping, validation_fraction=0.1, n_iter_no_change=20,
        random_state=seed))


def _settings(tcfg: TabularConfig, prefix: str, renamed: dict[str, str] | None = None) -> dict[str, Any]:
    """A booster's own config keys (`lgbm_*`, `hgb_*`) as its estimator's arguments: the prefix dropped,
    `renamed` keys given their estimator name."""
    renamed = renamed or {}
    return {renamed.get(k, k[len(prefix):]): v for k, v in dataclasses.asdict(tcfg).items() if k.startswith(prefix)}


def _lgbm(tcfg: TabularConfig, seed: int, y: Any | None = None) -> SkPipeline:
    return _on_gbm_features(tcfg, LightGBMClassifier(
        **_settings(tcfg, "lgbm_"), early_stopping_rounds=tcfg.early_stopping_rounds,
        validation_fraction=tcfg.inner_validation, seed=seed))


def _hgb(tcfg: TabularConfig, seed: int, y: Any | None = None) -> SkPipeline:
    return _on_gbm_features(tcfg, TunedHGBClassifier(
        **_settings(tcfg, "hgb_", {"hgb_max_iter": "max_rounds"}), early_stopping_rounds=tcfg.early_stopping_rounds,
        validation_fraction=tcfg.inner_validation, seed=seed))


# name -> factory(tcfg, seed, y): an unfitted pipeline whose first step is `features` and last `clf`.
# `all` trains them in this order (ties go to the first). build_pipeline is looked up at call time, so a
# test can replace it on this module.
TABULAR_MODELS: dict[str, Callable[..., Any]] = {
    "mlp_smote": lambda tcfg, seed, y=None: build_pipeline(tcfg, seed, y),
    "logreg": _logreg,
    "gbm": _gbm,
    "lgbm": _lgbm,
    "hgb": _hgb,
}
GROUPED_MODELS = ("lgbm", "hgb")  # their fit takes the training rows' patient ids (clf__groups)


def build_tabular_model(name: str, tcfg: TabularConfig, seed: int, y: Any | None = None) -> Any:
    """The unfitted pipeline of model `name` (a key of TABULAR_MODELS): every one takes the FEATURE_COLUMNS
    (plus the image columns when present) as a DataFrame and passes sklearn.base.clone."""
    if name not in TABULAR_MODELS:
        raise ConfigError(f"tabular.model: expected one of {', '.join(TABULAR_MODELS)}, auto or all, got {name!r}")
    return TABULAR_MODELS[name](tcfg, seed, y)
