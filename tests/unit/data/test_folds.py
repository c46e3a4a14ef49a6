import json

import numpy as np
import pandas as pd
import pytest

from helpers.layouts import competition_like_train, synthetic_meta
from melanoma.config import Config, apply_overrides
from melanoma.data.folds import assign_folds, make_folds, read_folds, run_folds
from melanoma.data.schema import read_train
from melanoma.errors import InputError


def check_folds(train: pd.DataFrame, folds: pd.DataFrame, n_folds: int, tol: float) -> None:
    assert list(folds.columns) == ["image_name", "patient_id", "target", "fold"]
    assert sorted(folds.image_name) == sorted(train.image_name)
    assert set(folds.fold) == set(range(n_folds))
    # No patient in two folds.
    assert folds.groupby("patient_id").fold.nunique().max() == 1
    rates = folds.groupby("fold").target.mean()
    assert (rates - folds.target.mean()).abs().max() <= tol, rates


def test_folds_are_patient_disjoint_and_stratified():
    train = synthetic_meta(400, seed=1, pos_rate=0.08)
    folds = assign_folds(train, 5, seed=42)
    check_folds(train, folds, 5, tol=0.02)
    # Reproducible from the seed, different with another seed.
    assert assign_folds(train, 5, seed=42).equals(folds)
    assert not assign_folds(train, 5, seed=3).fold.equals(folds.fold)


def write_competition_rows(folder) -> None:
    """A competition-shaped train.csv (2,000 rows of 124 patients, 35 malignant, generated) with a few
    sexes, ages and sites missing, as the real file has."""
    train = competition_like_train(seed=1, n_rows=2000, n_patients=124, n_pos=35, n_pos_patients=26)
    for col, rows in (("sex", [3, 4]), ("age_approx", [5, 6, 7]), ("anatom_site_general_challenge", [8, 9])):
        train.loc[rows, col] = None
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)


def test_folds_on_competition_shaped_rows(tmp_path):
    write_competition_rows(tmp_path)
    folds = run_folds(Config(), tmp_path, tmp_path / "folds.csv")
    train = read_train(tmp_path)
    assert json.loads((tmp_path / "folds.run.json").read_text())["seed"] == 42
    assert (tmp_path / "folds.config.yaml").is_file()
    assert train[["sex", "age_approx", "anatom_site_general_challenge"]].isna().sum().min() >= 2
    check_folds(train, folds, 5, tol=0.03)
    assert read_folds(tmp_path / "folds.csv", train).equals(folds)


def test_missing_patient_id_is_an_error_unless_the_config_says_per_image(tmp_path):
    train = synthetic_meta(50, seed=2, pos_rate=0.3).drop(columns="patient_id")
    train.to_csv(tmp_path / "train.csv", index=False)
    cfg = apply_overrides(Config(), {"n_folds": 3, "seed": 0})
    with pytest.raises(InputError, match="missing column 'patient_id'.*data.patient_id: per_image"):
        run_folds(cfg, tmp_path, tmp_path / "folds.csv")
    assert not (tmp_path / "folds.csv").exists()
    cfg = apply_overrides(cfg, {"data.patient_id": "per_image"})
    folds = run_folds(cfg, tmp_path, tmp_path / "folds.csv")
    assert folds.patient_id.nunique() == len(folds)


def test_folds_file_must_match_train(tmp_path):
    train = synthetic_meta(30, seed=3, pos_rate=0.3)
    train.to_csv(tmp_path / "train.csv", index=False)
    folds = run_folds(apply_overrides(Config(), {"n_folds": 3, "seed": 0}), tmp_path, tmp_path / "folds.csv")
    folds.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match="training images have no fold"):
        read_folds(tmp_path / "short.csv", read_train(tmp_path))


def test_triple_stratified_folds_at_competition_scale():
    """Must hold: 33,126 rows / 2,056 patients / 584 malignant like the real train.csv: patient-disjoint,
    each fold's positive rate within 0.2 points of the overall 1.76%, the same median images per patient."""
    import time

    from melanoma.data.folds import fold_balance, fold_summary

    train = competition_like_train(seed=0)
    counts = train.groupby("patient_id").size()
    assert (len(train), len(counts), train.target.sum()) == (33126, 2056, 584)
    assert 10 <= counts.median() <= 14 and counts.max() == 115  # heavy-tailed like the real one
    for seed in (42, 7):
        start = time.perf_counter()
        folds = assign_folds(train, 5, seed)
        assert time.perf_counter() - start < 5
        check_folds(train, folds, 5, tol=0.002)
        summary = fold_summary(folds)
        assert summary.ipp_median.nunique() == 1, summary
        assert summary.patients.max() - summary.patients.min() <= 2
        assert fold_balance(summary)["positive_rate"] <= 0.002
        assert (summary.images - summary.images.mean()).abs().max() / summary.images.mean() < 0.03
    assert not assign_folds(train, 5, 42).fold.equals(folds.fold)


def test_groups_keep_linked_patients_together():
    train = synthetic_meta(60, seed=4, pos_rate=0.2)
    groups = train.patient_id.where(~train.patient_id.isin(["IP_00001", "IP_00002"]), "linked")
    folds = assign_folds(train, 3, seed=0, groups=groups.to_numpy())
    assert folds[folds.patient_id.isin(["IP_00001", "IP_00002"])].fold.nunique() == 1


def test_make_folds_is_the_one_dealer_and_duplicates_link_patients():
    """make_folds without duplicates deals patients; with duplicate pairs, linked patients share a fold."""
    train = synthetic_meta(80, seed=5, pos_rate=0.2)
    plain = make_folds(train, 4, 7)
    assert plain.equals(assign_folds(train, 4, 7))
    a = 0
    b = int(np.flatnonzero(plain.fold != plain.fold[a])[0])  # two images that plain dealing puts apart
    linked = make_folds(train, 4, 7, duplicates=[(a, b)])
    assert linked.fold[a] == linked.fold[b]
    assert linked.groupby("patient_id").fold.nunique().max() == 1


def test_folds_follow_the_public_tfrecord_files(tmp_path):
    """With the public TFRecords' train.csv (a `tfrecord` column), folds are its files in blocks of 3."""
    write_competition_rows(tmp_path / "data")
    train = read_train(tmp_path / "data")
    # One file per patient, as the public files are; two images are duplicates in no file (-1).
    patients = sorted(train.patient_id.unique())
    file_of = {p: i % 15 for i, p in enumerate(patients)}
    public = train[["image_name", "patient_id"]].assign(tfrecord=train.patient_id.map(file_of))
    public.loc[public.index[:2], "tfrecord"] = -1
    (tmp_path / "tfrec").mkdir()
    public.to_csv(tmp_path / "tfrec" / "train.csv", index=False)
    folds = run_folds(Config(), tmp_path / "data", tmp_path / "folds.csv", tmp_path / "tfrec")
    merged = folds.merge(public, on=["image_name", "patient_id"])
    in_file = merged[merged.tfrecord >= 0]
    assert (in_file.fold == in_file.tfrecord // 3).all()  # files 0-2 -> fold 0, as `train` reads them
    assert folds.groupby("patient_id").fold.nunique().max() == 1  # the -1 images joined their patient
    assert sorted(folds.image_name) == sorted(train.image_name)
    # our own shards (a manifest) or no companion csv: folds are computed as usual
    (tmp_path / "tfrec" / "manifest.json").write_text("{}")
    computed = run_folds(Config(), tmp_path / "data", tmp_path / "f2.csv", tmp_path / "tfrec")
    assert computed.equals(assign_folds(train, 5, 42))
