"""The tabular stage of ISIC 2024 (the profile's tabular recipe "tbp"): boosted trees on the 3D-TBP lesion
measurements, chosen and early-stopped on the competition's metric (pAUC above 80% TPR).

    train-metadata.csv, test-metadata.csv, folds.csv (read in the package's names: melanoma.data.schema)
    -> ISIC2024Features: the measurements, derived ratios and colour differences, each within its patient
       (z-score, rank), counts per patient and patient-site, categories (melanoma.tabular.isic2024)
    -> + the image runs' out-of-fold predictions and their within-patient forms (tabular.image_runs)
    -> per model (tabular.model) and fold: SeededBoosters on the training folds (tabular.seeds models, each on
       all positives and tabular.negative_ratio negatives per positive; melanoma.tabular.boosters), predicting
       the whole validation fold and the test set
    -> RUN/: the model with the best OOF score (each model in RUN/<model>/ when there are several), oof.csv and
       test_pred.csv keyed by isic_id, metrics.json headed by pAUC with AUC beside it.

The feature table is built once for all folds: every feature is label-free and computed per row or among a
patient's rows (test rows among test rows), and a patient lies in a single fold, so a fold's validation rows
get exactly the values they would get on their own. The competition's train-only columns (target, lesion_id,
iddx_*, mel_*, tbp_lv_dnn_lesion_confidence) are never read; the feature table is checked for them before any
model is trained. No features.csv: at 400,000 tiles and about 200 features it would be gigabytes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from melanoma.config import Config, TabularConfig, save_run_info
from melanoma.data import runs as results
from melanoma.data.competition import Competition, announce
from melanoma.data.folds import read_folds
from melanoma.data.schema import ID, PATIENT, TARGET, csv_line, read_test, read_train
from melanoma.errors import ConfigError, input_error
from melanoma.files import staged_dir
from melanoma.scoring import auc, fmt_auc
from melanoma.tabular import boosters, models, saved
from melanoma.tabular.choice import ModelRun, best_of, remove_stale_model_dirs
from melanoma.tabular.image_runs import image_run_features
from melanoma.tabular.isic2024 import RAW_NUMERIC, ISIC2024Features

log = logging.getLogger("melanoma.tabular")

MODELS = tuple(boosters.LIBRARIES)  # lgbm, hgb, xgboost, catboost
DEFAULT_SEEDS = 3
DEFAULT_NEGATIVE_RATIO = 20  # of about 1,000 negatives per positive in the real data


def seeds(tcfg: TabularConfig) -> int:
    return DEFAULT_SEEDS if tcfg.seeds is None else int(tcfg.seeds)


def negative_ratio(tcfg: TabularConfig) -> int:
    return DEFAULT_NEGATIVE_RATIO if tcfg.negative_ratio is None else int(tcfg.negative_ratio)


def model_names(tcfg: TabularConfig) -> list[str]:
    """The models a run trains: the one named, those of auto_models that are isic2024 models (auto), or every
    installed one (all); each one's package must be installed (one line naming it)."""
    if tcfg.model == "all":
        return [m for m in MODELS if boosters.installed(m)]
    if tcfg.model == "auto":
        names = [m for m in dict.fromkeys(tcfg.auto_models) if m in MODELS]
        if not names:
            raise ConfigError(f"tabular.auto_models: none of {', '.join(tcfg.auto_models)} is an isic2024 model: "
                              f"list some of {', '.join(MODELS)}")
        left = [m for m in tcfg.auto_models if m not in MODELS]
        if left:
            log.info("tabular: auto trains %s (%s: siim2020 metadata models)", ", ".join(names), ", ".join(left))
    elif tcfg.model not in MODELS:
        raise ConfigError(f"tabular.model {tcfg.model} is a siim2020 metadata model: the isic2024 models are "
                          f"{', '.join(MODELS)}, auto or all")
    else:
        names = [tcfg.model]
    for name in names:
        boosters.require(name)
    return names


