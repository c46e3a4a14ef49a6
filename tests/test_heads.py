"""The diagnosis head: class maps, labels (numpy and tf.data agree), per-class weights, a CLI run, the export head."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from melanoma.config import Config, apply_overrides
from melanoma.data.records import VOCABULARIES, serialize_example, shard_name
from melanoma.errors import ConfigError
from melanoma.image.heads import CLASS_MAPS, Labels, head_classes
from melanoma.image.imbalance import multiclass_weights
from melanoma.image.imbalance import imbalance

from test_train import fold_aucs_above, run_cli, train_args

# Our vocabulary as prepare writes it with ISIC 2019 external data: the known names, then the others sorted.
VOCAB = list(VOCABULARIES["diagnosis"]) + ["actinic keratosis", "basal cell carcinoma", "benign keratosis",
                                           "dermatofibroma", "squamous cell carcinoma", "vascular lesion"]


def code(name: str) -> int:
    return VOCAB.index(name)


def test_winners9_maps_2020_and_2019_diagnoses_as_the_first_place_solution():
    lab = Labels.of(CLASS_MAPS["winners9"], VOCAB)
    cls = lab.cmap.classes
    assert cls == ("AK", "BCC", "BKL", "DF", "SCC", "VASC", "melanoma", "nevus", "unknown")
    assert lab.cmap.melanoma == 6
    expect = {"unknown": "unknown", "nevus": "nevus", "seborrheic keratosis": "BKL", "lentigo nos": "BKL",
              "lichenoid keratosis": "BKL", "solar lentigo": "BKL", "cafe-au-lait macule": "unknown",
              "atypical melanocytic proliferation": "unknown", "actinic keratosis": "AK",
              "basal cell carcinoma": "BCC", "benign keratosis": "BKL", "dermatofibroma": "DF",
              "squamous cell carcinoma": "SCC", "vascular lesion": "VASC"}
    names = list(expect)
    got = lab.classes(np.array([code(n) for n in names]), np.zeros(len(names)))
    assert [cls[i] for i in got] == [expect[n] for n in names]
    # missing (-1) and an out-of-vocabulary code read as unknown; target 1 is melanoma whatever the diagnosis;
    # a "melanoma" diagnosis with target 0 goes to the benign fallback
    got = lab.classes(np.array([-1, 99, code("nevus"), code("melanoma"), code("melanoma")]), np.array([0, 0, 1, 1, 0]))
    assert [cls[i] for i in got] == ["unknown", "unknown", "melanoma", "melanoma", "unknown"]


def test_isic2017_keeps_three_classes_and_drops_nothing():
    lab = Labels.of(CLASS_MAPS["isic2017"], VOCAB)
    assert lab.cmap.classes == ("melanoma", "nevus", "seborrheic keratosis")
    names = ["melanoma", "nevus", "seborrheic keratosis", "benign keratosis", "solar lentigo", "unknown",
             "basal cell carcinoma", "dermatofibroma"]
    targets = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    got = lab.classes(np.array([code(n) for n in names]), targets)
    assert [lab.cmap.classes[i] for i in got] == ["melanoma", "nevus", "seborrheic keratosis",
                                                  "seborrheic keratosis", "seborrheic keratosis", "nevus", "nevus",
                                                  "nevus"]


def test_tf_labels_match_the_numpy_rule():
    lab = Labels.of(CLASS_MAPS["winners9"], VOCAB)
    codes = np.array([-1, 0, 1, 2, 2, 3, 9, 10, 14, 40], dtype=np.int64)
    targets = np.array([0, 0, 0, 1, 0, 0, 0, 1, 0, 0], dtype=np.int64)
    onehot = lab.one_hot({"diagnosis": tf.constant(codes), "target": tf.constant(targets)}).numpy()
    np.testing.assert_array_equal(onehot.argmax(1), lab.classes(codes, targets))
    assert onehot.sum(1).tolist() == [1.0] * len(codes)
    # melanoma's column is exactly the target: the validation AUC is melanoma vs rest
    np.testing.assert_array_equal(onehot[:, lab.cmap.melanoma], targets)
    soft = lab.one_hot({"diagnosis": tf.constant(codes[:2]), "target": tf.constant([-1, -1], tf.int64),
                        "soft_target": tf.constant([0.3, -1.0])}).numpy()
    assert soft[0, 6] == pytest.approx(0.3) and soft[0, 8] == pytest.approx(0.7) and soft[1, 8] == 1.0
    # another data set's codes are not ours: only its target counts (benign -> the map's default class)
    ds = tf.data.Dataset.from_tensor_slices({"diagnosis": tf.constant([1, 1], tf.int64),
                                             "target": tf.constant([0, 1], tf.int64)})
    got = [lab.one_hot(ex).numpy().argmax() for ex in lab.without_diagnosis(ds)]
    assert [lab.cmap.classes[i] for i in got] == ["unknown", "melanoma"]


def test_class_weights_per_class():
    counts = (0, 10, 30, 0, 0, 0, 20, 140, 0)  # 4 classes present, 200 images
    w = multiclass_weights(counts, "balanced")
    assert w[1] == pytest.approx(200 / (4 * 10)) and w[7] == pytest.approx(200 / (4 * 140))
    assert w[0] == 1.0  # absent: never used
    # balanced: each present class carries the same share of the loss
    assert {round(w[c] * n, 9) for c, n in enumerate(counts) if n} == {50.0}
    assert multiclass_weights(counts, "sqrt")[6] == pytest.approx(np.sqrt(200 / 80))
    assert set(multiclass_weights(counts, "none").values()) == {1.0}
    cfg = apply_overrides(Config(), {"train.head": "diagnosis", "train.class_weight": "balanced"})
    imb = imbalance(20, 180, cfg.train, counts, 6)
    assert imb.loss_share == pytest.approx(0.25)  # melanoma is one of 4 balanced classes
    assert "6: 20 x 2.500" in imb.describe()
    binary = imbalance(20, 180, apply_overrides(Config(), {"train.class_weight": "balanced"}).train)
    assert binary.loss_share == pytest.approx(0.5) and binary.weights == {0: 200 / 360, 1: 5.0}


def test_head_config():
    assert head_classes(Config().train) == (1, None)
    cfg = apply_overrides(Config(), {"train.head": "diagnosis", "train.class_map": "isic2017"})
    assert head_classes(cfg.train) == (3, 0)
    with pytest.raises(ConfigError, match="class_map"):
        apply_overrides(Config(), {"train.class_map": "isic2016"})
    with pytest.raises(ConfigError, match="focal_alpha"):
        apply_overrides(Config(), {"train.head": "diagnosis", "train.loss": "focal", "train.focal_alpha": 0.5})


def test_export_head_outputs_the_melanoma_column():
    from melanoma.image.models import build_model, melanoma_output, prediction_model

    model = build_model("simple_cnn", 32, None, classes=9)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    probs = np.asarray(model.predict_on_batch(x))
    assert probs.shape == (4, 9) and np.allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.asarray(melanoma_output(model, 6).predict_on_batch(x))[:, 0], probs[:, 6],
                               rtol=1e-5)
    res = prediction_model(model, 6).predict_on_batch({"image": x, "idx": np.arange(4, dtype="int32")})
    np.testing.assert_allclose(np.asarray(res["pred"])[:, 0], probs[:, 6], rtol=1e-5)


def write_diagnosis_records(root: Path, per_file: int = 32, size: int = 32, n_folds: int = 3) -> None:
    """Public-layout records: melanoma (bright square, target 1), nevus (dark), seborrheic keratosis (stripes)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n_files in (("train", n_folds), ("test", 1)):
        for f in range(n_files):
            with tf.io.TFRecordWriter(str(root / shard_name(split, f, per_file))) as w:
                for _ in range(per_file):
                    kind = k % 4  # 0 melanoma, 1-2 nevus, 3 seborrheic keratosis
                    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                    if kind == 0:
                        y, x = rng.integers(2, size - 12, 2)
                        img[y:y + 10, x:x + 10] = 230
                    elif kind == 3:
                        img[::4] = 160
                    diagnosis = {0: "melanoma", 1: "nevus", 2: "nevus", 3: "seborrheic keratosis"}[kind]
                    w.write(serialize_example({
                        "image": tf.io.encode_jpeg(img, quality=95).numpy(), "image_name": f"IMG_{k:04d}",
                        "patient_id": k, "sex": 0, "age_approx": 40, "anatom_site_general_challenge": 0,
                        "diagnosis": VOCABULARIES["diagnosis"].index(diagnosis), "target": int(kind == 0)}, split))
                    k += 1


