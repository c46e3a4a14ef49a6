"""The `tabular` stage: the fold loop of every model, the choice among them and the run folder.

Each model is one scikit-learn / imbalanced-learn pipeline (melanoma.tabular.models), fitted per fold on the
training rows only: imputers, encoders, scalers and SMOTE learn from the training folds; the early-stopping
rows of lgbm and hgb are patients held out of the training folds. The test prediction is the mean over the
folds' models (tabular.test_predictions: fold_mean) or that of one more model fitted on every training row
(refit). `auto` trains tabular.auto_models and keeps the best out-of-fold AUC; `all` does so over every model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from threadpoolctl import threadpool_limits

from melanoma import config as config_mod
from melanoma import scoring
from melanoma.data import runs as results
from melanoma.config import Config, TabularConfig
from melanoma.data.schema import ID, PATIENT, TARGET, read_test, read_train
from melanoma.errors import ConfigError, input_error
from melanoma.files import staged_dir, write_csv
from melanoma.data.folds import read_folds
from melanoma.runtime.paths import RunPaths
from melanoma.runtime.stage import Result
from melanoma.data.competition import Competition, announce, resolve
from melanoma.tabular import models, sources, tbp
from melanoma.tabular.image_runs import image_run_features
from melanoma.tabular.choice import ModelRun, best_of, remove_stale_model_dirs
from melanoma.tabular.features import META, SIZE, IMAGE_COLUMNS, context_columns, feature_table, present

log = logging.getLogger("melanoma.tabular")


def _check_config(tcfg: TabularConfig) -> None:
    names = ", ".join(models.TABULAR_MODELS)
    if tcfg.model not in (*models.TABULAR_MODELS, "auto", "all"):
        raise ConfigError(f"tabular.model: expected one of {names}, auto or all for siim2020, got {tcfg.model!r}"
                          f"{' (an isic2024 model)' if tcfg.model in tbp.MODELS else ''}")
    bad = [m for m in tcfg.auto_models if m not in models.TABULAR_MODELS]
    if not tcfg.auto_models or bad:
        raise ConfigError(f"tabular.auto_models: expected a non-empty list of {names}, got {tcfg.auto_models}")
    for key in ("seeds", "negative_ratio"):  # the isic2024 trees' settings: never silently ignored
        if getattr(tcfg, key) is not None:
            raise ConfigError(f"tabular.{key} is a setting of the isic2024 models; siim2020's tabular models "
                              f"have none: leave it unset (null)")
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
    for key in ("image_size", "image_stats"):
        if getattr(tcfg, key) not in ("auto", "off"):
            raise ConfigError(f"tabular.{key}: expected auto or off, got {getattr(tcfg, key)!r}")
    if tcfg.test_predictions not in ("fold_mean", "refit"):
        raise ConfigError(f"tabular.test_predictions: expected fold_mean or refit, got {tcfg.test_predictions!r}")
    if tcfg.gbm_importance_repeats < 0:
        raise ConfigError(f"tabular.gbm_importance_repeats: expected 0 (off) or more, got "
                          f"{tcfg.gbm_importance_repeats}")


def model_names(tcfg: TabularConfig) -> list[str]:
    """The models a run trains: every one (all), tabular.auto_models (auto) or the one named."""
    if tcfg.model == "all":
        return list(models.TABULAR_MODELS)
    if tcfg.model == "auto":
        return list(dict.fromkeys(tcfg.auto_models))
    return [tcfg.model]


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


def _fit(name: str, tcfg: TabularConfig, seed: int, rows: pd.DataFrame, inputs: list[str]) -> Any:
    """Model `name` fitted on `rows` (lgbm/hgb also get their patient ids, for the inner split)."""
    y = rows[TARGET].to_numpy()
    pipe = models.build_tabular_model(name, tcfg, seed, y)
    params: dict[str, Any] = {}
    if name in models.GROUPED_MODELS:
        pid = rows[PATIENT].to_numpy(dtype=object, na_value=None) if PATIENT in rows else rows[ID].to_numpy()
        params["clf__groups"] = np.where(pd.isna(pid), rows[ID].to_numpy(dtype=object), pid)
    # One OpenMP/BLAS thread for scikit-learn (boosting, SMOTE's neighbours, lbfgs): at this size a fold
    # takes seconds on one thread, while several threads spin-wait badly on a busy machine (10x slower
    # measured on 2 shared cores). Keras/TensorFlow keep their own thread pools.
    with threadpool_limits(limits=1):
        pipe.fit(rows[inputs], y, **params)
    return pipe


def _predict(pipe: Any, X: pd.DataFrame) -> np.ndarray:
    with threadpool_limits(limits=1):
        return pipe.predict_proba(X)[:, 1]


def _smote_row(k: int, plan: dict[str, Any], pipe: Any, y: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"fold": k, "applied": plan["apply"], "reason": plan["reason"],
                           "k_neighbors": plan["k_neighbors"] if plan["apply"] else None,
                           "rows_before": int(len(y)), "positives_before": int((y == 1).sum()),
                           "rows_after": int(len(y)), "positives_after": int((y == 1).sum())}
    if plan["apply"]:
        sm = pipe.named_steps["smote"]
        row.update(rows_before=sm.n_in_, positives_before=sm.positives_in_, rows_after=sm.n_out_,
                   positives_after=sm.positives_out_)
    return row


def _model_settings(name: str, tcfg: TabularConfig) -> dict[str, Any]:
    """The settings of model `name` for metrics.json (the config keys of that model, without prefix)."""
    if name == "mlp_smote":
        return {"mlp": {"hidden": list(tcfg.hidden), "dropout": tcfg.dropout, "epochs": tcfg.epochs,
                        "batch_size": tcfg.batch_size, "learning_rate": tcfg.learning_rate}}
    if name == "logreg":
        return {"logreg": {"C": tcfg.logreg_C, "class_weight": "balanced"}}
    prefix = {"gbm": "gbm_", "lgbm": "lgbm_", "hgb": "hgb_"}[name]
    settings = {f.name[len(prefix):]: getattr(tcfg, f.name) for f in dataclasses.fields(tcfg)
                if f.name.startswith(prefix) and f.name != "gbm_importance_repeats"}
    if name in models.GROUPED_MODELS:
        settings.update(inner_validation=tcfg.inner_validation, early_stopping_rounds=tcfg.early_stopping_rounds)
    return {name: settings}


def _fit_model(name: str, cfg: Config, df: pd.DataFrame, test: pd.DataFrame, inputs: list[str],
               fold_ids: list[int], folds_path: str | Path) -> ModelRun:
    """Train model `name` on every fold; predict its validation fold and the test set."""
    tcfg = cfg.tabular
    start = time.perf_counter()
    oof_parts, test_preds, smote_rows, importances, gains = [], [], [], [], []
    encoded: dict[str, list[str]] = {}
    rounds: dict[str, int] = {}
    for k in fold_ids:
        trn, val = df[df["fold"] != k], df[df["fold"] == k]
        y = trn[TARGET].to_numpy()
        if len(np.unique(y)) < 2:
            raise input_error(folds_path, f"fold {k}: the other folds hold a single class; cannot train")
        seed = cfg.seed + k
        if name == "mlp_smote":
            plan = models.smote_plan(tcfg, y)
            if tcfg.smote and not plan["apply"]:
                level = logging.WARNING if plan.get("n_minority", 0) < 2 else logging.INFO
                log.log(level, "tabular fold %d: SMOTE skipped: %s", k, plan["reason"])
        pipe = _fit(name, tcfg, seed, trn, inputs)
        pred = _predict(pipe, val[inputs])
        if tcfg.test_predictions == "fold_mean":
            test_preds.append(_predict(pipe, test[inputs]))
        feature_names = [str(n) for n in pipe.named_steps["features"].get_feature_names_out()]
        encoded[str(k)] = feature_names
        clf = pipe.named_steps["clf"]
        note = ""
        if name == "mlp_smote":
            smote_rows.append(_smote_row(k, plan, pipe, y))
            note = f" -> {smote_rows[-1]['rows_after']} after SMOTE"
        elif name == "gbm":
            rounds[str(k)] = int(clf.n_iter_)
            with threadpool_limits(limits=1):
                imp = gbm_importance(pipe, val[inputs], val[TARGET].to_numpy(), tcfg.gbm_importance_repeats, seed)
            if imp is not None:
                importances.append(imp)
        elif name in models.GROUPED_MODELS:
            rounds[str(k)] = int(clf.best_iteration_)
            note = f", {clf.best_iteration_} rounds" + ("" if clf.early_stopped_ else " (no early stopping)")
            if name == "lgbm":
                gains.append(dict(zip(feature_names, clf.gain_importance())))
        fold_oof = pd.DataFrame({ID: val[ID].to_numpy(), TARGET: val[TARGET].to_numpy(), "pred": pred, "fold": k})
        oof_parts.append(fold_oof)
        log.info("tabular fold %d (%s): AUC %s (%d train rows%s, %d validation)", k, name,
                 scoring.fmt_auc(scoring.auc(fold_oof[TARGET], pred)), len(trn), note, len(val))

    if tcfg.test_predictions == "refit":  # one more model, on every training row
        test_preds = [_predict(_fit(name, tcfg, cfg.seed, df, inputs), test[inputs])]
        log.info("tabular (%s): test predictions of a model refitted on all %d training rows", name, len(df))
    oof = pd.concat(oof_parts, ignore_index=True)
    test_pred = pd.DataFrame({ID: test[ID].to_numpy(), TARGET: np.mean(test_preds, axis=0)})
    extra = _model_extra(name, tcfg, inputs, encoded, smote_rows, rounds)
    extra.update(_importance_extra(tcfg, importances, gains))
    extra["n_test"] = int(len(test))
    extra["seconds"] = round(time.perf_counter() - start, 1)
    oof_auc = results.oof_metrics(oof)["oof_auc"]
    return ModelRun(name, oof, test_pred, extra, oof_auc)


def _model_extra(name: str, tcfg: TabularConfig, inputs: list[str], encoded: dict[str, list[str]],
                 smote_rows: list[dict], rounds: dict[str, int]) -> dict[str, Any]:
    """What run.json says about one model: its features, settings, SMOTE rows and boosting rounds per fold."""
    extra: dict[str, Any] = {
        "model": name,
        "features": present(inputs, META + SIZE + IMAGE_COLUMNS),
        "context_features": context_columns(inputs) if tcfg.context else [],
        "encoded_features": encoded,
        "test_predictions": tcfg.test_predictions,
        **_model_settings(name, tcfg),
    }
    if name == "mlp_smote":
        extra["smote"] = {"enabled": bool(tcfg.smote), "k_neighbors": int(tcfg.smote_k),
                          "ratio": float(tcfg.smote_ratio), "folds": smote_rows}
    if rounds:
        extra[name]["n_iter"] = rounds
    return extra


def _importance_extra(tcfg: TabularConfig, importances: list[dict], gains: list[dict]) -> dict[str, Any]:
    """Feature importances averaged over the folds: permutation (gbm) or split gain (lgbm); logged for gbm."""
    if importances:
        mean = {n: float(np.mean([imp[n] for imp in importances])) for n in importances[0]}
        ranked = dict(sorted(mean.items(), key=lambda kv: -kv[1]))
        log.info("tabular gbm: permutation importance (mean AUC drop, %d folds)\n%s", len(importances),
                 "\n".join(f"  {n:<32s} {v:+.4f}" for n, v in ranked.items()))
        return {"importances": ranked,
                "importances_info": (f"permutation importance on each validation fold: mean drop in ROC AUC over "
                                     f"{tcfg.gbm_importance_repeats} shuffles, averaged over {len(importances)} folds")}
    if gains:
        total = {n: float(np.mean([g.get(n, 0.0) for g in gains])) for n in gains[0]}
        scale = sum(total.values()) or 1.0
        return {"importances": {n: v / scale for n, v in sorted(total.items(), key=lambda kv: -kv[1])},
                "importances_info": f"LightGBM split gain, share of the total, averaged over {len(gains)} folds"}
    return {}


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


def run_metadata(cfg: Config, competition: Competition, data_dir: str | Path, folds_path: str | Path,
                 out_dir: str | Path, sizes_dir: str | Path | None = None) -> dict[str, Any]:
    """The metadata recipe (siim2020): DATA/train.csv, DATA/test.csv, folds.csv -> a run folder; the metrics.

    sizes_dir (the TFRecords folder) supplies image width/height when the CSVs lack them (add_image_sizes),
    and the images for the colour statistics when DATA has no JPEGs (add_image_stats).

    One model: RUN/ holds its oof.csv, test_pred.csv, metrics.json. `auto`/`all`: each model in RUN/<model>/,
    and RUN/ holds the one with the best OOF AUC (metrics.json says which, and the AUC of every model).
    RUN/features.csv holds the engineered features either way, RUN/image_stats.csv the image statistics.
    """
    tcfg = cfg.tabular
    _check_config(tcfg)
    start = time.perf_counter()
    train = read_train(data_dir, cfg.data.patient_id, competition)
    test = read_test(data_dir, cfg.data.patient_id, competition)
    folds = read_folds(folds_path, train)
    announce(competition)
    train, test, sizes_from = sources.add_image_sizes(train, test, sizes_dir, tcfg.image_size)
    train, test, stats = sources.add_image_stats(train, test, data_dir, sizes_dir, tcfg.image_stats, out_dir)
    df = train.merge(folds[[ID, "fold"]], on=ID, how="inner", validate="one_to_one")
    df["fold"] = df["fold"].astype("int64")
    fold_ids = sorted(int(k) for k in df["fold"].unique())
    df, test, image_info = _with_image_runs(tcfg, df, test, folds_path)
    inputs = sources.input_columns(df, test)
    names = model_names(tcfg)
    features = _features_csv(df, test, inputs, fold_ids, tcfg.context)

    runs = {name: _fit_model(name, cfg, df, test, inputs, fold_ids, folds_path) for name in names}
    scores = {name: run.oof_auc for name, run in runs.items()}
    best = best_of(names, scores)
    top = runs[best]
    extra = dict(top.extra, models=scores, image_sizes_from=sizes_from,
                 image_stats_from=None if stats is None else str(stats["source"].iloc[0]),
                 **({"image_runs": image_info} if image_info else {}))
    if len(names) > 1:
        extra["selection"] = (f"{best}: the best out-of-fold AUC of {', '.join(names)} (tabular.model: "
                              f"{tcfg.model}); chosen on the OOF predictions themselves, so its oof_auc is "
                              f"slightly optimistic")
        log.info("tabular models, OOF AUC: %s", ", ".join(
            f"{n} {scoring.fmt_auc(s)} ({runs[n].extra['seconds']:.0f} s)" for n, s in scores.items()))
    extra["seconds"] = round(time.perf_counter() - start, 1)
    # Everything is computed; write the run into a staging folder and move it in only when all files exist.
    with staged_dir(out_dir, "tabular") as stage:
        write_csv(stage / "features.csv", features)
        if stats is not None:
            write_csv(stage / sources.STATS_CSV, stats)
        if len(names) > 1:
            for name, run in runs.items():
                results.write_run(stage / name, run.oof, run.test_pred, run.extra)
                sub_cfg = dataclasses.replace(cfg, tabular=dataclasses.replace(tcfg, model=name))
                config_mod.save_run_info(stage / name, sub_cfg, "tabular")
        metrics = results.write_run(stage, top.oof, top.test_pred, extra)
        config_mod.save_run_info(stage, cfg, "tabular")
    remove_stale_model_dirs(Path(out_dir), names if len(names) > 1 else [], [*models.TABULAR_MODELS, *tbp.MODELS])
    chosen = f" (best of {len(names)} models: {best})" if len(names) > 1 else ""
    log.info("tabular: OOF AUC %s%s over %d images, %d folds -> %s", scoring.fmt_auc(metrics["oof_auc"]), chosen,
             len(top.oof), len(fold_ids), out_dir)
    return metrics


def _with_image_runs(tcfg: TabularConfig, df: pd.DataFrame, test: pd.DataFrame, folds_path: str | Path
                     ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """The training and test rows with the image runs' columns joined by image_name (tabular.image_runs)."""
    if not tcfg.image_runs:
        return df, test, []
    extra, extra_test, info = image_run_features(tcfg.image_runs, df, test, folds_path)
    return df.join(extra, on=ID), test.join(extra_test, on=ID), info


# The tabular recipes, named by the competition profile's `tabular` (melanoma.data.competition).
RECIPES: dict[str, Callable[..., dict[str, Any]]] = {"metadata": run_metadata, "tbp": tbp.run_tbp}


def run_tabular(cfg: Config, data_dir: str | Path, folds_path: str | Path, out_dir: str | Path,
                sizes_dir: str | Path | None = None) -> dict[str, Any]:
    """The `tabular` stage: the data folder's competition (competition: auto | a name) picks the recipe."""
    competition = resolve(cfg.competition, data_dir)
    return RECIPES[competition.tabular](cfg, competition, data_dir, folds_path, out_dir, sizes_dir)


def run(cfg: Config, paths: RunPaths) -> Result:
    """The `tabular` stage (melanoma.runtime.stage): PATHS.data and PATHS.folds -> PATHS.tabular_run; image sizes
    and statistics from PATHS.tfrecords where it is set."""
    metrics = run_tabular(cfg, paths.data, paths.folds, paths.tabular_run, paths.tfrecords)
    metric, value = results.headline(metrics)
    return Result("tabular", {"run": paths.tabular_run}, {"oof_auc": metrics.get("oof_auc"), f"oof_{metric}": value},
                  detail=metrics)
