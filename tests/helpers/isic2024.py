"""Tiny ISIC 2024 sets for tests: the demo generator (scripts/make_isic2024_demo.py) on a dozen patients, their
folds, and image runs written as `train` writes them in 2024 mode (isic_id, target, pred, fold)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.paths import ROOT

SMALL = dict(patients=12, tiles_per_patient=12, test_patients=2, malignant_share=0.1)


def demo_script():
    """scripts/make_isic2024_demo.py as a module (it is a script, not part of the package)."""
    if "make_isic2024_demo" in sys.modules:
        return sys.modules["make_isic2024_demo"]
    spec = importlib.util.spec_from_file_location("make_isic2024_demo", ROOT / "scripts" / "make_isic2024_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_isic2024_demo"] = module
    spec.loader.exec_module(module)
    return module


def make_small_set(root: Path, seed: int = 5, **kw) -> tuple[Path, Path]:
    """(data folder, folds.csv): a dozen synthetic patients in the competition's layout, 5 patient folds."""
    from melanoma.config import Config
    from melanoma.data.folds import run_folds

    data = root / "data"
    demo_script().make_demo(data, seed=seed, **{**SMALL, **kw})
    folds = root / "runs" / "folds.csv"
    run_folds(Config(), data, folds)
    return data, folds


def write_image_run(folder: Path, folds_csv: Path, data: Path, signal: float = 0.6, seed: int = 0,
                    metric: str = "pauc") -> Path:
    """An image run on the folds of folds_csv whose prediction carries `signal` of the target (plus noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    folds = pd.read_csv(folds_csv, dtype={"isic_id": "string"})
    pred = np.clip(signal * folds["target"] + rng.normal(0.3, 0.15, len(folds)), 0.0, 1.0)
    folds.assign(pred=pred)[["isic_id", "target", "pred", "fold"]].to_csv(folder / "oof.csv", index=False)
    test = pd.read_csv(data / "test-metadata.csv", usecols=["isic_id"], dtype={"isic_id": "string"})
    labels = pd.read_csv(data / "test_labels.csv", dtype={"isic_id": "string"}).set_index("isic_id")["target"]
    test_pred = np.clip(signal * test["isic_id"].map(labels).to_numpy() + rng.normal(0.3, 0.15, len(test)), 0, 1)
    test.assign(target=test_pred).to_csv(folder / "test_pred.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"metric": metric}))
    (folder / "run.json").write_text(json.dumps({"stage": "train"}))
    return folder


REAL = ROOT / "tests" / "data" / "isic2024"  # the competition's own files (copied from ../shared with its README)


def real_competition_folder(root: Path) -> Path:
    """ROOT/isic-2024-challenge laid out as Kaggle mounts it, from the real files: the 100 published training rows
    (all benign: every eighth is marked malignant, 13 in all) with their tiles, the 3-row test set, the sample."""
    data = root / "isic-2024-challenge"
    data.mkdir(parents=True)
    train = pd.read_csv(REAL / "train-metadata-first100.csv", dtype={"isic_id": "string"})
    train = train.drop(columns=[c for c in train.columns if c.startswith("Unnamed")])  # R's row-number column
    train.loc[train.index % 8 == 3, "target"] = 1
    train.to_csv(data / "train-metadata.csv", index=False)
    shutil.copy(REAL / "train-image-first100.hdf5", data / "train-image.hdf5")
    for name in ("test-metadata.csv", "test-image.hdf5", "sample_submission.csv"):
        shutil.copy(REAL / name, data / name)
    return data
