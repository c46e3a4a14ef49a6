"""Writer -> reader round trips through the one shared FEATURES description."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from helpers.layouts import make_layout, solid_image
from helpers.paths import SHARED
from melanoma.config import apply_overrides, Config
from melanoma.data.metadata import META_DIM
from melanoma.image.inputs import predict_dataset, validation_dataset
from melanoma.data.manifest import read_manifest
from melanoma.data.reader import decode_image, find_shards, parse_fn, read_index
from melanoma.data.decode import encode_image
from melanoma.data.prepare import prepare
from melanoma.data.records import VOCABULARIES, parse_shard_name, serialize_example, shard_name


def small_cfg(**values):
    return apply_overrides(Config(), {"prepare.size": 32, "n_folds": 2, **values})


def read_all(path, split):
    parse = parse_fn(split, None)
    return [{k: v.numpy() for k, v in parse(r).items()} for r in tf.data.TFRecordDataset(str(path))]


def test_prepare_round_trip_every_field(tmp_path):
    train = pd.DataFrame({
        "image_name": [f"ISIC_{i:07d}" for i in range(8)],
        "patient_id": ["IP_1", "IP_1", "IP_2", "IP_3", "IP_3", "IP_4", "IP_5", "IP_6"],
        "sex": ["male", "male", "female", None, None, "female", "male", "female"],
        "age_approx": [45.0, 45.0, None, 30.0, 30.0, 60.0, 70.0, 25.0],
        "anatom_site_general_challenge": ["torso", "head/neck", None, "lower extremity", "torso", "oral/genital",
                                          "upper extremity", "palms/soles"],
        "diagnosis": ["unknown", "melanoma", "nevus", "unknown", "unknown", "melanoma", "dermatofibroma", "nevus"],
        "target": [0, 1, 0, 0, 0, 1, 0, 0],
    })
    test = pd.DataFrame({"image_name": ["ISIC_9000000", "ISIC_9000001"], "patient_id": ["IP_9", "IP_2"],
                         "sex": ["female", None], "age_approx": [50.0, None],
                         "anatom_site_general_challenge": [None, "torso"]})
    sizes = {}

    def image_for(split, row):
        w, h = 40 + len(sizes) * 3, 30 + len(sizes)
        sizes[row["image_name"]] = (w, h)
        # textured, not a single colour: prepare flags flat images as no photograph
        rng = np.random.default_rng(len(sizes))
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    data = make_layout(tmp_path / "data", train, test, image_for)
    out = tmp_path / "tfrec"
    manifest = prepare(small_cfg(), data, out)

    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert read_manifest(str(out)).to_dict() == manifest  # what prepare wrote is what every stage reads
    assert manifest["counts"] == {"train": 8, "test": 2}
    image_sizes = pd.read_csv(out / "image_sizes.csv")  # the original sizes, for the tabular stage
    assert list(image_sizes.columns) == ["image_name", "split", "width", "height"]
    assert {r.image_name: (r.width, r.height) for r in image_sizes.itertuples()} == sizes
    assert image_sizes.split.tolist() == ["train"] * 8 + ["test"] * 2
    vocab = manifest["vocab"]
    assert vocab["anatom_site_general_challenge"][:6] == list(VOCABULARIES["anatom_site_general_challenge"])
    assert "dermatofibroma" in vocab["diagnosis"]  # unknown diagnoses are appended, not lost
    folds = pd.read_csv(out / "folds.csv")
    patients = sorted(set(train.patient_id) | set(test.patient_id))

    seen = {}
    for shard in manifest["shards"]:
        split, _, count = parse_shard_name(shard["file"])
        records = read_all(out / shard["file"], split)
        assert len(records) == count == shard["count"]
        if split == "train":  # each training shard holds one fold only
            names = {r["image_name"].decode() for r in records}
            assert set(folds[folds.image_name.isin(names)].fold) == {shard["fold"]}
        for r in records:
            seen[r["image_name"].decode()] = (split, r)
    assert len(seen) == 10

    for split, df in (("train", train), ("test", test)):
        for _, row in df.iterrows():
            rsplit, r = seen[row.image_name]
            assert rsplit == split
            assert r["patient_id"] == patients.index(row.patient_id)
            assert r["sex"] == (vocab["sex"].index(row.sex) if isinstance(row.sex, str) else -1)
            site = row.anatom_site_general_challenge
            assert r["anatom_site_general_challenge"] == (
                vocab["anatom_site_general_challenge"].index(site) if isinstance(site, str) else -1)
            assert r["age_approx"] == (int(row.age_approx) if row.age_approx == row.age_approx else -1)
            assert (r["width"], r["height"]) == sizes[row.image_name]
            if split == "train":
                assert r["target"] == row.target
                assert r["diagnosis"] == vocab["diagnosis"].index(row.diagnosis)
            else:
                assert "target" not in r and "diagnosis" not in r
            img = decode_image(r["image"], 32, 32).numpy()
            assert img.shape == (32, 32, 3) and img.dtype == np.uint8  # the models cast on the device
            img48 = decode_image(r["image"], 48, 32).numpy()  # records of another size are resized on read
            assert img48.shape == (48, 48, 3)


def test_public_kaggle_layout_is_read_without_manifest(tmp_path):
    """15 training files named trainNN-COUNT.tfrec give 5 folds of 3 consecutive files (no manifest)."""
    jpeg = encode_image_bytes()
    for i in range(15):
        with tf.io.TFRecordWriter(str(tmp_path / shard_name("train", i, 2))) as w:
            for j in range(2):
                w.write(serialize_example({"image": jpeg, "image_name": f"ISIC_{i}_{j}", "patient_id": i,
                                           "sex": 0, "age_approx": 40, "anatom_site_general_challenge": 1,
                                           "diagnosis": 0, "target": j}, "train"))
    with tf.io.TFRecordWriter(str(tmp_path / shard_name("test", 0, 1))) as w:
        w.write(serialize_example({"image": jpeg, "image_name": "ISIC_T", "patient_id": 99, "sex": 1,
                                   "age_approx": 50, "anatom_site_general_challenge": -1}, "test"))
    shards = find_shards(str(tmp_path), 5)
    assert shards.image_size is None and shards.n_folds == 5
    assert [s.fold for s in shards.train()] == [i // 3 for i in range(15)]
    assert [s.count for s in shards.test()] == [1]
    # Public records lack our optional width/height: the reader fills -1.
    rec = read_all(shards.train()[0].path, "train")[0]
    assert rec["width"] == -1 and rec["height"] == -1


def encode_image_bytes():
    import io
    buf = io.BytesIO()
    solid_image((10, 20, 30), (16, 16)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_resize_modes_give_square_rgb(tmp_path, mode):
    path = tmp_path / "a.jpg"
    Image.new("L", (90, 40), 128).save(path)  # grayscale, not square
    data, w, h = encode_image(path, 24, mode, 90)
    img = tf.io.decode_jpeg(data).numpy()
    assert img.shape == (24, 24, 3) and (w, h) == (90, 40)


def public_example(image: bytes, name: str, ints: dict[str, int]) -> bytes:
    """One record as the widely shared Kaggle SIIM-ISIC TFRecords hold it, written with tf.train.Example alone
    (not our writer): `image` and `image_name` bytes, every other field int64, no width/height/source."""
    feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
               "image_name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()]))}
    feature.update({k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) for k, v in ints.items()})
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_records_in_the_public_schema_feed_validation_and_prediction(tmp_path):
    """15 training files (5 folds of 3, each patient in one file) and a test file, named with their counts as
    the public sets are: folds, labels, metadata and images come out of our readers as written."""
    rng = np.random.default_rng(0)
    jpegs = {}
    for i in range(15):
        with tf.io.TFRecordWriter(str(tmp_path / f"train{i:02d}-2.tfrec")) as w:
            for j in range(2):
                name = f"ISIC_{100 * i + j:07d}"
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, format="JPEG")
                jpegs[name] = buf.getvalue()
                w.write(public_example(jpegs[name], name, {
                    "patient_id": i, "sex": j, "age_approx": 40 + 5 * j, "anatom_site_general_challenge": i % 6,
                    "diagnosis": 2 * j, "target": j}))
    with tf.io.TFRecordWriter(str(tmp_path / "test00-1.tfrec")) as w:
        w.write(public_example(jpegs["ISIC_0000000"], "ISIC_T", {
            "patient_id": 99, "sex": -1, "age_approx": -1, "anatom_site_general_challenge": -1}))

    shards = find_shards(str(tmp_path), 5)
    assert shards.image_size is None  # no manifest: the stored size is unknown, images are resized on read
    index = read_index(shards.train())
    assert len(index) == 30 and index.target.sum() == 15
    assert (index.fold == index.image_name.str[5:].astype(int) // 300).all()  # files 0-2 fold 0, ...

    fold1 = [s for s in shards.train() if s.fold == 1]
    (x, y), = validation_dataset(fold1, 32, None, 6, meta=True).as_numpy_iterator()
    assert x["image"].shape == (6, 32, 32, 3) and sorted(y[:, 0]) == [0, 0, 0, 1, 1, 1]
    assert x["meta"].shape == (6, META_DIM) and np.allclose(sorted(x["meta"][:, -2]), [0.4] * 3 + [0.45] * 3)

    names = np.array(["ISIC_T"])
    batch, = predict_dataset(shards.test(), names, 48, None, 1, meta=True).as_numpy_iterator()
    assert batch["idx"].tolist() == [0] and batch["meta"][0, -1] == 1  # age missing (-1) is flagged
    expected = tf.io.decode_jpeg(jpegs["ISIC_0000000"]).numpy().astype(np.float32)
    assert np.allclose(batch["image"][0], expected, atol=1e-3)  # at the stored size: the JPEG as written


@pytest.mark.shared_data  # reads ../shared, which the repository may not hold: `pytest --shared-data` only
def test_real_competition_jpegs(tmp_path):
    labels = pd.read_csv(SHARED / "siim2020_samples" / "labels.csv")
    for _, row in labels.iterrows():
        data, w, h = encode_image(SHARED / "siim2020_samples" / f"{row.image_name}.jpg", 64, "crop", 95)
        assert (w, h) == (row.w, row.h)
        assert tf.io.decode_jpeg(data).shape == (64, 64, 3)


def test_parallel_workers_write_the_same_shards(demo_subset, tmp_path):
    serial = prepare(small_cfg(**{"prepare.workers": 1}), demo_subset, tmp_path / "one")
    parallel = prepare(small_cfg(**{"prepare.workers": 2, "prepare.shard_mb": 0.01}), demo_subset, tmp_path / "two")
    assert len(parallel["shards"]) > len(serial["shards"])  # small shards: several per fold, written by 2 processes
    for manifest, out in ((serial, tmp_path / "one"), (parallel, tmp_path / "two")):
        assert sum(s["count"] for s in manifest["shards"]) == 50
        assert not list(out.glob(".*"))  # no temporary or staging files left
    names = lambda out: sorted(r["image_name"] for p in out.glob("train*.tfrec") for r in read_all(p, "train"))
    assert names(tmp_path / "one") == names(tmp_path / "two")
