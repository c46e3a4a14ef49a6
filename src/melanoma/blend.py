"""Blend the runs of the model stages into one submission, with weights fitted on their OOF predictions.

Every run folder (see melanoma.data.runs) holds `oof.csv` and `test_pred.csv`. The runs are joined by
image_name, never by row order: the OOF frames on the ids common to all runs (inner join), the test
predictions on the test ids, which must be the same set in every run.

Each run's predictions are first turned into ranks scaled to [0, 1] (the OOF ranks within the OOF rows,
the test ranks within the test rows), then mixed by one of three methods (`blend.method`):
- weighted (default): a weighted mean of the ranks; the weights are non-negative, sum to 1 and maximise the
  AUC of the blended OOF ranks (`fit_weights`);
- rank: the plain mean of the ranks (equal weights);
- power: the power mean of the ranks, (sum_i w_i r_i^p)^(1/p) with p = `blend.power` and equal weights.
Any number of runs can be blended: folds, seeds, image sizes and backbones are simply more run folders.
Runs whose run.json says stage "tabular" are metadata runs: the share of weight they get is reported
(`tabular_weight.found`), and `blend.tabular_weight` fixes it (the image runs share the rest; within each
group the method sets the weights). The blended submission is a score in [0, 1] that ranks the test images;
it is not a probability, which the competition metric (ROC AUC) does not need, unless `blend.calibrate` maps it
through a calibrator fitted on the blended OOF (isotonic or Platt; see melanoma.calibration).

`run_blend` writes the submission CSV (image_name,target, in the sample submission's order when one is
given, checked against it by `validate_submission`), `blend.json` (the report) and the run info beside it.
Nothing is written when a check fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from melanoma.config import BlendConfig, Config, save_run_info
from melanoma.data.schema import ID, TARGET
from melanoma.errors import ConfigError, InputError, SubmissionError
from melanoma.files import read_json, write_csv, write_json
from melanoma.data.runs import read_run
from melanoma.scoring import auc, fmt_auc
from melanoma.data.submission import SUBMISSION_COLUMNS, example_id, read_sample_submission, validate_submission

log = logging.getLogger(__name__)

BLEND_METHODS = {"weighted": "rank mean, weights fitted on OOF AUC", "rank": "rank average",
           "power": "power mean of ranks"}
_AUC_TOL = 1e-12  # AUC differences below this are ties (float noise of summing ranks)
_MAX_ITER = 100_000  # safety cap of the coordinate search; every accepted move strictly improves the AUC


# --------------------------------------------------------------------------------------------------------
# weights


def to_ranks(pred: pd.Series) -> pd.Series:
    """Predictions as ranks scaled to (0, 1] (average rank for ties): the only transform applied before mixing."""
    return pd.Series(pred, dtype="float64").rank(pct=True)


def _fast_auc(y: np.ndarray, score: np.ndarray, n_pos: int, n_neg: int) -> float:
    # Mann-Whitney form of the ROC AUC with average ranks for ties: equals sklearn's roc_auc_score,
    # without its sorting overhead (the search evaluates many candidate blends).
    r = rankdata(score)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _units(step: float) -> int:
    """Number of grid steps in a weight of 1 (the step is rounded to 1 / that integer)."""
    if not (isinstance(step, (int, float)) and 0.0 < float(step) <= 1.0):
        raise ConfigError(f"blend.step must be in (0, 1], got {step!r}")
    return max(1, int(round(1.0 / float(step))))


def fit_weights(oofs: list[pd.Series], y: Any, step: float) -> np.ndarray:
    """Non-negative weights summing to 1 that maximise the AUC of the weighted mean of the OOF ranks.

    `oofs` are the runs' OOF predictions, aligned on the same index (same rows, same order); `y` the
    0/1 targets of those rows. The weight grid is {0, step, ..., 1}, with step rounded to 1/n.

    - 1 input: [1.0].
    - 2 inputs: exhaustive search over w in {0, step, ..., 1} for the first input, 1 - w for the second.
    - more: coordinate search on the simplex: start from equal weights; at each iteration try every move of
      `step` of weight (or all that is left, when less) from one input to another, and take the best move
      if it improves the AUC; stop when no move does. Steepest ascent with a fixed tie order, so the
      result is deterministic (a local optimum).
    Ties in AUC (within 1e-12) go to the more equal weights (smaller sum of squares), then to the
    candidate found first (more weight on earlier inputs for 2 inputs; earlier pairs for more).
    """
    k = len(oofs)
    if k == 0:
        raise ValueError("fit_weights: no predictions given")
    index = oofs[0].index
    for s in oofs[1:]:
        if not s.index.equals(index):
            raise ValueError("fit_weights: the OOF predictions must be aligned on the same index")
    if isinstance(y, pd.Series) and not y.index.equals(index):
        raise ValueError("fit_weights: y must be aligned on the index of the OOF predictions")
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (len(index),):
        raise ValueError(f"fit_weights: y has shape {y.shape}, expected ({len(index)},)")
    n = _units(step)
    if k == 1:
        return np.array([1.0])
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("fit_weights: y must be 0/1")
    pos = y == 1.0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("fit_weights: y has only one class, so no AUC to maximise")

    # Mix ranks, not raw predictions: runs differ in calibration (a sigmoid output, a tabular model trained
    # on SMOTE-balanced data, label smoothing), and a weighted mean of raw scores would let the run with the
    # widest spread dominate. Ranks scaled to [0, 1] put every run on the same scale and leave each run's
    # AUC unchanged; the test predictions get the same transform (`to_ranks`) in `blend_runs`.
    R = np.column_stack([to_ranks(s).to_numpy() for s in oofs])
    if not np.isfinite(R).all():
        raise ValueError("fit_weights: the OOF predictions contain NaN or infinity")

    def score(units: np.ndarray) -> float:
        return _fast_auc(pos, R @ units.astype(np.float64), n_pos, n_neg)  # scale-free: no need to normalise

    if k == 2:
        best_key, best = None, None
        for a in range(n, -1, -1):  # more weight on the first input first: the tie order
            units = np.array([a, n - a])
            key = (score(units), -int((units * units).sum()))
            if best_key is None or key[0] > best_key[0] + _AUC_TOL or (
                abs(key[0] - best_key[0]) <= _AUC_TOL and key[1] > best_key[1]
            ):
                best_key, best = key, units
        return best / n

    # In units of 1/(k n): equal weights are n units each, a step of weight is k units. Integer units keep
    # the search exact (no drift from adding 0.05 many times) and the result reproducible.
    units = np.full(k, n, dtype=np.int64)
    current = score(units)
    for _ in range(_MAX_ITER):
        best_move, best_auc, best_sq = None, current, None
        for i in range(k):
            if units[i] == 0:
                continue
            for j in range(k):
                if j == i:
                    continue
                cand = units.copy()
                moved = min(k, int(cand[i]))
                cand[i] -= moved
                cand[j] += moved
                a = score(cand)
                if a <= current + _AUC_TOL:
                    continue
                sq = int((cand * cand).sum())
                if best_move is None or a > best_auc + _AUC_TOL or (abs(a - best_auc) <= _AUC_TOL and sq < best_sq):
                    best_move, best_auc, best_sq = cand, a, sq
        if best_move is None:
            break
        units, current = best_move, best_auc
    return units / units.sum()


# --------------------------------------------------------------------------------------------------------
# blending


def _read(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(oof: image_name, target, pred; test: image_name, pred), validated by results.read_predictions."""
    oof, test = read_run(run_dir)
    return (oof[[ID, TARGET, "pred"]].reset_index(drop=True),
            pd.DataFrame({ID: test[ID], "pred": test[TARGET]}))


