"""melanoma.tabular.isic2024 on the real ISIC 2024 metadata samples (tests/data/isic2024) and tiny tables."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from helpers.paths import DATA

from melanoma.errors import InputError
from melanoma.tabular.isic2024 import (CATEGORICAL, DERIVED, NOT_FEATURES, RAW_NUMERIC, TRAIN_ONLY,
                                       ISIC2024Features, _group_pct_rank, formula_inputs, isic2024_features)

DATA = DATA / "isic2024"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return pd.read_csv(DATA / "train-metadata-first100.csv")  # R-style row numbers in a first unnamed column


@pytest.fixture(scope="module")
def test_meta() -> pd.DataFrame:
    return pd.read_csv(DATA / "test-metadata.csv")


def test_train_only_and_id_columns_are_never_features(train, test_meta):
    assert set(TRAIN_ONLY) == set(train.columns) - set(test_meta.columns) - {"Unnamed: 0"}  # the real split
    f = ISIC2024Features().fit(train)
    names = list(f.get_feature_names_out())
    banned = set(TRAIN_ONLY) | set(NOT_FEATURES) | {"Unnamed: 0"}
    assert not [n for n in names if any(n == b or n.startswith(b + "_") for b in banned)]
    assert not [n for n in DERIVED if set(formula_inputs(n)) & banned]
    # Nothing is derived from them either: scramble every excluded column (renaming the patients consistently)
    # and the table does not move.
    rng = np.random.default_rng(0)
    scrambled = train.copy()
    for col in (banned - {"patient_id"}) & set(train.columns):  # image_name: the package's id, not in the file
        scrambled[col] = rng.permutation(scrambled[col].to_numpy())
    scrambled["patient_id"] = scrambled["patient_id"].map(lambda p: "P" + p[::-1])
    scrambled["target"] = rng.integers(0, 2, len(train))
    pd.testing.assert_frame_equal(f.transform(train), f.transform(scrambled))
    # ... and dropping them changes nothing but what they are (fit sees the same columns).
    kept = train.drop(columns=[c for c in banned if c != "patient_id"], errors="ignore")
    pd.testing.assert_frame_equal(ISIC2024Features().fit(kept).transform(kept), f.transform(train))


def test_features_come_from_the_test_metadata_alone(train, test_meta):
    from_train = ISIC2024Features().fit(train)
    from_test = ISIC2024Features().fit(test_meta)  # the 3 real test rows: no train-only column exists there
    assert list(from_test.get_feature_names_out()) == list(from_train.get_feature_names_out())
    assert from_test.numeric_columns_ == list(RAW_NUMERIC) and from_test.derived_ == list(DERIVED)
    a, b = from_train.transform(test_meta), from_test.transform(test_meta)
    numeric = [c for c in a.columns if c not in CATEGORICAL]
    pd.testing.assert_frame_equal(a[numeric], b[numeric])
    assert a.index.equals(test_meta.index) and len(a) == 3
    # complete rows give complete features, but for 0/0: ISIC_0015729's colour spread is 0 inside and out
    assert a[numeric].columns[a[numeric].isna().any()].tolist() == ["color_uniformity", "color_uniformity_pz",
                                                                   "color_uniformity_prank"]
    assert a["color_uniformity"].isna().tolist() == [False, True, False]
    assert a["count_per_patient"].tolist() == [1, 1, 1]  # three patients, one tile each


def test_shape_and_types_on_the_real_rows(train, test_meta):
    tr, te = isic2024_features(train, test_meta)
    assert list(tr.columns) == list(te.columns) and len(tr) == 100
    assert len(tr.columns) == len(set(tr.columns)) > 200
    for c in CATEGORICAL:
        assert isinstance(tr[c].dtype, pd.CategoricalDtype)
    assert (tr.drop(columns=list(CATEGORICAL)).dtypes == np.float32).all()
    assert not np.isinf(tr.drop(columns=list(CATEGORICAL)).to_numpy()).any()
    # categories come from fit: the test set's unseen hospital becomes missing, the seen ones keep their level
    seen = set(train["attribution"])
    assert te["attribution"].isna().tolist() == [a not in seen for a in test_meta["attribution"]]
    assert list(tr["sex"].cat.categories) == ["female", "male"]


def test_derived_formulas_on_a_real_row(test_meta):
    f = ISIC2024Features().fit(test_meta)
    out, row = f.transform(test_meta).iloc[0], test_meta.iloc[0]
    assert out["hue_contrast"] == pytest.approx(abs(row.tbp_lv_H - row.tbp_lv_Hext), rel=1e-6)
    assert out["lesion_size_ratio"] == pytest.approx(row.tbp_lv_minorAxisMM / row.clin_size_long_diam_mm, rel=1e-6)
    assert out["position_distance_3d"] == pytest.approx(np.sqrt(row.tbp_lv_x**2 + row.tbp_lv_y**2
                                                                 + row.tbp_lv_z**2), rel=1e-6)
    assert out["border_length_ratio"] == pytest.approx(
        row.tbp_lv_perimeterMM / (2 * np.pi * np.sqrt(row.tbp_lv_areaMM2 / np.pi)), rel=1e-6)


def _tiny() -> pd.DataFrame:
    """Three patients: A with four lesions on two sites, B with one, C with two identical ones; no patient id
    on the last row (a patient of its own)."""
    return pd.DataFrame({
        "isic_id": [f"ISIC_{i}" for i in range(8)],
        "patient_id": ["A", "A", "A", "A", "B", "C", "C", None],
        "anatom_site_general": ["torso", "torso", "head/neck", None, "torso", "torso", "torso", "torso"],
        "sex": ["male"] * 4 + ["female"] * 3 + [""],
        "tbp_lv_areaMM2": [1.0, 2.0, 3.0, 10.0, 5.0, 4.0, 4.0, 7.0],
        "tbp_lv_perimeterMM": [4.0, 5.0, 6.0, 12.0, 8.0, 7.0, 7.0, np.nan],
    })


def test_within_patient_features_and_counts():
    df = _tiny()
    f = ISIC2024Features().fit(df)
    out = f.transform(df)
    area = np.array([1.0, 2.0, 3.0, 10.0])
    z = (area - area.mean()) / area.std(ddof=1)
    np.testing.assert_allclose(out["tbp_lv_areaMM2_pz"].iloc[:4], z, rtol=1e-6)
    np.testing.assert_allclose(out["tbp_lv_areaMM2_prank"].iloc[:4], [0.25, 0.5, 0.75, 1.0])
    assert out["tbp_lv_areaMM2_pz"].iloc[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # alone, or all alike
    assert out["tbp_lv_areaMM2_prank"].iloc[5:7].tolist() == [0.75, 0.75]  # ties share the mean rank
    assert out["count_per_patient"].tolist() == [4, 4, 4, 4, 1, 2, 2, 1]
    assert out["count_per_patient_site"].tolist() == [2, 2, 1, 1, 1, 2, 2, 1]
    assert np.isnan(out["tbp_lv_perimeterMM_pz"].iloc[7]) and np.isnan(out["area_to_perimeter_ratio"].iloc[7])
    assert out["sex"].isna().tolist() == [False] * 7 + [True]  # an empty cell is missing, not a level
    # patients are not mixed: B's lesion does not move when A gets another one
    more = pd.concat([df, df.iloc[[0]].assign(isic_id="ISIC_9", tbp_lv_areaMM2=100.0)], ignore_index=True)
    assert f.transform(more)["tbp_lv_areaMM2_pz"].iloc[4:8].tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("patients", [1, 40, 70_000])  # 70,000: more groups than 16-bit sort keys hold
def test_fast_rank_equals_pandas_groupby_rank(patients):
    rng = np.random.default_rng(patients)
    codes = rng.integers(0, patients, 3000)
    values = np.round(rng.normal(size=(3000, 3)), 1)  # many ties
    values[rng.random(values.shape) < 0.1] = np.nan
    values[codes == codes[0], 2] = np.nan  # a patient with no value at all in one column
    expected = pd.DataFrame(values).groupby(codes).rank(pct=True).to_numpy()
    np.testing.assert_array_equal(_group_pct_rank(values, codes), expected)


def test_fit_returns_self_and_learned_attributes_end_in_underscore():
    df = _tiny()
    f = ISIC2024Features()
    assert f.fit(df) is f
    learned = [a for a in vars(f) if a != "patient_context"]
    assert learned and all(a.endswith("_") for a in learned)
    assert f.derived_ == ["lesion_shape_index", "perimeter_to_area_ratio", "area_to_perimeter_ratio",
                          "log_lesion_area", "border_length_ratio"]  # those whose inputs are all there
    plain = ISIC2024Features(patient_context=False).fit(df)
    assert not [c for c in plain.get_feature_names_out() if c.endswith(("_pz", "_prank")) or "count" in c]
    with pytest.raises(ValueError, match="call fit"):
        ISIC2024Features().transform(df)


def test_bad_values_and_missing_columns_are_one_line():
    df = _tiny()
    f = ISIC2024Features().fit(df)
    with pytest.raises(InputError, match="lacks column.s. tbp_lv_perimeterMM that the features were fitted"):
        f.transform(df.drop(columns=["tbp_lv_perimeterMM"]))
    bad = df.astype({"tbp_lv_areaMM2": "object"})
    bad.loc[3, "tbp_lv_areaMM2"] = "big"
    with pytest.raises(InputError, match=r"tbp_lv_areaMM2 must be a number, got 'big' \(row 3, 1 such row"):
        f.transform(bad)
    blank = df.astype({"tbp_lv_areaMM2": "object"})
    blank.loc[3, "tbp_lv_areaMM2"] = " "
    assert np.isnan(f.transform(blank)["tbp_lv_areaMM2"].iloc[3])  # a blank cell is a missing value
