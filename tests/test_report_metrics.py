"""Report metrics: agreement with scikit-learn, textbook operating points, bootstrap intervals, DeLong, calibrators."""

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from melanoma.errors import InputError
from melanoma import calibration
from melanoma.report import metrics as M
from melanoma.report.evaluate import compare_pair, evaluate, operating_points


def isic_pauc(y, s, min_tpr=0.8):
    """The ISIC 2024 metric: roc_auc_score(max_fpr) on flipped labels and negated scores, McClish scaling undone."""
    max_fpr = 1 - min_tpr
    standardised = roc_auc_score(1 - np.asarray(y), -np.asarray(s), max_fpr=max_fpr)
    lo, hi = 0.5 * max_fpr**2, max_fpr
    return lo + (2 * standardised - 1) * (hi - lo)


@pytest.mark.parametrize("seed,n,decimals", [(0, 60, None), (1, 500, 1), (2, 3000, 2), (3, 40, 0)])
def test_agrees_with_sklearn(seed, n, decimals):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    y[:2] = [0, 1]
    s = rng.normal(size=n) + 1.2 * y
    if decimals is not None:  # ties
        s = np.round(s, decimals)
    p = 1 / (1 + np.exp(-s))
    m = M.ranking_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert m["ap"] == pytest.approx(average_precision_score(y, p), abs=1e-9)
    assert m["pauc"] == pytest.approx(isic_pauc(y, p), abs=1e-9)
    assert 0 <= m["pauc"] <= 0.2
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    fpr, tpr, _ = M.roc_points(y, p)
    ref_fpr, ref_tpr, _ = roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)


def test_pauc_extremes():
    y = np.array([0, 0, 0, 1, 1])
    assert M.ranking_metrics(y, [0.1, 0.2, 0.3, 0.8, 0.9])["pauc"] == pytest.approx(0.2)
    assert M.ranking_metrics(y, [0.9, 0.8, 0.7, 0.2, 0.1])["pauc"] == pytest.approx(0.0)


def test_operating_point_formulas_on_a_hand_computed_table():
    # TP 6, FN 2 (positives scored 0.9 / 0.2), FP 4, TN 8 (negatives scored 0.7 / 0.1): threshold 0.5.
    y = np.r_[np.ones(8), np.zeros(12)]
    s = np.r_[np.full(6, 0.9), np.full(2, 0.2), np.full(4, 0.7), np.full(8, 0.1)]
    c = M.confusion(y, s, 0.5)
    assert c == {"tp": 6, "fp": 4, "fn": 2, "tn": 8}
    r = M.rates(**c)
    assert r["sensitivity"] == pytest.approx(6 / 8)
    assert r["specificity"] == pytest.approx(8 / 12)
    assert r["ppv"] == pytest.approx(6 / 10)
    assert r["npv"] == pytest.approx(8 / 10)
    assert r["f1"] == pytest.approx(2 * 6 / (2 * 6 + 4 + 2))
    assert r["fn_per_1000"] == pytest.approx(1000 * 2 / 20)
    assert M.rates(0, 0, 0, 5)["sensitivity"] is None and M.rates(0, 0, 0, 5)["ppv"] is None
    # Thresholds: the highest that reaches the sensitivity; Youden's J picks 0.7 (J = 0.75 - 4/12 ... vs 0.9).
    assert M.threshold_for_sensitivity(y, s, 0.75) == 0.9
    assert M.threshold_for_sensitivity(y, s, 0.8) == 0.2
    assert M.youden_threshold(y, s) == 0.9  # J(0.9) = 0.75, J(0.7) = 0.75 - 1/3, J(0.2) = 1 - 1/3
    ops = operating_points(y, s, [0.75], (y, s))
    assert ops[0]["threshold"] == 0.9 and ops[0]["oof"]["tp"] == 6 and ops[0]["test"] == ops[0]["oof"]
    assert ops[-1]["name"] == "Youden's J"


