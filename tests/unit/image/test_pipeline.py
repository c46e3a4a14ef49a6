"""Input pipeline: augmentation geometry, oversampling rate, imbalance arithmetic, LR schedule, id alignment."""

import math

import numpy as np
import pytest
import tensorflow as tf

from melanoma.config import AugmentConfig, Config, TrainConfig, apply_overrides
from melanoma.image.augment import affine_matrices, transform
from melanoma.image.inputs import predict_dataset, train_dataset
from melanoma.data.reader import Shard, read_index
from melanoma.data.records import serialize_example, shard_name
from melanoma.image.imbalance import Imbalance, class_weights, imbalance
from melanoma.image.schedules import make_schedule


def rotation_matrices(angles, size):
    zero, one = tf.zeros_like(angles), tf.ones_like(angles)
    return affine_matrices(angles, zero, one, one, zero, zero, size)


def test_identity_transform_leaves_image_unchanged():
    img = tf.random.uniform([2, 17, 17, 3], 0, 255)
    out = transform(img, rotation_matrices(tf.zeros([2]), 17))
    np.testing.assert_allclose(out.numpy(), img.numpy(), atol=1e-3)


def test_quarter_turn_matches_rot90():
    img = tf.random.uniform([1, 16, 16, 3], 0, 255)
    out = transform(img, rotation_matrices(tf.constant([math.pi / 2]), 16))
    candidates = [tf.image.rot90(img, k).numpy() for k in (1, 3)]
    assert min(np.abs(out.numpy() - c).max() for c in candidates) < 1e-2


def test_class_weights_and_oversampling_arithmetic():
    # 100 positives, 900 negatives.
    assert class_weights(100, 900, "none") == {0: 1.0, 1: 1.0}
    w = class_weights(100, 900, "balanced")
    assert w[1] == pytest.approx(1000 / 200) and w[0] == pytest.approx(1000 / 1800)
    assert w[1] * 100 == pytest.approx(w[0] * 900)  # balanced: equal total weight per class
    s = class_weights(100, 900, "sqrt")
    assert s[1] == pytest.approx(math.sqrt(5.0))

    natural = Imbalance(100, 900, 1.0, class_weights(100, 900, "none"))
    assert natural.sampled_share == pytest.approx(0.1) and natural.loss_share == pytest.approx(0.1)
    assert natural.epoch_images == 1000
    over = Imbalance(100, 900, 9.0, class_weights(100, 900, "none"))
    assert over.sampled_share == pytest.approx(0.5) and over.epoch_images == 1800
    weighted = Imbalance(100, 900, 1.0, class_weights(100, 900, "balanced"))
    assert weighted.loss_share == pytest.approx(0.5)
    stacked = Imbalance(100, 900, 9.0, class_weights(100, 900, "balanced"))
    assert stacked.loss_share == pytest.approx(0.9)  # both at once: 90% of the loss is malignant
    assert "0.9" in f"{stacked.loss_share:.1f}" and "malignant share of the loss 90.00%" in stacked.describe()


def test_imbalance_rejects_bad_settings():
    from melanoma.errors import ConfigError

    with pytest.raises(ConfigError, match="train.imbalance.oversample: expected a number >= 1, got 0.5"):
        apply_overrides(Config(), {"train.oversample": 0.5})  # refused when the config loads
    with pytest.raises(ConfigError, match="both are needed"):
        imbalance(0, 90, Config().train)
    with pytest.raises(ConfigError, match="train.imbalance.class_weight"):
        apply_overrides(Config(), {"train.class_weight": "square"})


def write_shards(root, n_files=4, per_file=50, pos_every=10, split="train", size=8):
    """Tiny records whose pixel value encodes the record number, so ids can be checked against images."""
    shards = []
    k = 0
    for f in range(n_files):
        path = root / shard_name(split, f, per_file)
        with tf.io.TFRecordWriter(str(path)) as w:
            for _ in range(per_file):
                fields = {"image": tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(k % 250, tf.uint8)),
                                                     quality=100).numpy(),
                          "image_name": f"IMG_{k:05d}", "patient_id": k, "sex": 0, "age_approx": 40,
                          "anatom_site_general_challenge": 0, "diagnosis": 0, "target": int(k % pos_every == 0)}
                w.write(serialize_example(fields, split))
                k += 1
        shards.append(Shard(str(path), split, f, per_file))
    return shards


