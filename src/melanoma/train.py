"""The `train` stage: an image model per fold, out-of-fold and (TTA) test predictions.

For each fold listed, the model trains on the other folds and predicts the held-out fold and the test set.
Imbalance is handled by two separate settings, oversampling in tf.data and class weights in the loss, and
the log states what they add up to, so they are never stacked by accident.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from melanoma.augment import FLIP_VIEWS
from melanoma.backend import Devices, resolve_backend, resolve_precision, setup_devices
from melanoma.config import Config, TrainConfig, save_run_info, to_dict
from melanoma.data import ID, TARGET
from melanoma.errors import ConfigError
from melanoma.files import read_json, write_csv, write_json
from melanoma.models import build_model, prediction_model
from melanoma.pipeline import (META_DIM, Shard, ShardSet, count_targets, find_shards, predict_dataset, read_index,
                               train_dataset, validation_dataset)
from melanoma.progress import progress_bar
from melanoma.results import auc, fmt_auc, write_run

log = logging.getLogger(__name__)

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
        """Positive share of the images drawn per epoch (each positive drawn `oversample` times as often)."""
        return self.oversample * self.n_pos / (self.oversample * self.n_pos + self.n_neg)

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
    """Loss weights from the training-fold counts: balanced = n / (2 n_c); sqrt = its square root.
    (Settings are validated when the config loads: `mode` is one of none | balanced | sqrt.)"""
    if mode == "none":
        return {0: 1.0, 1: 1.0}
    n = n_pos + n_neg
    w = {0: n / (2 * n_neg), 1: n / (2 * n_pos)}
    return {k: math.sqrt(v) for k, v in w.items()} if mode == "sqrt" else w


def imbalance(n_pos: int, n_neg: int, tcfg: TrainConfig) -> Imbalance:
    """Sampling and loss weights from the training-fold counts; `positive_share` sets the oversampling factor."""
    if n_pos == 0 or n_neg == 0:
        raise ConfigError(f"the training folds have {n_pos} malignant and {n_neg} benign images: both are needed")
    oversample = tcfg.oversample
    if tcfg.positive_share is not None:
        share, natural = tcfg.positive_share, n_pos / (n_pos + n_neg)
        if not natural <= share < 1:
            raise ConfigError(f"train.positive_share must be in [{natural:.4f}, 1) (the natural share of the "
                              f"training folds up to all-malignant), got {share}")
        oversample = share / (1 - share) * n_neg / n_pos
    return Imbalance(n_pos, n_neg, oversample, class_weights(n_pos, n_neg, tcfg.class_weight))


# ---------------------------------------------------------------- schedule and loss

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


@keras.saving.register_keras_serializable(package="melanoma")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear ramp from `start` to `peak`, optional sustain, then a half cosine from `peak` to `minimum` at the
    last step."""

    def __init__(self, start, peak, minimum, warmup_steps, sustain_steps, total_steps):
        self.start, self.peak, self.minimum = float(start), float(peak), float(minimum)
        self.warmup_steps, self.sustain_steps = float(warmup_steps), float(sustain_steps)
        self.total_steps = float(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = self.start + (self.peak - self.start) * step / max(self.warmup_steps, 1.0)
        begin = self.warmup_steps + self.sustain_steps
        progress = keras.ops.clip((step - begin) / max(self.total_steps - begin, 1.0), 0.0, 1.0)
        cosine = self.minimum + (self.peak - self.minimum) * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        after_warmup = keras.ops.where(step < begin, self.peak, cosine)
        return keras.ops.where(step < self.warmup_steps, ramp, after_warmup)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "minimum": self.minimum, "warmup_steps": self.warmup_steps,
                "sustain_steps": self.sustain_steps, "total_steps": self.total_steps}


