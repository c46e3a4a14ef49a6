"""Tests for scripts/make_demo_data.py on a tiny source built here, plus a check of the shipped data/demo."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.paths import ROOT
from PIL import Image

from melanoma.errors import InputError

from helpers.paths import ROOT as REPO
SCRIPT = REPO / "scripts" / "make_demo_data.py"
SHIPPED = REPO / "data" / "demo"

TRAIN_COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                 "diagnosis", "benign_malignant", "target"]
TEST_COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]
LABEL_HEADER = ["image_name", "benign_malignant", "target", "diagnosis", "age_approx", "sex", "melanocytic",
                "image_type", "orig_pixelsX", "orig_pixelsY", "thumb_w", "thumb_h"]


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_demo_data", module)
    spec.loader.exec_module(module)
    return module


mdd = _load_script()


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype="string", keep_default_na=False)


def _make_source(root: Path, n: int = 20, n_pos: int = 8) -> Path:
    """A tiny source folder in the shipped format: images/*.jpg (+ .json), labels.csv, licence files."""
    src = root / "src"
    (src / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        name = f"ISIC_{i:07d}"
        pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / "images" / f"{name}.jpg", quality=90)
        (src / "images" / f"{name}.json").write_text('{"name": "%s"}' % name)
        pos = i < n_pos  # the first n_pos images are malignant
        rows.append([name, "malignant" if pos else "benign", str(int(pos)), "melanoma" if pos else "nevus",
                     "" if i % 5 == 0 else str(20 + 5 * (i % 10)), ["female", "male", ""][i % 3], "True",
                     "dermoscopic", "1022", "767", "8", "8"])
    _write_labels(src, rows)
    (src / "LICENSE.txt").write_text("CC0 1.0 Universal\n")
    (src / "ATTRIBUTION.txt").write_text("UDA-1 by Anonymous\n")
    (src / "README.md").write_text("# MachineLearning\n")
    return src


def _write_labels(src: Path, rows: list[list[str]], header: list[str] = LABEL_HEADER) -> None:
    with open(src / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _labels_rows(src: Path) -> list[list[str]]:
    with open(src / "labels.csv", newline="") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    src = _make_source(root)
    out = root / "out"
    counts = mdd.make_demo(src, out, test_size=0.25, seed=42)
    return src, out, counts


def test_layout_and_columns(built):
    src, out, counts = built
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train.csv", "test.csv", "sample_submission.csv", "test_labels.csv", "jpeg", "LICENSE.txt",
         "ATTRIBUTION.txt", "README.md"])
    assert sorted(p.name for p in (out / "jpeg").iterdir()) == ["test", "train"]
    train, test = _read(out / "train.csv"), _read(out / "test.csv")
    assert list(train.columns) == TRAIN_COLUMNS
    assert list(test.columns) == TEST_COLUMNS
    assert "target" not in test.columns and "diagnosis" not in test.columns
    assert list(_read(out / "sample_submission.csv").columns) == ["image_name", "target"]
    assert list(_read(out / "test_labels.csv").columns) == ["image_name", "target"]
    for df in (train, test):
        assert (df["patient_id"] == "").all() and (df["anatom_site_general_challenge"] == "").all()
        assert list(df["image_name"]) == sorted(df["image_name"])
    assert counts.pop("dropped") >= 0
    assert counts == {"train": len(train), "test": len(test), "train_pos": int(train["target"].astype(int).sum()),
                      "test_pos": int(_read(out / "test_labels.csv")["target"].astype(int).sum())}
    readme = (out / "README.md").read_text()
    assert "CC0" in readme and "make_demo_data.py" in readme and "--seed 42" in readme
    # no leftover temporary folders beside the output
    assert sorted(p.name for p in out.parent.iterdir()) == ["out", "src"]


def test_split_disjoint_complete_and_stratified(built):
    src, out, _ = built
    labels = _read(src / "labels.csv")
    train, test = _read(out / "train.csv"), _read(out / "test.csv")
    tr, te = set(train["image_name"]), set(test["image_name"])
    assert not tr & te
    assert tr | te == set(labels["image_name"])
    assert len(test) == 5  # 25% of 20
    truth = labels.set_index("image_name")["target"].astype(int)
    rate_tr = truth[list(tr)].mean()
    rate_te = truth[list(te)].mean()
    assert truth[list(te)].sum() > 0 and truth[list(tr)].sum() > 0
    assert abs(rate_tr - rate_te) <= 0.15


def test_values_copied_from_labels(built):
    src, out, _ = built
    labels = _read(src / "labels.csv").set_index("image_name")
    train = _read(out / "train.csv").set_index("image_name")
    for col in ("sex", "diagnosis", "benign_malignant", "target"):
        assert (train[col] == labels.loc[train.index, col]).all(), col
    age = pd.to_numeric(train["age_approx"].replace("", pd.NA)).astype("float64")
    src_age = pd.to_numeric(labels.loc[train.index, "age_approx"].replace("", pd.NA)).astype("float64")
    assert age.isna().equals(src_age.isna()) and np.allclose(age.dropna(), src_age.dropna())
    assert (train["age_approx"] == "").any() and (train["sex"] == "").any()  # empties stay empty


def test_test_files(built):
    src, out, _ = built
    test = _read(out / "test.csv")
    sub = _read(out / "sample_submission.csv")
    assert list(sub["image_name"]) == list(test["image_name"])
    assert (sub["target"] == "0").all()
    test_labels = _read(out / "test_labels.csv")
    assert list(test_labels["image_name"]) == list(test["image_name"])
    truth = _read(src / "labels.csv").set_index("image_name")["target"]
    assert list(test_labels["target"]) == list(truth[test_labels["image_name"]])


def test_jpegs_and_licences_copied(built):
    src, out, _ = built
    for split in ("train", "test"):
        names = _read(out / f"{split}.csv")["image_name"]
        files = sorted(p.name for p in (out / "jpeg" / split).iterdir())
        assert files == sorted(f"{n}.jpg" for n in names)
        for n in names:
            assert (out / "jpeg" / split / f"{n}.jpg").read_bytes() == (src / "images" / f"{n}.jpg").read_bytes()
    assert not list(out.rglob("*.json"))
    for name in ("LICENSE.txt", "ATTRIBUTION.txt"):
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_rerun_replaces_output(built, tmp_path):
    src, _, _ = built
    out = tmp_path / "demo"
    mdd.make_demo(src, out, test_size=0.25, seed=1)
    (out / "test_labels.csv").write_text("stale\n")
    mdd.make_demo(src, out, test_size=0.25, seed=1)
    assert _read(out / "test_labels.csv").columns.tolist() == ["image_name", "target"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


@pytest.mark.parametrize("case", ["duplicate", "missing_jpeg", "missing_column"])
def test_bad_input_raises_and_leaves_nothing(tmp_path, case):
    src = _make_source(tmp_path, n=10, n_pos=4)
    rows = _labels_rows(src)
    if case == "duplicate":
        rows[6][0] = rows[2][0]  # data row 7 -> file line 8, first seen on line 4
        _write_labels(src, rows)
        expect = ["labels.csv, line 8", rows[2][0], "line 4"]
    elif case == "missing_jpeg":
        (src / "images" / f"{rows[3][0]}.jpg").unlink()  # data row 4 -> line 5
        expect = ["labels.csv, line 5", f"{rows[3][0]}.jpg"]
    else:
        _write_labels(src, [r[1:] for r in rows], header=LABEL_HEADER[1:])
        expect = ["labels.csv, line 1", "image_name"]
    out = tmp_path / "out"
    with pytest.raises(InputError) as exc:
        mdd.make_demo(src, out)
    for text in expect:
        assert text in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_cli_reports_error_in_one_line(tmp_path, capsys):
    src = _make_source(tmp_path, n=10, n_pos=4)
    (src / "images" / "ISIC_0000000.jpg").unlink()
    assert mdd.main(["--src", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "labels.csv, line 2" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (SHIPPED / "train.csv").is_file(), reason="data/demo not generated")
def test_shipped_demo_is_consistent():
    train, test = _read(SHIPPED / "train.csv"), _read(SHIPPED / "test.csv")
    assert list(train.columns) == TRAIN_COLUMNS and list(test.columns) == TEST_COLUMNS
    assert not set(train["image_name"]) & set(test["image_name"])
    for split, df in (("train", train), ("test", test)):
        for n in df["image_name"]:
            assert (SHIPPED / "jpeg" / split / f"{n}.jpg").is_file(), n
    test_labels = _read(SHIPPED / "test_labels.csv")
    assert list(test_labels["image_name"]) == list(test["image_name"])
    assert list(_read(SHIPPED / "sample_submission.csv")["image_name"]) == list(test["image_name"])
    assert set(train["target"]) == {"0", "1"} and set(test_labels["target"]) == {"0", "1"}
    for name in ("LICENSE.txt", "ATTRIBUTION.txt", "README.md"):
        assert (SHIPPED / name).is_file()
    assert not list(SHIPPED.rglob("*.json"))


def test_shipped_demo_has_no_degenerate_image():
    from melanoma.data.images import degenerate, view_of

    demo = ROOT / "data" / "demo" / "jpeg"
    paths = sorted(demo.rglob("*.jpg"))
    assert len(paths) == 400
    assert not [p.name for p in paths if degenerate(view_of(p))]
