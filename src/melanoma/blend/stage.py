"""Blend the runs of the model stages into one submission, with weights fitted on their OOF predictions.

Every run folder (see melanoma.data.runs) holds `oof.csv` and `test_pred.csv`. The runs are joined by
image_name, never by row order: the OOF frames on the ids common to all runs (inner join), the test
predictions on the test ids, which must be the same set in every run.

Each run's predictions are first turned into ranks scaled to [0, 1] (the OOF ranks within the OOF rows,
the test ranks within the test rows), then mixed by one of three methods (`blend.method`):
- weighted (default): a weighted mean of the ranks; the weights are non-negative, sum to 1 and maximise the
  runs' headline metric on the blended OOF ranks (`fit_weights`): their metrics.json `metric`, AUC for SIIM-ISIC
  2020 runs, pAUC above 80% TPR for ISIC 2024 ones (runs of different metrics are refused);
- rank: the plain mean of the ranks (equal weights);
- power: the power mean of the ranks, (sum_i w_i r_i^p)^(1/p) with p = `blend.power` and equal weights.
Any number of runs can be blended (folds, seeds, sizes, backbones are more run folders). Runs whose run.json
says stage "tabular" are metadata runs: their share of weight is reported, and `blend.tabular_weight` fixes it.
The submission ranks the test images in [0, 1]; `blend.calibrate` maps it through a calibrator fitted on the
blended OOF (isotonic or Platt; melanoma.calibration). `run_blend` writes the submission (in the sample
submission's order, checked against it, with the competition's id column: image_name or isic_id, as the runs'
oof.csv name it), `blend.json` and the run info; nothing when a check fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma.config import BlendConfig, Config, save_run_info
from melanoma.data.competition import METRIC_NAMES, PROFILES, Competition
from melanoma.data.schema import ID, TARGET
from melanoma.errors import ConfigError, InputError, SubmissionError
from melanoma.files import read_json, write_csv, write_json
from melanoma.data.runs import headline, read_metrics, read_run, run_competition
from melanoma.blend.weights import fit_weights, step_units, to_ranks
from melanoma.scoring import METRICS, fmt_auc
from melanoma.runtime.paths import RunPaths
from melanoma.runtime.stage import Result
from melanoma.data.submission import SUBMISSION_COLUMNS, example_id, read_sample_submission, validate_submission

log = logging.getLogger("melanoma.blend")

BLEND_METHODS = {"weighted": "rank mean, weights fitted on OOF AUC", "rank": "rank average",
           "power": "power mean of ranks"}


def runs_metric(run_dirs: list[Path]) -> str:
    """The headline metric every run is scored on (metrics.json `metric`; AUC where a run names none)."""
    found = {}
    for d in run_dirs:
        try:
            metric = headline(read_metrics(d))[0]
        except (OSError, ValueError, AttributeError):  # a damaged metrics.json: read as a run that names none
            metric = "auc"
        if metric not in METRICS:
            raise InputError(f"blend: {d / 'metrics.json'} names metric {metric!r}, not one of {', '.join(METRICS)}")
        found[str(d)] = metric
    if len(set(found.values())) > 1:
        raise InputError("blend: the runs are scored on different metrics (" + ", ".join(
            f"{d}: {m}" for d, m in found.items()) + "): blend runs of one competition")
    return next(iter(found.values()))


def runs_competition(run_dirs: list[Path], choice: str = "auto") -> Competition:
    """The competition of the submission: the config's `competition`, else the runs' (their oof.csv id column)."""
    if choice != "auto":
        return PROFILES[choice]
    found = {c.name: c for c in (run_competition(d) for d in run_dirs if (d / "oof.csv").is_file())}
    if len(found) > 1:
        raise InputError(f"blend: the runs belong to different competitions ({', '.join(found)}): their oof.csv "
                         "files name different id columns")
    return next(iter(found.values()), PROFILES["siim2020"])


def _scores(entry: dict[str, Any], metric: str, key: str = "oof") -> str:
    """'AUC 0.9000', or 'pAUC>80%TPR 0.1500 (AUC 0.9000)': the headline first."""
    plain = f"AUC {fmt_auc(entry[f'{key}_auc'])}"
    return plain if metric == "auc" else f"{METRIC_NAMES[metric]} {fmt_auc(entry[f'{key}_{metric}'])} ({plain})"
def _read(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(oof: image_name, target, pred; test: image_name, pred), validated by results.read_predictions."""
    oof, test = read_run(run_dir)
    return (oof[[ID, TARGET, "pred"]].reset_index(drop=True),
            pd.DataFrame({ID: test[ID], "pred": test[TARGET]}))


