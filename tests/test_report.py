"""`melanoma report` and `compare` end to end on tiny runs over real demo images, Grad-CAM, and the page in Chromium.

The run folders are written as `train`, `tabular` and `blend` write them, without training: the image run's
fold weights are those of a freshly built simple_cnn (Grad-CAM needs weights, not good ones).
"""

import base64
import io
import json
import re
import shutil
import subprocess

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from conftest import DEMO
from conftest import copy_demo_layout
from melanoma.blend import run_blend
from melanoma.cli import main
from melanoma.config import Config, apply_overrides, save_run_info
from melanoma.image.models import build_model
from melanoma.data.prepare import prepare
from melanoma.report import report
from melanoma.report.gradcam import GradCAM
from melanoma.run import run_pipeline

SIZE = 32


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    train = pd.read_csv(DEMO / "train.csv", dtype={"patient_id": "string"})
    train = train[train.image_name >= "ISIC_0000200"]  # past the striped (degenerate, duplicate-hashed) images
    train = pd.concat([train[train.target == 1].head(10), train[train.target == 0].head(14)]).reset_index(drop=True)
    train["patient_id"] = [f"IP_{i // 2:03d}" for i in range(len(train))]  # two images per patient
    truth = pd.read_csv(DEMO / "test_labels.csv")
    truth = truth[truth.image_name >= "ISIC_0000200"]
    keep = set(truth[truth.target == 1].image_name[:3]) | set(truth[truth.target == 0].image_name[:3])
    test = pd.read_csv(DEMO / "test.csv", dtype={"patient_id": "string"})
    test = test[test.image_name.isin(keep)].reset_index(drop=True)
    copy_demo_layout(data, train, test)
    test[["image_name"]].assign(target=0).to_csv(data / "sample_submission.csv", index=False)
    labels = pd.read_csv(DEMO / "test_labels.csv").set_index("image_name").loc[test.image_name].reset_index()
    labels.to_csv(root / "test_labels.csv", index=False)
    cfg = apply_overrides(Config(), {"n_folds": 2, "prepare.size": SIZE, "prepare.workers": 1, "train.model": "simple_cnn",
                                     "train.size": SIZE, "train.weights": "none", "paths.data": str(data),
                                     "paths.tfrecords": str(root / "tf"), "paths.test_labels": str(root / "test_labels.csv"),
                                     "report.bootstrap": 50, "report.gallery_size": 2, "report.min_positives": 2})
    prepare(cfg, data, root / "tf")
    folds = pd.read_csv(root / "tf" / "folds.csv")
    rng = np.random.default_rng(0)
    for name, stage in (("image", "train"), ("tabular", "tabular")):
        run = root / name
        oof = folds[["image_name", "target", "fold"]].assign(pred=lambda d: np.clip(0.3 * d.target + 0.7 * rng.random(len(d)), 0, 1))
        run.mkdir()
        oof[["image_name", "target", "pred", "fold"]].to_csv(run / "oof.csv", index=False)
        pd.DataFrame({"image_name": test.image_name, "target": rng.random(len(test))}).to_csv(run / "test_pred.csv", index=False)
        save_run_info(run, cfg, stage)
    model = build_model("simple_cnn", SIZE, None)
    for k in (0, 1):
        (root / "image" / f"fold{k}").mkdir()
        model.save_weights(root / "image" / f"fold{k}" / "best.weights.h5")
        pd.DataFrame({"epoch": [0, 1], "loss": [0.7, 0.6], "auc": [0.5, 0.6], "val_loss": [0.7, 0.65],
                      "val_auc": [0.5, 0.55], "learning_rate": [1e-4, 2e-4]}).to_csv(
            root / "image" / f"fold{k}" / "history.csv", index=False)
    run_blend(cfg, [root / "image", root / "tabular"], root / "sub" / "submission.csv", data / "sample_submission.csv")
    return root, cfg


