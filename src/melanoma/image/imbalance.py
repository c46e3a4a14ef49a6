"""Class imbalance: oversampling in tf.data and class weights in the loss, from the training folds' counts.

The two are separate settings; `Imbalance.describe` states what they add up to (the malignant share of the
images drawn and of the loss), so they are never stacked by accident.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from melanoma.config import TrainConfig
from melanoma.data.manifest import Manifest, Shard
from melanoma.data.schema import TARGET
from melanoma.errors import ConfigError


@dataclass(frozen=True)
class Imbalance:
    n_pos: int
    n_neg: int
    oversample: float
    weights: dict[int, float]  # class -> loss weight
    # Diagnosis head: training images per class (melanoma included) and melanoma's class; () for the binary head
    class_counts: tuple[int, ...] = ()
    melanoma: int = 1
    negative_ratio: float | None = None  # benign images drawn per malignant one in an epoch (train.imbalance)

    @property
    def natural_share(self) -> float:
        return self.n_pos / (self.n_pos + self.n_neg)

    @property
    def sampled_share(self) -> float:
        """Positive share of the images drawn per epoch (each positive drawn `oversample` times as often)."""
        return self.oversample * self.n_pos / (self.oversample * self.n_pos + self.n_neg)

    @property
    def loss_share(self) -> float:
        """Positive share of the loss per epoch: what the model effectively sees."""
        s, w0, w1 = self.sampled_share, self.benign_weight, self.weights[self.melanoma]
        return w1 * s / (w1 * s + w0 * (1 - s))

    @property
    def benign_weight(self) -> float:
        """Mean loss weight of a non-melanoma image (the binary head: class 0's weight)."""
        if not self.class_counts:
            return self.weights[0]
        rest = [(c, n) for c, n in enumerate(self.class_counts) if c != self.melanoma]
        return sum(self.weights[c] * n for c, n in rest) / max(1, sum(n for _, n in rest))

    @property
    def epoch_images(self) -> int:
        if self.negative_ratio is not None:  # every malignant image about once, with its share of benign ones
            return min(self.n_pos + self.n_neg, int(round(self.n_pos * (1 + self.negative_ratio))))
        return int(round(self.n_neg + self.oversample * self.n_pos))

    def describe(self) -> str:
        if self.class_counts:  # the diagnosis head: melanoma drawn at its share, the other classes as they come
            per_class = ", ".join(f"{c}: {n} x {self.weights[c]:.3f}" for c, n in enumerate(self.class_counts))
            weights = f"images x class weight per class {per_class}"
        else:
            weights = f"class weights 0: {self.weights[0]:.3f}, 1: {self.weights[1]:.3f}"
        drawn = (f"negative_ratio {self.negative_ratio:g} -> {self.epoch_images} images an epoch, "
                 if self.negative_ratio is not None else f"oversample x{self.oversample:g} -> ")
        return (f"{self.n_pos + self.n_neg} training images, {self.n_pos} malignant ({self.natural_share:.2%}); "
                f"{drawn}{self.sampled_share:.2%} of images drawn; {weights} "
                f"-> malignant share of the loss {self.loss_share:.2%}")


def class_weights(n_pos: int, n_neg: int, mode: str) -> dict[int, float]:
    """Loss weights from the training-fold counts: balanced = n / (2 n_c); sqrt = its square root.
    (Settings are validated when the config loads: `mode` is one of none | balanced | sqrt.)"""
    if mode == "none":
        return {0: 1.0, 1: 1.0}
    n = n_pos + n_neg
    w = {0: n / (2 * n_neg), 1: n / (2 * n_pos)}
    return {k: math.sqrt(v) for k, v in w.items()} if mode == "sqrt" else w


def imbalance(n_pos: int, n_neg: int, tcfg: TrainConfig, class_counts: tuple[int, ...] = (),
              melanoma: int = 1) -> Imbalance:
    """Sampling and loss weights from the training-fold counts; `positive_share` sets the oversampling factor.
    With `class_counts` (the diagnosis head) the class weights are per class (multiclass_weights)."""
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"the training folds have {n_pos} malignant and {n_neg} benign images: both are needed")
    oversample = tcfg.imbalance.oversample
    if tcfg.imbalance.positive_share is not None:
        share, natural = tcfg.imbalance.positive_share, n_pos / (n_pos + n_neg)
        if not natural <= share < 1:
            raise ConfigError(f"train.imbalance.positive_share must be in [{natural:.4f}, 1) (the natural share of the "
                              f"training folds up to all-malignant), got {share}")
        oversample = share / (1 - share) * n_neg / n_pos
    ratio = tcfg.imbalance.negative_ratio
    if ratio is not None and ratio * n_pos < n_neg:  # else there are too few benign images to thin out
        oversample = n_neg / (ratio * n_pos)  # the share 1 / (1 + ratio), drawn over a shorter epoch
    else:
        ratio = None
    if class_counts:
        return Imbalance(n_pos, n_neg, oversample, multiclass_weights(class_counts, tcfg.imbalance.class_weight),
                         tuple(class_counts), melanoma, ratio)
    return Imbalance(n_pos, n_neg, oversample, class_weights(n_pos, n_neg, tcfg.imbalance.class_weight),
                     negative_ratio=ratio)


def training_counts(shardset: Manifest, index: pd.DataFrame, fold: int, extra: dict[Shard, tuple[int, int]]
                    ) -> tuple[int, int]:
    """(malignant, benign) images in fold's training pool: the other folds plus train-only shards (external
    data, upsampled copies) not tagged with this fold."""
    rest = index[index["fold"] != fold]
    pos, neg = int(rest[TARGET].sum()), int((rest[TARGET] == 0).sum())
    for shard, (p, n) in extra.items():
        if shard.fold != fold:
            pos, neg = pos + p, neg + n
    return pos, neg


def multiclass_weights(counts: tuple[int, ...], mode: str) -> dict[int, float]:
    """Loss weight per class from the training-fold counts: balanced = n / (K n_c) over the K classes present
    (each present class then carries the same share of the loss); sqrt = its square root; absent classes 1."""
    if mode == "none":
        return {c: 1.0 for c in range(len(counts))}
    present = [c for c, k in enumerate(counts) if k > 0]
    total = sum(counts)
    w = {c: (total / (len(present) * counts[c]) if counts[c] else 1.0) for c in range(len(counts))}
    return {c: math.sqrt(v) for c, v in w.items()} if mode == "sqrt" else w