def check_blend_config(blend: BlendConfig) -> None:
    """Raise ConfigError for a bad method, exponent or fixed tabular weight (before anything is read)."""
    step_units(blend.step)
    if blend.method not in BLEND_METHODS:
        raise ConfigError(f"blend.method must be one of {', '.join(BLEND_METHODS)}, got {blend.method!r}")
    if not np.isfinite(blend.power):
        raise ConfigError(f"blend.power must be a finite number, got {blend.power!r}")
    if blend.calibrate not in ("none", "isotonic", "platt") and not Path(blend.calibrate).is_file():
        raise ConfigError(f"blend.calibrate must be none, isotonic, platt or a calibrator.json written by "
                          f"`melanoma report`; {blend.calibrate!r} is none of these (no such file)")
    t = blend.tabular_weight
    if t is not None and not 0.0 <= t <= 1.0:
        raise ConfigError(f"blend.tabular_weight must be in [0, 1] (or null to fit it), got {t!r}")


def combine(ranks: list[pd.Series] | list[np.ndarray], weights: np.ndarray, method: str, power: float) -> np.ndarray:
    """Mix rank vectors (values in (0, 1]) with weights summing to 1: a weighted mean, or a power mean."""
    R = np.column_stack([np.asarray(r, dtype=np.float64) for r in ranks])
    w = np.asarray(weights, dtype=np.float64)
    if method != "power":
        return R @ w
    if power == 0.0:  # the limit of the power mean: the geometric mean (ranks are > 0, so log is finite)
        return np.exp(np.log(R) @ w)
    return (R**power @ w) ** (1.0 / power)


def _method_weights(oofs: list[pd.Series], y: pd.Series, blend: BlendConfig, metric: str = "auc") -> np.ndarray:
    if blend.method == "weighted":
        return fit_weights(oofs, y, blend.step, metric)
    return np.full(len(oofs), 1.0 / len(oofs))


