"""ISIC 2024 end to end on the competition's real files (tests/data/isic2024, copied from ../shared with its README):
folds -> prepare (tiles streamed from the HDF5 file) -> train -> export -> predict on the real test-image.hdf5, every
output keyed by isic_id. The 100 real training rows are all benign, so the test marks 13 of them malignant (every eighth): the
files, tiles and columns stay the competition's own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from melanoma.cli import main

from helpers.isic2024 import real_competition_folder
from helpers.paths import ROOT

REAL = ROOT / "tests" / "data" / "isic2024"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("isic2024")
    data = real_competition_folder(root)
    for args in (["folds", "--data", data, "--out", root / "folds.csv", "--n-folds", "2"],
                 ["prepare", "--data", data, "--out", root / "tfrec", "--size", "32", "--n-folds", "2",
                  "--folds-file", root / "folds.csv"],
                 ["train", "--tfrecords", root / "tfrec", "--out", root / "image", "--weights", "none",
                  "--epochs", "1", "--batch-size", "16", "--set", "n_folds=2",
                  "--set", "train.tensorboard=false"],
                 ["export", root / "image", "--out", root / "model"],
                 ["predict", "--model", root / "model", "--images", data / "test-metadata.csv",
                  "--out", root / "predictions.csv"]):
        assert main([str(a) for a in args]) == 0, args[0]
    return {"root": root, "data": data}


def test_outputs_are_keyed_by_isic_id(trained):
    root, data = trained["root"], trained["data"]
    folds = pd.read_csv(root / "folds.csv")
    assert list(folds.columns[:1]) == ["isic_id"] and len(folds) == 100
    manifest = json.loads((root / "tfrec" / "manifest.json").read_text())
    assert manifest["competition"] == "isic2024" and manifest["counts"] == {"train": 100, "test": 3}
    oof = pd.read_csv(root / "image" / "oof.csv")
    assert list(oof.columns[:4]) == ["isic_id", "target", "pred", "fold"]
    assert sorted(oof["isic_id"]) == sorted(folds["isic_id"]) and oof["target"].sum() == 13
    test = pd.read_csv(root / "image" / "test_pred.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(test.columns) == ["isic_id", "target"] and sorted(test["isic_id"]) == sorted(sample["isic_id"])


def test_metrics_lead_with_partial_auc(trained):
    metrics = json.loads((trained["root"] / "image" / "metrics.json").read_text())
    assert metrics["metric"] == "pauc"
    assert 0.0 <= metrics["oof_pauc"] <= 0.2 and 0.0 <= metrics["oof_auc"] <= 1.0
    assert set(metrics["fold_pauc"]) == {"0", "1"}
    done = json.loads((trained["root"] / "image" / "fold0" / "done.json").read_text())
    history = pd.read_csv(trained["root"] / "image" / "fold0" / "history.csv")
    assert done["monitor"] == "val_pauc" and "val_pauc" in history.columns  # the best epoch by pAUC


def test_predict_reads_the_real_test_tiles(trained):
    pred = pd.read_csv(trained["root"] / "predictions.csv")
    sample = pd.read_csv(trained["data"] / "sample_submission.csv")
    assert pred.columns[0] == "isic_id"
    assert list(pred["isic_id"]) == list(pd.read_csv(trained["data"] / "test-metadata.csv")["isic_id"])
    assert set(pred["isic_id"]) == set(sample["isic_id"])
    assert pred["error"].isna().all() and pred["probability"].between(0, 1).all()


def test_predict_takes_the_tile_file_itself(trained, tmp_path):
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(trained["root"] / "model"), "--images",
                 str(trained["data"] / "test-image.hdf5"), "--out", str(out)]) == 0
    pred = pd.read_csv(out)
    assert sorted(pred["isic_id"]) == sorted(pd.read_csv(trained["data"] / "sample_submission.csv")["isic_id"])


def test_a_tile_missing_from_the_file_is_one_line(trained, tmp_path, capsys):
    csv = tmp_path / "test-metadata.csv"
    meta = pd.read_csv(trained["data"] / "test-metadata.csv")
    meta.loc[1, "isic_id"] = "ISIC_9999999"
    meta.to_csv(csv, index=False)
    shutil.copy(trained["data"] / "test-image.hdf5", tmp_path / "test-image.hdf5")
    code = main(["predict", "--model", str(trained["root"] / "model"), "--images", str(csv),
                 "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "ISIC_9999999" in err and "test-image.hdf5" in err
    assert not (tmp_path / "p.csv").exists()
