"""export, predict and serve on a tiny real run: demo images -> prepare (32 px) -> train (simple_cnn, 1 epoch,
one fold) -> export. The same pixels reach the model in training, `predict` and `serve`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.layouts import small_demo_layout
from helpers.paths import ROOT

from melanoma.config import ServeConfig, apply_overrides, load_config
from melanoma.data.images import BadImage
from melanoma.errors import ConfigError

DEMO = ROOT / "data" / "demo"




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(cfg, data dir, records dir, run dir, model dir): a one-fold, one-epoch simple_cnn run, exported."""
    from melanoma.data.prepare import prepare
    from melanoma.image.train import train
    from melanoma.serve.export import export

    tmp = tmp_path_factory.mktemp("serve")
    data = small_demo_layout(tmp / "data")
    rec, run, model = tmp / "rec", tmp / "run", tmp / "model"
    cfg = load_config(None, [
        "prepare.size=32", "prepare.workers=1", "n_folds=2", "data.patient_id=per_image", "train.model=simple_cnn",
        "train.size=32", "train.epochs=1", "train.folds=[0]", "train.weights=none", "train.batch_size=8",
        "train.tensorboard=false", "train.bn_momentum=0.5", "train.verbose=0", f"paths.tfrecords={rec}",
        "train.backend=tensorflow", "train.metadata=false",  # image only: predict reads a folder without metadata
        "train.tta_flips=false"])  # the scratch recipe's flips off: the export test adds them itself
    prepare(cfg, data, rec)
    train(cfg, rec, run)
    export(cfg, run, model)
    return cfg, data, rec, run, model


def _test_records(rec: Path, size: int) -> dict[str, np.ndarray]:
    """image_name -> the tensor the train reader feeds the model for each test record."""
    import tensorflow as tf

    from melanoma.data.reader import decode_image, find_shards, parse_fn

    shards = find_shards(str(rec), 2)
    out = {}
    for s in shards.test():
        for raw in tf.data.TFRecordDataset(s.path):
            ex = parse_fn("test", ("image", "image_name"))(raw)
            out[ex["image_name"].numpy().decode()] = decode_image(ex["image"], size, shards.image_size).numpy()
    return out


def test_predict_preprocessing_gives_the_train_readers_tensor(trained):
    from melanoma.data.images import ImageSettings, model_input
    from melanoma.serve.artifact import Artifact

    _, data, rec, _, model = trained
    art = Artifact.load(model)
    for size in (32, 24):  # stored side = model side, and the reader's on-the-fly resize
        reader = _test_records(rec, size)
        assert len(reader) == 10
        for name, want in reader.items():
            got = model_input((data / "jpeg" / "test" / f"{name}.jpg").read_bytes(), art.settings, size)
            assert got.dtype == np.uint8 and got.shape == (size, size, 3)  # the models cast on the device
            np.testing.assert_array_equal(got, want, err_msg=f"{name} at {size}px")
    with pytest.raises(BadImage, match="not an image"):
        model_input(b"not an image at all", ImageSettings(32), 32)


def test_predict_equals_train_test_pred_and_lists_unreadable_images(trained, tmp_path):
    from melanoma.serve.predict import run_predict

    cfg, data, _, run, model = trained
    images = tmp_path / "images"
    shutil.copytree(data / "jpeg" / "test", images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "empty.jpg").write_bytes(b"")
    out = run_predict(cfg, model, images, tmp_path / "preds.csv")
    assert pd.read_csv(tmp_path / "preds.csv").shape[0] == 12
    errors = out.set_index("image_name")["error"]
    assert errors["empty"].startswith("empty file")
    assert "cannot decode" in errors["broken"] or "not an image" in errors["broken"]
    scored = out[out.error == ""].set_index("image_name")
    want = pd.read_csv(run / "test_pred.csv").set_index("image_name")["target"]
    assert sorted(scored.index) == sorted(want.index) and len(want) == 10
    np.testing.assert_allclose(scored.loc[want.index, "probability"], want, atol=1e-5, rtol=0)
    assert want.std() > 1e-4  # the scores differ between images, so the comparison means something
    assert set(scored["label_p50"]) <= {0, 1} and out.set_index("image_name").loc["broken", "label_p50"] is pd.NA