def booster(name: str, tcfg: TabularConfig, metric: str, seed: int) -> boosters.SeededBoosters:
    """Model `name` with the config's settings: hgb's own (hgb_*), else lgbm's (lgbm_*; xgboost and catboost
    take them in their own terms, see melanoma.tabular.boosters)."""
    if name == "hgb":
        s = dict(max_rounds=tcfg.hgb_max_iter, learning_rate=tcfg.hgb_learning_rate, num_leaves=tcfg.hgb_max_leaf_nodes,
                 min_child_samples=tcfg.hgb_min_samples_leaf, feature_fraction=tcfg.hgb_max_features,
                 lambda_l2=tcfg.hgb_l2_regularization)
    else:
        s = dict(max_rounds=tcfg.lgbm_max_rounds, learning_rate=tcfg.lgbm_learning_rate,
                 num_leaves=tcfg.lgbm_num_leaves, min_child_samples=tcfg.lgbm_min_child_samples,
                 feature_fraction=tcfg.lgbm_feature_fraction, bagging_fraction=tcfg.lgbm_bagging_fraction,
                 lambda_l2=tcfg.lgbm_lambda_l2)
    return boosters.SeededBoosters(library=name, seeds=seeds(tcfg), negative_ratio=negative_ratio(tcfg), metric=metric,
                                   early_stopping_rounds=tcfg.pauc_patience,
                                   validation_fraction=tcfg.inner_validation, seed=seed, **s)


def _check_numbers(df: pd.DataFrame, path: Path) -> None:
    """A measurement that is no number stops here, naming the file, its line, the column and the value."""
    for col in (c for c in RAW_NUMERIC if c in df.columns):
        text = df[col].astype("string").str.strip()
        bad = (pd.to_numeric(df[col], errors="coerce").isna() & text.notna() & (text != "")).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise input_error(path, f"{col} must be a number, got {df[col].iloc[i]!r} (leave it empty for missing; "
                                    f"{int(bad.sum())} such row(s))", csv_line(i))


