"""External data (ISIC 2019 layout) and upsampled malignant copies: train-only shards, never validated."""

import numpy as np
import pandas as pd
import tensorflow as tf

from conftest import textured_image, textured_layout
from melanoma.config import Config, apply_overrides
from melanoma.data.isic2019 import read_external
from melanoma.data.reader import find_shards, parse_fn
from melanoma.data.prepare import prepare


def isic2019(root, n=12):
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    names = [f"ISIC_5{i:06d}" for i in range(n)]
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    hot = np.zeros((n, 9), int)
    for i in range(n):
        hot[i, 0 if i % 4 == 0 else 1 + i % 8] = 1
    pd.concat([pd.DataFrame({"image": names}), pd.DataFrame(hot, columns=classes)], axis=1).to_csv(
        root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame({"image": names, "age_approx": 55.0,
                  "anatom_site_general": ["anterior torso", "head/neck", "posterior torso", None] * (n // 4),
                  "lesion_id": [f"BCN_{i // 2:07d}" for i in range(n)], "sex": "female"}).to_csv(
        root / "ISIC_2019_Training_Metadata.csv", index=False)
    for i, name in enumerate(names):
        textured_image(5000 + i, (50, 40)).save(root / "ISIC_2019_Training_Input" / f"{name}.jpg")
    return root


def records(path):
    parse = parse_fn("train", ("image_name", "target", "source", "anatom_site_general_challenge", "patient_id"))
    return [{k: v.numpy() for k, v in parse(r).items()} for r in tf.data.TFRecordDataset(path)]


def test_isic2019_layout_is_read_and_mapped(tmp_path):
    ext = read_external(isic2019(tmp_path / "isic"))
    rows = ext.rows
    assert ext.source == "isic2019" and len(rows) == 12 and rows.target.sum() == 3
    assert set(rows.anatom_site_general_challenge.dropna()) == {"torso", "head/neck"}
    assert rows.diagnosis[0] == "melanoma" and rows.patient_id[0] == rows.patient_id[1] == "isic2019:bcn_0000000"
    assert rows.line.tolist()[:2] == [2, 3]


def test_external_and_upsampled_images_only_train(tmp_path):
    data = textured_layout(tmp_path / "data", n_train=40, n_test=6, n_patients=10)
    ext_dir = isic2019(tmp_path / "isic")
    cfg = apply_overrides(Config(), {"prepare.size": 16, "n_folds": 2, "prepare.workers": 1,
                                     "prepare.external": [str(ext_dir)], "prepare.upsample_malignant": 3})
    m = prepare(cfg, data, tmp_path / "tf")
    train = pd.read_csv(data / "train.csv")
    assert m["counts"] == {"train": 40, "test": 6, "train_only": 12 + 3 * 2 + train.target.sum() * 2}
    shards = find_shards(str(tmp_path / "tf"))
    val = shards.validation()
    assert sum(s.count for s in val) == 40  # OOF covers the competition images only
    ext_shards = [s for s in shards.shards if s.fold == -1 and s.split == "train"]
    assert ext_shards and all(s.train_only for s in ext_shards)
    ext = [r for s in ext_shards for r in records(s.path)]
    assert len(ext) == 18 and {r["source"] for r in ext} == {b"isic2019"}
    assert sum(r["target"] for r in ext) == 3 * 3  # 3 melanomas, each written 3 times
    torso = m["vocab"]["anatom_site_general_challenge"].index("torso")
    assert any(r["anatom_site_general_challenge"] == torso for r in ext)
    comp = [r for s in val for r in records(s.path)]
    assert {r["source"] for r in comp} == {b""}
    assert not {r["patient_id"] for r in ext} & {r["patient_id"] for r in comp}
    for k in (0, 1):  # copies of fold k's malignant images: train-only, tagged k, so trained on by the other fold
        copies = [s for s in shards.shards if s.train_only and s.fold == k]
        names = {r["image_name"] for s in copies for r in records(s.path)}
        fold_pos = {r["image_name"] for s in shards.validation([k]) for r in records(s.path) if r["target"] == 1}
        assert names == fold_pos and sum(s.count for s in copies) == 2 * len(fold_pos)
        assert all(s not in shards.train(exclude=[k]) for s in copies)
