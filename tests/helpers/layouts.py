"""Builders of competition-layout folders shared by the tests: from the shipped demo images or generated ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from helpers.paths import DEMO


def make_layout(root: Path, train: pd.DataFrame, test: pd.DataFrame, image_for) -> Path:
    """Write train.csv, test.csv, sample_submission.csv and a JPEG per row (image_for(split, row) -> PIL)."""
    for split, df in (("train", train), ("test", test)):
        (root / "jpeg" / split).mkdir(parents=True, exist_ok=True)
        for _, row in df.iterrows():
            image_for(split, row).save(root / "jpeg" / split / f"{row['image_name']}.jpg", quality=90)
        df.to_csv(root / f"{split}.csv", index=False)
    test[["image_name"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    return root


def copy_demo_layout(root: Path, train: pd.DataFrame, test: pd.DataFrame) -> Path:
    """train.csv, test.csv and the JPEGs of the chosen rows of the shipped demo set, in competition layout."""
    for split, df in (("train", train), ("test", test)):
        (root / "jpeg" / split).mkdir(parents=True)
        for name in df.image_name:
            shutil.copyfile(DEMO / "jpeg" / split / f"{name}.jpg", root / "jpeg" / split / f"{name}.jpg")
        df.to_csv(root / f"{split}.csv", index=False)
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


def competition_like_train(seed: int = 0, n_rows: int = 33126, n_patients: int = 2056, n_pos: int = 584,
                           n_pos_patients: int = 428) -> pd.DataFrame:
    """Synthetic train.csv rows shaped like the real competition's: 33,126 images of 2,056 patients,
    heavy-tailed images per patient (median about 12, max 115), 584 malignant images concentrated in 428
    patients; sex, age and site drawn from a generated competition-shaped table (a few missing)."""
    rng = np.random.default_rng(seed)
    counts = np.clip(np.round(rng.lognormal(np.log(12), 0.77, n_patients)), 2, 115).astype(int)
    while counts.sum() != n_rows:  # nudge random patients until the total matches exactly
        i = rng.integers(n_patients)
        step = 1 if counts.sum() < n_rows else -1
        if 2 <= counts[i] + step <= 115:
            counts[i] += step
    pos = np.zeros(n_patients, dtype=int)
    chosen = rng.choice(n_patients, n_pos_patients, replace=False, p=counts / counts.sum())
    pos[chosen] = 1
    while pos.sum() < n_pos:  # extra melanomas go to already-positive patients, a few get several
        i = chosen[min(int(rng.geometric(0.02)) - 1, n_pos_patients - 1)]
        if pos[i] < counts[i]:
            pos[i] += 1
    from melanoma.data.fake_metadata import (
        metadata_template,  # here: melanoma.tabular imports scikit-learn
    )

    shaped = metadata_template(2000, 120, seed=seed)  # generated: nothing read outside the repository
    sexes = shaped["sex"].to_numpy(dtype=object)
    ages = shaped["age_approx"].to_numpy()
    sites = shaped["anatom_site_general_challenge"].to_numpy(dtype=object)
    rows = {"image_name": [], "patient_id": [], "sex": [], "age_approx": [], "anatom_site_general_challenge": [],
            "diagnosis": [], "target": []}
    for p in range(n_patients):
        targets = np.zeros(counts[p], dtype=int)
        targets[rng.choice(counts[p], pos[p], replace=False)] = 1
        sex, age = rng.choice(sexes), float(rng.choice(ages))
        for t in targets:
            rows["image_name"].append(f"ISIC_{len(rows['image_name']):07d}")
            rows["patient_id"].append(f"IP_{p:07d}")
            rows["sex"].append(sex)
            rows["age_approx"].append(age)
            rows["anatom_site_general_challenge"].append(rng.choice(sites))
            rows["diagnosis"].append("melanoma" if t else "unknown")
            rows["target"].append(int(t))
    df = pd.DataFrame(rows)
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def textured_image(seed: int, size=(48, 36)) -> Image.Image:
    """A smooth random image (a coarse random grid, upsampled): distinct images get distinct dHashes."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
    return Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)


def textured_layout(root: Path, n_train: int = 40, n_test: int = 8, n_patients: int = 12, seed: int = 0,
                    size=(48, 36)) -> Path:
    """A competition layout of distinct textured images: n_train images of n_patients, 25% malignant."""
    rng = np.random.default_rng(seed)
    train = pd.DataFrame({"image_name": [f"ISIC_{i:07d}" for i in range(n_train)],
                          "patient_id": [f"IP_{i % n_patients:04d}" for i in range(n_train)],
                          "sex": rng.choice(["male", "female"], n_train), "age_approx": 50.0,
                          "anatom_site_general_challenge": "torso", "diagnosis": "unknown",
                          "target": [int(i % 4 == 0) for i in range(n_train)]})
    test = pd.DataFrame({"image_name": [f"ISIC_9{i:06d}" for i in range(n_test)],
                         "patient_id": [f"IPT_{i:04d}" for i in range(n_test)],
                         "sex": "female", "age_approx": 45.0, "anatom_site_general_challenge": "torso"})
    seeds = {n: seed * 100000 + i for i, n in enumerate(list(train.image_name) + list(test.image_name))}
    return make_layout(root, train, test, lambda split, row: textured_image(seeds[row["image_name"]], size))


N_TEST = 10982  # rows of the competition's test.csv and sample_submission.csv


def competition_test_files(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(sample_submission.csv, test.csv) shaped like the competition's: 10,982 unique ISIC_NNNNNNN ids in
    sorted order, target 0 in the sample (the real files stay outside the repository)."""
    rng = np.random.default_rng(seed)
    ids = [f"ISIC_{n:07d}" for n in np.sort(rng.choice(10_000_000, N_TEST, replace=False))]
    root.mkdir(parents=True, exist_ok=True)
    sample, test = root / "sample_submission.csv", root / "test.csv"
    pd.DataFrame({"image_name": ids, "target": 0}).to_csv(sample, index=False)
    pd.DataFrame({"image_name": ids, "patient_id": [f"IP_{i // 16:07d}" for i in range(N_TEST)]}).to_csv(
        test, index=False)
    return sample, test


def small_demo_layout(root: Path) -> Path:
    """24 training images (8 malignant) and 10 test images of the shipped demo set, past the striped
    non-dermoscopy thumbnails (ISIC_0000000-0000149), which prepare refuses."""
    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"}).query("image_name >= 'ISIC_0000150'")
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"}).query("image_name >= 'ISIC_0000150'")
    test = test.head(10)
    train = pd.concat([train[train.target == 1].head(8), train[train.target == 0].head(16)]).sort_values("image_name")
    copy_demo_layout(root, train, test)
    return root
