"""The numbers of one set of predictions (a run's OOF or its labelled test predictions), and of a pair of runs.

One bootstrap pass gives every interval: the weights of each chunk of resamples serve the overall AUC, pAUC
and average precision, the ROC and precision-recall bands and every subgroup's AUC, so they all come from the
same resampled patients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from melanoma.progress import progress_bar
from melanoma.report import metrics as M

GRID = np.linspace(0.0, 1.0, 101)  # where the ROC and PR bands are evaluated
MAX_POINTS = 400  # curve points kept in report.json and drawn (the figures cannot show more)


def progress(total: int, desc: str):
    return progress_bar(total, desc, unit="resample", leave=False)


def thin(*arrays: np.ndarray, n: int = MAX_POINTS) -> list[list[float]]:
    """Every array cut to about n evenly spaced points (first and last kept), as lists."""
    k = len(arrays[0])
    idx = np.unique(np.r_[np.linspace(0, k - 1, min(n, k)).round().astype(int)]) if k else np.array([], int)
    return [np.asarray(a)[idx].round(6).tolist() for a in arrays]


class _Target:
    """One ranked subset (all images, or a subgroup) whose metrics are taken on every resample."""

    def __init__(self, y: np.ndarray, s: np.ndarray, rows: np.ndarray, curves: bool, names: tuple[str, ...] = ("auc",)):
        self.ranked, order = M.Ranked.of(y[rows], s[rows])
        self.cols = rows[order]  # columns of the weight matrix, in this subset's score order
        self.curves = curves
        self.values: dict[str, list[np.ndarray]] = {k: [] for k in (M.RANKING if curves else names)}
        self.bands: dict[str, list[np.ndarray]] = {"roc": [], "pr": []}

    def add(self, w: np.ndarray) -> None:
        tp, fp = M.cumulative_counts(self.ranked, w[:, self.cols])
        for name in self.values:
            self.values[name].append(M.RANKING[name](tp, fp))
        if self.curves:
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr, fpr = tp / tp[:, -1:], fp / fp[:, -1:]
                precision = tp[:, 1:] / (tp[:, 1:] + fp[:, 1:])
            self.bands["roc"].append(M.batched_interp(fpr, tpr, GRID))
            self.bands["pr"].append(M.batched_interp(tpr[:, 1:], precision, GRID))

    def interval(self, name: str) -> list[float] | None:
        return M.interval(np.concatenate(self.values[name])) if self.values[name] else None  # None: no bootstrap

    def band(self, name: str) -> dict[str, list[float]] | None:
        if not self.bands[name]:
            return None
        b = np.vstack(self.bands[name])
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanpercentile(b, [2.5, 97.5], axis=0) if np.isfinite(b).any() else (GRID * np.nan,) * 2
        return {"x": GRID.round(4).tolist(), "lo": np.round(lo, 6).tolist(), "hi": np.round(hi, 6).tolist()}


def _levels(labels: pd.Series) -> list[tuple[str, np.ndarray]]:
    return [(str(level), (labels == level).to_numpy()) for level in sorted(labels.dropna().unique(), key=str)]


def evaluate(y, s, codes: np.ndarray, groups: dict[str, pd.Series], n_boot: int, seed: int,
             min_positives: int, bins: int, desc: str = "bootstrap") -> dict[str, Any]:
    """Point values, 95% patient-bootstrap intervals, curves with bands, calibration and subgroup AUCs."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    everything = _Target(y, s, np.arange(len(y)), curves=True)
    subgroups: dict[str, list[dict[str, Any]]] = {}
    targets: list[tuple[dict[str, Any], _Target]] = []
    for family, labels in groups.items():
        rows = []
        for level, mask in _levels(labels):
            pos, n = int(y[mask].sum()), int(mask.sum())
            entry: dict[str, Any] = {"group": level, "n": n, "positives": pos, "auc": None, "ci": None, "note": None}
            if pos < max(1, min_positives) or n - pos < 1:
                entry["note"] = f"too few positives to score ({pos}; at least {min_positives} needed)" \
                    if n - pos >= 1 else "no negatives to score against"
            else:
                entry["auc"] = M.ranking_metrics(y[mask], s[mask])["auc"]
                targets.append((entry, _Target(y, s, np.flatnonzero(mask), curves=False)))
            rows.append(entry)
        subgroups[family] = rows

    with progress(n_boot, desc) as bar:
        for w in M.resample_weights(codes, n_boot, seed):
            everything.add(w)
            for _, t in targets:
                t.add(w)
            bar.update(len(w))
    for entry, t in targets:
        entry["ci"] = t.interval("auc")

    point = M.ranking_metrics(y, s)
    fpr, tpr, _ = M.roc_points(y, s)
    recall, precision = M.pr_points(y, s) if y.sum() else (np.array([]), np.array([]))
    out: dict[str, Any] = {"n": int(len(y)), "positives": int(y.sum()), "units": int(codes.max()) + 1,
                           "bootstrap": int(n_boot)}
    for name in M.RANKING:
        out[name] = {"value": point[name], "ci": everything.interval(name)}
    out["brier"] = M.brier(y, s)
    out["ece"] = M.ece(y, s, bins)
    out["reliability"] = M.reliability(y, s, bins)
    fpr_t, tpr_t = thin(fpr, tpr)
    rec_t, prec_t = thin(recall, precision)
    out["roc"] = {"fpr": fpr_t, "tpr": tpr_t, "band": everything.band("roc")}
    out["pr"] = {"recall": rec_t, "precision": prec_t, "band": everything.band("pr"),
                 "prevalence": float(y.mean()) if len(y) else None}
    out["subgroups"] = subgroups
    return out


