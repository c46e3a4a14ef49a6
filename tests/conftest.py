"""Shared fixtures: tiny competition-layout folders made from the shipped demo images or generated ones."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Quiet TensorFlow's C++ logging; tests only (it must be set before TensorFlow is imported).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
SHARED = ROOT.parent / "shared" / "data"


def make_layout(root: Path, train: pd.DataFrame, test: pd.DataFrame, image_for) -> Path:
    """Write train.csv, test.csv, sample_submission.csv and a JPEG per row (image_for(split, row) -> PIL)."""
    for split, df in (("train", train), ("test", test)):
        (root / "jpeg" / split).mkdir(parents=True, exist_ok=True)
        for _, row in df.iterrows():
            image_for(split, row).save(root / "jpeg" / split / f"{row['image_name']}.jpg", quality=90)
        df.to_csv(root / f"{split}.csv", index=False)
    test[["image_name"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture
def demo_subset(tmp_path) -> Path:
    """40 training and 10 test images of the shipped demo set, in competition layout."""
    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"})
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"})
    train = pd.concat([train[train.target == 1].head(14), train[train.target == 0].head(26)]).sort_values(
        "image_name")
    test = test.head(10)
    root = tmp_path / "data"
    for split, df in (("train", train), ("test", test)):
        (root / "jpeg" / split).mkdir(parents=True)
        for name in df.image_name:
            shutil.copyfile(DEMO / "jpeg" / split / f"{name}.jpg", root / "jpeg" / split / f"{name}.jpg")
        df.to_csv(root / f"{split}.csv", index=False)
    test[["image_name"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    return root


def synthetic_meta(n_patients: int, seed: int = 0, max_images: int = 6, pos_rate: float = 0.1) -> pd.DataFrame:
    """Competition-like train.csv rows: several images per patient, a few malignant."""
    rng = np.random.default_rng(seed)
    rows = []
    sites = ["torso", "lower extremity", "upper extremity", "head/neck", None]
    for p in range(n_patients):
        sex = rng.choice(["male", "female"])
        age = float(rng.integers(4, 18) * 5)
        for _ in range(int(rng.integers(1, max_images + 1))):
            rows.append({"image_name": f"ISIC_{len(rows):07d}", "patient_id": f"IP_{p:05d}", "sex": sex,
                         "age_approx": age, "anatom_site_general_challenge": rng.choice(sites),
                         "diagnosis": "unknown", "target": int(rng.random() < pos_rate)})
    return pd.DataFrame(rows)


def solid_image(color, size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, tuple(int(c) for c in color))
