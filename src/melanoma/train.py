"""The `train` stage: an image model per fold, out-of-fold and (TTA) test predictions.

For each fold listed, the model trains on the other folds and predicts the held-out fold and the test set.
Imbalance is handled by two separate settings, oversampling in tf.data and class weights in the loss, and
the log states what they add up to, so they are never stacked by accident.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from melanoma.config import Config, TrainConfig, save_run_info
from melanoma.data import ID, TARGET
from melanoma.errors import ConfigError
from melanoma.files import staged_dir, write_csv
from melanoma.models import build_model, prediction_model
from melanoma.pipeline import (Shard, ShardSet, find_shards, predict_dataset, read_index, sampled_positive_share,
                               train_dataset, validation_dataset)
from melanoma.results import auc, fmt_auc, write_run
from melanoma.strategy import get_strategy

log = logging.getLogger(__name__)

CLASS_WEIGHT_MODES = ("none", "balanced", "sqrt")


# ---------------------------------------------------------------- imbalance arithmetic

@dataclass(frozen=True)
class Imbalance:
    n_pos: int
    n_neg: int
    oversample: float
    weights: dict[int, float]  # class -> loss weight

    @property
    def natural_share(self) -> float:
        return self.n_pos / (self.n_pos + self.n_neg)

    @property
    def sampled_share(self) -> float:
        """Positive share of the images drawn per epoch."""
        return sampled_positive_share(self.n_pos, self.n_neg, self.oversample)

    @property
    def loss_share(self) -> float:
        """Positive share of the loss per epoch: what the model effectively sees."""
        s, w0, w1 = self.sampled_share, self.weights[0], self.weights[1]
        return w1 * s / (w1 * s + w0 * (1 - s))

    @property
    def epoch_images(self) -> int:
        return int(round(self.n_neg + self.oversample * self.n_pos))

    def describe(self) -> str:
        return (f"{self.n_pos + self.n_neg} training images, {self.n_pos} malignant ({self.natural_share:.2%}); "
                f"oversample x{self.oversample:g} -> {self.sampled_share:.2%} of images drawn; class weights "
                f"0: {self.weights[0]:.3f}, 1: {self.weights[1]:.3f} -> malignant share of the loss "
                f"{self.loss_share:.2%}")


def class_weights(n_pos: int, n_neg: int, mode: str) -> dict[int, float]:
    """Loss weights from the training-fold counts: balanced = n / (2 n_c); sqrt = its square root."""
    if mode not in CLASS_WEIGHT_MODES:
        raise ConfigError(f"train.class_weight must be one of {CLASS_WEIGHT_MODES}, got {mode!r}")
    if mode == "none":
        return {0: 1.0, 1: 1.0}
    n = n_pos + n_neg
    w = {0: n / (2 * n_neg), 1: n / (2 * n_pos)}
    return {k: math.sqrt(v) for k, v in w.items()} if mode == "sqrt" else w


def imbalance(n_pos: int, n_neg: int, tcfg: TrainConfig) -> Imbalance:
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"the training folds have {n_pos} malignant and {n_neg} benign images: both are needed")
    if tcfg.oversample < 1:
        raise ConfigError(f"train.oversample must be >= 1, got {tcfg.oversample}")
    return Imbalance(n_pos, n_neg, tcfg.oversample, class_weights(n_pos, n_neg, tcfg.class_weight))


# ---------------------------------------------------------------- schedule

@keras.saving.register_keras_serializable(package="melanoma")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from `start` to `peak`, optional sustain, then `peak` decays by `decay` per epoch to `minimum`.

    The public SIIM-ISIC TPU recipe, computed per step so it works with any steps_per_execution.
    """

    def __init__(self, start, peak, minimum, warmup_steps, sustain_steps, decay, steps_per_epoch):
        self.start, self.peak, self.minimum = float(start), float(peak), float(minimum)
        self.warmup_steps, self.sustain_steps = float(warmup_steps), float(sustain_steps)
        self.decay, self.steps_per_epoch = float(decay), float(max(1, steps_per_epoch))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1.0)
        epochs_decayed = (step - self.warmup_steps - self.sustain_steps) / self.steps_per_epoch
        decayed = (self.peak - self.minimum) * keras.ops.power(self.decay, epochs_decayed) + self.minimum
        after_warmup = keras.ops.where(step < self.warmup_steps + self.sustain_steps, self.peak, decayed)
        return keras.ops.where(step < self.warmup_steps, ramp, after_warmup)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "minimum": self.minimum, "warmup_steps": self.warmup_steps,
                "sustain_steps": self.sustain_steps, "decay": self.decay, "steps_per_epoch": self.steps_per_epoch}