def operating_points(y_oof, s_oof, sensitivities: list[float], test: tuple[np.ndarray, np.ndarray] | None
                     ) -> list[dict[str, Any]]:
    """Thresholds chosen on the OOF (each sensitivity target, then Youden's J), applied unchanged to the test set."""
    chosen = [(f"sensitivity {100 * t:g}%", M.threshold_for_sensitivity(y_oof, s_oof, t)) for t in sensitivities]
    chosen.append(("Youden's J", M.youden_threshold(y_oof, s_oof)))
    rows = []
    for name, thr in chosen:
        row: dict[str, Any] = {"name": name, "threshold": thr}
        for split, data in (("oof", (y_oof, s_oof)), ("test", test)):
            if data is None:
                row[split] = None
                continue
            c = M.confusion(data[0], data[1], thr)
            row[split] = {**c, **M.rates(**c)}
        rows.append(row)
    return rows


def compare_pair(y, s_a, s_b, codes: np.ndarray, n_boot: int, seed: int, metric: str = "auc") -> dict[str, Any]:
    """Paired difference in AUC (A - B) on the same images: patient-bootstrap interval and DeLong's test; with
    metric "pauc" also the difference in pAUC above 80% TPR and its interval from the same resamples
    (`pauc`: a, b, diff, ci; DeLong's test is for the full AUC only)."""
    y = np.asarray(y, dtype=np.float64)
    names = tuple(dict.fromkeys(("auc", metric)))
    a = _Target(y, np.asarray(s_a, dtype=np.float64), np.arange(len(y)), curves=False, names=names)
    b = _Target(y, np.asarray(s_b, dtype=np.float64), np.arange(len(y)), curves=False, names=names)
    with progress(n_boot, "compare: bootstrap") as bar:
        for w in M.resample_weights(codes, n_boot, seed):
            a.add(w)
            b.add(w)
            bar.update(len(w))
    diffs = (np.concatenate(a.values["auc"]) - np.concatenate(b.values["auc"])) if n_boot else np.array([])
    dl = M.delong(y, s_a, s_b)
    finite = diffs[np.isfinite(diffs)]
    out = {"n": int(len(y)), "positives": int(y.sum()), "units": int(codes.max()) + 1, "bootstrap": int(n_boot),
           "auc_a": dl["auc_a"], "auc_b": dl["auc_b"], "diff": dl["diff"], "ci": M.interval(diffs),
           "share_a_better": float(np.mean(finite > 0)) if finite.size else None,
           "delong": {"z": dl["z"], "p": dl["p"], "se": dl["se"]}, "metric": metric}
    if metric != "auc":
        pa, pb = (M.ranking_metrics(y, np.asarray(s, dtype=np.float64))[metric] for s in (s_a, s_b))
        boot = (np.concatenate(a.values[metric]) - np.concatenate(b.values[metric])) if n_boot else np.array([])
        out[metric] = {"a": pa, "b": pb, "diff": pa - pb, "ci": M.interval(boot)}
    return out
