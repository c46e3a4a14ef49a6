"""Extra training sources (image/extras.py): external TFRecords, pseudo-labels, fold-tagged shards, batch shares.

The records are 32px images in the public Kaggle layout (as in test_train.py); external and pseudo-labelled
images carry their own name prefixes, so any of them reaching a validation set or the OOF would show.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from melanoma.config import Config, apply_overrides, load_config
from melanoma.data.records import feature_description, serialize_example, shard_name
from melanoma.errors import ConfigError
from melanoma.image.sources import epoch_images, fold_counts, mix_weights, source_dataset, sources_from_folder
from melanoma.image.inputs import train_dataset
from melanoma.data.reader import find_shards, lenient_parse

N_FOLDS = 3


def write_records(folder: Path, prefix: str, n_files: int, per_file: int, split: str = "train", seed: int = 0,
                  extra: dict | None = None, fields: tuple | None = None, side: int = 32) -> list[str]:
    """Files SPLITnn-COUNT.tfrec of SIDE px images named PREFIX_nnnn; every 4th is malignant (a bright square).
    `fields` limits the written features (a foreign schema); `extra` adds fixed values to every record."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names, k = [], 0
    for f in range(n_files):
        with tf.io.TFRecordWriter(str(folder / shard_name(split, f, per_file))) as w:
            for _ in range(per_file):
                pos = int(k % 4 == 0)
                img = rng.integers(0, 60, (side, side, 3)).astype(np.uint8)
                if pos:
                    img[8:18, 8:18] = 230
                values = {"image": tf.io.encode_jpeg(img, quality=95).numpy(), "image_name": f"{prefix}_{k:04d}",
                          "patient_id": k, "sex": k % 2, "age_approx": 40, "anatom_site_general_challenge": 0,
                          "diagnosis": 0, "target": pos, **(extra or {})}
                if fields is None:
                    w.write(serialize_example(values, split))
                else:  # a foreign schema: only some fields, written by hand
                    feats = {n: (tf.train.Feature(bytes_list=tf.train.BytesList(value=[v if isinstance(v, bytes)
                                                                                     else v.encode()]))
                                 if isinstance(v, (bytes, str)) else
                                 tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)])))
                             for n, v in values.items() if n in fields}
                    w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
                names.append(f"{prefix}_{k:04d}")
                k += 1
    return names


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("extras")
    train = write_records(root / "rec", "COMP", N_FOLDS, 40)
    test = write_records(root / "rec", "TEST", 1, 40, split="test", seed=1)
    # ISIC 2019-like: image, image_name, target only (no metadata fields), 2 files of 60
    ext = write_records(root / "ext", "EXT", 2, 60, seed=2, fields=("image", "image_name", "target"))
    return root, train, test, ext


# ---------------------------------------------------------------- sources and mixing

def test_manifest_tags_limit_a_shard_to_its_fold_and_counts_per_fold(tmp_path):
    folder = tmp_path / "synth"
    write_records(folder, "SYN", 3, 10)
    shards = [{"file": shard_name("train", k, 10), "split": "train", "fold": k, "count": 10, "train_only": True,
               "source": f"synthetic:{k}"} for k in range(2)]
    shards.append({"file": shard_name("train", 2, 10), "split": "train", "fold": -1, "count": 10,
                   "train_only": True, "source": "other:1"})  # another kind's shard: not this source's
    (folder / "manifest.json").write_text(json.dumps({"image_size": 32, "n_folds": 3, "shards": shards}))
    sources = sources_from_folder("synthetic", str(folder), 0.2)
    assert sorted((sorted(s.folds), s.images) for s in sources) == [([0], 10), ([1], 10)]
    assert [fold_counts(sources, k) for k in range(3)] == [{"synthetic": 10}, {"synthetic": 10}, {}]
    # the cap holds when the natural rate is higher; below it the natural rate stays
    assert mix_weights(30, [sources[0]]) == pytest.approx([0.8, 0.2])
    assert mix_weights(90, [sources[0]]) == pytest.approx([0.9, 0.1])
    # one cap for a kind: two capped sources of 10 beside 20 base images share 0.2 (natural rate 0.5)
    assert mix_weights(20, sources) == pytest.approx([0.8, 0.1, 0.1])
    # an epoch still draws the base images about once: 20 base + 5 capped, or 80 base + 10 at the natural rate
    assert epoch_images(20, [sources[0]]) == 25 and epoch_images(80, [sources[0]]) == 90


