"""melanoma.scoring.partial_auc against the ISIC 2024 competition's own computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import auc, roc_auc_score, roc_curve

from melanoma.report.metrics import ranking_metrics
from melanoma.scoring import fast_partial_auc, partial_auc
from melanoma.scoring import auc as results_auc


def competition_score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str,
                      min_tpr: float = 0.80) -> float:
    """The competition's scoring code as published (and as the public notebooks copy it), transcribed."""
    v_gt = abs(np.asarray(solution.drop(columns=[row_id_column_name]).values) - 1)
    v_pred = np.array([1.0 - x for x in submission.drop(columns=[row_id_column_name]).values])
    max_fpr = abs(1 - min_tpr)
    partial_auc_scaled = roc_auc_score(v_gt, v_pred, max_fpr=max_fpr)
    return 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (partial_auc_scaled - 0.5)


def direct_area(y, p, min_tpr=0.8):
    """The same area drawn directly: the flipped ROC curve up to FPR 0.2, with a point interpolated at 0.2."""
    fpr, tpr, _ = roc_curve(np.abs(np.asarray(y) - 1), -np.asarray(p))
    max_fpr = 1 - min_tpr
    stop = np.searchsorted(fpr, max_fpr, "right")
    tpr = np.append(tpr[:stop], np.interp(max_fpr, [fpr[stop - 1], fpr[stop]], [tpr[stop - 1], tpr[stop]]))
    fpr = np.append(fpr[:stop], max_fpr)
    return auc(fpr, tpr)


def _frames(y, p):
    ids = [f"ISIC_{i:07d}" for i in range(len(y))]
    return (pd.DataFrame({"isic_id": ids, "target": y}), pd.DataFrame({"isic_id": ids, "target": p}))


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_competition_code_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    y = (rng.random(n) < rng.uniform(0.01, 0.3)).astype(int)
    y[:2] = [0, 1]
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + rng.uniform(0, 3) * y)))
    if seed % 2:
        p = np.round(p, 2)  # many tied scores
    ours = partial_auc(y, p)
    assert ours == pytest.approx(competition_score(*_frames(y, p), "isic_id"), abs=1e-12)
    assert ours == pytest.approx(direct_area(y, p), abs=1e-9)
    assert ours == pytest.approx(ranking_metrics(y, p)["pauc"], abs=1e-9)  # the report's vectorised form
    assert 0.0 <= ours <= 0.2


@pytest.mark.parametrize("min_tpr", [0.5, 0.9, 0.0])
def test_other_thresholds_match(min_tpr):
    rng = np.random.default_rng(1)
    y = (rng.random(500) < 0.1).astype(int)
    p = rng.random(500) + 0.3 * y
    expected = competition_score(*_frames(y, p), "isic_id", min_tpr=min_tpr)
    assert partial_auc(y, p, min_tpr=min_tpr) == pytest.approx(expected, abs=1e-12)
    if min_tpr == 0.0:
        assert partial_auc(y, p, min_tpr=0.0) == pytest.approx(roc_auc_score(y, p))


def test_range_and_known_values():
    y = np.array([0] * 90 + [1] * 10)
    perfect = np.r_[np.zeros(90), np.ones(10)]
    assert partial_auc(y, perfect) == pytest.approx(0.2)
    assert partial_auc(y, 1 - perfect) == pytest.approx(0.0)
    assert partial_auc(y, np.full(100, 0.5)) == pytest.approx(0.02)  # all tied: the chance diagonal
    rng = np.random.default_rng(0)
    big = np.r_[np.zeros(1000), np.ones(1000)]
    random_scores = [partial_auc(big, rng.random(2000)) for _ in range(50)]
    assert np.mean(random_scores) == pytest.approx(0.02, abs=0.002)  # the README: random is about 0.02
    assert partial_auc(y, perfect * 10 - 5) == pytest.approx(0.2)  # logits: any order-preserving scale


def test_one_class_is_none_like_results_auc():
    y, p = np.zeros(10), np.linspace(0, 1, 10)
    assert partial_auc(y, p) is None and results_auc(y, p) is None
    assert partial_auc(np.ones(10), p) is None


@pytest.mark.parametrize("y,p,match", [
    ([0, 1], [0.1], "2 labels but 1 scores"),
    ([0, 2], [0.1, 0.2], "labels must be 0 or 1"),
    ([0, 1], [0.1, np.nan], "scores must be finite"),
])
def test_bad_input_is_a_clear_error(y, p, match):
    with pytest.raises(ValueError, match=match):
        partial_auc(y, p)
    with pytest.raises(ValueError, match="min_tpr must be in"):
        partial_auc([0, 1], [0.1, 0.2], min_tpr=1.0)


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_form_agrees_with_the_reference(seed):
    """fast_partial_auc (early stopping, blend weights) gives partial_auc's number: ties, rounding to few
    distinct scores, few positives, logits."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    y = (rng.random(n) < rng.uniform(0.01, 0.5)).astype(int)
    y[:2] = [0, 1]
    p = rng.random(n) + y * rng.uniform(0, 1)
    for scores in (p, np.round(p, 1), np.round(p, 3), np.log(p + 1e-3)):
        assert fast_partial_auc(y, scores) == pytest.approx(partial_auc(y, scores), abs=1e-12)
    assert fast_partial_auc(y, p, min_tpr=0.5) == pytest.approx(partial_auc(y, p, min_tpr=0.5), abs=1e-12)
    assert fast_partial_auc(np.zeros(5), np.arange(5)) is None