@pytest.mark.slow  # a train subprocess and an export: about 90 s on 2 busy cores
def test_diagnosis_head_trains_through_the_cli(tmp_path):
    rec, out = tmp_path / "rec", tmp_path / "run"
    write_diagnosis_records(rec)
    res = run_cli(train_args(rec, out, 3, "--set", "train.head=diagnosis", "--set", "train.class_map=isic2017",
                             "--set", "train.class_weight=balanced", "--fold-ids", "0,1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "class map isic2017" in res.stderr and "seborrheic keratosis -> seborrheic keratosis" in res.stderr
    # 2 folds x 32 training images: 16 melanoma, 32 nevus, 16 SK -> balanced weights 64 / (3 n_c)
    assert "0: 16 x 1.333, 1: 32 x 0.667, 2: 16 x 1.333" in res.stderr
    oof = pd.read_csv(out / "oof.csv")
    assert len(oof) == 64 and oof.pred.between(0, 1).all() and set(oof.target) == {0, 1}
    assert fold_aucs_above(oof, 0.7)  # the melanoma column ranks the bright squares first
    test = pd.read_csv(out / "test_pred.csv")
    assert len(test) == 32 and test.target.between(0, 1).all()
    history = pd.read_csv(out / "fold0" / "history.csv")
    assert history.val_auc.notna().all()
    assert json.loads((out / "fold0" / "done.json").read_text())["best_val_auc"] == pytest.approx(history.val_auc.max())

    # The exported model (both folds in one graph) outputs the melanoma probability: the run's test predictions
    from melanoma.config import load_config
    from melanoma.serve.artifact import Artifact
    from melanoma.serve.export import export

    export(load_config(None, ["export.savedmodel=false", "export.onnx=false", f"export.tfrecords={rec}"]), out,
           tmp_path / "model")
    ds = tf.data.TFRecordDataset(str(rec / shard_name("test", 0, 32))).map(
        lambda r: tf.io.parse_single_example(r, {"image": tf.io.FixedLenFeature([], tf.string),
                                                 "image_name": tf.io.FixedLenFeature([], tf.string)}))
    recs = list(ds.as_numpy_iterator())
    x = np.stack([tf.io.decode_jpeg(r["image"]).numpy().astype("float32") for r in recs])
    art = Artifact.load(tmp_path / "model")
    meta = None
    if art.uses_meta:  # the scratch recipe joins the metadata: every record has sex 0, age 40, site 0
        from melanoma.image.inputs import meta_vector

        vec = meta_vector({k: tf.constant(v, tf.int64) for k, v in
                           (("sex", 0), ("age_approx", 40), ("anatom_site_general_challenge", 0))}).numpy()
        meta = np.tile(vec, (len(x), 1))
    got = art.predict(x, meta)
    want = test.set_index("image_name").loc[[r["image_name"].decode() for r in recs], "target"].to_numpy()
    assert got.shape == (32,) and want.std() > 1e-4
    np.testing.assert_allclose(got, want, atol=1e-5)
