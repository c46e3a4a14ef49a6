"""augment-preview: grid geometry, originals exactly as decoded, augmentation visible (and absent when off)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from helpers.paths import DEMO
from helpers.layouts import copy_demo_layout
from melanoma.cli import main
from melanoma.config import AugmentConfig, Config, apply_overrides
from melanoma.errors import InputError
from melanoma.data.prepare import prepare
from melanoma.image.preview import GridLayout, augment_preview, label_font, label_height, read_originals

SIZE = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Our prepare output for 12 real demo images (10 train, 2 test) at 32 px, in 2 folds."""
    root = tmp_path_factory.mktemp("preview")
    data = root / "data"
    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"})
    train = pd.concat([train[train.target == 1].head(4), train[train.target == 0].head(6)])
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"}).head(2)
    copy_demo_layout(data, train, test)
    cfg = apply_overrides(Config(), {"n_folds": 2, "prepare.size": SIZE})
    prepare(cfg, data, root / "tf")
    return root / "tf"


def decoded_records(tfrec_dir) -> dict[str, np.ndarray]:
    """Every training image decoded straight from the records, by name: the reference for the first column."""
    out = {}
    for path in sorted(tfrec_dir.glob("train*.tfrec")):
        for raw in tf.data.TFRecordDataset(str(path)):
            ex = tf.train.Example.FromString(raw.numpy()).features.feature
            name = ex["image_name"].bytes_list.value[0].decode()
            out[name] = tf.io.decode_jpeg(ex["image"].bytes_list.value[0], channels=3).numpy()
    return out


def no_augmentation() -> AugmentConfig:
    """Every augmentation off, whatever fields AugmentConfig grows: flags False, strengths 0."""
    values = {}
    for f in dataclasses.fields(AugmentConfig):
        default = getattr(AugmentConfig(), f.name)
        if isinstance(default, bool):
            values[f.name] = False
        elif isinstance(default, (int, float)):
            values[f.name] = type(default)(0)
    return AugmentConfig(**values)


def cells(png, rows, cols):
    img = Image.open(png)
    layout = GridLayout(rows, cols, SIZE, label=label_height(label_font()))
    assert img.size == (layout.width, layout.height)
    arr = np.asarray(img.convert("RGB"))
    return [[crop(arr, layout.cell_box(r, c)) for c in range(cols)] for r in range(rows)]


def crop(arr, box):
    left, top, right, bottom = box
    return arr[top:bottom, left:right]


def test_grid_holds_originals_and_augmented_copies(shards, tmp_path):
    cfg = apply_overrides(Config(), {"n_folds": 2, "train.size": SIZE})
    _, names = read_originals(shards, 3, SIZE, 2)
    reference = decoded_records(shards)
    png = augment_preview(cfg, shards, tmp_path / "grid.png", n=3, copies=2, seed=1)
    grid = cells(png, 3, 3)
    for r, name in enumerate(names):
        np.testing.assert_array_equal(grid[r][0], reference[name])  # pixel-exact original
        for c in (1, 2):
            assert np.abs(grid[r][c].astype(int) - reference[name]).mean() > 2.0  # visibly augmented
    assert not list(tmp_path.glob(".*tmp"))  # atomic write: no temporary left behind

    # Same seed, same grid.
    again = augment_preview(cfg, shards, tmp_path / "again.png", n=3, copies=2, seed=1)
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(again)))


def test_augmentation_off_copies_equal_the_original(shards, tmp_path):
    cfg = dataclasses.replace(Config(), n_folds=2)
    cfg.train = dataclasses.replace(cfg.train, size=SIZE, augment=no_augmentation())
    png = augment_preview(cfg, shards, tmp_path / "grid.png", n=2, copies=2, labels=False)
    img = Image.open(png)
    layout = GridLayout(2, 3, SIZE)
    assert img.size == (layout.width, layout.height)
    arr = np.asarray(img)
    for r in range(2):
        first = crop(arr, layout.cell_box(r, 0))
        for c in (1, 2):
            np.testing.assert_array_equal(crop(arr, layout.cell_box(r, c)), first)


def test_more_rows_asked_than_images_and_resize(shards, tmp_path):
    cfg = apply_overrides(Config(), {"n_folds": 2, "train.size": 24})  # records are 32 px: resized on read
    png = augment_preview(cfg, shards, tmp_path / "grid.png", n=50, copies=1)
    layout = GridLayout(10, 2, 24, label=label_height(label_font()))
    assert Image.open(png).size == (layout.width, layout.height)


def test_cli(shards, tmp_path, capsys):
    out = tmp_path / "cli.png"
    code = main(["augment-preview", "--tfrecords", str(shards), "--out", str(out), "--n", "2", "--copies", "1",
                 "--size", str(SIZE), "--set", "n_folds=2", "--set", "train.augment.rotate=30"])
    assert code == 0 and out.is_file()
    layout = GridLayout(2, 2, SIZE, label=label_height(label_font()))
    assert Image.open(out).size == (layout.width, layout.height)

    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["augment-preview", "--tfrecords", str(empty), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("melanoma: error:")]
    assert code == 2 and len(lines) == 1 and str(empty) in lines[0]
    assert not (tmp_path / "x.png").exists()


def test_no_training_records_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        read_originals(tmp_path, 2, SIZE, 5)