def make_schedule(tcfg: TrainConfig, steps_per_epoch: int, global_batch: int):
    """The learning rate per step; its peak scales with the global batch (lr_max_per_image x batch)."""
    peak = tcfg.lr_max_per_image * global_batch
    warmup, sustain = tcfg.warmup_epochs * steps_per_epoch, tcfg.sustain_epochs * steps_per_epoch
    if tcfg.schedule == "exponential":
        return WarmupExponentialDecay(tcfg.lr_start, peak, tcfg.lr_min, warmup, sustain, tcfg.decay, steps_per_epoch)
    return WarmupCosineDecay(tcfg.lr_start, peak, tcfg.lr_min, warmup, sustain, tcfg.epochs * steps_per_epoch)


def make_loss(tcfg: TrainConfig) -> keras.losses.Loss:
    if tcfg.loss == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=tcfg.label_smoothing)
    balanced = tcfg.focal_alpha is not None  # focal (the config allows only bce | focal)
    return keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=balanced, alpha=tcfg.focal_alpha if balanced else 0.25, gamma=tcfg.focal_gamma,
        label_smoothing=tcfg.label_smoothing)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Layers take the global dtype policy when built: set it for the build, then put the old one back."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------- fold state (checkpoints, resume)

class FoldLog(keras.callbacks.Callback):
    """After each epoch: rewrite history.csv (atomically) and save the weights when validation AUC improves.

    Listed before BackupAndRestore, so an epoch is in the history and the best weights before the backup
    says it is done; a resumed epoch replaces its own row.
    """

    def __init__(self, fold_dir: Path, schedule, steps_per_epoch: int):
        super().__init__()
        self.fold_dir, self.schedule, self.steps = fold_dir, schedule, steps_per_epoch
        self.history = read_history(fold_dir)
        self.best = best_auc(self.history)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()},
               "learning_rate": float(self.schedule((epoch + 1) * self.steps - 1))}
        self.history = pd.concat([self.history[self.history["epoch"] < epoch], pd.DataFrame([row])],
                                 ignore_index=True) if len(self.history) else pd.DataFrame([row])
        write_csv(self.fold_dir / "history.csv", self.history)
        current = row.get("val_auc")
        if current is not None and np.isfinite(current) and (self.best is None or current > self.best):
            self.best = current
            save_weights_atomic(self.model, self.fold_dir / BEST)


BEST, LAST, DONE = "best.weights.h5", "last.weights.h5", "done.json"


def read_history(fold_dir: Path) -> pd.DataFrame:
    path = fold_dir / "history.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame({"epoch": []})


def best_auc(history: pd.DataFrame) -> float | None:
    if "val_auc" not in history.columns or history["val_auc"].isna().all():
        return None
    return float(history["val_auc"].max())


def save_weights_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")  # Keras wants the .weights.h5 suffix
    model.save_weights(tmp)
    os.replace(tmp, path)