def test_predict_reads_a_csv_with_paths_and_refuses_bad_metadata(trained, tmp_path):
    from melanoma.serve.artifact import Artifact
    from melanoma.serve.predict import list_images, meta_vectors, run_predict

    cfg, data, _, run, model = trained
    names = pd.read_csv(run / "test_pred.csv").image_name.head(3)
    pd.DataFrame({"image_name": names}).to_csv(tmp_path / "list.csv", index=False)
    cfg2 = load_config(None, [f"predict.image_dir={data / 'jpeg' / 'test'}", "predict.batch_size=2"])
    out = run_predict(cfg2, model, tmp_path / "list.csv", tmp_path / "p.csv")
    want = pd.read_csv(run / "test_pred.csv").set_index("image_name").loc[names, "target"]
    np.testing.assert_allclose(out["probability"], want.to_numpy(), atol=1e-5)
    # A metadata model would refuse an impossible age, naming the CSV line.
    art = Artifact.load(model)
    art.uses_meta = True
    df = pd.DataFrame({"image_name": ["a", "b"], "age_approx": [40, -5]})
    with pytest.raises(Exception, match=r"line 3: age_approx -5"):
        meta_vectors(art, df, "meta.csv")
    with pytest.raises(Exception, match="needs a 'path' or an 'image_name' column"):
        (tmp_path / "bad.csv").write_text("x\n1\n")
        list_images(tmp_path / "bad.csv")


def test_metadata_vector_matches_the_train_reader():
    import tensorflow as tf

    from melanoma.data.records import VOCABULARIES
    from melanoma.image.inputs import meta_vector
    from melanoma.serve.artifact import MetaEncoder

    enc = MetaEncoder(VOCABULARIES["sex"], VOCABULARIES["anatom_site_general_challenge"])
    for sex, age, site in [("male", 45, "torso"), ("female", None, None), ("", 80.4, "oral/genital"),
                           (None, 0, "head/neck")]:
        codes = enc.codes(sex, age, site)
        want = meta_vector({"sex": tf.constant(codes[0], tf.int64), "age_approx": tf.constant(codes[1], tf.int64),
                            "anatom_site_general_challenge": tf.constant(codes[2], tf.int64)}).numpy()
        np.testing.assert_allclose(enc.vector(codes), want, atol=1e-7)


def test_export_writes_model_json_savedmodel_onnx_and_flips(trained, tmp_path):
    import tensorflow as tf

    from melanoma.serve.artifact import Artifact, apply_calibrator
    from melanoma.serve.export import export

    cfg, data, rec, run, model = trained
    info = json.loads((model / "model.json").read_text())
    assert info["input"] == {**info["input"], "size": 32, "stored_size": 32,
                             "prepare": {"size": 32, "resize": "crop", "quality": 95, "max_pixels": 200_000_000,
                                         "lesion": {"mode": "none", "margin": 0.1, "method": "none",
                                                    "segmenter": None, "segmenter_sha256": None}}}
    assert info["model"]["folds"] == [0] and info["tta"]["flips"] is False and info["metadata"]["used"] is False
    assert info["thresholds"] == {"p50": 0.5} and info["package"]["version"]
    art = Artifact.load(model)
    x = np.stack([art.preprocess(p.read_bytes()) for p in sorted((data / "jpeg" / "test").glob("*.jpg"))[:4]])
    plain = art.predict(x)
    saved = tf.saved_model.load(str(model / "savedmodel"))
    np.testing.assert_allclose(np.asarray(saved.serve(x)).reshape(-1), plain, atol=1e-5)
    if info["formats"]["onnx"] == "model.onnx":  # verified against Keras at export when onnxruntime is there
        assert (model / "model.onnx").is_file()
    else:
        assert info["formats"]["onnx"].startswith(("skipped", "failed")) and not (model / "model.onnx").exists()

    # The report's calibrator and thresholds (its section for this run) travel with the model; flips average
    # inside the graph.
    from melanoma import calibration
    from melanoma.report import report

    rcfg = apply_overrides(cfg, {"report.bootstrap": 20, "report.gradcam": False, "report.gallery_size": 1,
                                 "paths.data": str(data), "report.calibration": "platt"})
    rep = report(rcfg, [run], tmp_path / "report")
    ops = {op["name"]: op["threshold"] for op in rep["runs"][0]["operating_points"]}
    cfg2 = load_config(None, ["export.tta_flips=true", f"export.report={tmp_path / 'report'}",
                              "export.savedmodel=false", "export.onnx=false", f"export.tfrecords={rec}"])
    export(cfg2, run, tmp_path / "m2")
    flipped = Artifact.load(tmp_path / "m2")
    views = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]
    np.testing.assert_allclose(flipped.predict(x), np.mean([art.predict(v) for v in views], axis=0), atol=1e-6)
    assert flipped.thresholds == pytest.approx(ops) and "Youden's J" in flipped.thresholds
    cal = calibration.load_calibrator(tmp_path / "report" / rep["runs"][0]["calibration"]["file"])
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(flipped.calibrated(p), calibration.apply(cal, p))
    assert apply_calibrator(p, None) is p