def test_ece_and_reliability_by_hand():
    y = np.array([0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])
    rel = M.reliability(y, p, bins=10)
    assert rel["count"] == [2, 2] and rel["observed"] == [0.5, 1.0]
    assert M.ece(y, p, 10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def patient_data(n_patients=150, per=8, seed=0):
    """Strong patient effects: every image of a patient shares the label and most of the score."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), per)
    label = (rng.random(n_patients) < 0.3).astype(int)[pid]
    effect = rng.normal(size=n_patients)[pid]
    score = 0.8 * label + 1.5 * effect + 0.1 * rng.normal(size=len(pid))
    return label, score, pid


def test_perfect_classifier_interval_is_one():
    y, _, pid = patient_data()
    ev = evaluate(y, y + 0.01 * np.arange(len(y)) / len(y), pid, {}, 200, 0, 5, 10)
    assert ev["auc"]["value"] == 1.0 and ev["auc"]["ci"] == [1.0, 1.0]
    assert ev["ap"]["ci"] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert ev["pauc"]["ci"] == pytest.approx([0.2, 0.2])


def test_patient_resampling_is_wider_than_image_resampling():
    y, s, pid = patient_data()
    by_patient = evaluate(y, s, pid, {}, 400, 1, 5, 10)
    by_image = evaluate(y, s, np.arange(len(y)), {}, 400, 1, 5, 10)
    width = {k: e["auc"]["ci"][1] - e["auc"]["ci"][0] for k, e in (("patient", by_patient), ("image", by_image))}
    assert by_patient["units"] == 150 and by_image["units"] == len(y)
    assert width["patient"] > 1.8 * width["image"]
    assert by_patient["auc"]["value"] == by_image["auc"]["value"]


def test_bootstrap_is_seeded_and_bands_cover_the_curve():
    y, s, pid = patient_data(seed=3)
    a = evaluate(y, s, pid, {"half": pd.Series(np.where(pid < 75, "a", "b"))}, 100, 7, 5, 10)
    b = evaluate(y, s, pid, {"half": pd.Series(np.where(pid < 75, "a", "b"))}, 100, 7, 5, 10)
    assert a["auc"]["ci"] == b["auc"]["ci"] and a["subgroups"] == b["subgroups"]
    band = a["roc"]["band"]
    assert all(lo <= hi + 1e-12 for lo, hi in zip(band["lo"], band["hi"]))
    entries = {e["group"]: e for e in a["subgroups"]["half"]}
    assert set(entries) == {"a", "b"} and all(e["ci"][0] <= e["auc"] <= e["ci"][1] for e in entries.values())


def test_small_subgroup_says_so():
    y = np.r_[np.ones(3), np.zeros(30)]
    groups = {"site": pd.Series(["torso"] * 2 + ["head"] + ["torso"] * 20 + ["head"] * 10)}
    ev = evaluate(y, np.arange(33.0), np.arange(33), groups, 20, 0, 2, 10)
    by = {e["group"]: e for e in ev["subgroups"]["site"]}
    assert by["head"]["auc"] is None and "too few positives" in by["head"]["note"]
    assert by["torso"]["auc"] is not None


def test_batched_interp_matches_numpy():
    rng = np.random.default_rng(0)
    x = np.sort(rng.random((5, 30)), axis=1)
    x[:, 0], x[:, -1] = 0, 1
    y = np.cumsum(rng.random((5, 30)), axis=1)
    q = np.linspace(0, 1, 17)
    out = M.batched_interp(x, y, q)
    for i in range(5):
        np.testing.assert_allclose(out[i], np.interp(q, x[i], y[i]), atol=1e-12)


def test_compare_identical_runs_diff_zero_p_one():
    y, s, pid = patient_data(seed=5)
    res = compare_pair(y, s, s.copy(), pid, 200, 0)
    assert res["diff"] == 0.0 and res["ci"] == [0.0, 0.0] and res["delong"]["p"] == 1.0


def test_delong_detects_a_real_difference_and_matches_sklearn():
    rng = np.random.default_rng(1)
    y = (rng.random(600) < 0.3).astype(int)
    good, noise = y + rng.normal(0, 0.5, 600), y + rng.normal(0, 3.0, 600)
    d = M.delong(y, good, noise)
    assert d["auc_a"] == pytest.approx(roc_auc_score(y, good), abs=1e-9)
    assert d["auc_b"] == pytest.approx(roc_auc_score(y, noise), abs=1e-9)
    assert d["diff"] > 0 and d["p"] < 1e-6
    assert M.delong(y, noise, good)["p"] == pytest.approx(d["p"])


def test_calibrators(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.random(2000)
    y = (rng.random(2000) < s**2).astype(int)  # true probability s^2: scores are overconfident
    iso = calibration.fit(y, s, "isotonic")
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y)
    np.testing.assert_allclose(calibration.apply(iso, s), ref.predict(s), atol=1e-12)
    platt = calibration.fit(y, s, "platt")
    p = calibration.apply(platt, np.sort(s))
    assert np.all(np.diff(p) >= 0) and M.ece(y, calibration.apply(platt, s)) < M.ece(y, s)
    path = calibration.save_calibrator(tmp_path / "c.json", iso, fitted_on="x")
    assert calibration.load_calibrator(path)["method"] == "isotonic"
    (tmp_path / "bad.json").write_text('{"method": "magic"}')
    with pytest.raises(InputError, match="not a calibrator"):
        calibration.load_calibrator(tmp_path / "bad.json")


def test_no_bootstrap_gives_values_without_intervals():
    y, s, pid = patient_data()
    ev = evaluate(y, s, pid, {}, 0, 0, 5, 10)
    assert ev["auc"]["value"] is not None and ev["auc"]["ci"] is None and ev["roc"]["band"] is None
    assert compare_pair(y, s, s, pid, 0, 0)["ci"] is None
