"""Blending ISIC 2024 runs: weights fitted on pAUC, isic_id,target submissions checked against the real sample
submission's format, and runs of different metrics refused."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from helpers.isic2024 import make_small_set, write_image_run
from helpers.paths import DATA
from melanoma.blend import blend_runs, fit_weights, run_blend
from melanoma.config import BlendConfig, Config
from melanoma.data.submission import check_submission_file, read_sample_submission
from melanoma.errors import InputError
from melanoma.scoring import partial_auc

REAL_SAMPLE = DATA / "isic2024" / "sample_submission.csv"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("isic2024")
    data, folds = make_small_set(root)
    image = write_image_run(root / "image", folds, data, signal=0.5, seed=1)
    tabular = write_image_run(root / "tabular", folds, data, signal=0.2, seed=2)
    (tabular / "run.json").write_text(json.dumps({"stage": "tabular"}))
    return root, data, image, tabular


def test_the_real_sample_submission_reads_with_isic_id():
    sample = read_sample_submission(REAL_SAMPLE)
    assert list(sample.columns) == ["image_name", "target"] and len(sample) == 3
    assert sample["image_name"].str.startswith("ISIC_").all()


def test_sample_submission_errors_name_isic_id(tmp_path):
    bad = tmp_path / "sample_submission.csv"
    bad.write_text("isic_id,score\nISIC_0000001,0.3\n")
    with pytest.raises(InputError, match=r"missing column 'target' \(expected isic_id,target\)"):
        read_sample_submission(bad)
    bad.write_text("isic_id,target\nISIC_0000001,0.3\nISIC_0000001,0.3\n")
    with pytest.raises(InputError, match="duplicate isic_id 'ISIC_0000001'"):
        read_sample_submission(bad)


def test_blend_writes_an_isic_id_submission_fitted_on_pauc(runs, tmp_path, caplog):
    root, data, image, tabular = runs
    out = tmp_path / "sub" / "submission.csv"
    with caplog.at_level(logging.INFO, logger="melanoma.blend"):
        report = run_blend(Config(), [image, tabular], out, data / "sample_submission.csv")
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["isic_id", "target"]
    sample = pd.read_csv(data / "sample_submission.csv")
    assert sub["isic_id"].tolist() == sample["isic_id"].tolist()  # the sample's order
    assert check_submission_file(out, data / "sample_submission.csv") == len(sample)
    saved = json.loads((out.parent / "blend.json").read_text())
    assert saved["metric"] == "pauc" and 0 <= saved["blended_oof_pauc"] <= 0.2
    assert all("oof_pauc" in r and "oof_auc" in r for r in saved["runs"])
    assert "fitted on OOF pAUC" in saved["method_description"]
    # the weights are the pAUC search's, not the AUC one's
    oofs = [pd.read_csv(r / "oof.csv").sort_values("isic_id").reset_index(drop=True) for r in (image, tabular)]
    expected = fit_weights([o["pred"] for o in oofs], oofs[0]["target"], 0.05, metric="pauc")
    assert [r["weight"] for r in report["runs"]] == pytest.approx(list(expected))
    assert any("OOF pAUC>80%TPR" in m and "(AUC " in m for m in caplog.messages)


def test_pauc_weights_are_the_best_on_the_grid():
    rng = np.random.default_rng(3)
    y = pd.Series((rng.random(400) < 0.1).astype(int))
    a = pd.Series(y * 0.8 + rng.normal(0, 0.5, 400))
    b = pd.Series(y * 0.8 + rng.normal(0, 0.5, 400))
    w = fit_weights([a, b], y, 0.1, metric="pauc")
    grid = [partial_auc(y, t * a.rank(pct=True) + (1 - t) * b.rank(pct=True)) for t in np.linspace(0, 1, 11)]
    assert partial_auc(y, w[0] * a.rank(pct=True) + w[1] * b.rank(pct=True)) == pytest.approx(max(grid))


def test_runs_of_different_metrics_are_refused(runs, tmp_path):
    root, data, image, _ = runs
    other = write_image_run(tmp_path / "auc_run", root / "runs" / "folds.csv", data, metric="auc")
    with pytest.raises(InputError, match="different metrics") as e:
        blend_runs([image, other], None, BlendConfig())
    assert "\n" not in str(e.value) and str(other) in str(e.value)
