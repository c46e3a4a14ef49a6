"""Lesion segmentation on drawn ellipses, where the true mask is known: the classical mask, the lesion step
(mask, crop), `melanoma segment train` through the CLI, and a U-Net that must learn the ellipses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma.cli import main
from melanoma.data.lesion import apply_lesion, crop_box
from melanoma.data.lesion_classical import classical_mask
from melanoma.segment.losses import scores


def ellipse_image(seed: int, side: int = 64, noise: float = 18.0) -> tuple[Image.Image, np.ndarray]:
    """A dark, saturated ellipse (random centre, axes, angle, colours) on skin-coloured Gaussian noise."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    img = np.empty((side, side, 3))
    img[:] = np.array([215, 160, 140]) + rng.uniform(-20, 20, 3)
    r, c = rng.uniform(0.35, 0.65, 2) * side
    a, b = rng.uniform(0.12, 0.3, 2) * side
    rr, cc = ellipse(r, c, a, b, (side, side), rotation=rng.uniform(0, np.pi))
    mask = np.zeros((side, side), bool)
    mask[rr, cc] = True
    img[mask] = np.array([110, 65, 45]) + rng.uniform(-25, 25, 3)
    img += rng.normal(0, noise, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)), mask


def ellipse_folders(root: Path, n: int, side: int) -> tuple[Path, Path]:
    """The ISIC segmentation layout: images/ISIC_x.jpg, masks/ISIC_x_segmentation.png."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(n):
        img, mask = ellipse_image(1000 + i, side)
        img.save(images / f"ISIC_{i:07d}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"ISIC_{i:07d}_segmentation.png")
    return images, masks


@pytest.mark.parametrize("side", [64, 300])  # 300: found on the 256-px working view, scaled back
def test_classical_mask_finds_the_ellipse(side):
    ious = []
    for seed in range(12):
        img, truth = ellipse_image(seed, side)
        found = classical_mask(img)
        assert found.shape == truth.shape
        ious.append(scores(truth[None], found[None])["jaccard"][0])
    assert min(ious) > 0.8, ious


def test_classical_mask_falls_back_to_the_whole_image():
    flat = Image.new("RGB", (40, 30), (200, 150, 130))
    assert classical_mask(flat).all()
    assert apply_lesion(flat, "crop") is flat and apply_lesion(flat, "mask") is flat  # nothing found: unchanged


def test_mask_blacks_out_the_background_and_crop_keeps_the_lesion():
    img, truth = ellipse_image(3, 96)
    found = classical_mask(img)
    masked = np.asarray(apply_lesion(img, "mask"))
    assert masked.shape == (96, 96, 3)
    assert (masked[~found] == 0).all() and (masked[found] == np.asarray(img)[found]).all()
    assert (masked[~truth] == 0).mean() > 0.95  # the background is what was blacked out
    left, top, right, bottom = crop_box(found, 0.1)
    rows, cols = np.flatnonzero(truth.any(1)), np.flatnonzero(truth.any(0))
    assert left <= cols[0] and top <= rows[0] and right >= cols[-1] and bottom >= rows[-1]  # whole lesion inside
    cropped = apply_lesion(img, "crop", 0.1)
    assert cropped.size == (right - left, bottom - top)
    np.testing.assert_array_equal(np.asarray(cropped), np.asarray(img)[top:bottom, left:right])
    assert cropped.width * cropped.height < 0.6 * 96 * 96  # it zooms in


def test_crop_box_is_a_square_with_the_margin_clipped_to_the_image():
    mask = np.zeros((100, 200), bool)
    mask[40:60, 90:130] = True  # 20 high, 40 wide
    assert crop_box(mask, 0.0) == (90, 30, 130, 70)  # 40 x 40 around the box's centre
    assert crop_box(mask, 0.25) == (80, 20, 140, 80)  # + 10 px on each side
    assert crop_box(mask, 2.0) == (10, 0, 200, 100)  # 200 x 200 around x = 110, clipped to the image


def test_segment_train_through_the_cli_writes_its_outputs(tmp_path, capsys):
    import keras

    images, masks = ellipse_folders(tmp_path / "set", 16, 32)
    out = tmp_path / "seg"
    assert main(["-q", "segment", "train", "--images", str(images), "--masks", str(masks), "--out", str(out),
                 "--size", "32", "--epochs", "2", "--steps", "2", "--batch-size", "4", "--val-share", "0.25",
                 "--set", "segment.width=4", "--set", "segment.depth=2", "--backend", "tensorflow"]) == 0
    assert "held-out Dice" in capsys.readouterr().out
    for name in ("segmenter.keras", "segmenter.json", "metrics.json", "history.csv", "predictions.png",
                 "config.yaml", "run.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_heldout"] == 4 and metrics["n_train"] == 12 and len(metrics["heldout"]) == 4
    assert 0 <= metrics["dice"] <= 1 and 0 <= metrics["jaccard"] <= metrics["dice"] + 1e-9
    info = json.loads((out / "segmenter.json").read_text())
    assert info["input_size"] == 32 and info["threshold"] == 0.5
    model = keras.saving.load_model(out / "segmenter.keras", compile=False)
    assert model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0).shape == (1, 32, 32, 1)
    assert Image.open(out / "predictions.png").size[1] > 200  # four held-out rows drawn
    assert not list(out.glob(".staging-*"))


@pytest.mark.slow  # about 1-2 minutes: a fresh process compiles the U-Net on JAX
def test_segment_train_on_the_jax_backend_and_its_segmenter_on_tensorflow(tmp_path):
    """The U-Net is Keras layers and keras.ops only: it trains on JAX, and what JAX saved masks on TensorFlow."""
    import os
    import subprocess
    import sys

    from melanoma.data.lesion import predicted_mask

    images, masks = ellipse_folders(tmp_path / "set", 8, 32)
    out = tmp_path / "seg"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-m", "melanoma", "-q", "segment", "train", "--images", str(images),
                           "--masks", str(masks), "--out", str(out), "--size", "32", "--epochs", "1", "--steps", "2",
                           "--batch-size", "4", "--set", "segment.width=4", "--set", "segment.depth=2",
                           "--backend", "jax"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["backend"] == "jax"
    img, _ = ellipse_image(7, 40)
    assert predicted_mask(img, str(out)).shape == (40, 40)  # this process: TensorFlow


def test_segment_train_refuses_unpaired_files_naming_them(tmp_path, capsys):
    images, masks = ellipse_folders(tmp_path / "set", 4, 32)
    args = ["segment", "train", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "o")]
    (masks / "ISIC_0000002_segmentation.png").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ISIC_0000002.jpg" in err and "has no mask" in err
    Image.new("L", (32, 32)).save(masks / "ISIC_0000002_segmentation.png")
    Image.new("L", (32, 32)).save(masks / "ISIC_0000009_segmentation.png")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "ISIC_0000009_segmentation.png" in err and "has no image" in err
    (masks / "ISIC_0000009_segmentation.png").rename(masks / "ISIC_0000009_mask.png")
    assert main(args) == 2
    assert "ISIC_0000009_mask.png: is not named IMAGE_segmentation.png" in capsys.readouterr().err
    (masks / "ISIC_0000009_mask.png").unlink()
    Image.new("L", (20, 32)).save(masks / "ISIC_0000001_segmentation.png")
    assert main(args) == 2
    assert "ISIC_0000001_segmentation.png: is 20x32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_segment_mask_writes_the_classical_masks(tmp_path, capsys):
    images, masks = ellipse_folders(tmp_path / "set", 4, 64)
    out = tmp_path / "found"
    assert main(["-q", "segment", "mask", "--images", str(images), "--out", str(out)]) == 0
    assert "4 masks" in capsys.readouterr().out
    for truth in sorted(masks.glob("*.png")):
        found = np.asarray(Image.open(out / truth.name)) > 127
        assert scores((np.asarray(Image.open(truth)) > 127)[None], found[None])["jaccard"][0] > 0.8
    assert main(["-q", "segment", "mask", "--images", str(images), "--out", str(out), "--segmenter",
                 str(tmp_path / "nothing")]) == 2
    assert "--segmenter" in capsys.readouterr().err


@pytest.mark.slow  # about a minute on 2 cores
def test_unet_learns_held_out_ellipses(tmp_path):
    """The issue's bar: a few hundred steps on drawn ellipses give Dice >= 0.9 on held-out ones."""
    from melanoma.config import load_config
    from melanoma.runtime.backend import use_backend
    from melanoma.segment.train import train_segmenter

    use_backend("tensorflow")
    images, masks = ellipse_folders(tmp_path / "set", 200, 48)
    cfg = load_config(None, ["segment.size=48", "segment.width=8", "segment.epochs=10",
                             "segment.steps_per_epoch=30", "segment.batch_size=16"])
    start = time.perf_counter()
    metrics = train_segmenter(cfg, images, masks, tmp_path / "seg")
    print(f"U-Net 48px, 300 steps: held-out Dice {metrics['dice']:.3f}, Jaccard {metrics['jaccard']:.3f} "
          f"({metrics['n_heldout']} images) in {time.perf_counter() - start:.0f} s")
    assert metrics["n_heldout"] == 40 and metrics["dice"] >= 0.9