@pytest.mark.slow  # about 30 s: a fresh process imports TensorFlow and JAX
def test_predict_on_the_jax_backend_matches_tensorflow(trained, tmp_path):
    _, data, _, run, model = trained
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    env.pop("MELANOMA_BACKEND_REASON", None)
    r = subprocess.run([sys.executable, "-m", "melanoma", "-q", "predict", "--model", str(model), "--images",
                        str(data / "jpeg" / "test"), "--out", str(tmp_path / "jax.csv")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = pd.read_csv(tmp_path / "jax.csv").set_index("image_name")["probability"]
    want = pd.read_csv(run / "test_pred.csv").set_index("image_name")["target"]
    np.testing.assert_allclose(got.loc[want.index], want, atol=1e-5)


# ---------------------------------------------------------------- the REST service

@pytest.fixture(scope="module")
def client(trained):
    from starlette.testclient import TestClient

    from melanoma.serve.app import create_app
    from melanoma.serve.artifact import Artifact

    art = Artifact.load(trained[4])
    art.settings = type(art.settings)(art.settings.size, art.settings.resize, art.settings.quality, 10_000_000)
    with TestClient(create_app(art, ServeConfig(max_body_mb=0.5, max_images=4))) as c:
        yield c


def test_serve_predicts_like_predict_and_refuses_bad_input(trained, client):
    from loadtest import malformed_requests

    _, data, _, run, _ = trained
    want = pd.read_csv(run / "test_pred.csv").set_index("image_name")["target"]
    name = want.index[0]
    image = (data / "jpeg" / "test" / f"{name}.jpg").read_bytes()
    r = client.post("/predict", files={"image": (f"{name}.jpg", image, "image/jpeg")},
                    data={"age_approx": "45", "sex": "female", "anatom_site_general_challenge": ""})
    assert r.status_code == 200, r.text
    body = r.json()
    assert abs(body["probability"] - want[name]) < 1e-5 and body["label"] in (0, 1)
    assert body["model_version"] == client.get("/model").json()["model_version"]
    assert body["threshold"] == {"name": "p50", "value": 0.5}
    for kind, kw, status in malformed_requests(image, int(0.5 * 2**20)):
        r = client.post("/predict", **kw)
        assert r.status_code == status, (kind, r.status_code, r.text)
        assert r.json()["error"], kind
    r = client.post("/predict", files={"image": ("a.jpg", image, "image/jpeg")}, data={"colour": "red"})
    assert r.status_code == 400 and "unknown form field" in r.json()["error"]
    assert client.get("/health").json()["status"] == "ok"  # still serving after all of that


def test_serve_batch_endpoint_and_limits(trained, client):
    _, data, _, run, _ = trained
    want = pd.read_csv(run / "test_pred.csv").set_index("image_name")["target"]
    names = list(want.index[:3])
    files = [("images", (f"{n}.jpg", (data / "jpeg" / "test" / f"{n}.jpg").read_bytes(), "image/jpeg"))
             for n in names]
    r = client.post("/predict/batch", files=files, data={"age_approx": ["40", "50", ""]})
    assert r.status_code == 200, r.text
    got = [p["probability"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, want[names].to_numpy(), atol=1e-5)
    r = client.post("/predict/batch", files=files, data={"age_approx": ["40", "50"]})
    assert r.status_code == 422 and "one per image" in r.json()["error"]
    r = client.post("/predict/batch", files=files + [("images", ("bad.jpg", b"nope", "image/jpeg"))])
    assert r.status_code == 422 and "image 4 (bad.jpg)" in r.json()["error"]
    r = client.post("/predict/batch", files=files * 2)
    assert r.status_code == 413 and "max_images" in r.json()["error"]


def test_micro_batcher_groups_concurrent_requests():
    from melanoma.serve.batching import MicroBatcher, bucket_sizes

    seen = []

    def slow_model(images, metas):
        seen.append(len(images))
        time.sleep(0.05)
        return images.reshape(len(images), -1).mean(axis=1)

    assert bucket_sizes(12) == [1, 2, 4, 8, 12]
    batcher = MicroBatcher(slow_model, max_batch=8, max_wait=0.01)
    try:
        futures = []
        threads = [threading.Thread(target=lambda v=v: futures.append((v, batcher.submit(np.full((2, 2, 3), v)))))
                   for v in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(f.result(timeout=10) == v for v, f in futures)  # each caller gets its own image's result
        assert batcher.stats()["batches"] < 20 and set(seen) <= {1, 2, 4, 8}  # grouped, padded to a bucket
    finally:
        batcher.close()


def test_serve_threshold_must_be_exported(trained):
    from melanoma.serve.app import create_app
    from melanoma.serve.artifact import Artifact

    with pytest.raises(ConfigError, match="not in model.json"):
        create_app(Artifact.load(trained[4]), ServeConfig(threshold="sens95", warmup=False))


def _load_test(model: Path, data: Path, n: int, clients: int) -> None:
    from loadtest import rss_mb, run_load, start_server

    images = [p.read_bytes() for p in sorted((data / "jpeg" / "test").glob("*.jpg"))]
    with start_server(str(model), extra=["--set", "serve.max_body_mb=1"]) as (url, proc):
        warm = run_load(url, images, 100, clients, malformed_every=10, max_body=2**20)
        assert not warm.failed, warm.failed[:3]
        before = rss_mb(proc.pid)
        result = run_load(url, images, n, clients, malformed_every=10, max_body=2**20, deadline_s=900)
        after = rss_mb(proc.pid)
    print(f"\nload test: {n} requests, {clients} clients: {result.summary()}; server RSS {before:.0f} -> "
          f"{after:.0f} MB")
    assert not result.failed, result.failed[:3]
    assert result.ok + result.malformed_ok == n and result.malformed_ok == n // 10
    assert after <= 1.10 * before


def test_serve_under_load_small(trained):
    """The same checks, fewer requests, with uvicorn in a thread of this process (no server start-up cost)."""
    from loadtest import rss_mb, run_load, serve_in_thread

    from melanoma.serve.app import create_app
    from melanoma.serve.artifact import Artifact

    images = [p.read_bytes() for p in sorted((trained[1] / "jpeg" / "test").glob("*.jpg"))]
    app = create_app(Artifact.load(trained[4]), ServeConfig(max_body_mb=1))
    with serve_in_thread(app) as url:
        assert not run_load(url, images, 40, 8, malformed_every=10, max_body=2**20).failed
        before = rss_mb(os.getpid())
        result = run_load(url, images, 200, 8, malformed_every=10, max_body=2**20, deadline_s=120)
        after = rss_mb(os.getpid())
    print(f"\nload test (in-process): {result.summary()}; RSS {before:.0f} -> {after:.0f} MB")
    assert not result.failed, result.failed[:3]
    assert result.ok == 180 and result.malformed_ok == 20
    assert after <= 1.10 * before


@pytest.mark.slow
def test_serve_under_load_2000_requests_16_clients(trained):
    _load_test(trained[4], trained[1], 2000, 16)


def test_combined_model_with_metadata_and_a_model_trained_with_in_model_augmentation(tmp_path):
    import keras

    from melanoma.config import AugmentConfig, to_dict
    from melanoma.data.metadata import META_DIM
    from melanoma.image.models import build_model
    from melanoma.serve.export import combined_model, load_fold_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    meta = rng.uniform(0, 1, (3, META_DIM)).astype("float32")
    # GPU/TPU runs train with the augmentation layer inside the model: export drops it, keeping every weight.
    trained = build_model("simple_cnn", 32, None, meta_dim=META_DIM, augment=to_dict(AugmentConfig()))
    trained.get_layer("pred").set_weights([w + 0.5 for w in trained.get_layer("pred").get_weights()])
    trained.save_weights(tmp_path / "fold.weights.h5")
    cfg = load_config(None, ["train.model=simple_cnn", "train.size=32", "train.metadata=true"])
    plain = load_fold_model(cfg, tmp_path / "fold.weights.h5")
    assert "augment" not in [layer.name for layer in plain.layers]
    want = np.asarray(trained({"image": x, "meta": meta}, training=False)).reshape(-1)
    np.testing.assert_allclose(np.asarray(plain({"image": x, "meta": meta})).reshape(-1), want, atol=1e-6)
    # Two folds with metadata, ensembled: the mean of the members' probabilities.
    other = build_model("simple_cnn", 32, None, meta_dim=META_DIM)
    both = combined_model([plain, other], "ensemble", False, 32, True)
    mean = (want + np.asarray(other({"image": x, "meta": meta})).reshape(-1)) / 2
    np.testing.assert_allclose(np.asarray(both.predict_on_batch({"image": x, "meta": meta})).reshape(-1), mean,
                               atol=1e-6)
    keras.backend.clear_session()
