"""The ISIC 2024 tree models: `SeededBoosters`, one scikit-learn classifier over four boosting libraries
(`LIBRARIES`: lgbm = LightGBM, hgb = scikit-learn's HistGradientBoosting, xgboost, catboost; the last two only
where installed, `require` says which package is missing in one line).

fit(X, y, groups) on a training fold's feature table (a DataFrame: pandas categories stay categories):
1. about `validation_fraction` of the training patients are held out whole (models.inner_split), for early
   stopping only;
2. for each of `seeds` seeds: every positive and `negative_ratio` negatives per positive drawn at random from
   the other rows (0: every negative; ISIC 2024 has about 1,000 negatives per positive, and more of them mostly
   cost time), trained with early stopping on the held-out patients' `metric` (the competition's: pAUC), then
   refitted on a fresh draw from every training row with the rounds found;
3. predict_proba averages the seeds' probabilities.
Undersampling happens inside fit, so only the training rows it is given are ever thinned: whatever the caller
predicts (a validation fold, the test set) is predicted whole. The held-out patients are never thinned either,
so their score is measured on the true mix of classes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from melanoma.errors import ConfigError
from melanoma.scoring import METRICS, fast_partial_auc
from melanoma.tabular.models import inner_split

PACKAGES = {"lgbm": "lightgbm", "hgb": "sklearn", "xgboost": "xgboost", "catboost": "catboost"}


def require(name: str) -> Any:
    """The package behind model `name`, or one ConfigError naming it when it is not installed."""
    try:
        if name == "lgbm":  # import statements: every one is an external package, never a melanoma module
            import lightgbm as package
        elif name == "hgb":
            import sklearn as package
        elif name == "xgboost":
            import xgboost as package
        else:
            import catboost as package
        return package
    except ImportError:
        raise ConfigError(f"tabular.model {name} needs the {PACKAGES[name]} package, which is not installed: "
                          f"pip install {PACKAGES[name]}, or choose lgbm") from None


def installed(name: str) -> bool:
    try:
        require(name)
    except ConfigError:
        return False
    return True


def undersample(y01: np.ndarray, ratio: int, rng: np.random.Generator) -> np.ndarray:
    """Row positions: every positive and `ratio` negatives per positive drawn without replacement, in row order;
    every row when `ratio` is 0 or there are not that many negatives."""
    pos, neg = np.flatnonzero(y01 == 1), np.flatnonzero(y01 == 0)
    n = int(ratio) * len(pos)
    if ratio <= 0 or n >= len(neg):
        return np.arange(len(y01))
    return np.sort(np.concatenate([pos, rng.choice(neg, n, replace=False)]))


# --- the libraries: train(settings, X, y, rounds, seed, valid, score) -> (model, rounds); predict(model, X) ---
# `valid` is (X, y) of the held-out patients or None (then exactly `rounds` rounds); `score(y, p)` the metric.

def _lgbm_train(s: dict, X, y, rounds: int, seed: int, valid, score: Callable):
    lgb = require("lgbm")
    params = {"objective": "binary", "metric": "None", "learning_rate": s["learning_rate"],
              "num_leaves": s["num_leaves"], "min_data_in_leaf": s["min_child_samples"],
              "feature_fraction": s["feature_fraction"], "bagging_fraction": s["bagging_fraction"], "bagging_freq": 1,
              "lambda_l2": s["lambda_l2"], "seed": seed, "deterministic": True, "force_row_wise": True,
              "num_threads": 1, "verbose": -1, "min_data_per_group": 20, "cat_smooth": 10.0}
    data = lgb.Dataset(X, label=y, params={"verbose": -1})
    if valid is None:
        return lgb.train(params, data, num_boost_round=rounds), rounds
    Xv, yv = valid
    booster = lgb.train(params, data, num_boost_round=rounds,
                        valid_sets=[lgb.Dataset(Xv, label=yv, reference=data)],
                        feval=lambda p, _: ("score", score(yv, p), True),
                        callbacks=[lgb.early_stopping(s["early_stopping_rounds"], verbose=False)])
    return booster, max(1, int(booster.best_iteration or booster.current_iteration()))


def _hgb_train(s: dict, X, y, rounds: int, seed: int, valid, score: Callable):
    from sklearn.ensemble import HistGradientBoostingClassifier

    kw = dict(learning_rate=s["learning_rate"], max_leaf_nodes=s["num_leaves"],
              min_samples_leaf=s["min_child_samples"], l2_regularization=s["lambda_l2"],
              max_features=s["feature_fraction"], categorical_features="from_dtype", random_state=seed)
    if valid is None:
        return HistGradientBoostingClassifier(max_iter=rounds, early_stopping=False, **kw).fit(X, y), rounds
    # Early stopping in warm-started chunks, each new round scored once from the staged predictions:
    # scikit-learn's own early stopping with a scorer predicts with every tree at every round.
    Xv, yv = valid
    patience = int(s["early_stopping_rounds"])
    model = HistGradientBoostingClassifier(warm_start=True, early_stopping=False, **kw)
    best, best_round, done = -np.inf, 0, 0
    while done < rounds and best_round > done - patience:
        # doubling chunks: a few refits (each bins X again), staged passes linear in the rounds overall
        model.set_params(max_iter=min(max(2 * done, patience), rounds)).fit(X, y)
        for i, p in enumerate(model.staged_predict_proba(Xv), start=1):
            if i > best_round + patience:  # stopped here: later rounds of the chunk are never looked at
                break
            value = score(yv, p[:, 1]) if i > done else None
            if value is not None and value > best + 1e-12:
                best, best_round = value, i
        if int(model.n_iter_) <= done:  # no round added: nothing left to split
            break
        done = int(model.n_iter_)
    return model, max(1, best_round)


def _xgboost_train(s: dict, X, y, rounds: int, seed: int, valid, score: Callable):
    xgb = require("xgboost")
    params = {"objective": "binary:logistic", "eta": s["learning_rate"], "tree_method": "hist",
              "grow_policy": "lossguide", "max_leaves": s["num_leaves"], "max_depth": 0,
              "subsample": s["bagging_fraction"], "colsample_bytree": s["feature_fraction"],
              "lambda": s["lambda_l2"], "seed": seed, "nthread": 1, "verbosity": 0,
              "disable_default_eval_metric": 1}
    data = xgb.DMatrix(X, label=y, enable_categorical=True)
    if valid is None:
        return xgb.train(params, data, num_boost_round=rounds), rounds
    Xv, yv = valid
    booster = xgb.train(params, data, num_boost_round=rounds,
                        evals=[(xgb.DMatrix(Xv, label=yv, enable_categorical=True), "valid")],
                        custom_metric=lambda p, _: ("score", score(yv, p)), maximize=True,
                        early_stopping_rounds=s["early_stopping_rounds"], verbose_eval=False)
    return booster, max(1, int(booster.best_iteration) + 1)


def _xgboost_predict(model, X) -> np.ndarray:
    return model.predict(require("xgboost").DMatrix(X, enable_categorical=True))


class _CatBoostMetric:
    """The competition's metric as a CatBoost eval_metric (its approxes are logits: the ranking is the same)."""

    def __init__(self, score: Callable):
        self.score = score

    def is_max_optimal(self) -> bool:
        return True

    def evaluate(self, approxes, target, weight):
        return float(self.score(np.asarray(target), np.asarray(approxes[0]))), 1.0

    def get_final_error(self, error, weight):
        return error