def _batches_share(ds, n_batches, is_extra) -> float:
    ys = np.concatenate([y.numpy()[:, 0] for _, y in ds.take(n_batches)])
    return float(np.mean(is_extra(ys)))


def test_share_caps_the_extra_images_of_a_batch_and_soft_labels_are_the_labels(data, tmp_path):
    root, *_ = data
    # 120 pseudo-labelled images of soft label 0.3: only they have a label strictly between 0 and 1.
    write_records(tmp_path / "pseudo", "PSE", 2, 60, seed=3, extra={"soft_target": 0.3})
    cfg = apply_overrides(Config(), {"train.size": 32, "train.augment.where": "data"}).train
    base = find_shards(str(root / "rec"), N_FOLDS).train(exclude=[0])  # 80 images
    is_pseudo = lambda y: np.isclose(y, 0.3)  # noqa: E731
    natural = sources_from_folder("pseudo", str(tmp_path / "pseudo"))
    capped = sources_from_folder("pseudo", str(tmp_path / "pseudo"), 0.2)
    for sources, expected in ((natural, 0.6), (capped, 0.2)):
        ds = train_dataset(base, cfg, None, 50, None, 0, augment=False, extras=sources, base_images=80)
        assert _batches_share(ds, 40, is_pseudo) == pytest.approx(expected, abs=0.04)
    ds = train_dataset(base, cfg, None, 50, None, 0, augment=False)
    assert _batches_share(ds, 4, is_pseudo) == 0  # and without the source, none


def test_extra_images_stored_at_another_side_are_resized(data, tmp_path):
    root, *_ = data
    write_records(tmp_path / "big", "BIG", 1, 20, side=48)  # the competition shards are 32 px, stored as such
    cfg = apply_overrides(Config(), {"train.size": 32, "train.augment.where": "data"}).train
    base = find_shards(str(root / "rec"), N_FOLDS).train(exclude=[0])
    extras = sources_from_folder("x", str(tmp_path / "big"))
    ds = train_dataset(base, cfg, 32, 25, None, 0, augment=False, extras=extras, base_images=80)
    for x, _ in ds.take(3):
        assert x.shape == (25, 32, 32, 3)


def test_soft_target_round_trips_and_older_records_parse_without_it():
    soft = serialize_example({"image": b"x", "image_name": "A", "patient_id": 1, "sex": 0, "age_approx": 30,
                              "anatom_site_general_challenge": 0, "diagnosis": -1, "target": 1,
                              "soft_target": 0.875}, "train")
    plain = serialize_example({"image": b"x", "image_name": "B", "patient_id": 1, "sex": 0, "age_approx": 30,
                               "anatom_site_general_challenge": 0, "diagnosis": 0, "target": 0}, "train")
    assert b"soft_target" not in plain  # prepare's shards keep their bytes
    desc = feature_description("train", ("image_name", "soft_target", "target"))
    assert float(tf.io.parse_single_example(soft, desc)["soft_target"]) == pytest.approx(0.875)
    assert float(tf.io.parse_single_example(plain, desc)["soft_target"]) == -1.0


# ---------------------------------------------------------------- external data

