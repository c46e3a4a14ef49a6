"""Leakage report: dHash near-duplicates (multi-index search), patients in both sets, duplicates in folds."""

import json

import numpy as np
import pandas as pd
from PIL import Image

from helpers.layouts import textured_image
from melanoma.data.dedup import find_duplicates, near_duplicate_pairs
from melanoma.cli import main
from melanoma.config import Config, apply_overrides
from melanoma.data.images import dhash
from melanoma.data.prepare import prepare


def test_band_search_finds_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    for k in range(0, 300, 3):  # plant near-duplicates: flip up to 4 random bits
        flips = rng.choice(64, rng.integers(0, 5), replace=False)
        h[k + 1] = h[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    for t in (0, 2, 4):
        got = {(i, j) for i, j, _ in near_duplicate_pairs(h, t)}
        small = h[:400]  # brute force on the planted region (the rest are random: no pairs within 4 bits)
        want = {(i, j) for i in range(400) for j in range(i + 1, 400) if bin(int(small[i] ^ small[j])).count("1") <= t}
        assert {p for p in got if p[1] < 400} == want and len(want) > 10


def test_dhash_survives_resize_and_recompression(tmp_path):
    img = textured_image(5, (400, 300))
    img.resize((256, 192), Image.Resampling.LANCZOS).save(tmp_path / "small.jpg", quality=70)
    other = dhash(textured_image(6, (400, 300)))
    again = dhash(Image.open(tmp_path / "small.jpg").convert("RGB"))
    assert bin(dhash(img) ^ again).count("1") <= 2 and bin(dhash(img) ^ other).count("1") > 10
    assert dhash(Image.new("RGB", (50, 50), (9, 9, 9))) is None  # flat: no hash, never a "duplicate"


def make_leaky(data):
    """Copy train image 1 (resized) as train image 2's file, and train image 5 as test image 0; share a patient."""
    train, test = pd.read_csv(data / "train.csv"), pd.read_csv(data / "test.csv")
    src = Image.open(data / "jpeg" / "train" / f"{train.image_name[1]}.jpg")
    src.resize((40, 30)).save(data / "jpeg" / "train" / f"{train.image_name[2]}.jpg", quality=80)
    Image.open(data / "jpeg" / "train" / f"{train.image_name[5]}.jpg").save(
        data / "jpeg" / "test" / f"{test.image_name[0]}.jpg", quality=85)
    test.loc[3, "patient_id"] = train.patient_id[7]
    test.to_csv(data / "test.csv", index=False)
    return train, test


def test_check_command_reports_leaks(textured_data, tmp_path, capsys):
    train, test = make_leaky(textured_data)
    pd.DataFrame({"image_name_1": [train.image_name[10]], "image_name_2": [train.image_name[11]]}).to_csv(
        tmp_path / "dups.csv", index=False)
    code = main(["check", "--data", str(textured_data), "--duplicates", str(tmp_path / "dups.csv"), "--out",
                 str(tmp_path / "report.json"), "--workers", "2"])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["patients_in_train_and_test"]["count"] == 1
    assert report["duplicates"]["within_train"] == 2 and report["duplicates"]["train_test"] == 1
    dups = pd.read_csv(tmp_path / "report.duplicates.csv")
    assert {(a, b) for a, b in zip(dups.image_name_1, dups.image_name_2)} == {
        (train.image_name[1], train.image_name[2]), (train.image_name[10], train.image_name[11]),
        (train.image_name[5], test.image_name[0])}
    assert "patients in both train and test: 1" in capsys.readouterr().out


def test_prepare_keeps_duplicates_in_one_fold_or_drops_them(textured_data, tmp_path):
    train, test = make_leaky(textured_data)
    a, b = train.image_name[1], train.image_name[2]
    assert train.patient_id[1] != train.patient_id[2]
    cfg = apply_overrides(Config(), {"prepare.size": 16, "n_folds": 3, "prepare.workers": 1})
    m = prepare(cfg, textured_data, tmp_path / "keep")
    folds = pd.read_csv(tmp_path / "keep" / "folds.csv").set_index("image_name")
    assert folds.fold[a] == folds.fold[b]
    # ... and so are their whole patients (union of patient and duplicate links)
    pa, pb = train.patient_id[1], train.patient_id[2]
    assert folds[folds.patient_id.isin([pa, pb])].fold.nunique() == 1
    assert m["leakage"]["duplicates"]["within_train"] == 1 and m["leakage"]["duplicates"]["train_test"] == 1
    assert len(pd.read_csv(tmp_path / "keep" / "duplicates.csv")) == 2

    m = prepare(apply_overrides(cfg, {"prepare.drop_duplicates": True}), textured_data, tmp_path / "drop")
    # image 1's target is 0 (i % 4), image 2's is 0: the first is kept
    assert m["dropped_duplicates"] == [{"image_name": b, "kept": a}]
    assert m["counts"]["train"] == len(train) - 1


def test_drop_prefers_the_malignant_copy():
    images = pd.DataFrame({"image_name": ["x", "y", "z"], "split": "train", "dhash": [7, 7, 2**40]})
    dups = find_duplicates(images, 2)
    assert list(zip(dups.image_name_1, dups.image_name_2)) == [("x", "y")]
    from melanoma.data.dedup import drop_duplicates
    items = pd.DataFrame({"target": [0, 1, 0]})
    assert drop_duplicates(np.array([0, 1, 2]), items, [(0, 1)]) == {0: 1}