# ---------------------------------------------------------------- the lesion step through prepare, export, predict

def _demo_layout(root: Path) -> Path:
    """16 training (6 malignant) and 6 test images of the shipped demo set (real dermoscopy, past the striped
    thumbnails that prepare refuses)."""
    import pandas as pd

    from conftest import DEMO, copy_demo_layout

    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"}).query("image_name >= 'ISIC_0000150'")
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"}).query("image_name >= 'ISIC_0000150'")
    train = pd.concat([train[train.target == 1].head(6), train[train.target == 0].head(10)]).sort_values("image_name")
    return copy_demo_layout(root, train, test.head(6))


def _records(rec: Path, split: str, size: int | None = None) -> dict[str, object]:
    """image_name -> stored JPEG bytes (size None) or the train reader's tensor at `size`."""
    import tensorflow as tf

    from melanoma.data.reader import decode_image, find_shards, parse_fn

    shards = find_shards(str(rec), 2)
    out = {}
    for s in (shards.test() if split == "test" else shards.train()):
        for raw in tf.data.TFRecordDataset(s.path):
            ex = parse_fn(split, ("image", "image_name"))(raw)
            img = ex["image"] if size is None else decode_image(ex["image"], size, shards.image_size)
            out[ex["image_name"].numpy().decode()] = img.numpy()
    return out


