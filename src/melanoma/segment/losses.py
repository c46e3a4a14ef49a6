"""Dice + binary cross-entropy for the segmenter (keras.ops: both backends), and the held-out scores."""

from __future__ import annotations

import numpy as np

SMOOTH = 1.0  # keeps the soft Dice defined (and its gradient sane) on an empty mask


def soft_dice(y_true, y_pred):
    """Per image soft Dice of a probability map against a 0/1 mask (keras.ops)."""
    from keras import ops

    y_true = ops.cast(y_true, y_pred.dtype)
    axes = (1, 2, 3)
    inter = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * inter + SMOOTH) / (total + SMOOTH)


def dice_bce(dice_weight: float):
    """loss = dice_weight x (1 - soft Dice) + (1 - dice_weight) x mean pixel BCE, per image."""
    from keras import ops

    def loss(y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
        bce = -ops.mean(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p), axis=(1, 2, 3))
        return dice_weight * (1.0 - soft_dice(y_true, y_pred)) + (1.0 - dice_weight) * bce

    loss.__name__ = "dice_bce"
    return loss


def dice_metric(y_true, y_pred):
    """Soft Dice, for the training history."""
    return soft_dice(y_true, y_pred)


def scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per image Dice and Jaccard of boolean masks (N, H, W); two empty masks agree perfectly (1.0)."""
    axes = tuple(range(1, truth.ndim))
    inter = (truth & pred).sum(axis=axes).astype(np.float64)
    union = (truth | pred).sum(axis=axes).astype(np.float64)
    total = truth.sum(axis=axes) + pred.sum(axis=axes)
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {"dice": dice, "jaccard": jaccard}