def test_external_labels_from_the_companion_csv_and_hash_duplicates_dropped(data, tmp_path):
    root, train, _, ext = data
    folder = tmp_path / "ext"
    folder.mkdir()
    for f in (root / "ext").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    # The CSV's diagnosis text decides the label (MEL = melanoma), whatever the records' target says; two
    # external images share a hash with competition images.
    diagnosis = ["MEL" if i % 3 == 0 else "NV" for i in range(len(ext))]
    hashes = [f"h{i}" for i in range(len(ext))]
    hashes[5], hashes[7] = "c1", "c2"
    pd.DataFrame({"image_name": ext, "diagnosis": diagnosis, "image_hash": hashes}).to_csv(folder / "train.csv",
                                                                                          index=False)
    comp = tmp_path / "comp"
    comp.mkdir()
    pd.DataFrame({"image_name": train[:3], "image_hash": ["c1", "c2", "c3"]}).to_csv(comp / "image_hashes.csv",
                                                                                    index=False)
    from melanoma.image.external_sources import external_sources

    cfg = apply_overrides(Config(), {"train.external": [str(folder)]})
    (source,) = external_sources(cfg, None, str(comp))
    assert source.drop == {ext[5], ext[7]} and source.images == len(ext) - 2
    seen = {}
    for ex in source_dataset(source, ("image_name", "target", "soft_target"), 0).take(10 * len(ext)):
        seen[ex["image_name"].numpy().decode()] = int(ex["target"])
    assert set(seen) == set(ext) - {ext[5], ext[7]}
    assert all(seen[n] == int(d == "MEL") for n, d in zip(ext, diagnosis) if n in seen)
    # no hashes on the competition side: nothing dropped (the log says so)
    (source,) = external_sources(cfg, None, str(root / "rec"))
    assert source.drop == frozenset()


def test_external_slug_resolves_on_kaggle_and_push_attaches_it(tmp_path):
    from melanoma.image.external_sources import resolve_external
    from melanoma.kaggle import notebooks
    from melanoma.runtime.datasets import external_dataset
    from melanoma.runtime.place import Place

    assert external_dataset("isic2019", 384) == "cdeotte/isic2019-384x384"
    assert external_dataset("isic2019", 300) == "cdeotte/isic2019-384x384"  # the next published side up
    assert external_dataset("alice/my-ext", 384) == "alice/my-ext" and external_dataset(str(tmp_path), 384) is None
    place = Place("kaggle", str(tmp_path / "input"), str(tmp_path / "working"))
    with pytest.raises(ConfigError, match="not attached"):
        resolve_external("isic2019", 384, place)
    for mount in (tmp_path / "input" / "isic2019-384x384",  # the old mount, then today's (found first)
                  tmp_path / "input" / "datasets" / "cdeotte" / "isic2019-384x384"):
        mount.mkdir(parents=True)
        assert resolve_external("isic2019", 384, place) == str(mount)
    cfg = apply_overrides(Config(), {"prepare.size": 384, "train.external": ["isic2019", "alice/my-ext"]})
    meta = notebooks.kernel_metadata(cfg, "alice/melanoma-tpu", "tpu", "nb.ipynb")
    assert {"cdeotte/melanoma-384x384", "cdeotte/isic2019-384x384", "alice/my-ext"} <= set(meta["dataset_sources"])


# ---------------------------------------------------------------- pseudo-labels

def fake_run(folder: Path, oof: pd.DataFrame, test: pd.DataFrame) -> Path:
    folder.mkdir(parents=True)
    oof.to_csv(folder / "oof.csv", index=False)
    test.to_csv(folder / "test_pred.csv", index=False)
    return folder