LESION_ARGS = ["--size", "32", "--workers", "1", "--n-folds", "2", "--set", "data.patient_id=per_image"]


def test_prepare_lesion_crop_through_the_cli_stores_cropped_images(tmp_path):
    from melanoma.data.images import ImageSettings, load_rgb, stored_jpeg

    data = _demo_layout(tmp_path / "data")
    rec = tmp_path / "rec"
    assert main(["-q", "prepare", "--data", str(data), "--out", str(rec), "--lesion", "crop", *LESION_ARGS]) == 0
    manifest = json.loads((rec / "manifest.json").read_text())
    assert manifest["lesion"] == {"mode": "crop", "margin": 0.1, "method": "classical", "segmenter": None,
                                  "segmenter_sha256": None}
    stored = _records(rec, "test")
    assert len(stored) == 6 and sorted(p.name for p in rec.glob("*.tfrec"))
    crop, plain = ImageSettings(32, lesion="crop"), ImageSettings(32)
    differ = 0
    for name, data_bytes in stored.items():
        img = load_rgb(data / "jpeg" / "test" / f"{name}.jpg", crop.decode_side)[0]
        assert data_bytes == stored_jpeg(img, crop), name  # the crop, exactly as the one function makes it
        differ += data_bytes != stored_jpeg(load_rgb(data / "jpeg" / "test" / f"{name}.jpg", 32)[0], plain)
    assert differ >= 4  # on real lesions the crop changes what is stored


@pytest.mark.slow  # about 40 s: prepare, a one-epoch simple_cnn fold, export, predict
def test_predict_on_an_exported_lesion_crop_run_applies_the_same_crop(tmp_path):
    import pandas as pd

    from melanoma.config import load_config
    from melanoma.data.images import ImageSettings, model_input
    from melanoma.data.prepare import prepare
    from melanoma.image.train import train
    from melanoma.serve.artifact import Artifact
    from melanoma.serve.export import export
    from melanoma.serve.predict import run_predict

    data = _demo_layout(tmp_path / "data")
    rec, run, model = tmp_path / "rec", tmp_path / "run", tmp_path / "model"
    cfg = load_config(None, [
        "prepare.size=32", "prepare.workers=1", "prepare.lesion=crop", "prepare.lesion_margin=0.2", "n_folds=2",
        "data.patient_id=per_image", "train.model=simple_cnn", "train.size=32", "train.epochs=1",
        "train.folds=[0]", "train.weights=none", "train.batch_size=4", "train.tensorboard=false",
        "train.verbose=0", "train.metadata=false", f"paths.tfrecords={rec}", "train.backend=tensorflow"])
    prepare(cfg, data, rec)
    train(cfg, rec, run)
    info = export(cfg, run, model)
    assert info["input"]["prepare"]["lesion"]["mode"] == "crop" and info["input"]["prepare"]["lesion"]["margin"] == 0.2
    art = Artifact.load(model)
    assert art.settings.lesion == "crop" and art.settings.lesion_margin == 0.2
    differ = 0
    for name, want in _records(rec, "test", 32).items():
        raw = (data / "jpeg" / "test" / f"{name}.jpg").read_bytes()
        np.testing.assert_array_equal(model_input(raw, art.settings, 32), want, err_msg=name)
        differ += not np.array_equal(model_input(raw, ImageSettings(32), 32), want)  # without the crop
    assert differ >= 4  # so the equality above is the crop's, not the plain resize's
    preds = run_predict(cfg, model, data / "jpeg" / "test", tmp_path / "preds.csv").set_index("image_name")
    test_pred = pd.read_csv(run / "test_pred.csv").set_index("image_name")["target"]
    np.testing.assert_allclose(preds.loc[test_pred.index, "probability"], test_pred, atol=1e-5, rtol=0)


