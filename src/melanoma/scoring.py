"""The competitions' metrics, below every stage: ROC AUC (SIIM-ISIC 2020) and the ISIC 2024 challenge's partial
ROC AUC above 80% true-positive rate, as the competition computes it.

The competition's scoring code flips the problem so that "TPR above 0.8" becomes "FPR below 0.2": it takes
1 - target as the labels and 1 - prediction as the scores, asks scikit-learn for the standardised (McClish)
partial AUC up to max_fpr = 1 - min_tpr, and maps that back to the raw area:

    pauc = 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (pauc_std - 0.5)

The result lies in [0, max_fpr] = [0, 0.2] (perfect 0.2; a random ranking about 0.02). `partial_auc` is that
computation; `melanoma.report.metrics.pauc_from_counts` is a vectorised form of the same area for bootstraps
(the tests check that all three agree).

One class only: None, as `melanoma.scoring.auc` answers for plain AUC (a small fold can hold no malignant
tile), rather than scikit-learn's ValueError.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

MIN_TPR = 0.8  # the competition's threshold


def partial_auc(y, p, min_tpr: float = MIN_TPR) -> float | None:
    """Partial AUC above `min_tpr` true-positive rate, unnormalised (range 0 to 1 - min_tpr); None when `y`
    holds one class only. `y`: 0/1 labels; `p`: scores (any finite values, higher = more likely malignant)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"partial_auc: {y.size} labels but {p.size} scores")
    if not 0.0 <= min_tpr < 1.0:
        raise ValueError(f"partial_auc: min_tpr must be in [0, 1), got {min_tpr}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("partial_auc: labels must be 0 or 1")
    if not np.isfinite(p).all():
        raise ValueError("partial_auc: scores must be finite numbers")
    if np.unique(y).size < 2:
        return None
    max_fpr = 1.0 - min_tpr
    # 1 - p flips the ranking; for scores outside [0, 1] (logits) it is still an order-reversing map.
    pauc_std = roc_auc_score(1.0 - y, 1.0 - p, max_fpr=max_fpr)
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (pauc_std - 0.5))


def fast_partial_auc(y, p, min_tpr: float = MIN_TPR) -> float | None:
    """partial_auc without sorting the negatives, for loops that score many predictions of the same rows (early
    stopping every round, the blend's weight search); tests/unit/scoring checks that the two agree.

    In the competition's flipped ROC (negatives as the positives, ranked by 1 - p) the x axis moves only at the
    positives' scores: from the lowest up, each distinct positive score v moves it by its share of positives,
    along a straight line from (share of negatives below v) to (share at or below v). The area up to
    FPR 1 - min_tpr is the sum of those trapezoids, the last one cut where it crosses. Counting the negatives
    below each v takes one binary search per negative among the few distinct positive scores."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    positive = y == 1.0
    n_pos = int(positive.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    values, counts = np.unique(p[positive], return_counts=True)
    negatives = p[~positive]
    m = len(values)
    below = np.cumsum(np.bincount(np.searchsorted(values, negatives, "right"), minlength=m + 1))[:m] / n_neg
    at_or_below = np.cumsum(np.bincount(np.searchsorted(values, negatives, "left"), minlength=m + 1))[:m] / n_neg
    x1 = np.cumsum(counts) / n_pos
    x0 = x1 - counts / n_pos
    max_fpr = 1.0 - min_tpr
    cut = np.minimum(x1, max_fpr)
    keep = x0 < max_fpr
    at_cut = below + (at_or_below - below) * (cut - x0) / (x1 - x0)  # the line's height where it is cut
    return float(np.sum(((cut - x0) * (below + at_cut) / 2.0)[keep]))


def auc(y_true: Any, y_pred: Any) -> float | None:
    """ROC AUC, or None when only one class is present (a tiny fold can have no positive)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return None
    return float(roc_auc_score(y_true, np.asarray(y_pred, dtype=np.float64)))



# The competitions' metrics by the name their profile and metrics.json use (melanoma.data.competition).
METRICS = {"auc": auc, "pauc": partial_auc}


def fmt_auc(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
