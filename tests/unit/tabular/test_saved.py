"""The ISIC 2024 tabular run keeps its fitted models (RUN/models/, melanoma.tabular.saved): loaded again, they
score the test metadata (and the image run's test predictions) exactly as the stage's own test_pred.csv says."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers.isic2024 import make_small_set, write_image_run
from melanoma.config import Config, TabularConfig
from melanoma.data.competition import ISIC2024
from melanoma.data.schema import read_test
from melanoma.errors import InputError
from melanoma.tabular.saved import INFO, MODELS_DIR, TabularModels
from melanoma.tabular.stage import run_tabular

FAST = dict(model="lgbm", seeds=2, lgbm_min_child_samples=5, lgbm_num_leaves=4, lgbm_learning_rate=0.1,
            lgbm_max_rounds=60, pauc_patience=10, negative_ratio=4)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    data, folds = make_small_set(root)
    return root, data, folds


def _reproduced(run, data, image_preds=None):
    models = TabularModels.load(run)
    test = read_test(data, models.patient_id, ISIC2024)
    want = pd.read_csv(run / "test_pred.csv", dtype={"isic_id": "string"}).set_index("isic_id")["target"]
    got = pd.Series(models.predict(test, image_preds), index=test["image_name"])
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-6, atol=1e-9)
    return models


def test_the_saved_fold_models_reproduce_test_pred(small):
    root, data, folds = small
    run = root / "tab"
    run_tabular(Config(tabular=TabularConfig(**FAST)), data, folds, run)
    info = json.loads((run / MODELS_DIR / INFO).read_text())
    assert info["members"] == [f"member{k}.joblib" for k in range(5)] and info["image_runs"] == []
    assert info["model"] == "lgbm" and "lightgbm" in info["versions"]
    models = _reproduced(run, data)
    assert models.n_image_runs == 0 and len(models.members) == 5
    assert not any(p.name.startswith(".staging") for p in run.iterdir())


def test_with_an_image_run_and_several_models(small):
    root, data, folds = small
    image = write_image_run(root / "image", folds, data, signal=0.6)
    run = root / "tab_image"
    run_tabular(Config(tabular=TabularConfig(**{**FAST, "model": "all", "image_runs": [str(image)]})), data,
                folds, run)
    test = pd.read_csv(data / "test-metadata.csv", dtype={"isic_id": "string"})
    pred = pd.read_csv(image / "test_pred.csv", dtype={"isic_id": "string"}).set_index("isic_id")["target"]
    image_preds = [test["isic_id"].map(pred).to_numpy()]
    models = _reproduced(run, data, image_preds)
    assert models.n_image_runs == 1 and models.info["image_runs"][0]["path"] == str(image)
    assert {"image_run0", "image_run0_pz", "image_run0_prank"} <= set(models.columns)
    _reproduced(run / "hgb", data, image_preds)  # each model of `all` keeps its own
    with pytest.raises(ValueError, match="take 1 image run"):
        models.predict(read_test(data, "required", ISIC2024))


def test_a_run_without_models_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no models/models.json"):
        TabularModels.load(tmp_path)