def fingerprint(cfg: Config, shardset: ShardSet) -> str:
    """What a resumed run must share with the folds already in its folder: the training settings and data."""
    settings = {k: v for k, v in to_dict(cfg.train).items() if k not in ("verbose", "folds", "resume", "tensorboard", "backend")}
    data = [shardset.image_size] + [(Path(s.path).name, s.split, s.fold, s.count) for s in shardset.shards]
    blob = json.dumps({"train": settings, "seed": cfg.seed, "n_folds": cfg.n_folds, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


RUN_OUTPUTS = ("oof.csv", "test_pred.csv", "metrics.json")


def progress(out_dir: Path) -> tuple[list[str], list[str]]:
    """(finished folds, interrupted folds) in a run folder."""
    done = sorted(p.parent.name for p in out_dir.glob(f"fold*/{DONE}"))
    backups = sorted(p.parent.name for p in out_dir.glob("fold*/backup") if p.parent.name not in done)
    return done, backups


def check_run_folder(out_dir: Path, cfg: Config, shardset: ShardSet, backend: str) -> bool:
    """Whether the run resumes the folder's work; raises before anything is trained or moved when it cannot.

    A folder written with the same settings keeps its finished folds and epoch backups. One with other settings
    is refused unless train.resume is false (--restart). A folder whose earlier try made no progress (it failed
    before an epoch ended) holds nothing to keep, so it never blocks a corrected re-run.
    """
    state_path = out_dir / "resume.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, not a run folder: choose another --out")
    if not (cfg.train.resume and state_path.is_file()):
        return False
    done, backups = progress(out_dir)
    if not (done or backups):
        return False
    state = read_json(state_path)
    if state.get("fingerprint") != fingerprint(cfg, shardset):
        raise ConfigError(f"{out_dir} holds a training run with other settings or data: use another --out, "
                          "or --restart (train.resume=false) to start it over (the old folds are kept aside)")
    previous = state.get("backend", "tensorflow")
    if backups and previous != backend:
        # Finished folds are plain files; an interrupted fold's optimizer backup is only resumed where it began.
        raise ConfigError(f"{out_dir}: {backups[0]} was interrupted on the {previous} backend: resume it with "
                          f"--set train.backend={previous}, or use another --out")
    log.info("train: resuming %s (finished: %s; interrupted: %s)", out_dir, ", ".join(done) or "none",
             ", ".join(backups) or "none")
    return True


def start_run_folder(out_dir: Path, cfg: Config, shardset: ShardSet, backend: str, resume: bool) -> None:
    """Record the run's fingerprint. Starting over, the old fold outputs are moved into a replaced-TIME/
    folder, never deleted: the user made them in another call."""
    if not resume:
        old = [p for p in sorted(out_dir.glob("fold*")) + [out_dir / n for n in RUN_OUTPUTS] if p.exists()]
        if old:
            aside = out_dir / f"replaced-{dt.datetime.now():%Y%m%d-%H%M%S}"
            aside.mkdir(parents=True)
            for path in old:
                os.replace(path, aside / path.name)
            log.info("train: starting %s over; the earlier outputs are in %s", out_dir, aside)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "resume.json", {"fingerprint": fingerprint(cfg, shardset), "backend": backend})


# ---------------------------------------------------------------- prediction

def prediction_views(tcfg: TrainConfig) -> list[tuple[str, object]]:
    """The passes averaged at prediction time: plain, the deterministic flips, then `tta` random augmentations."""
    views: list[tuple[str, object]] = [("plain", None)]
    if tcfg.tta_flips:
        views += list(FLIP_VIEWS.items())
    views += [(f"tta{i + 1}", tcfg.augment) for i in range(tcfg.tta)]
    return views


def predict(pm: keras.Model, shards: list[Shard], names: np.ndarray, tcfg: TrainConfig,
            stored_size: int | None, batch: int, pad: bool = False) -> dict[str, np.ndarray]:
    """Prediction per name for each view (see prediction_views), aligned through idx.

    `pm` is the prediction_model wrapper: it returns each prediction beside the idx of its own record.
    `pad` fills the last batch up to `batch` with rows of idx -1 (dropped here): a batch split over several
    devices must divide evenly.
    """
    out = {}
    views = prediction_views(tcfg)
    with progress_bar(len(views) * len(names), f"predict ({len(views)} view{'s' * (len(views) > 1)})") as bar:
        for name, view in views:
            out[name] = _predict_view(pm, predict_dataset(shards, names, tcfg.size, stored_size, batch, view,
                                                          meta=tcfg.metadata, pad=pad), len(names), pad)
            bar.update(len(names))
    return out


def _predict_view(pm: keras.Model, ds, n: int, pad: bool) -> np.ndarray:
    """One prediction pass, each prediction put at the row of its own idx (padding rows dropped)."""
    res = pm.predict(ds, verbose=0)
    idx, pred = np.asarray(res["idx"]).reshape(-1), np.asarray(res["pred"], dtype=np.float64).reshape(-1)
    real = idx >= 0 if pad else slice(None)
    idx, pred = idx[real], pred[real]
    if (idx < 0).any() or len(idx) != n or len(np.unique(idx)) != n:
        raise RuntimeError(f"prediction ids do not match the {n} records: "
                           f"{len(idx)} predictions, {len(np.unique(idx))} distinct ids")
    aligned = np.empty(n)
    aligned[idx] = pred
    return aligned


