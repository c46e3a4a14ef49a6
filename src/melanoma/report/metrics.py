"""Vectorised ranking metrics, patient bootstrap, operating points, calibration error and DeLong's test.

Everything is computed from one sort of the scores: images are ordered by descending score, tied scores form
one group (one point of the ROC curve, as in scikit-learn), and weighted cumulative counts of positives (TP)
and negatives (FP) per group give ROC AUC, pAUC and average precision. A bootstrap resample is a vector of
integer weights (how often each image was drawn), so B resamples are a B x N weight matrix and every metric
of every resample comes out of a few array operations on it, not a Python loop per resample.

Definitions (scikit-learn's where it has one; the tests check agreement to 1e-9):
- AUC: area under the ROC curve, ties counted as half (trapezoids through tied groups).
- pAUC above 80% TPR, as in the ISIC 2024 challenge: the area under the ROC curve over TPR in [0.8, 1],
  i.e. the integral of specificity over TPR from 0.8 to 1, from 0 (useless) to 0.2 (perfect). Equal to the
  unnormalised partial AUC over FPR in [0, 0.2] after flipping labels and negating scores.
- average precision: sum over thresholds of (R_k - R_{k-1}) * P_k (no interpolation).
- Brier score: mean of (p - y)^2. ECE: sum over equal-width bins of |bin share| * |mean y - mean p|.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

MIN_TPR = 0.8  # ISIC 2024: partial AUC above 80% true-positive rate


@dataclass(frozen=True)
class Ranked:
    """Labels in descending-score order, and where each group of tied scores starts."""

    y: np.ndarray  # float64 0/1, sorted by descending score
    starts: np.ndarray  # index of the first image of each tie group
    thresholds: np.ndarray  # the score of each group, descending

    @classmethod
    def of(cls, y, score) -> tuple[Ranked, np.ndarray]:
        """The ranked view and the sort order (order[i] = index of the i-th highest score)."""
        y = np.asarray(y, dtype=np.float64)
        score = np.asarray(score, dtype=np.float64)
        order = np.argsort(-score, kind="stable")
        s = score[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        return cls(y[order], starts, s[starts]), order


def cumulative_counts(r: Ranked, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted TP and FP at each threshold, with a leading 0 column: shape (B, G + 1) (B = 1 without w)."""
    w = np.ones((1, len(r.y))) if w is None else np.atleast_2d(w)
    pos = np.add.reduceat(w * r.y, r.starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - r.y), r.starts, axis=1)
    zero = np.zeros((w.shape[0], 1))
    return np.cumsum(np.hstack([zero, pos]), axis=1), np.cumsum(np.hstack([zero, neg]), axis=1)


def _rates(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TPR, FPR), NaN rows where a resample lacks a class."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / tp[:, -1:], fp / fp[:, -1:]


def auc_from_counts(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    tpr, fpr = _rates(tp, fp)
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0, axis=1)


def pauc_from_counts(tp: np.ndarray, fp: np.ndarray, min_tpr: float = MIN_TPR) -> np.ndarray:
    """Integral of specificity (1 - FPR) over TPR in [min_tpr, 1], along the (linear) ROC segments."""
    tpr, fpr = _rates(tp, fp)
    a, b = tpr[:, :-1], tpr[:, 1:]
    c, d = fpr[:, :-1], fpr[:, 1:]
    a_clip = np.maximum(a, min_tpr)
    with np.errstate(invalid="ignore", divide="ignore"):
        c_clip = np.where(b > a, c + (d - c) * (a_clip - a) / (b - a), c)
    length = np.clip(b - a_clip, 0.0, None)
    return np.sum(length * (1.0 - (c_clip + d) / 2.0), axis=1)


