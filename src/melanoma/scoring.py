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