def test_gradcam_matches_the_class_activation_map():
    # The head is linear after pooling, so Grad-CAM must equal relu(A @ w) scaled to [0, 1] (CAM).
    model = build_model("simple_cnn", SIZE, None)
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)  # the models take uint8
    cam = GradCAM(model)
    pred, heat = cam(images)
    np.testing.assert_allclose(pred, model.predict(images, verbose=0)[:, 0], atol=1e-5)
    fmap = keras.ops.convert_to_numpy(cam.features(cam.scale(images)))
    w = model.get_layer("pred").get_weights()[0][:, 0]
    expected = np.maximum(fmap @ w, 0)[..., None].astype("float32")
    expected = keras.ops.convert_to_numpy(keras.ops.image.resize(expected, (SIZE, SIZE)))[..., 0]
    assert heat.shape == (4, SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1
    for h, e in zip(heat, expected):
        if e.max() > 0:
            np.testing.assert_allclose(h, e / e.max(), atol=1e-4)



def test_gradcam_explains_the_melanoma_column_of_a_diagnosis_head():
    model = build_model("simple_cnn", SIZE, None, classes=3)
    images = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    probs = model.predict(images, verbose=0)
    pred, heat = GradCAM(model, column=2)(images)
    np.testing.assert_allclose(pred, probs[:, 2], atol=1e-5)
    assert not np.allclose(pred, probs[:, 0], atol=1e-5)
    assert heat.shape == (3, SIZE, SIZE) and heat.min() >= 0 and heat.max() <= 1

def embedded_images(page: str) -> list[Image.Image]:
    srcs = re.findall(r'<img src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained: no files, no network
    return [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in srcs]


def test_report_on_image_tabular_and_blend(runs):
    root, cfg = runs
    out = root / "out"
    rep = report(cfg, [root / "image", root / "tabular", root / "sub" / "blend.json"], out)
    assert [r["label"] for r in rep["runs"]] == ["image", "tabular", "blend"]
    image = rep["runs"][0]
    oof = pd.read_csv(root / "image" / "oof.csv")
    assert image["oof"]["auc"]["value"] == pytest.approx(roc_auc_score(oof.target, oof.pred), abs=1e-9)
    assert image["oof"]["units"] == 12 and rep["settings"]["resampling"] == "patients"
    assert image["test"]["n"] == 6 and len(image["operating_points"]) == 4
    assert image["operating_points"][0]["oof"]["sensitivity"] >= 0.8
    assert {"fold", "sex", "age"} <= set(image["oof"]["subgroups"])
    assert all(c["heat_map"] and c["png"] for c in image["gallery"]["cards"]) and len(image["gallery"]["cards"]) == 4
    assert any("tabular run has no image model" in n for n in rep["runs"][1]["gallery"]["notes"])
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["runs"][0]["oof"]["auc"] == image["oof"]["auc"]
    page = (out / "report.html").read_text()
    for section in ("summary", "curves", "operating", "calibration", "subgroups", "gallery", "training"):
        assert f'id="{section}"' in page
    assert all(img.format == "PNG" and img.size[0] > 50 for img in embedded_images(page))
    assert (out / "roc-oof.png").is_file() and (out / "roc-test.png").is_file() and (out / "training-image.png").is_file()
    assert not list(out.glob(".staging-*"))

    # The blend applies the report's calibrator: a probability now, same ranking of the test images.
    cal_cfg = apply_overrides(cfg, {"blend.calibrate": str(out / "calibrator.json")})
    res = run_blend(cal_cfg, [root / "image", root / "tabular"], root / "cal" / "submission.csv",
                    root / "data" / "sample_submission.csv")
    assert res["calibration"]["method"] == "isotonic"
    raw = pd.read_csv(root / "sub" / "submission.csv")
    cal = pd.read_csv(root / "cal" / "submission.csv")
    assert cal.target.between(0, 1).all() and not np.allclose(cal.target, raw.target)
    order = np.argsort(raw.target.to_numpy(), kind="stable")
    assert np.all(np.diff(cal.target.to_numpy()[order]) >= -1e-12)


def test_missing_weights_skip_heat_maps_and_say_so(runs, tmp_path):
    root, cfg = runs
    bare = tmp_path / "image"
    shutil.copytree(root / "image", bare)
    for f in bare.glob("fold*/best.weights.h5"):
        f.unlink()
    rep = report(cfg, [bare], tmp_path / "out")
    g = rep["runs"][0]["gallery"]
    assert not any(c["heat_map"] for c in g["cards"]) and all(c["png"] for c in g["cards"])
    assert any("fold weights are absent" in n for n in g["notes"])
    assert "fold weights are absent" in (tmp_path / "out" / "report.html").read_text()


def test_cli_compare_and_errors(runs, tmp_path, capsys):
    root, _ = runs
    data = ["--data", str(root / "data"), "--bootstrap", "50"]
    assert main(["compare", str(root / "image"), str(root / "image"), "--out", str(tmp_path / "c.json"), *data]) == 0
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["diff"] == 0 and res["delong"]["p"] == 1 and res["ci"] == [0, 0] and res["units"] == 12
    assert "difference A - B: +0.0000" in capsys.readouterr().out
    assert main(["compare", str(root / "image"), str(tmp_path / "nope"), *data]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("melanoma: error:") and "nope" in err[0]


def test_run_keeps_its_results_when_the_report_fails(tmp_path):
    cfg = apply_overrides(Config(), {"stages": ["report"], "paths.runs": str(tmp_path / "runs"),
                                     "paths.data": str(tmp_path / "data")})
    summary = run_pipeline(cfg)  # nothing to report on: logged, named in the summary, no exception
    assert summary["report"].startswith("failed") and "no run to report on" in summary["report"]


def chromium() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.slow  # starts a browser: ~11 s
@pytest.mark.skipif(chromium() is None, reason="no chromium, chromium-browser or google-chrome on PATH")
def test_page_opens_in_headless_chromium(runs, tmp_path):
    root, cfg = runs
    out = tmp_path / "out"
    report(cfg, [root / "image", root / "sub" / "blend.json"], out)
    url = (out / "report.html").as_uri()
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    counts = re.search(r'data-broken-images="(\d+)" data-images="(\d+)"', dom)
    assert counts, "the page's image check did not run"
    assert int(counts.group(1)) == 0 and int(counts.group(2)) >= 10  # every image decoded, none broken
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1280,4000", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (4000, 1280) and pixels.std() > 10  # drawn, not blank