def mean_views(views: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean(list(views.values()), axis=0)


# ---------------------------------------------------------------- stage

def reset(model: keras.Model, weights: list[np.ndarray]) -> None:
    """Back to the initial weights with a fresh optimizer state (moments and step count zeroed)."""
    model.set_weights(weights)
    for var in model.optimizer.variables:
        var.assign(keras.ops.zeros(var.shape, var.dtype))


def jit_compile(setting: bool | None, device: str, backend: str = "tensorflow") -> bool | str:
    """XLA helps on GPUs and TPUs but makes TensorFlow's EfficientNet training steps about 10x slower on a CPU.
    JAX always compiles: uncompiled JAX runs op by op."""
    if setting is not None:
        return setting
    return "auto" if device != "cpu" or backend == "jax" else False


def augment_in_model(tcfg: TrainConfig, device: str) -> bool:
    return tcfg.augment.where == "model" or (tcfg.augment.where == "auto" and device != "cpu")


def training_counts(shardset: ShardSet, index: pd.DataFrame, fold: int, extra: dict[Shard, tuple[int, int]]
                    ) -> tuple[int, int]:
    """(malignant, benign) images in fold's training pool: the other folds plus train-only shards (external
    data, upsampled copies) not tagged with this fold."""
    rest = index[index["fold"] != fold]
    pos, neg = int(rest[TARGET].sum()), int((rest[TARGET] == 0).sum())
    for shard, (p, n) in extra.items():
        if shard.fold != fold:
            pos, neg = pos + p, neg + n
    return pos, neg


def train(cfg: Config, tfrec_dir: str | Path, out_dir: str | Path) -> dict:
    """The `train` stage. Returns the metrics written to OUT/metrics.json.

    Re-running the same command into the same folder resumes it: finished folds are kept, and the current
    fold continues from its last completed epoch (model and optimizer state restored).
    """
    tcfg, out_dir = cfg.train, Path(out_dir)
    keras.utils.set_random_seed(cfg.seed)
    shardset: ShardSet = find_shards(str(tfrec_dir), cfg.n_folds)
    folds = tcfg.folds if tcfg.folds is not None else list(range(shardset.n_folds))
    bad = [k for k in folds if not 0 <= k < shardset.n_folds]
    if bad:
        raise ConfigError(f"train.folds: fold {bad[0]} does not exist (the records have {shardset.n_folds} folds)")
    backend, why = resolve_backend(tcfg.backend)  # checks that the running Keras is the one asked for
    devices: Devices = setup_devices(tcfg.tpu, tcfg.cpu_replicas)
    device, replicas = devices.kind, devices.count
    global_batch = tcfg.batch_size * replicas
    precision = resolve_precision(tcfg.precision, device)
    in_model = augment_in_model(tcfg, device)
    log.info("train: backend %s (%s), %s", backend, why, devices.detail)
    log.info("train: %s at %dpx, %d epochs, global batch %d (%d per device x %d devices), %s, augmentation in %s, "
             "folds %s", tcfg.model, tcfg.size, tcfg.epochs, global_batch, tcfg.batch_size, replicas, precision,
             "the model" if in_model else "tf.data", folds)

    resume = check_run_folder(out_dir, cfg, shardset, backend)
    if resume and all((out_dir / f"fold{k}" / DONE).is_file() for k in folds):
        log.info("train: folds %s already finished in %s", folds, out_dir)
        return collect(out_dir, cfg, replicas, precision)

    index = read_index(shardset.validation())
    extra = {s: count_targets([s]) for s in shardset.train() if s.train_only}
    test_shards = shardset.test()
    test_names = read_index(test_shards)[ID].to_numpy() if test_shards else np.array([], dtype=object)
    plans = {fold: imbalance(*training_counts(shardset, index, fold, extra), tcfg) for fold in folds}
    # One step count for every fold (they differ by a few images), so one compiled model serves all folds.
    steps = max(1, math.ceil(max(p.epoch_images for p in plans.values()) / global_batch))
    tensorboard = tcfg.tensorboard and tensorboard_available()  # checked (and warned about) once per run

    # Build and compile once; each fold restarts from the same initial weights and a zeroed optimizer.
    # Tracing a model costs about a minute on a CPU and several on a TPU: paying it once per run matters.
    schedule = make_schedule(tcfg, steps, global_batch)
    with devices.scope(), dtype_policy(precision):
        model = build_model(tcfg.model, tcfg.size, tcfg.weights, tcfg.dropout, tcfg.bn_momentum,
                            meta_dim=META_DIM if tcfg.metadata else 0,
                            augment=to_dict(tcfg.augment) if in_model else None)
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=tcfg.weight_decay),
            loss=make_loss(tcfg),
            metrics=[keras.metrics.AUC(name="auc")],
            steps_per_execution=tcfg.steps_per_execution,
            jit_compile=jit_compile(tcfg.jit_compile, device, backend),
        )
        predictor = prediction_model(model)
    initial_weights = model.get_weights()
    # Everything that can refuse the settings has run: only now is the folder changed.
    start_run_folder(out_dir, cfg, shardset, backend, resume)
    save_run_info(out_dir, cfg, "train", {"backend": backend, "devices": devices.detail, "replicas": replicas,
                                          "precision": precision})

    for fold in folds:
        fold_dir = out_dir / f"fold{fold}"
        if (fold_dir / DONE).is_file():
            log.info("fold %d: finished in an earlier run, kept", fold)
            continue
        start = time.perf_counter()
        val = index[index["fold"] == fold].reset_index(drop=True)
        imb = plans[fold]
        log.info("fold %d: %s", fold, imb.describe())
        if imb.loss_share > 0.5 + 1e-9:
            log.warning("fold %d: oversampling and class weights together give malignant images %.0f%% of "
                        "the loss: more than balanced; lower one of them", fold, 100 * imb.loss_share)
        ds = train_dataset(shardset.train(exclude=[fold]), tcfg.size, shardset.image_size, global_batch,
                           None if in_model else tcfg.augment,
                           imb.sampled_share if abs(imb.oversample - 1) > 1e-9 else None,
                           tcfg.shuffle_buffer, cfg.seed + fold, meta=tcfg.metadata, cache=tcfg.cache)
        val_shards = shardset.validation([fold])
        val_ds = validation_dataset(val_shards, tcfg.size, shardset.image_size, global_batch, meta=tcfg.metadata,
                                    pad=replicas > 1)
        fold_dir.mkdir(parents=True, exist_ok=True)
        reset(model, initial_weights)
        # BackupAndRestore sets the model's starting epoch when it restores a fold, and Keras keeps it for later
        # fit calls: without this, the fold after a resumed one would start at the resumed fold's epoch.
        model._initial_epoch = None
        fold_log = FoldLog(fold_dir, schedule, steps)
        callbacks = [fold_log,
                     # Model and optimizer state at each epoch end: a re-run continues from there.
                     keras.callbacks.BackupAndRestore(str(fold_dir / "backup"), double_checkpoint=True,
                                                      delete_checkpoint=False)]
        if tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(str(fold_dir / "tensorboard"), write_graph=False))
        model.fit(ds, epochs=tcfg.epochs, steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                  class_weight=imb.weights if tcfg.class_weight != "none" else None, verbose=tcfg.verbose)
        history = fold_log.history
        weights_file = fold_dir / BEST
        if tcfg.checkpoint == "last" or not weights_file.is_file():
            weights_file = fold_dir / LAST
            save_weights_atomic(model, weights_file)
        else:
            model.load_weights(weights_file)
        curves(history, fold_dir, f"{tcfg.model} {tcfg.size}px fold {fold}")

        val_views = predict(predictor, val_shards, val[ID].to_numpy(), tcfg, shardset.image_size, global_batch,
                            replicas > 1)
        oof = val.assign(pred=mean_views(val_views), pred_plain=val_views["plain"], fold=fold)
        write_csv(fold_dir / "oof.csv", oof)
        if len(test_names):
            test_views = predict(predictor, test_shards, test_names, tcfg, shardset.image_size, global_batch,
                                 replicas > 1)
            write_csv(fold_dir / "test_pred.csv", pd.DataFrame({ID: test_names, TARGET: mean_views(test_views)}))
        best_epoch = int(history.loc[history["val_auc"].idxmax(), "epoch"]) if best_auc(history) is not None else None
        info = {"images": len(val), "seconds": round(time.perf_counter() - start, 1), "weights": weights_file.name,
                "best_epoch": best_epoch, "best_val_auc": best_auc(history),
                "oof_auc": auc(val[TARGET], oof["pred"]), "oof_auc_no_tta": auc(val[TARGET], oof["pred_plain"]),
                "sampled_positive_share": imb.sampled_share, "loss_positive_share": imb.loss_share}
        write_json(fold_dir / DONE, info)
        shutil.rmtree(fold_dir / "backup", ignore_errors=True)
        log.info("fold %d: OOF AUC %s (no TTA %s), %d images, %.0f s", fold, fmt_auc(info["oof_auc"]),
                 fmt_auc(info["oof_auc_no_tta"]), len(val), time.perf_counter() - start)
    return collect(out_dir, cfg, replicas, precision)