def make_schedule(tcfg: TrainConfig, steps_per_epoch: int, global_batch: int) -> WarmupExponentialDecay:
    return WarmupExponentialDecay(tcfg.lr_start, tcfg.lr_max_per_image * global_batch, tcfg.lr_min,
                                  tcfg.warmup_epochs * steps_per_epoch, tcfg.sustain_epochs * steps_per_epoch,
                                  tcfg.decay, steps_per_epoch)


# ---------------------------------------------------------------- data helpers

def reset(model: keras.Model, weights: list[np.ndarray]) -> None:
    """Back to the initial weights with a fresh optimizer state (moments and step count zeroed)."""
    model.set_weights(weights)
    for var in model.optimizer.variables:
        var.assign(keras.ops.zeros(var.shape, var.dtype))


def jit_compile(setting: bool | None, strategy: tf.distribute.Strategy) -> bool | str:
    """XLA helps on GPUs and TPUs but makes EfficientNet training steps about 10x slower on a CPU."""
    if setting is not None:
        return setting
    accelerated = isinstance(strategy, tf.distribute.TPUStrategy) or bool(tf.config.list_logical_devices("GPU"))
    return "auto" if accelerated else False


def predict(pm: keras.Model, shards: list[Shard], names: np.ndarray, tcfg: TrainConfig,
            stored_size: int | None, batch: int) -> np.ndarray:
    """Mean prediction per name over the plain pass and `tta` augmented passes, aligned through idx.

    `pm` is the prediction_model wrapper: it returns each prediction beside the idx of its own record.
    """
    passes = []
    for i in range(1 + tcfg.tta):
        ds = predict_dataset(shards, names, tcfg.size, stored_size, batch, tcfg.augment if i else None)
        out = pm.predict(ds, verbose=0)
        idx, pred = np.asarray(out["idx"]).reshape(-1), np.asarray(out["pred"], dtype=np.float64).reshape(-1)
        if (idx < 0).any() or len(idx) != len(names) or len(np.unique(idx)) != len(names):
            raise RuntimeError(f"prediction ids do not match the {len(names)} records: "
                               f"{len(idx)} predictions, {len(np.unique(idx))} distinct ids")
        aligned = np.empty(len(names))
        aligned[idx] = pred
        passes.append(aligned)
    return np.mean(passes, axis=0)


# ---------------------------------------------------------------- stage

