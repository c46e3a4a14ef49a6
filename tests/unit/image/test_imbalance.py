"""train.imbalance.negative_ratio (ISIC 2024): each epoch draws every malignant image about once and `ratio` benign
ones per malignant, from a fresh sample, over a correspondingly shorter epoch."""

from __future__ import annotations

import pytest

from melanoma.config import load_config
from melanoma.errors import ConfigError
from melanoma.image.imbalance import imbalance


def _train(*sets: str):
    return load_config(None, ["train.weights=none", *sets]).train


def test_negative_ratio_sets_the_share_and_shortens_the_epoch():
    imb = imbalance(40, 40_000, _train("train.imbalance.negative_ratio=20"))
    assert imb.epoch_images == 40 * 21
    assert imb.sampled_share == pytest.approx(1 / 21)
    assert "negative_ratio 20 -> 840 images an epoch" in imb.describe()
    plain = imbalance(40, 40_000, _train())
    assert plain.epoch_images == 40_040 and plain.sampled_share == pytest.approx(40 / 40_040)


def test_a_ratio_above_what_the_folds_hold_keeps_every_image():
    imb = imbalance(40, 400, _train("train.imbalance.negative_ratio=20"))
    assert imb.epoch_images == 440 and imb.sampled_share == pytest.approx(40 / 440)


def test_negative_ratio_with_oversampling_is_refused_at_load():
    with pytest.raises(ConfigError, match="negative_ratio"):
        load_config(None, ["train.imbalance.negative_ratio=5", "train.imbalance.oversample=3"])