def tensorboard_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        log.warning("train: TensorBoard is not installed, so no TensorBoard logs (pip install tensorboard)")
        return False
    return True


def curves(history: pd.DataFrame, fold_dir: Path, title: str) -> None:
    """The training-curve PNG; a plotting problem must not cost a trained fold, so it only warns."""
    try:
        from melanoma.plots import training_curves

        training_curves(history, fold_dir / "curves.png", title)
    except (ImportError, ValueError, KeyError, OSError) as e:
        log.warning("%s: no training-curve PNG (%s)", fold_dir, e)


def collect(out_dir: Path, cfg: Config, replicas: int, precision: str) -> dict:
    """Run-level oof.csv, test_pred.csv and metrics.json from every finished fold in the folder (so folds
    trained in different sessions, e.g. Kaggle's 9-hour limit, add up)."""
    tcfg = cfg.train
    done = sorted(int(p.parent.name[4:]) for p in out_dir.glob(f"fold*/{DONE}"))
    if not done:
        raise ConfigError(f"{out_dir}: no finished fold to collect")
    oof = pd.concat([pd.read_csv(out_dir / f"fold{k}" / "oof.csv", dtype={ID: "string"}) for k in done],
                    ignore_index=True)
    tests = [pd.read_csv(out_dir / f"fold{k}" / "test_pred.csv", dtype={ID: "string"}).set_index(ID)[TARGET]
             for k in done if (out_dir / f"fold{k}" / "test_pred.csv").is_file()]
    test_pred = (pd.concat(tests, axis=1).mean(axis=1).rename(TARGET).rename_axis(ID).reset_index() if tests
                 else pd.DataFrame({ID: [], TARGET: []}))
    info = {str(k): read_json(out_dir / f"fold{k}" / DONE) for k in done}
    metrics = write_run(out_dir, oof, test_pred, {
        "model": tcfg.model, "size": tcfg.size, "tta_views": [n for n, _ in prediction_views(tcfg)],
        "oof_auc_no_tta": auc(oof[TARGET], oof["pred_plain"]), "replicas": replicas, "precision": precision,
        "folds": info})
    log.info("train: OOF AUC %s (no TTA %s) over folds %s -> %s", fmt_auc(metrics["oof_auc"]),
             fmt_auc(metrics["oof_auc_no_tta"]), done, out_dir)
    return metrics