def _dark_pixel_segmenter(folder: Path, side: int = 32) -> Path:
    """A segmenter.keras that calls a pixel lesion when its mean RGB is under 128 (a 1x1 convolution with set
    weights): no training, yet non-trivial masks on real images, so a missing lesion step would show."""
    import keras

    image = keras.Input((side, side, 3))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(image, conv(image))
    conv.set_weights([np.full((1, 1, 3, 1), -20 / (3 * 128), np.float32), np.array([20.0], np.float32)])
    folder.mkdir(parents=True)
    model.save(folder / "segmenter.keras")
    (folder / "segmenter.json").write_text(json.dumps({"input_size": side, "threshold": 0.5}))
    return folder


@pytest.mark.slow  # about 50 s: prepare with a segmenter, a one-epoch simple_cnn fold, export
def test_a_trained_segmenter_is_recorded_shipped_with_the_export_and_applied_by_predict(tmp_path, capsys):
    from melanoma.config import load_config
    from melanoma.data.images import ImageSettings, model_input
    from melanoma.image.train import train
    from melanoma.data.lesion import file_sha256
    from melanoma.serve.artifact import Artifact
    from melanoma.serve.export import export

    seg = _dark_pixel_segmenter(tmp_path / "seg")
    data = _demo_layout(tmp_path / "data")
    rec, run, model = tmp_path / "rec", tmp_path / "run", tmp_path / "model"
    assert main(["-q", "prepare", "--data", str(data), "--out", str(rec), "--lesion", "mask", "--segmenter",
                 str(seg), *LESION_ARGS]) == 0
    lesion = json.loads((rec / "manifest.json").read_text())["lesion"]
    assert lesion["method"] == "segmenter" and lesion["segmenter_sha256"] == file_sha256(seg / "segmenter.keras")
    cfg = load_config(None, [
        "prepare.size=32", "n_folds=2", "data.patient_id=per_image", "train.model=simple_cnn", "train.size=32",
        "train.epochs=1", "train.folds=[0]", "train.weights=none", "train.batch_size=4", "train.tensorboard=false",
        "train.verbose=0", "train.metadata=false", f"paths.tfrecords={rec}", "train.backend=tensorflow",
        "export.onnx=false", "export.savedmodel=false"])
    train(cfg, rec, run)
    export(cfg, run, model)
    assert file_sha256(model / "segmenter.keras") == lesion["segmenter_sha256"]  # shipped, the very file
    art = Artifact.load(model)
    assert art.settings.lesion == "mask" and Path(art.settings.segmenter) == model / "segmenter.keras"
    differ = 0
    for name, want in _records(rec, "test", 32).items():
        raw = (data / "jpeg" / "test" / f"{name}.jpg").read_bytes()
        np.testing.assert_array_equal(model_input(raw, art.settings, 32), want, err_msg=name)
        differ += not np.array_equal(model_input(raw, ImageSettings(32), 32), want)
    assert differ >= 4  # the segmenter's masks changed the stored pixels
    (seg / "segmenter.keras").write_bytes(b"changed")  # a segmenter edited after prepare is refused at export
    assert main(["-q", "export", str(run), "--out", str(tmp_path / "m2"), "--tfrecords", str(rec)]) == 2
    assert "changed since prepare used it" in capsys.readouterr().err