def ap_from_counts(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    tpr, _ = _rates(tp, fp)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp[:, 1:] / (tp[:, 1:] + fp[:, 1:])
    return np.nansum(np.diff(tpr, axis=1) * precision, axis=1) + np.where(np.isnan(tpr[:, -1]), np.nan, 0.0)


RANKING = {"auc": auc_from_counts, "pauc": pauc_from_counts, "ap": ap_from_counts}


def ranking_metrics(y, score) -> dict[str, float | None]:
    """AUC, pAUC above 80% TPR and average precision; None where a class is missing."""
    r, _ = Ranked.of(y, score)
    tp, fp = cumulative_counts(r)
    out = {}
    for name, fn in RANKING.items():
        v = float(fn(tp, fp)[0])
        out[name] = None if np.isnan(v) else v
    return out


def roc_points(y, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds) with the (0, 0) start (threshold +inf), one point per distinct score."""
    r, _ = Ranked.of(y, score)
    tp, fp = cumulative_counts(r)
    tpr, fpr = _rates(tp, fp)
    return fpr[0], tpr[0], np.r_[np.inf, r.thresholds]


def pr_points(y, score) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) per distinct score, highest score first."""
    r, _ = Ranked.of(y, score)
    tp, fp = cumulative_counts(r)
    return tp[0, 1:] / tp[0, -1], tp[0, 1:] / (tp[0, 1:] + fp[0, 1:])


# ---------------------------------------------------------------- calibration

def brier(y, p) -> float:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def reliability(y, p, bins: int = 10) -> dict[str, list]:
    """Per equal-width bin of predicted probability: count, mean prediction, observed rate (empty bins left out)."""
    y, p = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    mean_p = np.bincount(idx, p, minlength=bins)
    mean_y = np.bincount(idx, y, minlength=bins)
    keep = n > 0
    return {"lower": (np.arange(bins)[keep] / bins).tolist(), "count": n[keep].tolist(),
            "mean_pred": (mean_p[keep] / n[keep]).tolist(), "observed": (mean_y[keep] / n[keep]).tolist()}


def ece(y, p, bins: int = 10) -> float:
    rel = reliability(y, p, bins)
    n = np.asarray(rel["count"], dtype=np.float64)
    gap = np.abs(np.asarray(rel["observed"]) - np.asarray(rel["mean_pred"]))
    return float(np.sum(n / n.sum() * gap))


# ---------------------------------------------------------------- operating points

def confusion(y, score, threshold: float) -> dict[str, int]:
    """Counts with score >= threshold called malignant."""
    y = np.asarray(y).astype(bool)
    called = np.asarray(score, dtype=np.float64) >= threshold
    return {"tp": int(np.sum(called & y)), "fp": int(np.sum(called & ~y)), "fn": int(np.sum(~called & y)),
            "tn": int(np.sum(~called & ~y))}


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | None]:
    """The textbook definitions; None where a denominator is 0."""
    n = tp + fp + fn + tn
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "fn_per_1000": None if n == 0 else 1000.0 * fn / n}


def threshold_for_sensitivity(y, score, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) reaches `target`."""
    fpr, tpr, thr = roc_points(y, score)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    return float(thr[ok[0]])


def youden_threshold(y, score) -> float:
    """The threshold maximising sensitivity + specificity - 1 (the first, i.e. highest, on ties)."""
    fpr, tpr, thr = roc_points(y, score)
    j = tpr[1:] - fpr[1:]  # skip the +inf start, which calls nothing malignant
    return float(thr[1:][int(np.argmax(j))])


# ---------------------------------------------------------------- bootstrap

def cluster_codes(groups) -> np.ndarray:
    """0..P-1 codes of the resampling units (patients); None or missing entries are units of their own."""
    import pandas as pd

    g = pd.Series(groups, dtype="object").reset_index(drop=True)
    missing = g.isna()
    g[missing] = [f"\0image{i}" for i in np.flatnonzero(missing.to_numpy())]
    return pd.factorize(g)[0]


def resample_weights(codes: np.ndarray, n_boot: int, seed: int, chunk: int = 100) -> Iterator[np.ndarray]:
    """Chunks of bootstrap weights (b, N): each resample draws as many units (patients) as there are, with
    replacement; an image's weight is how often its unit was drawn. The same seed gives the same draws."""
    rng = np.random.default_rng(seed)
    n_units = int(codes.max()) + 1
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=b).astype(np.float64)
        yield counts[:, codes]
        done += b


def interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of the finite values (resamples lacking a class are NaN and left out)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def batched_interp(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.interp(q, x[i], y[i]) for every row i of x (nondecreasing rows in [0, 1]) in one searchsorted."""
    b, k = x.shape
    offset = 2.0 * np.arange(b)[:, None]
    flat = np.nan_to_num(x, nan=0.0) + offset
    pos = np.searchsorted(flat.ravel(), (q[None, :] + offset).ravel(), side="right").reshape(b, len(q))
    pos -= (np.arange(b) * k)[:, None]
    j1 = np.clip(pos - 1, 0, k - 1)
    j2 = np.clip(pos, 0, k - 1)
    rows = np.arange(b)[:, None]
    x1, x2, y1, y2 = x[rows, j1], x[rows, j2], y[rows, j1], y[rows, j2]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(x2 > x1, (q[None, :] - x1) / (x2 - x1), 0.0)
    return y1 + np.clip(t, 0.0, 1.0) * (y2 - y1)


def delong(y, score_a, score_b) -> dict[str, float]:
    """DeLong's test of two correlated AUCs on the same images (fast midrank form of Sun and Xu, 2014).

    Images are treated as independent (DeLong has no notion of patients); identical scores give p = 1.
    """
    y = np.asarray(y).astype(bool)
    scores = np.vstack([np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)])
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("delong: both classes are needed")
    tx = np.vstack([rankdata(r) for r in pos])
    ty = np.vstack([rankdata(r) for r in neg])
    tz = np.vstack([rankdata(r) for r in np.hstack([pos, neg])])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-15:  # the two AUCs cannot differ by chance (e.g. identical rankings)
        z, p = 0.0, 1.0 if abs(diff) < 1e-12 else 0.0
    else:
        z = diff / np.sqrt(var)
        p = float(2 * norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "se": float(np.sqrt(max(var, 0.0))),
            "z": float(z), "p": float(p)}