def train(cfg: Config, tfrec_dir: str | Path, out_dir: str | Path) -> dict:
    """The `train` stage. Returns the metrics written to OUT/metrics.json."""
    tcfg = cfg.train
    keras.utils.set_random_seed(cfg.seed)
    shardset: ShardSet = find_shards(str(tfrec_dir), cfg.n_folds)
    folds = tcfg.folds if tcfg.folds is not None else list(range(shardset.n_folds))
    bad = [k for k in folds if not 0 <= k < shardset.n_folds]
    if bad:
        raise ConfigError(f"train.folds: fold {bad[0]} does not exist (the records have {shardset.n_folds} folds)")
    strategy = get_strategy(tcfg.tpu)
    replicas = strategy.num_replicas_in_sync
    global_batch = tcfg.batch_size * replicas
    log.info("train: %s at %dpx, %d epochs, batch %d x %d replicas = %d, folds %s", tcfg.model, tcfg.size,
             tcfg.epochs, tcfg.batch_size, replicas, global_batch, folds)

    index = read_index(shardset.validation())
    test_shards = shardset.test()
    test_names = read_index(test_shards)[ID].to_numpy() if test_shards else np.array([], dtype=object)
    plans = {}
    for fold in folds:
        rest = index[index["fold"] != fold]
        plans[fold] = imbalance(int(rest[TARGET].sum()), int((rest[TARGET] == 0).sum()), tcfg)
    # One step count for every fold (they differ by a few images), so one compiled model serves all folds.
    steps = max(1, math.ceil(max(p.epoch_images for p in plans.values()) / global_batch))

    # Build and compile once; each fold restarts from the same initial weights and a zeroed optimizer.
    # Tracing a model costs about a minute on a CPU and several on a TPU: paying it once per run matters.
    with strategy.scope():
        model = build_model(tcfg.model, tcfg.size, tcfg.weights, tcfg.dropout, tcfg.bn_momentum)
        model.compile(
            optimizer=keras.optimizers.AdamW(make_schedule(tcfg, steps, global_batch),
                                             weight_decay=tcfg.weight_decay),
            loss=keras.losses.BinaryCrossentropy(label_smoothing=tcfg.label_smoothing),
            metrics=[keras.metrics.AUC(name="auc")],
            steps_per_execution=tcfg.steps_per_execution,
            jit_compile=jit_compile(tcfg.jit_compile, strategy),
        )
        predictor = prediction_model(model)
    initial_weights = model.get_weights()

    oof_parts, test_preds, fold_info = [], [], {}
    with staged_dir(out_dir) as stage:
        for fold in folds:
            start = time.perf_counter()
            val = index[index["fold"] == fold].reset_index(drop=True)
            imb = plans[fold]
            log.info("fold %d: %s", fold, imb.describe())
            if imb.loss_share > 0.5 + 1e-9:
                log.warning("fold %d: oversampling and class weights together give malignant images %.0f%% of "
                            "the loss: more than balanced; lower one of them", fold, 100 * imb.loss_share)
            ds = train_dataset(shardset.train(exclude=[fold]), tcfg.size, shardset.image_size, global_batch,
                               tcfg.augment, imb.sampled_share if tcfg.oversample != 1 else None,
                               tcfg.shuffle_buffer, cfg.seed + fold)
            val_ds = validation_dataset(shardset.validation([fold]), tcfg.size, shardset.image_size,
                                        global_batch)
            reset(model, initial_weights)
            fold_dir = stage / f"fold{fold}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            history = model.fit(ds, epochs=tcfg.epochs, steps_per_epoch=steps, validation_data=val_ds,
                                class_weight=imb.weights if tcfg.class_weight != "none" else None,
                                verbose=tcfg.verbose)
            write_csv(fold_dir / "history.csv", pd.DataFrame(history.history).rename_axis("epoch").reset_index())
            model.save_weights(fold_dir / "model.weights.h5")

            val_pred = predict(predictor, shardset.validation([fold]), val[ID].to_numpy(), tcfg,
                               shardset.image_size, global_batch)
            oof_parts.append(val.assign(pred=val_pred, fold=fold))
            if len(test_names):
                fold_test = predict(predictor, test_shards, test_names, tcfg, shardset.image_size, global_batch)
                test_preds.append(fold_test)
                write_csv(fold_dir / "test_pred.csv", pd.DataFrame({ID: test_names, TARGET: fold_test}))
            fold_auc = auc(val[TARGET], val_pred)
            fold_info[str(fold)] = {"images": len(val), "seconds": round(time.perf_counter() - start, 1),
                                    "sampled_positive_share": imb.sampled_share,
                                    "loss_positive_share": imb.loss_share}
            log.info("fold %d: OOF AUC %s (%d images, %.0f s)", fold, fmt_auc(fold_auc), len(val),
                     time.perf_counter() - start)

        oof = pd.concat(oof_parts, ignore_index=True)
        test_pred = pd.DataFrame({ID: test_names, TARGET: np.mean(test_preds, axis=0) if test_preds else []})
        metrics = write_run(stage, oof, test_pred, {"model": tcfg.model, "size": tcfg.size, "tta": tcfg.tta,
                                                    "replicas": replicas, "folds": fold_info})
        save_run_info(stage, cfg, "train", {"strategy": type(strategy).__name__, "replicas": replicas})
    log.info("train: OOF AUC %s over folds %s -> %s", fmt_auc(metrics["oof_auc"]), folds, out_dir)
    return metrics