def _catboost_frame(X: pd.DataFrame) -> pd.DataFrame:
    """CatBoost takes categories as text, never NaN: a missing category becomes its own level."""
    return X.assign(**{c: X[c].astype(object).where(X[c].notna(), "missing").astype(str).astype(object)
                       for c in _categories(X)})


def _categories(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]


def _catboost_train(s: dict, X, y, rounds: int, seed: int, valid, score: Callable):
    cb = require("catboost")
    cats = _categories(X)
    X = _catboost_frame(X)
    model = cb.CatBoostClassifier(
        iterations=rounds, learning_rate=s["learning_rate"],
        depth=min(16, max(1, math.ceil(math.log2(s["num_leaves"])))),  # symmetric trees: 2**depth leaves
        l2_leaf_reg=s["lambda_l2"], rsm=s["feature_fraction"], bootstrap_type="Bernoulli",
        subsample=s["bagging_fraction"], random_seed=seed, thread_count=1, verbose=0, allow_writing_files=False,
        cat_features=cats, eval_metric=_CatBoostMetric(score) if valid is not None else None,
        early_stopping_rounds=s["early_stopping_rounds"] if valid is not None else None)
    with warnings.catch_warnings():  # CatBoost would like numba for a Python metric; it runs without
        warnings.filterwarnings("ignore", message="Failed to import numba")
        if valid is None:
            return model.fit(X, y), rounds
        model.fit(X, y, eval_set=(_catboost_frame(valid[0]), valid[1]), use_best_model=False)
    return model, max(1, int(model.get_best_iteration()) + 1)