def make_pseudo(data, tmp_path, cli: bool = False) -> tuple[Path, pd.DataFrame]:
    """Two fake image runs (OOF and test predictions, test rows in different orders) -> `melanoma pseudo`
    (through the CLI, or in this process: seconds less)."""
    root, train, test, _ = data
    rng = np.random.default_rng(0)
    y = np.array([int(i % 4 == 0) for i in range(len(train))])
    score = np.array([int(i % 4 == 0) * 0.8 + 0.1 for i in range(len(test))])  # malignant test images high
    runs = []
    for r in range(2):
        oof = pd.DataFrame({"image_name": train, "target": y, "pred": y * 0.5 + rng.uniform(0, 0.5, len(y)),  # probabilities: in [0, 1]
                            "fold": [i // 40 for i in range(len(train))]})
        t = pd.DataFrame({"image_name": test, "target": score + rng.uniform(-0.05, 0.05, len(test))})
        runs.append(fake_run(tmp_path / f"run{r}", oof, t.sample(frac=1, random_state=r)))
    out = tmp_path / "pseudo"
    if cli:
        res = run_cli(["pseudo", "--runs", *map(str, runs), "--out", str(out), "--tfrecords", str(root / "rec"),
                       "--min-confidence", "0.7", "--set", f"n_folds={N_FOLDS}"])
        assert res.returncode == 0, res.stderr[-3000:]
    else:
        from melanoma.pseudo.labels import write_pseudo

        write_pseudo(pseudo_config(), runs, str(root / "rec"), out)
    return out, pd.read_csv(out / "pseudo_labels.csv")


def pseudo_config() -> Config:
    return apply_overrides(Config(), {"n_folds": N_FOLDS, "pseudo.min_confidence": 0.7})


def test_pseudo_writes_soft_labels_that_round_trip(data, tmp_path):
    root, _, test, _ = data
    out, labels = make_pseudo(data, tmp_path)
    assert len(labels) and set(labels.image_name) <= set(test)
    p = labels.soft_target
    assert ((p >= 0.7) | (p <= 0.3)).all() and (labels.target == (p >= 0.5)).all()
    # malignant test images (every 4th) got the high labels: the blend was joined by name, not row order
    assert all((int(n.split("_")[1]) % 4 == 0) == (t == 1) for n, t in zip(labels.image_name, labels.target))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["count"] for s in manifest["shards"]) == len(labels)
    parse = lenient_parse(("image", "image_name", "target", "soft_target", "sex"))
    records = {}
    for s in manifest["shards"]:
        for r in tf.data.TFRecordDataset(str(out / s["file"])).map(parse):
            records[r["image_name"].numpy().decode()] = r
    truth = {r["image_name"].numpy().decode(): r for r in
             tf.data.TFRecordDataset(str(root / "rec" / shard_name("test", 0, 40))).map(
                 lenient_parse(("image", "image_name", "sex")))}
    for row in labels.itertuples():
        rec = records[row.image_name]
        assert float(rec["soft_target"]) == pytest.approx(row.soft_target, abs=1e-6)
        assert int(rec["target"]) == row.target
        assert rec["image"].numpy() == truth[row.image_name]["image"].numpy()  # the test image itself
        assert int(rec["sex"]) == int(truth[row.image_name]["sex"])
    from melanoma.pseudo.labels import write_pseudo

    with pytest.raises(ConfigError, match="already holds"):  # never overwritten
        write_pseudo(pseudo_config(), [tmp_path / "run0"], str(root / "rec"), out)


# ---------------------------------------------------------------- training with them

def run_cli(args, **kw):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
    return subprocess.run([sys.executable, "-m", "melanoma", *args], capture_output=True, text=True, env=env, **kw)


TRAIN = ["--model", "small_cnn_32", "--size", "32", "--epochs", "1", "--batch-size", "16", "--weights", "none",
         "--set", f"n_folds={N_FOLDS}", "--set", "train.tensorboard=false", "--set", "train.verbose=0"]


@pytest.mark.slow  # a train subprocess: ~30 s on 2 cores
def test_external_and_pseudo_train_every_fold_but_never_enter_validation_or_oof(data, tmp_path):
    root, train, test, ext = data
    pseudo, labels = make_pseudo(data, tmp_path, cli=True)
    out = tmp_path / "run"
    res = run_cli(["train", "--tfrecords", str(root / "rec"), "--out", str(out), *TRAIN,
                   "--set", f"train.external=[{root / 'ext'}]", "--set", f"train.pseudo={pseudo}",
                   "--set", "train.pseudo_share=0.1"])
    assert res.returncode == 0, res.stderr[-3000:]
    oof = pd.read_csv(out / "oof.csv")
    assert sorted(oof.image_name) == sorted(train)  # exactly the competition's training images
    for k in range(N_FOLDS):
        fold_oof = pd.read_csv(out / f"fold{k}" / "oof.csv")
        assert sorted(fold_oof.image_name) == train[40 * k:40 * (k + 1)]  # validation = fold k's own file
        assert not set(fold_oof.image_name) & (set(ext) | set(labels.image_name))
        assert f"fold {k}: extra training data: external 120 images" in res.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for k in map(str, range(N_FOLDS)):
        assert metrics["folds"][k]["external_images"] == 120
        assert metrics["folds"][k]["extra_images"] == {"external": 120, "pseudo": len(labels)}
    assert sorted(pd.read_csv(out / "test_pred.csv").image_name) == sorted(test)
    assert "duplicates of competition images are not dropped" in res.stderr


# ---------------------------------------------------------------- variants

def test_variants_are_validated_like_the_config():
    with pytest.raises(ConfigError, match=r"variants\[0\].train.sizee"):
        load_config(None, ["variants=[{name: a, train: {sizee: 32}}]"])
    with pytest.raises(ConfigError, match=r"variants\[0\].train.size: expected an integer >= 8"):
        load_config(None, ["variants=[{name: a, train: {size: 2}}]"])
    with pytest.raises(ConfigError, match="distinct"):
        load_config(None, ["variants=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="folder name"):
        load_config(None, ["variants=[{name: ../x}]"])
    from melanoma.config.variants import variant_configs

    cfg = load_config(None, ["train.epochs=2", "variants=[{name: a, seed: 7, train: {size: 64, augment: {rotate: 5}}},"
                                               " {name: b}]"])
    (na, a), (nb, b) = variant_configs(cfg)
    assert (na, a.seed, a.train.size, a.train.epochs, a.train.augment.rotate) == ("a", 7, 64, 2, 5.0)
    assert (nb, b.seed, b.train.size, b.train.epochs) == ("b", 42, 256, 2)  # the train section as it is


@pytest.mark.slow  # two runs of two variants through the CLI: ~60 s on 2 cores
def test_variants_train_one_folder_each_blend_all_and_a_second_run_reuses_them(data, tmp_path):
    root, train, test, _ = data
    out = tmp_path / "out"
    config = tmp_path / "variants.yaml"
    config.write_text(f"""
n_folds: {N_FOLDS}
stages: [train, blend]
paths: {{data: {tmp_path / 'nodata'}, tfrecords: {root / 'rec'}, runs: {out}/runs,
        submission: {out}/sub/submission.csv}}
train: {{model: small_cnn_32, size: 32, epochs: 1, batch_size: 16, weights: none, verbose: 0, tensorboard: false}}
variants:
  - {{name: s1, seed: 1}}
  - {{name: s2, seed: 2, train: {{dropout: 0.3}}}}
""")
    res = run_cli(["run", "--config", str(config)])
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("s1", "s2"):
        folder = out / "runs" / f"image-{name}"
        assert sorted(pd.read_csv(folder / "oof.csv").image_name) == sorted(train)
        assert all((folder / f"fold{k}" / "done.json").is_file() for k in range(N_FOLDS))
    assert not (out / "runs" / "image").exists()
    blend = json.loads((out / "sub" / "blend.json").read_text())
    assert sorted(Path(r["path"]).name for r in blend["runs"]) == ["image-s1", "image-s2"]
    assert sorted(pd.read_csv(out / "sub" / "submission.csv").image_name) == sorted(test)
    assert "s1 OOF AUC" in res.stdout and "s2 OOF AUC" in res.stdout
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("image-*/fold*/done.json")}
    res = run_cli(["run", "--config", str(config)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("already finished") == 2  # each variant kept, nothing retrained
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("image-*/fold*/done.json")}


def test_a_chained_session_adopts_finished_folds_per_variant_folder(tmp_path):
    from melanoma.run import adopt_previous_session

    previous = tmp_path / "input" / "runs"  # the earlier session's output, attached read-only
    for name, folds in (("image-s1", [0, 1, 2]), ("image-s2", [0])):
        (previous / name).mkdir(parents=True)
        (previous / name / "resume.json").write_text("{}")
        for k in folds:
            (previous / name / f"fold{k}").mkdir()
            (previous / name / f"fold{k}" / "done.json").write_text(json.dumps({"fold": k, "from": name}))
    runs = tmp_path / "working" / "runs"
    (runs / "image-s2" / "fold0").mkdir(parents=True)  # already here: kept, never replaced
    (runs / "image-s2" / "fold0" / "mine.txt").write_text("x")
    copied = adopt_previous_session(previous, [runs / "image-s1", runs / "image-s2", runs / "image-s3"])
    assert copied == {"image-s1": ["fold0", "fold1", "fold2"], "image-s2": [], "image-s3": []}
    assert json.loads((runs / "image-s1" / "fold2" / "done.json").read_text())["from"] == "image-s1"
    assert (runs / "image-s1" / "resume.json").is_file() and (runs / "image-s2" / "fold0" / "mine.txt").is_file()
    assert not (runs / "image-s2" / "fold0" / "done.json").exists()