def check_blend_config(blend: BlendConfig) -> None:
    """Raise ConfigError for a bad method, exponent or fixed tabular weight (before anything is read)."""
    _units(blend.step)
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


def _method_weights(oofs: list[pd.Series], y: pd.Series, blend: BlendConfig) -> np.ndarray:
    if blend.method == "weighted":
        return fit_weights(oofs, y, blend.step)
    return np.full(len(oofs), 1.0 / len(oofs))


def blend_weights(
    oofs: list[pd.Series], y: pd.Series, tabular: list[bool], blend: BlendConfig
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The weights of the runs, and the image/metadata split: as found, and as fixed by the config.

    Without `blend.tabular_weight` the method's weights are used as they are. With it, the method sets the
    weights within the image runs and within the tabular runs separately, and the tabular runs together get
    exactly that weight. Returns (weights, report); the report is None when there is no tabular run.
    """
    free = _method_weights(oofs, y, blend)
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
        weights[idx] = share * _method_weights([oofs[i] for i in idx], y, blend)
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


def blend_runs(
    run_dirs: list[str | Path], sample: pd.DataFrame | None, step: float | BlendConfig = 0.05
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Blend the runs on their common OOF ids and blend their test predictions.

    `step` is the weight grid step, or a whole BlendConfig (method, power, tabular_weight). Returns the
    submission (image_name,target in [0, 1]; in the sample's order when `sample` is given and checked
    against it, else sorted by image_name) and a report: runs (path, stage, oof_auc on the common ids,
    weight, n_oof, n_dropped), blended_oof_auc, n_common_oof, n_test, method, tabular_weight.
    """
    blend = step if isinstance(step, BlendConfig) else BlendConfig(step=step)
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise InputError("blend: no run folders given")
    check_blend_config(blend)  # before reading anything
    runs = [_read(d) for d in run_dirs]
    names = [str(d) for d in run_dirs]
    stages = [_stage(d) for d in run_dirs]

    # OOF: inner join on image_name; the targets of a shared id must agree between runs.
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
    y = joined[TARGET]
    if len(run_dirs) > 1 and y.nunique() < 2:
        raise InputError(f"blend: the {n_common} common OOF ids have only one class, so no weights can be fitted")
    oof_preds = [joined[f"pred_{r}"] for r in range(len(runs))]
    weights, tab_report = blend_weights(oof_preds, y, [s == "tabular" for s in stages], blend)
    blended_oof = combine([to_ranks(p) for p in oof_preds], weights, blend.method, blend.power)

    # Test: the same ids in every run, joined by image_name, each run ranked within the test set.
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
    blended = combine([to_ranks(test[f"pred_{r}"]) for r in range(len(runs))], weights, blend.method, blend.power)
    blended, cal_report = calibrate(blend.calibrate, y, blended_oof, blended)
    sub = pd.DataFrame({ID: test[ID], TARGET: np.clip(blended, 0.0, 1.0)})

    if sample is not None:
        validate_submission(sub, sample)  # exact messages for missing / extra ids before reordering
        order = sample[ID].astype("string")
        sub = sub.set_index(ID).reindex(pd.Index(order, name=ID)).reset_index()
        validate_submission(sub, sample)

    report = {
        "runs": [
            {"path": name, "stage": stage, "oof_auc": auc(y, p), "weight": float(w), "n_oof": int(n),
             "n_dropped": int(n - n_common)}
            for name, stage, p, w, n in zip(names, stages, oof_preds, weights, n_oof)
        ],
        "blended_oof_auc": auc(y, blended_oof),
        "n_common_oof": int(n_common),
        "n_test": int(len(sub)),
        "method": blend.method,
        "method_description": BLEND_METHODS[blend.method],
        "power": blend.power if blend.method == "power" else None,
        "step": 1.0 / _units(blend.step),
        "tabular_weight": tab_report,
        "calibration": cal_report,
    }
    return sub, report


def run_blend(
    cfg: Config, run_dirs: list[str | Path], out: str | Path, sample_submission: str | Path | None
) -> dict[str, Any]:
    """Blend the runs, write the submission to `out` and blend.json, config.yaml, run.json beside it."""
    out = Path(out)
    check_blend_config(cfg.blend)
    sample = read_sample_submission(sample_submission) if sample_submission is not None else None
    sub, report = blend_runs(run_dirs, sample, cfg.blend)
    for run in report["runs"]:
        log.info("blend: %s (%s) OOF AUC %s, weight %.3f", run["path"], run["stage"] or "stage unknown",
                 fmt_auc(run["oof_auc"]), run["weight"])
    tab = report["tabular_weight"]
    if tab is not None:
        log.info("blend: image/metadata weight as found %.3f/%.3f%s", 1 - tab["found"], tab["found"],
                 "" if tab["fixed"] is None else f", fixed by blend.tabular_weight to {1 - tab['used']:.3f}/{tab['used']:.3f}")
    log.info(
        "blend: %s; blended OOF AUC %s on %d common ids; %d test predictions -> %s", BLEND_METHODS[report["method"]],
        fmt_auc(report["blended_oof_auc"]), report["n_common_oof"], report["n_test"], out,
    )
    report["submission"] = str(out)
    report["sample_submission"] = None if sample_submission is None else str(sample_submission)
    write_csv(out, sub[SUBMISSION_COLUMNS])
    write_json(out.parent / "blend.json", report)
    save_run_info(out.parent, cfg, "blend")
    return report