LIBRARIES: dict[str, tuple[Callable, Callable]] = {  # name -> (train, predict)
    "lgbm": (_lgbm_train, lambda model, X: model.predict(X)),
    "hgb": (_hgb_train, lambda model, X: model.predict_proba(X)[:, 1]),
    "xgboost": (_xgboost_train, _xgboost_predict),
    "catboost": (_catboost_train, lambda model, X: model.predict_proba(_catboost_frame(X))[:, 1]),
}


class SeededBoosters(ClassifierMixin, BaseEstimator):
    """Boosted trees of one library, `seeds` models averaged, each on its own draw of negatives, early stopped
    on `metric` ("pauc" | "auc") of held-out training patients (see the module docstring)."""

    def __init__(self, library="lgbm", seeds=3, negative_ratio=20, metric="pauc", max_rounds=2000,
                 learning_rate=0.02, num_leaves=7, min_child_samples=100, feature_fraction=0.6,
                 bagging_fraction=0.8, lambda_l2=5.0, early_stopping=True, early_stopping_rounds=200,
                 validation_fraction=0.2, rounds_without_validation=200, seed=42):
        # scikit-learn's contract: every argument stored as given, under its own name (get_params, clone)
        vars(self).update({k: v for k, v in locals().items() if k != "self"})

    def _settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("learning_rate", "num_leaves", "min_child_samples", "feature_fraction",
                                              "bagging_fraction", "lambda_l2", "early_stopping_rounds")}

    def fit(self, X: pd.DataFrame, y, groups=None) -> SeededBoosters:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"SeededBoosters takes a DataFrame (its categories stay categories), got {type(X).__name__}")
        if self.library not in LIBRARIES:
            raise ConfigError(f"tabular.model: expected one of {', '.join(LIBRARIES)}, got {self.library!r}")
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"SeededBoosters is binary: y has {len(self.classes_)} class(es)")
        y01 = (y == self.classes_[1]).astype(np.int64)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        train, _ = LIBRARIES[self.library]
        score = fast_partial_auc if self.metric == "pauc" else METRICS[self.metric]  # scored every round
        split = inner_split(y01, groups, self.validation_fraction, self.seed) if self.early_stopping else None
        self.early_stopped_ = split is not None
        self.models_, self.rounds_, self.rows_kept_ = [], [], []
        for i in range(int(self.seeds)):
            seed = int(self.seed) + i
            rng = np.random.default_rng(seed)
            rounds = int(min(self.max_rounds, self.rounds_without_validation))
            if split is not None:
                fit_idx, val_idx = split
                keep = fit_idx[undersample(y01[fit_idx], self.negative_ratio, rng)]
                _, rounds = train(self._settings(), X.iloc[keep], y01[keep], int(self.max_rounds), seed,
                                  (X.iloc[val_idx], y01[val_idx]), score)
            keep = undersample(y01, self.negative_ratio, rng)
            model, _ = train(self._settings(), X.iloc[keep], y01[keep], rounds, seed, None, score)
            self.models_.append(model)
            self.rounds_.append(int(rounds))
            self.rows_kept_.append(int(len(keep)))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "models_")
        if list(X.columns) != list(self.feature_names_in_):
            raise ValueError("SeededBoosters: X has other columns than the ones it was fitted on")
        _, predict = LIBRARIES[self.library]
        p = np.mean([np.asarray(predict(m, X), dtype=np.float64) for m in self.models_], axis=0) if len(X) \
            else np.zeros(0)
        p = np.clip(p, 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def gain_importance(self) -> dict[str, float] | None:
        """LightGBM's split gain of each feature, summed over the seeds (None for the other libraries)."""
        check_is_fitted(self, "models_")
        if self.library != "lgbm":
            return None
        gain = np.sum([m.feature_importance(importance_type="gain") for m in self.models_], axis=0)
        return {str(n): float(g) for n, g in zip(self.feature_names_in_, gain)}
