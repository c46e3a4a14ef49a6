"""Missing metadata as a first-class input (issue 28): the one metadata vector (layout 2, with missing flags),
metadata dropout in training only, `predict`/`serve` of images without metadata, old layouts refused, and
the check that a model trained with metadata scores images without it no worse than an image-only model."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers.layouts import small_demo_layout
from helpers.runs import write_learnable_records

from melanoma.config import load_config
from melanoma.data.metadata import COLUMNS, LAYOUT, META_DIM, encode, tf_ops
from melanoma.errors import ConfigError

SEX, AGE, SITE = "sex", "age_approx", "anatom_site_general_challenge"


def test_one_vector_for_numpy_and_tensorflow_with_a_flag_per_missing_field():
    sex = np.array([0, 1, -1, -1, 5, 1])
    age = np.array([50, -1, 30, -1, 0, 85])
    site = np.array([3, -1, 0, -1, 9, 5])
    got = encode(sex, age, site)
    want = encode(tf.constant(sex, tf.int64), tf.constant(age, tf.int64), tf.constant(site, tf.int64), tf_ops())
    np.testing.assert_array_equal(got, want.numpy())
    assert got.shape == (6, META_DIM) == (6, len(COLUMNS)) and META_DIM == 13
    col = {c: got[:, i] for i, c in enumerate(COLUMNS)}
    np.testing.assert_array_equal(col["sex_missing"], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(col["site_missing"], [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(col["age_missing"], [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(col["no_metadata"], [0, 0, 0, 1, 0, 0])  # only when all three are missing
    np.testing.assert_allclose(col["age/100"], [0.5, 0, 0.3, 0, 0, 0.85])
    np.testing.assert_array_equal(got[0, :3], [1, 0, 0]) and np.testing.assert_array_equal(got[1, :3], [0, 1, 0])
    # A known value beyond the one-hot (code 5 of sex, 9 of site): all zeros, and not "missing".
    assert got[4, :3].sum() == 0 and got[4, 3:10].sum() == 0
    assert encode(np.int64(-1), np.int64(-1), np.int64(-1)).shape == (META_DIM,)  # scalars: one row


def _meta_batches(ds, n: int) -> np.ndarray:
    return np.concatenate([x["meta"].numpy() for x, *_ in ds.take(n)])


def test_metadata_dropout_blanks_the_configured_share_in_training_only(tmp_path):
    from melanoma.data.reader import find_shards
    from melanoma.image.inputs import predict_dataset, train_dataset, validation_dataset

    write_learnable_records(tmp_path, per_file=40)
    shards = find_shards(str(tmp_path), 3)
    cfg = load_config(None, ["train.metadata=true", "train.meta_dropout=0.2", "train.meta_row_dropout=0.3",
                             "train.size=32", "train.shuffle_buffer=64"])
    col = {c: i for i, c in enumerate(COLUMNS)}
    # The records' own codes: sex k % 3 - 1 (a third missing), site k % 8 - 1 (an eighth), age always present.
    raw = _meta_batches(validation_dataset(shards.train(), 32, 32, 40, meta=True), 3)
    assert len(raw) == 120 and raw[:, col["age_missing"]].sum() == 0
    assert raw[:, col["sex_missing"]].mean() == pytest.approx(1 / 3)
    train = _meta_batches(train_dataset(shards.train(), cfg.train, 32, 64, None, seed=1, augment=False), 50)
    # Age is blanked with P = row + (1 - row) x field = 0.3 + 0.7 x 0.2 = 0.44 (3,200 draws: sd 0.009)
    assert train[:, col["age_missing"]].mean() == pytest.approx(0.44, abs=0.03)
    # Sex: missing in a third already, and blanked in 0.44 of the rest.
    assert train[:, col["sex_missing"]].mean() == pytest.approx(1 / 3 + 2 / 3 * 0.44, abs=0.03)
    # Whole rows: the row dropout, plus the rows whose three fields all fell to the field dropout.
    row_share = 0.3 + 0.7 * (0.2 * (1 / 3 + 2 / 3 * 0.2) * (1 / 8 + 7 / 8 * 0.2))
    assert train[:, col["no_metadata"]].mean() == pytest.approx(row_share, abs=0.03)
    # Validation and prediction see the records as they are, whatever the dropout settings.
    again = _meta_batches(validation_dataset(shards.train(), 32, 32, 40, meta=True), 3)
    np.testing.assert_array_equal(again, raw)
    names = np.array([f"IMG_{k:04d}" for k in range(120, 160)])
    pred = next(iter(predict_dataset(shards.test(), names, 32, 32, 40, meta=True)))
    assert pred["meta"].numpy()[:, col["age_missing"]].sum() == 0
    # Off: no blanking at all in training either.
    off = load_config(None, ["train.metadata=true", "train.meta_dropout=0", "train.meta_row_dropout=0",
                             "train.size=32"])
    plain = _meta_batches(train_dataset(shards.train(), off.train, 32, 64, None, seed=1, augment=False), 10)
    assert plain[:, col["age_missing"]].sum() == 0


# ---------------------------------------------------------------- a metadata model through export, predict, serve

@pytest.fixture(scope="module", params=["joint", "residual"])
def meta_model(request, tmp_path_factory):
    """(cfg, data dir, run dir, model dir): a one-fold simple_cnn run folder with metadata (random weights, as
    `train` lays it out: config.yaml, run.json, fold0/done.json and weights), exported, for each
    train.meta_fusion. Untrained on purpose: the tests are about the metadata path, and training would cost
    the fast suite a minute."""
    from melanoma.config import save_run_info
    from melanoma.data.metadata import LAYOUT
    from melanoma.image.models import build_model
    from melanoma.serve.export import export

    tmp = tmp_path_factory.mktemp("meta")
    data = small_demo_layout(tmp / "data")
    run, model = tmp / "run", tmp / "model"
    cfg = load_config(None, [
        "prepare.size=32", "train.model=simple_cnn", "train.size=32", "train.weights=none", "train.metadata=true",
        "train.meta_row_dropout=0.5", "export.savedmodel=false", "export.onnx=false", f"paths.tfrecords={tmp}",
        f"train.meta_fusion={request.param}"])
    (run / "fold0").mkdir(parents=True)
    save_run_info(run, cfg, "train", {"metadata_layout": LAYOUT})
    build_model("simple_cnn", 32, None, meta_dim=META_DIM, meta_fusion=request.param).save_weights(
        run / "fold0" / "best.weights.h5")
    (run / "fold0" / "done.json").write_text(json.dumps({"weights": "best.weights.h5"}))
    export(cfg, run, model)
    return cfg, data, run, model


def test_predict_without_metadata_scores_the_image_alone_and_says_how_many(meta_model, tmp_path, caplog):
    from melanoma.serve.artifact import Artifact
    from melanoma.serve.predict import run_predict

    cfg, data, run, model = meta_model
    info = json.loads((model / "model.json").read_text())["metadata"]
    assert info["used"] and info["layout"] == LAYOUT and info["dim"] == META_DIM and info["columns"] == list(COLUMNS)
    assert info["dropout"] == {"field": cfg.train.meta.field_dropout, "row": 0.5}
    assert info["fusion"] == cfg.train.meta.fusion
    art = Artifact.load(model)
    test = pd.read_csv(data / "test.csv")
    names = list(test.image_name)
    pd.DataFrame({"image_name": names}).to_csv(tmp_path / "bare.csv", index=False)
    some_meta = test.astype({SEX: "object", AGE: "object", SITE: "object"})
    some_meta.loc[:4, [SEX, AGE, SITE]] = None  # the first five rows without any metadata, the others as given
    some_meta.to_csv(tmp_path / "some.csv", index=False)
    n_empty = int(some_meta[[SEX, AGE, SITE]].isna().all(axis=1).sum())
    assert 0 < n_empty < len(test)
    pcfg = load_config(None, [f"predict.image_dir={data / 'jpeg' / 'test'}"])
    with caplog.at_level(logging.INFO, logger="melanoma"):
        bare = run_predict(pcfg, model, tmp_path / "bare.csv", tmp_path / "p1.csv")
    assert f"{len(names)} of {len(names)} rows without metadata" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="melanoma"):
        some = run_predict(pcfg, model, tmp_path / "some.csv", tmp_path / "p2.csv")
    assert f"{n_empty} of {len(names)} rows without metadata" in caplog.text
    # Without metadata the score is the model's on the all-missing vector; with it, another one.
    x = np.stack([art.preprocess((data / "jpeg" / "test" / f"{n}.jpg").read_bytes()) for n in names])
    empty = np.repeat(art.meta.vector((-1, -1, -1))[None], len(names), axis=0)
    np.testing.assert_allclose(bare["probability"], art.predict(x, empty), atol=1e-6)
    assert np.abs(some["probability"].to_numpy() - bare["probability"].to_numpy()).max() > 1e-6


def test_serve_without_metadata_counts_the_images(meta_model):
    from starlette.testclient import TestClient

    from melanoma.config import ServeConfig
    from melanoma.serve.app import create_app
    from melanoma.serve.artifact import Artifact

    _, data, _, model = meta_model
    art = Artifact.load(model)
    image = sorted((data / "jpeg" / "test").glob("*.jpg"))[0].read_bytes()
    x = art.preprocess(image)[None]
    with TestClient(create_app(art, ServeConfig())) as client:
        r = client.post("/predict", files={"image": ("a.jpg", image, "image/jpeg")})
        assert r.status_code == 200, r.text
        assert r.json()["probability"] == pytest.approx(art.predict(x, art.meta.vector((-1, -1, -1))[None])[0],
                                                        abs=1e-6)
        r = client.post("/predict/batch", files=[("images", ("a.jpg", image, "image/jpeg"))] * 2,
                        data={"age_approx": ["40", ""]})
        assert r.status_code == 200, r.text
        assert client.get("/health").json()["metadata"] == {"used": True, "images_without_metadata": 2}


def test_models_of_the_old_metadata_layout_are_refused_in_one_line(meta_model, tmp_path):
    import shutil

    from melanoma.serve.artifact import Artifact
    from melanoma.serve.export import export

    cfg, _, run, model = meta_model
    old_model = tmp_path / "old_model"
    shutil.copytree(model, old_model)
    info = json.loads((old_model / "model.json").read_text())
    del info["metadata"]["layout"]
    (old_model / "model.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"metadata layout 1 \(12 values.*re-train") as e:
        Artifact.load(old_model)
    assert "\n" not in str(e.value)
    old_run = tmp_path / "old_run"
    shutil.copytree(run, old_run)
    run_json = json.loads((old_run / "run.json").read_text())
    del run_json["metadata_layout"]
    (old_run / "run.json").write_text(json.dumps(run_json))
    with pytest.raises(ConfigError, match="trained with metadata layout 1"):
        export(cfg, old_run, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_gallery_heat_maps_of_a_metadata_model(meta_model, tmp_path):
    """The report's Grad-CAM builds the run's model as trained (either fusion, layout 2) and explains it; a run
    of the old layout gets a note instead of a shape error."""
    import shutil

    import yaml

    from melanoma.report.gallery import heat_maps
    from melanoma.report.inputs import Run

    _, _, run, _ = meta_model
    rng = np.random.default_rng(0)
    recs = {f"IMG_{k}": {"jpeg": tf.io.encode_jpeg(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).numpy(),
                         SEX: k % 2, AGE: [40, -1][k], SITE: -1} for k in range(2)}
    rows = pd.DataFrame({"image_name": list(recs), "fold": [0, 0]})

    def as_run(path):
        return Run("r", path, "train", pd.DataFrame(), pd.DataFrame(),
                   config=yaml.safe_load((path / "config.yaml").read_text()))

    maps, note = heat_maps(as_run(run), rows, recs)
    assert note is None and sorted(maps) == sorted(recs)
    assert all(np.isfinite(m).all() and m.ndim == 2 for m in maps.values())
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    info = json.loads((old / "run.json").read_text())
    del info["metadata_layout"]
    (old / "run.json").write_text(json.dumps(info))
    maps, note = heat_maps(as_run(old), rows, recs)
    assert maps == {} and "layout 1" in note and "\n" not in note


def test_residual_fusion_trains_the_image_branch_on_the_image_only_column():
    import keras

    from melanoma.image.heads import every_column
    from melanoma.image.models import build_model
    from melanoma.image.schedules import make_loss

    model = build_model("simple_cnn", 16, None, meta_dim=META_DIM, meta_fusion="residual")
    x = tf.random.uniform([4, 16, 16, 3], 0, 255, seed=0)
    meta = tf.constant(encode(np.array([-1, -1, 0, 1]), np.array([-1, -1, 30, 50]), np.array([-1, -1, -1, 2])))
    y = tf.constant([[0.0], [1.0], [0.0], [1.0]])
    bce = make_loss(load_config(None, ["train.weights=none"]).train)
    with tf.GradientTape(persistent=True) as tape:
        out = model({"image": x, "meta": meta}, training=True)
        with_meta, image_only = bce(y, out[:, :1]), bce(y, out[:, 1:])
    assert out.shape == (4, 2)
    # the loss of both columns against the one target is their mean
    assert float(every_column(bce)(y, out)) == pytest.approx((float(with_meta) + float(image_only)) / 2, rel=1e-5)
    def size(g) -> float:
        return 0.0 if g is None else float(tf.reduce_max(tf.abs(g)))

    for var in model.trainable_variables:
        g_meta, g_image = size(tape.gradient(with_meta, var)), size(tape.gradient(image_only, var))
        if var.path.startswith(("meta_dense", "meta_logit")):  # the metadata term learns from column 0 only
            assert g_image == 0 and g_meta > 0, var.path
        else:  # the image branch from column 1 only: exactly an image-only model's gradient
            assert g_meta == 0 and g_image > 0, var.path
    # Rows without metadata: the prediction is the image-only logit plus one constant, so it ranks as it does.
    logit = np.log(out.numpy() / (1 - out.numpy()))
    shift = logit[:, 0] - logit[:, 1]
    assert shift[0] == pytest.approx(shift[1], abs=1e-5) and abs(shift[2] - shift[0]) > 1e-4
    assert keras.ops.convert_to_numpy(out).min() > 0


# ---------------------------------------------------------------- the check: without metadata, no worse than image only

def _records_where_age_gives_it_away(root, per_file: int = 64, seed: int = 0) -> list:
    """3 training files and a test file of 32-px noise; malignant images (30%) carry a faint square, and in
    every record the age alone separates the classes (70 vs 30): a model could lean on the age and learn little
    from the images. Returns the test rows (name, target, image)."""
    from melanoma.data.records import serialize_example, shard_name

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    k, test = 0, []
    for split, n_files in (("train", 3), ("test", 1)):
        for f in range(n_files):
            with tf.io.TFRecordWriter(str(root / shard_name(split, f, per_file))) as w:
                for _ in range(per_file):
                    pos = int(rng.random() < 0.3)
                    img = rng.integers(0, 100, (32, 32, 3)).astype(np.uint8)
                    if pos:
                        y, x = rng.integers(2, 22, 2)
                        img[y:y + 8, x:x + 8] += 15
                    w.write(serialize_example({
                        "image": tf.io.encode_jpeg(img).numpy(), "image_name": f"I{k}", "patient_id": k,
                        "sex": k % 2, "age_approx": 70 if pos else 30, "anatom_site_general_challenge": -1,
                        "diagnosis": 0, "target": pos}, split))
                    if split == "test":
                        test.append((f"I{k}", pos, img))
                    k += 1
    return test


@pytest.mark.slow  # two small trainings in process per case: about 40 s on 2 busy cores
@pytest.mark.parametrize("fusion", ["joint", "residual"])
def test_a_metadata_model_scores_images_without_metadata_no_worse_than_an_image_only_model(tmp_path, fusion):
    import keras
    from sklearn.metrics import roc_auc_score

    from melanoma.data.reader import find_shards
    from melanoma.image.heads import every_column
    from melanoma.image.inputs import train_dataset
    from melanoma.image.models import build_model

    test = _records_where_age_gives_it_away(tmp_path)
    shards = find_shards(str(tmp_path), 3)
    x = np.stack([t[2] for t in test])  # uint8, as the models take them
    y = [t[1] for t in test]

    def trained_auc(meta: bool) -> float:
        keras.utils.set_random_seed(0)
        cfg = load_config(None, [f"train.metadata={str(meta).lower()}", "train.meta_dropout=0.1",
                                 "train.meta_row_dropout=0.5", "train.size=32"])
        model = build_model("simple_cnn", 32, None, meta_dim=META_DIM if meta else 0, meta_fusion=fusion)
        two_columns = meta and fusion == "residual"  # [with metadata, image only]: the loss sees both
        model.compile(keras.optimizers.Adam(3e-3),
                      every_column(keras.losses.BinaryCrossentropy()) if two_columns else "binary_crossentropy")
        model.fit(train_dataset(shards.train(), cfg.train, 32, 32, None, seed=0, augment=False), epochs=8,
                  steps_per_epoch=6, verbose=0)
        # The test images come without any metadata: every row gets the all-missing vector.
        blank = np.repeat(encode(np.int64(-1), np.int64(-1), np.int64(-1))[None], len(y), axis=0)
        pred = model.predict({"image": x, "meta": blank} if meta else x, verbose=0)
        return roc_auc_score(y, pred[:, 0])  # column 0 is the prediction in both layouts

    image_only, without_meta = trained_auc(False), trained_auc(True)
    assert image_only > 0.75  # the images are learnable: the comparison means something
    assert without_meta >= image_only - 0.05, (without_meta, image_only)