def blend_weights(
    oofs: list[pd.Series], y: pd.Series, tabular: list[bool], blend: BlendConfig, metric: str = "auc"
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The weights of the runs, and the image/metadata split: as found, and as fixed by the config.

    Without `blend.tabular_weight` the method's weights are used as they are. With it, the method sets the
    weights within the image runs and within the tabular runs separately, and the tabular runs together get
    exactly that weight. Returns (weights, report); the report is None when there is no tabular run.
    """
    free = _method_weights(oofs, y, blend, metric)
    tab = np.asarray(tabular, dtype=bool)
    if not tab.any():
        if blend.tabular_weight is not None:
            log.warning("blend: blend.tabular_weight is set but no run is a tabular run (run.json stage); ignored")
        return free, None
    found = float(free[tab].sum())
    report = {"found": found, "fixed": blend.tabular_weight, "used": found}
    if blend.tabular_weight is None:
        return free, report
    if tab.all():
        log.warning("blend: blend.tabular_weight is set but every run is a tabular run; ignored")
        return free, report
    t = float(blend.tabular_weight)
    weights = np.zeros(len(oofs))
    for group, share in ((tab, t), (~tab, 1.0 - t)):
        idx = np.flatnonzero(group)
        weights[idx] = share * _method_weights([oofs[i] for i in idx], y, blend, metric)
    report["used"] = float(weights[tab].sum())
    return weights, report


def _stage(run_dir: Path) -> str | None:
    """The stage that wrote the run (run.json), or None when the folder has no readable run.json."""
    path = run_dir / "run.json"
    try:
        info = read_json(path) if path.is_file() else {}
    except ValueError:  # a damaged run.json only loses the image/metadata split, never the blend
        log.warning("blend: %s is not valid JSON; the run is treated as an image run", path)
        return None
    return info.get("stage") if isinstance(info, dict) else None


def calibrate(setting: str, y: pd.Series, oof_score: np.ndarray, test_score: np.ndarray
              ) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The test scores through a calibrator (blend.calibrate): none; isotonic or platt, fitted here on the
    blended OOF scores; or the path of a calibrator.json written by `melanoma report`. Calibration is
    non-decreasing, so the order of the submission is kept (isotonic steps may tie close scores, which can move
    the AUC slightly); the values become probabilities."""
    if setting == "none":
        return test_score, None
    from melanoma import calibration

    if setting in calibration.CALIBRATION_METHODS:
        cal = calibration.fit(y, oof_score, setting)
        source = "fitted on the blended OOF"
    else:
        cal = calibration.load_calibrator(setting)
        source = setting
    log.info("blend: test scores calibrated (%s, %s)", cal["method"], source)
    return calibration.apply(cal, test_score), {"method": cal["method"], "source": source}


def _join_oof(runs: list[tuple[pd.DataFrame, pd.DataFrame]], names: list[str]) -> tuple[pd.DataFrame, int, list[int]]:
    """The runs' OOF predictions inner-joined on the id (pred_0, pred_1, ...); a shared id's targets must agree."""
    joined = runs[0][0].rename(columns={"pred": "pred_0"})
    for r, (oof, _) in enumerate(runs[1:], start=1):
        joined = joined.merge(oof.rename(columns={TARGET: "target_r", "pred": f"pred_{r}"}), on=ID, how="inner")
        differ = (joined[TARGET] != joined["target_r"]).to_numpy()
        if differ.any():
            i = int(np.flatnonzero(differ)[0])
            raise InputError(
                f"blend: runs {names[0]} and {names[r]} disagree on the target of {int(differ.sum())} "
                f"image(s), e.g. {joined[ID].iloc[i]!r} ({joined[TARGET].iloc[i]} vs {joined['target_r'].iloc[i]}): "
                "were they trained on the same train.csv?"
            )
        joined = joined.drop(columns="target_r")
    joined = joined.sort_values(ID).reset_index(drop=True)
    n_common = len(joined)
    n_oof = [len(oof) for oof, _ in runs]
    if n_common == 0:
        raise InputError(f"blend: the runs have no OOF image_name in common ({', '.join(names)})")
    if any(n > n_common for n in n_oof):
        # External data or a different fold set: rows only some runs predicted cannot be scored for a blend.
        log.warning(
            "blend: only %d OOF ids are common to all runs; fitting the weights on those (dropped per run: %s)",
            n_common, ", ".join(f"{name} {n - n_common} of {n}" for name, n in zip(names, n_oof)),
        )
    return joined, n_common, n_oof


def _join_test(runs: list[tuple[pd.DataFrame, pd.DataFrame]], names: list[str]) -> pd.DataFrame:
    """The runs' test predictions joined on the id; every run must predict the same test ids."""
    test0 = runs[0][1]
    ids0 = pd.Index(test0[ID])
    test = test0.rename(columns={"pred": "pred_0"})
    for r, (_, t) in enumerate(runs[1:], start=1):
        ids = pd.Index(t[ID])
        missing, extra = ids0.difference(ids, sort=True), ids.difference(ids0, sort=True)
        if len(missing) or len(extra):
            what = (f"lacks {len(missing)} test id(s) of {names[0]}, e.g. {example_id(missing)}" if len(missing)
                    else f"has {len(extra)} test id(s) not in {names[0]}, e.g. {example_id(extra)}")
            raise SubmissionError(f"blend: run {names[r]} {what}: every run must predict the same test ids")
        test = test.merge(t.rename(columns={"pred": f"pred_{r}"}), on=ID, how="inner")
    test = test.sort_values(ID).reset_index(drop=True)
    return test


def blend_runs(
    run_dirs: list[str | Path], sample: pd.DataFrame | None, step: float | BlendConfig = 0.05,
    competition: Competition | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Blend the runs on their common OOF ids and blend their test predictions.

    `step` is the weight grid step, or a whole BlendConfig (method, power, tabular_weight); `competition` names
    the id column of the messages (None: the runs'). Returns the submission (image_name,target in [0, 1]; in
    the sample's order when `sample` is given and checked against it, else sorted by image_name) and a report:
    runs (path, stage, oof_auc on the common ids, weight, n_oof, n_dropped), blended_oof_auc, n_common_oof,
    n_test, method, tabular_weight, metric (and oof_pauc, blended_oof_pauc for ISIC 2024 runs).
    """
    blend = step if isinstance(step, BlendConfig) else BlendConfig(step=step)
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise InputError("blend: no run folders given")
    check_blend_config(blend)  # before reading anything
    runs = [_read(d) for d in run_dirs]
    metric = runs_metric(run_dirs)
    id_name = (competition or runs_competition(run_dirs)).id_column
    names = [str(d) for d in run_dirs]
    stages = [_stage(d) for d in run_dirs]

    joined, n_common, n_oof = _join_oof(runs, names)
    y = joined[TARGET]
    if len(run_dirs) > 1 and y.nunique() < 2:
        raise InputError(f"blend: the {n_common} common OOF ids have only one class, so no weights can be fitted")
    oof_preds = [joined[f"pred_{r}"] for r in range(len(runs))]
    weights, tab_report = blend_weights(oof_preds, y, [s == "tabular" for s in stages], blend, metric)
    blended_oof = combine([to_ranks(p) for p in oof_preds], weights, blend.method, blend.power)

    test = _join_test(runs, names)
    blended = combine([to_ranks(test[f"pred_{r}"]) for r in range(len(runs))], weights, blend.method, blend.power)
    blended, cal_report = calibrate(blend.calibrate, y, blended_oof, blended)
    sub = pd.DataFrame({ID: test[ID], TARGET: np.clip(blended, 0.0, 1.0)})

    if sample is not None:
        validate_submission(sub, sample, id_name=id_name)  # exact messages for missing / extra ids first
        order = sample[ID].astype("string")
        sub = sub.set_index(ID).reindex(pd.Index(order, name=ID)).reset_index()
        validate_submission(sub, sample, id_name=id_name)
    runs_report = [{"path": name, "stage": stage, **_metric_values(y, p, metric, "oof"), "weight": float(w),
                    "n_oof": int(n), "n_dropped": int(n - n_common)}
                   for name, stage, p, w, n in zip(names, stages, oof_preds, weights, n_oof)]
    report = {"runs": runs_report, **_metric_values(y, blended_oof, metric, "blended_oof"),
              "n_common_oof": int(n_common), "n_test": int(len(sub)), "method": blend.method,
              "method_description": _description(blend.method, metric),
              "power": blend.power if blend.method == "power" else None, "step": 1.0 / step_units(blend.step),
              "tabular_weight": tab_report, "calibration": cal_report, "metric": metric}
    return sub, report


def _description(method: str, metric: str) -> str:
    return BLEND_METHODS[method].replace("OOF AUC", f"OOF {METRIC_NAMES[metric]}")


def _metric_values(y: pd.Series, p: Any, metric: str, key: str) -> dict[str, float | None]:
    """{key}_auc, and {key}_{metric} for a run scored otherwise (ISIC 2024: pAUC)."""
    return {f"{key}_{name}": METRICS[name](y, p) for name in dict.fromkeys(("auc", metric))}


def run_blend(
    cfg: Config, run_dirs: list[str | Path], out: str | Path, sample_submission: str | Path | None
) -> dict[str, Any]:
    """Blend the runs, write the submission to `out` and blend.json, config.yaml, run.json beside it."""
    out = Path(out)
    check_blend_config(cfg.blend)
    sample = read_sample_submission(sample_submission) if sample_submission is not None else None
    competition = runs_competition([Path(d) for d in run_dirs], cfg.competition)
    sub, report = blend_runs(run_dirs, sample, cfg.blend, competition)
    metric = report["metric"]
    for run in report["runs"]:
        log.info("blend: %s (%s) OOF %s, weight %.3f", run["path"], run["stage"] or "stage unknown",
                 _scores(run, metric), run["weight"])
    tab = report["tabular_weight"]
    if tab is not None:
        log.info("blend: image/metadata weight as found %.3f/%.3f%s", 1 - tab["found"], tab["found"],
                 "" if tab["fixed"] is None else f", fixed by blend.tabular_weight to {1 - tab['used']:.3f}/{tab['used']:.3f}")
    log.info(
        "blend: %s; blended OOF %s on %d common ids; %d test predictions -> %s", report["method_description"],
        _scores(report, metric, "blended_oof"), report["n_common_oof"], report["n_test"], out,
    )
    report["submission"] = str(out)
    report["sample_submission"] = None if sample_submission is None else str(sample_submission)
    write_csv(out, competition.user_table(sub[SUBMISSION_COLUMNS]))  # isic_id,target for ISIC 2024
    write_json(out.parent / "blend.json", report)
    save_run_info(out.parent, cfg, "blend")
    return report


def run(cfg: Config, paths: RunPaths) -> Result:
    """The `blend` stage (melanoma.runtime.stage): PATHS.runs (default: the image and tabular runs) -> PATHS.submission."""
    runs = list(paths.runs) if paths.runs is not None else [paths.image_run, paths.tabular_run]
    report = run_blend(cfg, runs, paths.submission, paths.sample_submission)
    scores = {"blended_oof_auc": report.get("blended_oof_auc")}
    if "blended_oof_pauc" in report:  # ISIC 2024 runs
        scores["blended_oof_pauc"] = report["blended_oof_pauc"]
    return Result("blend", {"submission": paths.submission}, scores, detail=report)