def test_oversampling_gives_the_configured_positive_share(tmp_path):
    shards = write_shards(tmp_path)  # 10% positives
    n_pos, n_neg = 20, 180
    target_share = Imbalance(n_pos, n_neg, 4.0, {0: 1.0, 1: 1.0}).sampled_share  # 80 / 260 = 30.8%
    tcfg = TrainConfig(size=8, shuffle_buffer=256)  # the config section train_dataset reads
    # augment=False: the share is a matter of sampling; warping 5,000 images per pass only costs time
    ds = train_dataset(shards, tcfg, 8, 64, target_share, seed=1, augment=False)
    ys = np.concatenate([y.numpy().ravel() for _, y in ds.take(40)])
    assert abs(ys.mean() - target_share) < 0.02, ys.mean()
    natural = train_dataset(shards, tcfg, 8, 64, None, seed=1, augment=False)
    ys = np.concatenate([y.numpy().ravel() for _, y in natural.take(40)])
    assert abs(ys.mean() - 0.1) < 0.02, ys.mean()
    x, y = next(iter(ds))
    assert x.shape == (64, 8, 8, 3) and y.shape == (64, 1)  # static batch for TPUs


def test_predictions_carry_their_own_ids(tmp_path):
    shards = write_shards(tmp_path, n_files=3, per_file=20)
    index = read_index(shards)
    names = index["image_name"].sample(frac=1.0, random_state=0).to_numpy()  # any order of names works
    seen = {}
    for batch in predict_dataset(shards, names, 8, 8, 7):
        for idx, img in zip(batch["idx"].numpy(), batch["image"].numpy()):
            seen[names[idx]] = img[0, 0, 0]
    assert len(seen) == 60
    for name, pixel in seen.items():
        assert abs(pixel - int(name[4:]) % 250) <= 2  # the image really is the named record


def test_schedule_warms_up_then_decays():
    cfg = apply_overrides(Config(), {"train.lr_start": 1e-5, "train.lr_max_per_image": 1e-5, "train.lr_min": 1e-6,
                                     "train.warmup_epochs": 2, "train.decay": 0.5})
    sched = make_schedule(cfg.train, steps_per_epoch=10, global_batch=10)  # peak 1e-4
    lr = [float(sched(s)) for s in range(0, 60)]
    assert lr[0] == pytest.approx(1e-5)
    assert lr[10] == pytest.approx(1e-5 + (1e-4 - 1e-5) / 2)
    assert lr[20] == pytest.approx(1e-4)
    assert lr[30] == pytest.approx((1e-4 - 1e-6) * 0.5 + 1e-6)
    assert all(a <= b + 1e-12 for a, b in zip(lr[:20], lr[1:21]))
    assert all(a >= b - 1e-12 for a, b in zip(lr[20:], lr[21:])) and lr[-1] > 1e-6


# ---------------------------------------------------------------- augmentation parts

OFF = dict(flip=False, transpose=False, rotate=0.0, shear=0.0, zoom=0.0, shift=0.0, hue=0.0, saturation=0.0,
           contrast=0.0, brightness=0.0, cutout=0)


def test_augmentation_switched_off_is_the_identity_and_each_part_acts():
    from melanoma.image.augment import augment_batch

    img = tf.random.uniform([4, 24, 24, 3], 0, 255)
    np.testing.assert_array_equal(augment_batch(img, AugmentConfig(**OFF), 24).numpy(), img.numpy())
    tf.random.set_seed(3)
    for part in ({"transpose": True}, {"rotate": 30.0}, {"shear": 10.0}, {"zoom": 0.2}, {"shift": 0.1},
                 {"hue": 0.1}, {"saturation": 0.5}, {"contrast": 0.5}, {"brightness": 0.2}):
        out = augment_batch(img, AugmentConfig(**{**OFF, **part}), 24).numpy()
        assert np.abs(out - img.numpy()).max() > 1.0, part
        assert out.min() >= 0.0 and out.max() <= 255.0


