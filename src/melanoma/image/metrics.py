"""The image model's validation metrics: what each epoch is judged by, and so which epoch's weights are kept.

`auc` always; for a competition scored by partial AUC (ISIC 2024: above 80% TPR) also `pauc`, which is then the
monitor (best epoch, best.weights.h5). Both are computed by Keras' thresholded counts during evaluation, on any
backend; the exact values of the out-of-fold predictions are computed afterwards (melanoma.data.runs).
"""

from __future__ import annotations

import keras

from melanoma.config import TrainConfig
from melanoma.data.competition import Competition
from melanoma.image.heads import head_classes
from melanoma.scoring import MIN_TPR


class MelanomaAUC(keras.metrics.AUC):
    """AUC of melanoma vs rest on a diagnosis head: the melanoma column of the one-hot label (exactly the
    record's target, see heads) against the melanoma column of the softmax."""

    def __init__(self, column: int, **kwargs):
        super().__init__(**kwargs)
        self.column = int(column)

    def update_state(self, y_true, y_pred, sample_weight=None):
        c = self.column
        return super().update_state(y_true[:, c:c + 1], y_pred[:, c:c + 1], sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "column": self.column}


class PartialAUC(keras.metrics.AUC):
    """The ISIC 2024 metric during training: the area under the ROC curve above `min_tpr` true-positive rate,
    unnormalised (0 to 1 - min_tpr), from Keras' confusion counts at its thresholds: the integral of
    specificity over TPR along the linear ROC segments, as melanoma.report.metrics.pauc_from_counts computes it
    (melanoma.scoring.partial_auc is the exact value, which a finer threshold grid approaches)."""

    def __init__(self, min_tpr: float = MIN_TPR, num_thresholds: int = 1000, column: int | None = None, **kwargs):
        super().__init__(num_thresholds=num_thresholds, **kwargs)
        self.min_tpr = float(min_tpr)
        self.column = column  # the melanoma column of a model with several outputs (as MelanomaAUC)

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.column is not None:
            c = self.column
            y_true, y_pred = y_true[:, c:c + 1], y_pred[:, c:c + 1]
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        ops = keras.ops
        tp, fp, tn, fn = self.true_positives, self.false_positives, self.true_negatives, self.false_negatives
        # Thresholds ascend, so the rates descend: flipped, the curve runs from (0, 0) to (1, 1) in TPR.
        tpr = ops.flip(ops.divide_no_nan(tp, tp + fn), 0)
        fpr = ops.flip(ops.divide_no_nan(fp, fp + tn), 0)
        a, b, c, d = tpr[:-1], tpr[1:], fpr[:-1], fpr[1:]
        a_clip = ops.maximum(a, self.min_tpr)
        c_clip = ops.where(b > a, c + (d - c) * ops.divide_no_nan(a_clip - a, b - a), c)  # FPR at TPR a_clip
        return ops.sum(ops.maximum(b - a_clip, 0.0) * (1.0 - (c_clip + d) / 2.0))

    def get_config(self):
        return {**super().get_config(), "min_tpr": self.min_tpr, "column": self.column}


def validation_metrics(tcfg: TrainConfig, competition: Competition) -> tuple[list, str]:
    """(the metrics to compile, the history column that picks the best epoch)."""
    column = head_classes(tcfg)[1]
    metrics: list = [keras.metrics.AUC(name="auc") if column is None else MelanomaAUC(column, name="auc")]
    if competition.metric == "pauc":
        return [*metrics, PartialAUC(column=column, name="pauc")], "val_pauc"
    return metrics, "val_auc"
