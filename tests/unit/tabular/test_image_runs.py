"""Image runs as tabular features (melanoma.tabular.image_runs): joined by id whatever the row order, normalised
within the patient, and usable by the SIIM-ISIC 2020 models too."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from melanoma.config import Config, TabularConfig
from melanoma.data.folds import run_folds
from melanoma.errors import ConfigError
from melanoma.tabular.image_runs import image_run_features
from melanoma.tabular.stage import run_tabular


def _run(folder, oof: pd.DataFrame, test: pd.DataFrame):
    folder.mkdir(parents=True)
    oof.to_csv(folder / "oof.csv", index=False)
    test.to_csv(folder / "test_pred.csv", index=False)
    return folder


def test_features_are_joined_by_id_and_normalised_within_the_patient(tmp_path):
    train = pd.DataFrame({"image_name": ["a", "b", "c", "d"], "target": [0, 1, 0, 0], "fold": [0, 0, 1, 1],
                          "patient_id": ["P", "P", "Q", "Q"]})
    test = pd.DataFrame({"image_name": ["t1", "t2", "t3"], "patient_id": ["R", "R", "S"]})
    oof = pd.DataFrame({"image_name": ["d", "c", "b", "a"], "target": [0, 0, 1, 0], "pred": [0.4, 0.2, 0.9, 0.1],
                        "fold": [1, 1, 0, 0]})  # another order, and an id only the run has is ignored
    oof = pd.concat([oof, pd.DataFrame({"image_name": ["x"], "target": [1], "pred": [0.5], "fold": [0]})])
    run = _run(tmp_path / "run", oof, pd.DataFrame({"image_name": ["t3", "t2", "t1"], "target": [0.3, 0.8, 0.2]}))
    X, Xt, info = image_run_features([run], train, test, tmp_path / "folds.csv")
    assert X.index.tolist() == ["a", "b", "c", "d"] and Xt.index.tolist() == ["t1", "t2", "t3"]
    assert X["image_run0"].tolist() == pytest.approx([0.1, 0.9, 0.2, 0.4])
    assert Xt["image_run0"].tolist() == pytest.approx([0.2, 0.8, 0.3])
    assert X["image_run0_prank"].tolist() == pytest.approx([0.5, 1.0, 0.5, 1.0])  # within P, within Q
    assert np.sign(X["image_run0_pz"]).tolist() == [-1, 1, -1, 1]
    assert Xt["image_run0_pz"].tolist()[2] == 0.0  # a one-tile patient is typical of itself
    assert info[0]["column"] == "image_run0"
    with pytest.raises(ConfigError, match="listed twice"):
        image_run_features([run, tmp_path / "run"], train, test, tmp_path / "folds.csv")


def test_siim2020_models_stack_on_an_image_run(demo_subset, tmp_path):
    folds_csv = tmp_path / "folds.csv"
    folds = run_folds(Config(n_folds=3), demo_subset, folds_csv)
    rng = np.random.default_rng(0)
    oof = folds[["image_name", "target", "fold"]].assign(
        pred=lambda d: np.clip(0.5 * d.target + rng.normal(0.3, 0.1, len(d)), 0, 1))
    test = pd.read_csv(demo_subset / "test.csv")[["image_name"]].assign(target=0.5)
    run = _run(tmp_path / "image", oof[["image_name", "target", "pred", "fold"]], test)
    cfg = Config(n_folds=3, tabular=TabularConfig(model="gbm", gbm_importance_repeats=0, gbm_min_samples_leaf=3,
                                                  image_stats="off", image_runs=[str(run)]))
    metrics = run_tabular(cfg, demo_subset, folds_csv, tmp_path / "tab")
    assert metrics["metric"] == "auc" and "oof_pauc" not in metrics  # a 2020 run stays an AUC run
    assert {"image_run0", "image_run0_pz", "image_run0_prank"} <= set(metrics["features"])
    assert metrics["oof_auc"] > 0.9, metrics["oof_auc"]
    features = pd.read_csv(tmp_path / "tab" / "features.csv")
    assert "image_run0_prank" in features.columns
    assert list(pd.read_csv(tmp_path / "tab" / "oof.csv").columns) == ["image_name", "target", "pred", "fold"]
    assert json.loads((tmp_path / "tab" / "metrics.json").read_text())["image_runs"][0]["path"] == str(run)