def test_integer_shift_moves_the_image_and_cutout_blanks_the_configured_area():
    from melanoma.image.augment import affine_matrices, augment_batch, transform

    img = tf.random.uniform([1, 16, 16, 3], 0, 255)
    zero, one = tf.zeros([1]), tf.ones([1])
    out = transform(img, affine_matrices(zero, zero, one, one, one * 3, one * 2, 16)).numpy()
    np.testing.assert_allclose(out[0, 2:, 3:], img.numpy()[0, :-2, :-3], atol=1e-3)  # content moved by (2, 3)
    white = tf.fill([64, 40, 40, 3], 200.0)
    holes = augment_batch(white, AugmentConfig(**{**OFF, "cutout": 1, "cutout_size": 0.25, "cutout_prob": 1.0}), 40)
    blank = (holes.numpy()[..., 0] == 0).mean(axis=(1, 2))
    assert (blank > 0).all() and blank.max() <= 0.25 ** 2 + 0.01  # one hole of at most 10x10 px per image


def test_augment_layer_acts_in_training_only():
    from melanoma.image.augment import Augment

    layer = Augment({**OFF, "rotate": 90.0, "brightness": 0.2}, 16)
    img = tf.random.uniform([2, 16, 16, 3], 0, 255)
    np.testing.assert_array_equal(layer(img, training=False).numpy(), img.numpy())
    assert np.abs(layer(img, training=True).numpy() - img.numpy()).max() > 1.0


def test_meta_vector_one_hot_codes():
    from melanoma.data.metadata import META_DIM
    from melanoma.image.inputs import meta_vector

    v = meta_vector({"sex": tf.constant(1, tf.int64), "age_approx": tf.constant(50, tf.int64),
                     "anatom_site_general_challenge": tf.constant(-1, tf.int64)}).numpy()
    assert v.shape == (META_DIM,)
    np.testing.assert_array_equal(v[:3], [0, 1, 0])  # female, sex present
    np.testing.assert_array_equal(v[3:11], [0, 0, 0, 0, 0, 0, 1, 0])  # site missing flag; not "no metadata"
    np.testing.assert_allclose(v[11:], [0.5, 0.0])
    missing = meta_vector({"sex": tf.constant(-1, tf.int64), "age_approx": tf.constant(-1, tf.int64),
                           "anatom_site_general_challenge": tf.constant(3, tf.int64)}).numpy()
    np.testing.assert_array_equal(missing[:3], [0, 0, 1])
    assert missing[3 + 3] == 1 and missing[9] == 0 and missing[-2:].tolist() == [0.0, 1.0]


def test_tta_predictions_stay_aligned_with_shuffled_shards(tmp_path):
    """A 'model' that outputs its image's mean pixel: every view (plain, flips, random geometric TTA, all made
    on the device in one pass) keeps that mean for constant images, so each prediction must equal the pixel
    value its own id encodes."""
    import random

    import keras

    from melanoma.image.tta import predict, tta_model

    shards = write_shards(tmp_path, n_files=4, per_file=15)
    random.Random(0).shuffle(shards)  # shard order (and so record order) unrelated to the names' order
    image = keras.Input((8, 8, 3), name="image")
    mean = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2, 3))[:, None])(image)
    geometric = {"hue": 0.0, "saturation": 0.0, "contrast": 0.0, "brightness": 0.0}
    tcfg = apply_overrides(Config(), {"train.size": 8, "train.tta": 2, "train.tta_flips": True,
                                      **{f"train.augment.{k}": v for k, v in geometric.items()}}).train
    names = read_index(shards)["image_name"].sample(frac=1.0, random_state=1).to_numpy()
    views = predict(tta_model(keras.Model(image, mean), tcfg), shards, names, tcfg, 8, batch=7)
    assert list(views) == ["plain", "flip_lr", "flip_ud", "flip_lr_ud", "tta1", "tta2"]
    expected = np.array([int(n[4:]) % 250 for n in names], dtype=float)
    for name, pred in views.items():
        np.testing.assert_allclose(pred, expected, atol=2.5, err_msg=name)  # JPEG rounding only


def test_count_targets_reads_shards_or_trusts_the_manifest(tmp_path):
    from dataclasses import replace

    from melanoma.data.reader import count_targets

    shards = write_shards(tmp_path, n_files=2, per_file=50)  # every 10th record malignant
    assert count_targets(shards) == (10, 90)
    assert count_targets([replace(s, positives=7) for s in shards]) == (14, 86)  # manifest counts, no read
