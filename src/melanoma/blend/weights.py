"""The weight search of the `weighted` blend: non-negative weights on a grid of `blend.step`, summing to 1, that
maximise the runs' metric (AUC, or ISIC 2024's pAUC above 80% TPR) of the weighted mean of their OOF ranks
(`fit_weights`), and the ranks themselves (`to_ranks`). stage.py mixes the runs with them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from melanoma.errors import ConfigError
from melanoma.scoring import fast_partial_auc

_AUC_TOL = 1e-12  # AUC differences below this are ties (float noise of summing ranks)
_MAX_ITER = 100_000  # safety cap of the coordinate search; every accepted move strictly improves the AUC


def to_ranks(pred: pd.Series) -> pd.Series:
    """Predictions as ranks scaled to (0, 1] (average rank for ties): the only transform applied before mixing."""
    return pd.Series(pred, dtype="float64").rank(pct=True)


def _fast_auc(y: np.ndarray, score: np.ndarray, n_pos: int, n_neg: int) -> float:
    # Mann-Whitney form of the ROC AUC with average ranks for ties: equals sklearn's roc_auc_score,
    # without its sorting overhead (the search evaluates many candidate blends).
    r = rankdata(score)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def step_units(step: float) -> int:
    """Number of grid steps in a weight of 1 (the step is rounded to 1 / that integer)."""
    if not (isinstance(step, (int, float)) and 0.0 < float(step) <= 1.0):
        raise ConfigError(f"blend.step must be in (0, 1], got {step!r}")
    return max(1, int(round(1.0 / float(step))))


def fit_weights(oofs: list[pd.Series], y: Any, step: float, metric: str = "auc") -> np.ndarray:
    """Non-negative weights summing to 1 that maximise the `metric` ("auc" | "pauc": melanoma.scoring's pAUC)
    of the weighted mean of the OOF ranks (the search below is written for AUC; pAUC takes its place).

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
    y = _aligned_targets(oofs, y)
    n = step_units(step)
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

    def score(units: np.ndarray) -> float:  # both scale-free: no need to normalise the units
        if metric == "pauc":
            return float(fast_partial_auc(pos, R @ units.astype(np.float64)))
        return _fast_auc(pos, R @ units.astype(np.float64), n_pos, n_neg)

    return _search_pair(score, n) if k == 2 else _search_simplex(score, k, n)


def _aligned_targets(oofs: list[pd.Series], y: Any) -> np.ndarray:
    """y as a float array, after checking that every OOF series and y share one index."""
    if not oofs:
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
    return y


def _search_pair(score, n: int) -> np.ndarray:
    """Two inputs: every w in {0, 1/n, ..., 1} for the first, 1 - w for the second."""
    best_key, best = None, None
    for a in range(n, -1, -1):  # more weight on the first input first: the tie order
        units = np.array([a, n - a])
        key = (score(units), -int((units * units).sum()))
        if best_key is None or key[0] > best_key[0] + _AUC_TOL or (
            abs(key[0] - best_key[0]) <= _AUC_TOL and key[1] > best_key[1]
        ):
            best_key, best = key, units
    return best / n


def _search_simplex(score, k: int, n: int) -> np.ndarray:
    """More inputs: steepest-ascent coordinate search on the simplex from equal weights."""
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
