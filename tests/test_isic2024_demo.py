"""scripts/make_isic2024_demo.py: a small synthetic ISIC 2024 set, read back through the tile reader and the
feature builder."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma.data.hdf5 import TileFile
from melanoma.errors import InputError
from melanoma.tabular.isic2024 import TRAIN_ONLY, ISIC2024Features

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "tests" / "data" / "isic2024"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_isic2024_demo", REPO / "scripts" / "make_isic2024_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_isic2024_demo", module)
    spec.loader.exec_module(module)
    return module


demo = _load_script()
SMALL = dict(patients=6, tiles_per_patient=8, test_patients=2, malignant_share=0.1)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("isic2024") / "demo"
    demo.make_demo(out, seed=3, **SMALL)
    return out


def _header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].replace('"', "").split(",")


def test_layout_and_columns_are_the_real_ones(made):
    assert sorted(p.name for p in made.iterdir()) == sorted(demo.OUTPUT_NAMES)
    real_train = [c for c in _header(REAL / "train-metadata-first100.csv") if c]  # less the R row-number column
    assert _header(made / "train-metadata.csv") == real_train and len(real_train) == 55
    assert _header(made / "test-metadata.csv") == _header(REAL / "test-metadata.csv")
    assert _header(made / "sample_submission.csv") == _header(REAL / "sample_submission.csv")
    train = pd.read_csv(made / "train-metadata.csv")
    test = pd.read_csv(made / "test-metadata.csv")
    sub = pd.read_csv(made / "sample_submission.csv")
    assert sub["isic_id"].tolist() == test["isic_id"].tolist() and (sub["target"] == 0.3).all()
    assert train["isic_id"].is_unique and not set(train["isic_id"]) & set(test["isic_id"])
    assert train["patient_id"].nunique() == 6 and not set(train["patient_id"]) & set(test["patient_id"])
    assert set(train["target"]) == {0, 1} and train["isic_id"].str.fullmatch(r"ISIC_\d{7}").all()
    assert (train["image_type"] == "TBP tile: close-up").all()
    pos = train["target"] == 1
    assert train.loc[pos, "lesion_id"].notna().all() and (train.loc[pos, "iddx_1"] == "Malignant").all()
    assert (train.loc[~pos, "iddx_1"] == "Benign").all()
    # the real rows' identities hold in the synthetic ones
    np.testing.assert_allclose(train["tbp_lv_L"], train["tbp_lv_Lext"] + train["tbp_lv_deltaL"], rtol=1e-9)
    np.testing.assert_allclose(train["tbp_lv_C"], np.hypot(train["tbp_lv_A"], train["tbp_lv_B"]), rtol=1e-9)


def test_tiles_read_back_through_the_reader(made):
    for split in ("train", "test"):
        meta = pd.read_csv(made / f"{split}-metadata.csv")
        with TileFile(made / f"{split}-image.hdf5") as tiles:
            assert sorted(tiles.ids()) == sorted(meta["isic_id"])
            for chunk in tiles.chunks(size=16):
                for _, data in chunk:
                    with Image.open(io.BytesIO(data)) as im:
                        im.load()
                        assert im.format == "JPEG" and im.size[0] == im.size[1] and 61 <= im.size[0] <= 239


def test_features_build_from_the_demo(made):
    train = pd.read_csv(made / "train-metadata.csv")
    test = pd.read_csv(made / "test-metadata.csv")
    f = ISIC2024Features().fit(train)
    tr, te = f.transform(train), f.transform(test)
    assert list(tr.columns) == list(te.columns) and not set(tr.columns) & set(TRAIN_ONLY)
    assert tr["count_per_patient"].sum() == (train.groupby("patient_id").size() ** 2).sum()
    # the "ugly duckling": malignant lesions are larger than their own patient's others
    pos = train["target"] == 1
    assert tr.loc[pos, "tbp_lv_areaMM2_prank"].mean() > tr.loc[~pos, "tbp_lv_areaMM2_prank"].mean() + 0.15


def test_same_seed_same_data(made, tmp_path):
    again = tmp_path / "again"
    demo.make_demo(again, seed=3, **SMALL)
    for name in ("train-metadata.csv", "test-metadata.csv", "sample_submission.csv", "test_labels.csv"):
        assert (again / name).read_bytes() == (made / name).read_bytes()
    with TileFile(made / "train-image.hdf5") as a, TileFile(again / "train-image.hdf5") as b:
        assert [t for c in a.chunks() for t in c] == [t for c in b.chunks() for t in c]
    other = tmp_path / "other"
    demo.make_demo(other, seed=4, **SMALL)
    assert (other / "train-metadata.csv").read_bytes() != (made / "train-metadata.csv").read_bytes()


def test_refuses_a_folder_with_files_and_fills_an_empty_one(tmp_path, capsys):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not an empty folder"):
        demo.make_demo(full, **SMALL)
    assert demo.main(["--out", str(full), "--patients", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("melanoma: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and (full / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["full"]  # no temporary folder left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert demo.main(["--out", str(empty), "--patients", "2", "--tiles-per-patient", "4",
                      "--test-patients", "1"]) == 0
    assert (empty / "train-image.hdf5").is_file()