def read_tables(cfg: Config, competition: Competition, data_dir: str | Path, folds_path: str | Path
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows with their fold, test rows), checked."""
    train = read_train(data_dir, cfg.data.patient_id, competition)
    test = read_test(data_dir, cfg.data.patient_id, competition)
    folds = read_folds(folds_path, train)
    for split, df in (("train", train), ("test", test)):
        _check_numbers(df, competition.csv_path(data_dir, split))
    announce(competition)
    df = train.merge(folds[[ID, "fold"]], on=ID, how="inner", validate="one_to_one")
    df["fold"] = df["fold"].astype("int64")
    return df, test


def feature_tables(df: pd.DataFrame, test: pd.DataFrame, tcfg: TabularConfig, competition: Competition,
                   folds_path: str | Path, features: ISIC2024Features | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """(training features, test features, the image runs used), indexed by id; never a train-only column.
    `features`: the transformer to fit (the run keeps it for inference, melanoma.tabular.saved)."""
    features = (features or ISIC2024Features()).fit(df)
    X = features.transform(df).set_axis(pd.Index(df[ID]), axis=0)
    Xt = features.transform(test).set_axis(pd.Index(test[ID]), axis=0)
    banned = set(competition.train_only)
    leaked = [c for c in X.columns if c in banned or any(c.startswith(f"{b}_") for b in banned)]
    if leaked:  # a guard on the builder itself: the test metadata lacks these, or they follow from the label
        raise RuntimeError(f"tabular: train-only column(s) {', '.join(leaked)} among the features")
    info: list[dict[str, Any]] = []
    if tcfg.image_runs:
        extra, extra_test, info = image_run_features(tcfg.image_runs, df, test, folds_path)
        X, Xt = pd.concat([X, extra], axis=1), pd.concat([Xt, extra_test], axis=1)
    return X, Xt, info


def _fold(name: str, cfg: Config, competition: Competition, X: pd.DataFrame, df: pd.DataFrame, k: int,
          folds_path: str | Path) -> tuple[boosters.SeededBoosters, np.ndarray]:
    """Model `name` trained on every fold but k, and the rows of fold k (positions)."""
    folds, y = df["fold"].to_numpy(), df[TARGET].to_numpy()
    trn, val = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
    if len(np.unique(y[trn])) < 2:
        raise input_error(folds_path, f"fold {k}: the other folds hold a single class; cannot train")
    est = booster(name, cfg.tabular, competition.metric, cfg.seed + k)
    with threadpool_limits(limits=1):  # one thread: see melanoma.tabular.stage._fit
        est.fit(X.iloc[trn], y[trn], groups=df[PATIENT].to_numpy(dtype=object)[trn])
    return est, val


def _predict(est: boosters.SeededBoosters, X: pd.DataFrame) -> np.ndarray:
    with threadpool_limits(limits=1):
        return est.predict_proba(X)[:, 1]


def fit_model(name: str, cfg: Config, competition: Competition, X: pd.DataFrame, Xt: pd.DataFrame,
              df: pd.DataFrame, folds_path: str | Path) -> ModelRun:
    """Model `name` on every fold: out-of-fold predictions of every training row, test predictions."""
    tcfg, start = cfg.tabular, time.perf_counter()
    oof_parts, test_preds, per_fold, gains, members = [], [], {}, [], []
    for k in sorted(int(f) for f in df["fold"].unique()):
        est, val = _fold(name, cfg, competition, X, df, k, folds_path)
        pred = _predict(est, X.iloc[val])
        if tcfg.test_predictions == "fold_mean":
            test_preds.append(_predict(est, Xt))
            members.append(est)
        oof_parts.append(pd.DataFrame({ID: X.index[val], TARGET: df[TARGET].to_numpy()[val], "pred": pred,
                                       "fold": k}))
        per_fold[str(k)] = {"rows": int(len(df) - len(val)), "rows_kept": est.rows_kept_, "rounds": est.rounds_,
                            "early_stopped": bool(est.early_stopped_)}
        if est.gain_importance() is not None:
            gains.append(est.gain_importance())
        y = oof_parts[-1][TARGET]
        log.info("tabular fold %d (%s): %s %s, AUC %s (%d train rows, %s per seed, rounds %s; %d validation)", k,
                 name, competition.metric_name, fmt_auc(competition.score(y, pred)), fmt_auc(auc(y, pred)),
                 per_fold[str(k)]["rows"], "/".join(map(str, est.rows_kept_)), "/".join(map(str, est.rounds_)),
                 len(val))
    if tcfg.test_predictions == "refit":  # one more model, on every training row
        est = booster(name, tcfg, competition.metric, cfg.seed)
        with threadpool_limits(limits=1):
            est.fit(X, df[TARGET].to_numpy(), groups=df[PATIENT].to_numpy(dtype=object))
        test_preds, members = [_predict(est, Xt)], [est]
    oof = pd.concat(oof_parts, ignore_index=True)
    extra = {"model": name, "features": [str(c) for c in X.columns], "seeds": seeds(tcfg),
             "negative_ratio": negative_ratio(tcfg), "test_predictions": tcfg.test_predictions,
             name: {k: v for k, v in booster(name, tcfg, competition.metric, cfg.seed).get_params().items()
                    if k not in ("library", "seed")}, "folds": per_fold, **_importances(gains),
             "n_test": int(len(Xt)), "seconds": round(time.perf_counter() - start, 1)}
    test_pred = pd.DataFrame({ID: Xt.index, TARGET: np.mean(test_preds, axis=0)})
    return ModelRun(name, oof, test_pred, extra, competition.score(oof[TARGET], oof["pred"]), members)


def _importances(gains: list[dict[str, float]]) -> dict[str, Any]:
    if not gains:
        return {}
    total = {n: float(np.mean([g[n] for g in gains])) for n in gains[0]}
    scale = sum(total.values()) or 1.0
    return {"importances": {n: v / scale for n, v in sorted(total.items(), key=lambda kv: -kv[1])},
            "importances_info": f"LightGBM split gain, share of the total, summed over the seeds, averaged over "
                                f"{len(gains)} folds"}


def run_tbp(cfg: Config, competition: Competition, data_dir: str | Path, folds_path: str | Path,
            out_dir: str | Path, sizes_dir: str | Path | None = None) -> dict[str, Any]:
    """The `tabular` stage for ISIC 2024 (see the module docstring); returns the metrics of RUN/."""
    tcfg, start = cfg.tabular, time.perf_counter()
    names = model_names(tcfg)
    df, test = read_tables(cfg, competition, data_dir, folds_path)
    features = ISIC2024Features()
    X, Xt, image_info = feature_tables(df, test, tcfg, competition, folds_path, features)
    log.info("tabular: %d features (%d from %d image run(s)) for %d training and %d test tiles; %s, %d seed(s), "
             "%s negatives per positive", X.shape[1], 3 * len(image_info), len(image_info), len(X), len(Xt),
             ", ".join(names), seeds(tcfg), negative_ratio(tcfg) or "all")
    runs = {name: fit_model(name, cfg, competition, X, Xt, df, folds_path) for name in names}
    scores = {name: run.oof_auc for name, run in runs.items()}
    best = best_of(names, scores)
    extra = dict(runs[best].extra, models=scores, image_runs=image_info)
    if len(names) > 1:
        extra["selection"] = (f"{best}: the best out-of-fold {competition.metric_name} of {', '.join(names)} "
                              f"(tabular.model: {tcfg.model}); chosen on the OOF predictions themselves, so its "
                              "score is slightly optimistic")
        log.info("tabular models, OOF %s: %s", competition.metric_name, ", ".join(
            f"{n} {fmt_auc(s)} ({runs[n].extra['seconds']:.0f} s)" for n, s in scores.items()))
    extra["seconds"] = round(time.perf_counter() - start, 1)
    with staged_dir(out_dir, "tabular") as stage:  # every file written, then moved in
        if len(names) > 1:
            for name, run in runs.items():
                results.write_run(stage / name, run.oof, run.test_pred, run.extra, competition)
                saved.save_models(stage / name / saved.MODELS_DIR, features, run.members, list(X.columns), image_info,
                                  cfg.data.patient_id)
                save_run_info(stage / name, dataclasses.replace(cfg, tabular=dataclasses.replace(tcfg, model=name)),
                              "tabular")
        metrics = results.write_run(stage, runs[best].oof, runs[best].test_pred, extra, competition)
        # the chosen model's fitted members, for `melanoma infer` (melanoma.tabular.saved)
        saved.save_models(stage / saved.MODELS_DIR, features, runs[best].members, list(X.columns), image_info,
                          cfg.data.patient_id)
        save_run_info(stage, cfg, "tabular")
    for folder in [Path(out_dir) / n for n in names] if len(names) > 1 else []:
        saved.remove_stale_members(folder / saved.MODELS_DIR)
    saved.remove_stale_members(Path(out_dir) / saved.MODELS_DIR)
    remove_stale_model_dirs(Path(out_dir), names if len(names) > 1 else [], [*models.TABULAR_MODELS, *MODELS])
    log.info("tabular: OOF %s %s, AUC %s%s over %d tiles, %d folds -> %s", competition.metric_name,
             fmt_auc(metrics[f"oof_{competition.metric}"]), fmt_auc(metrics["oof_auc"]),
             f" (best of {len(names)} models: {best})" if len(names) > 1 else "", len(X), df["fold"].nunique(),
             out_dir)
    return metrics
