"""The `train` stage: an image model per fold, out-of-fold and (TTA) test predictions.

`train()` reads as the stage: refuse a TPU that is expected but not there, set up the devices (for this call
only: backend.devices_scope) and data, build and compile the model once, then per fold train (schedules.py,
imbalance.py) while the time budget allows (budget.py), keep the best weights (runfolder.py) and predict with
TTA (tta.py).
Imbalance is handled by two separate settings, oversampling in tf.data and class weights in the loss, and
the log states what they add up to, so they are never stacked by accident.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from melanoma.config import Config, TrainConfig, recipe_summary, save_run_info, to_dict
from melanoma.data.records import shard_read_error
from melanoma.data.schema import ID, TARGET
from melanoma.errors import ConfigError
from melanoma.files import read_json, write_csv, write_json
from melanoma.runtime.backend import resolve_backend, resolve_precision
from melanoma.runtime.devices import Devices, augment_in_model, check_devices, devices_scope, dtype_policy, jit_compile
from melanoma.runtime.budget import Budget, BudgetStop, resolve_hours
from melanoma.runtime.hosts import Host, barrier, host_failures, is_writer, start_hosts, this_host
from melanoma.image.sources import describe, epoch_images, fold_counts, for_fold
from melanoma.image.external_sources import configured_sources
from melanoma.image.imbalance import Imbalance, imbalance, training_counts
from melanoma.image.heads import (diagnosis_plans, every_column, head_classes, head_loss, labels_for,
                                  residual_fusion)
from melanoma.image.metrics import validation_metrics
from melanoma.image.models import build_model
from melanoma.image.prefetch import DevicePrefetch, wanted as prefetch_wanted
from melanoma.image.inputs import train_dataset, validation_dataset
from melanoma.data.metadata import LAYOUT as META_LAYOUT, META_DIM
from melanoma.data.competition import Competition, announce, resolve
from melanoma.data.manifest import Manifest
from melanoma.data.reader import count_targets, find_shards, read_index
from melanoma.image.runfolder import (BEST, DONE, LAST, FoldLog, backup_callback, best_auc, check_run_folder,
                                      collect, curves, epoch_seconds, load_model_weights, read_history,
                                      save_weights_atomic, start_run_folder, tensorboard_available)
from melanoma.image.schedules import epoch_steps, make_loss, make_optimizer, make_schedule
from melanoma.image.tta import mean_views, predict, prediction_views, tta_model, views_batch
from melanoma.runtime.place import detect
from melanoma.scoring import auc, fmt_auc

log = logging.getLogger(__name__)


@dataclass
class Session:
    """What every fold of one `train` call shares: data, devices, the compiled model and its schedule."""
    cfg: Config
    out_dir: Path
    shardset: Manifest
    folds: list[int]
    backend: str
    devices: Devices
    precision: str
    in_model: bool  # augmentation inside the model (accelerators) rather than in tf.data
    index: pd.DataFrame = None  # the validation records: image_name, target, fold
    test_names: np.ndarray = None
    plans: dict[int, Imbalance] = None
    steps: int = 0
    model: keras.Model = None
    predictor: keras.Model = None
    schedule: object = None
    initial_weights: list = None
    tensorboard: bool = False
    extras: list = None  # image/extras.py ExtraSource: external, pseudo-labelled, synthetic training data
    labels: object = None  # heads.Labels of a diagnosis head (None: the binary head)
    host: Host = Host()  # this process among the hosts (runtime/hosts.py): it reads its part of each batch
    monitor: str = "val_auc"  # the history column that picks the best epoch (val_pauc for ISIC 2024)

    @property
    def competition(self) -> Competition:
        return resolve(self.cfg.competition, None, self.shardset.details.get("competition"))

    @property
    def host_batch(self) -> int:
        return self.global_batch // self.host.count

    @property
    def replicas(self) -> int:
        return self.devices.count

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.devices.count


def train(cfg: Config, tfrec_dir: str | Path, out_dir: str | Path) -> dict:
    """The `train` stage. Returns the metrics written to OUT/metrics.json.

    Re-running the same command into the same folder resumes it: finished folds are kept, and the current
    fold continues from its last completed epoch (model and optimizer state restored). When
    train.checkpoints.time_budget stops it with folds left, the result also has "complete": False and "left" (what
    the next session resumes).
    Devices, distribution and dtype policy are set up for this call only (backend.devices_scope).
    """
    keras.utils.set_random_seed(cfg.seed)
    dev = cfg.train.devices
    backend, why = resolve_backend(dev.backend)  # checks that the running Keras is the one asked for
    start_hosts(dev.hosts, backend)  # a pod slice's hosts join before the devices are listed (once)
    check_devices(dev.tpu, dev.allow_cpu_fallback, backend)  # a TPU that is not there: refused before any work
    with host_failures(), devices_scope(dev.tpu, dev.cpu_replicas) as devices:
        return _train(_open_session(cfg, tfrec_dir, Path(out_dir), backend, why, devices))


def _train(s: Session) -> dict:
    cfg = s.cfg
    resume = check_run_folder(s.out_dir, cfg, s.shardset, s.backend)
    if resume and all((s.out_dir / f"fold{k}" / DONE).is_file() for k in s.folds):
        log.info("train: folds %s already finished in %s", s.folds, s.out_dir)
        return _collect(s)
    with _naming_damaged_shards(s, None):
        _plan_folds(s)
    _compile(s)
    # Everything that can refuse the settings has run: only now is the folder changed (by process 0 alone,
    # once every host has read it).
    barrier("train: run folder checked")
    if is_writer():
        start_run_folder(s.out_dir, cfg, s.shardset, s.backend, resume)
        save_run_info(s.out_dir, cfg, "train", {"backend": s.backend, "devices": s.devices.detail,
                                                "replicas": s.replicas, "precision": s.precision,
                                                "hosts": s.host.count,
                                                "metadata_layout": META_LAYOUT if cfg.train.meta.enabled else None})
    budget = Budget.for_session(resolve_hours(cfg.train.checkpoints.time_budget, detect(cfg).name, cfg.stages))
    if budget.hours is not None:
        log.info("train: time budget %.2f h (train.checkpoints.time_budget=%s), %.2f h of it used before training",
                 budget.hours, cfg.train.checkpoints.time_budget, budget.used_hours())
    for fold in s.folds:
        if (s.out_dir / f"fold{fold}" / DONE).is_file():
            log.info("fold %d: finished in an earlier run, kept", fold)
            continue
        with _naming_damaged_shards(s, fold):
            finished = _train_fold(s, fold, budget)
        if not finished:
            return _stopped(s, budget)
    return _collect(s)


def _collect(s: Session) -> dict:
    """runfolder.collect by process 0; the other hosts read its metrics once written."""
    competition = s.competition
    announce(competition)
    metrics = collect(s.out_dir, s.cfg, s.replicas, s.precision, competition) if is_writer() else None
    barrier("train: collected")
    return metrics if metrics is not None else read_json(s.out_dir / "metrics.json")


def _stopped(s: Session, budget: Budget) -> dict:
    """Training stopped at the time budget: say what is done and what the next session resumes."""
    done = [k for k in s.folds if (s.out_dir / f"fold{k}" / DONE).is_file()]
    left = []
    for k in (k for k in s.folds if k not in done):
        epochs = len(read_history(s.out_dir / f"fold{k}"))
        left.append(f"fold {k} ({epochs} of {s.cfg.train.epochs} epochs done)" if epochs else f"fold {k}")
    summary = f"finished folds: {', '.join(map(str, done)) or 'none'}; left: {', '.join(left)}"
    log.warning("train: stopped at the time budget (%.2f of %.2f h used) in %s: %s. Run the same command again "
                "(or the next chained notebook session) to resume.", budget.used_hours(), budget.hours, s.out_dir,
                summary)
    metrics = _collect(s) if done else {}
    return {**metrics, "complete": False, "left": summary}


@contextlib.contextmanager
def _naming_damaged_shards(s: Session, fold: int | None):
    """A damaged shard surfaces as a DataLossError deep in tf.data (fit, predict, the index): one line naming it
    instead. The fold's epoch backup, the finished folds and resume.json stay, so the same command resumes."""
    try:
        yield
    except Exception as e:
        paths = [sh.path for sh in s.shardset.shards] + [sh.path for x in (s.extras or []) for sh in x.shards
                                                          if fold is None or x.trains(fold)]
        problem = shard_read_error(e, fold, paths)
        if problem is None:
            raise
        raise problem from None


def _open_session(cfg: Config, tfrec_dir: str | Path, out_dir: Path, backend: str, why: str,
                  devices: Devices) -> Session:
    """The shards, the folds to train, the backend, devices and precision (logged)."""
    tcfg = cfg.train
    shardset: Manifest = find_shards(str(tfrec_dir), cfg.n_folds)
    folds = tcfg.folds if tcfg.folds is not None else list(range(shardset.n_folds))
    bad = [k for k in folds if not 0 <= k < shardset.n_folds]
    if bad:
        raise ConfigError(f"train.folds: fold {bad[0]} does not exist (the records have {shardset.n_folds} folds)")
    s = Session(cfg, out_dir, shardset, folds, backend, devices,
                resolve_precision(tcfg.devices.precision, devices.kind), augment_in_model(tcfg, devices.kind),
                host=this_host())
    log.info("train: backend %s (%s), %s", backend, why, devices.detail)
    s.extras = configured_sources(cfg, str(tfrec_dir))
    s.labels = labels_for(tcfg, shardset)
    log.info("recipe: %s", recipe_summary(cfg))
    log.info("train: %s at %dpx, %d epochs, global batch %d (%d per device x %d devices), %s, augmentation in %s, "
             "folds %s", tcfg.model, tcfg.size, tcfg.epochs, s.global_batch, tcfg.batch_size, s.replicas,
             s.precision, "the model" if s.in_model else "tf.data", folds)
    return s


def _plan_folds(s: Session) -> None:
    """Validation index, test names, each fold's imbalance plan, and one step count for every fold."""
    s.index = read_index(s.shardset.validation())
    extra = {sh: count_targets([sh]) for sh in s.shardset.train() if sh.train_only}
    test_shards = s.shardset.test()
    s.test_names = read_index(test_shards)[ID].to_numpy() if test_shards else np.array([], dtype=object)
    s.plans = {fold: imbalance(*training_counts(s.shardset, s.index, fold, extra), s.cfg.train) for fold in s.folds}
    if s.labels is not None:  # the diagnosis head: class weights per class, from the pool's class counts
        s.plans = diagnosis_plans(s.shardset, s.folds, s.labels, s.cfg.train)
    # One step count for every fold (they differ by a few images), so one compiled model serves all folds.
    planned = max(1, math.ceil(max(epoch_images(p.epoch_images, for_fold(s.extras, k)) for k, p in s.plans.items())
                               / s.global_batch))
    s.steps = epoch_steps(planned, s.cfg.train.devices.steps_per_execution)
    s.tensorboard = s.cfg.train.checkpoints.tensorboard and tensorboard_available()  # checked (and warned about) once


def _compile(s: Session) -> None:
    """Build and compile once; each fold restarts from the same initial weights and a zeroed optimizer.
    Tracing a model costs about a minute on a CPU and several on a TPU: paying it once per run matters."""
    tcfg = s.cfg.train
    s.schedule = make_schedule(tcfg, s.steps, s.global_batch)
    metrics, s.monitor = validation_metrics(tcfg, s.competition)
    with s.devices.scope(), dtype_policy(s.precision):
        s.model = build_model(tcfg.model, tcfg.size, tcfg.weights, tcfg.dropout, tcfg.bn_momentum,
                              meta_dim=META_DIM if tcfg.meta.enabled else 0,
                              augment=to_dict(tcfg.augment) if s.in_model else None,
                              classes=head_classes(tcfg)[0], meta_fusion=tcfg.meta.fusion)
        s.model.compile(
            optimizer=make_optimizer(tcfg, s.schedule),
            loss=head_loss(tcfg) if s.labels is not None
            else every_column(make_loss(tcfg)) if residual_fusion(tcfg) else make_loss(tcfg),
            metrics=metrics,
            steps_per_execution=tcfg.devices.steps_per_execution,
            jit_compile=jit_compile(tcfg.devices.jit_compile, s.devices.kind, s.backend),
        )
        s.predictor = tta_model(s.model, tcfg, head_classes(tcfg)[1], seed=s.cfg.seed)
    s.initial_weights = s.model.get_weights()


def _train_fold(s: Session, fold: int, budget: Budget) -> bool:
    """Train one fold from the initial weights, keep its best (or last) weights, predict OOF and test.
    False: the time budget stopped it (its epoch backup kept, not marked done)."""
    tcfg, fold_dir, start = s.cfg.train, s.out_dir / f"fold{fold}", time.perf_counter()
    val = s.index[s.index["fold"] == fold].reset_index(drop=True)
    imb = s.plans[fold]
    log.info("fold %d: %s", fold, imb.describe())
    if imb.loss_share > 0.5 + 1e-9:
        log.warning("fold %d: oversampling and class weights together give malignant images %.0f%% of "
                    "the loss: more than balanced; lower one of them", fold, 100 * imb.loss_share)
    if is_writer():
        fold_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*fold_dir.glob(".tmp-*"), *fold_dir.glob("backup/.tmp-*")]:  # writes cut short by a kill
            stale.unlink()
    barrier(f"fold {fold}: folder ready")
    if not _fit_fold(s, fold, imb, len(val), budget):
        return False
    barrier(f"fold {fold}: fitted")  # process 0's history and best weights are written
    history = read_history(fold_dir)
    weights_file = _final_weights(s.model, tcfg, fold_dir)
    if is_writer():
        curves(history, fold_dir, f"{tcfg.model} {tcfg.size}px fold {fold}")
    predict_start = budget.now()
    oof = _predict_fold(s, fold, val, s.shardset.validation([fold]), fold_dir)
    budget.predictions.append(budget.now() - predict_start)
    best = best_auc(history, s.monitor)
    best_epoch = int(history.loc[history[s.monitor].idxmax(), "epoch"]) if best is not None else None
    extra_images = fold_counts(s.extras, fold)
    info = {"images": len(val), "seconds": round(time.perf_counter() - start, 1), "weights": weights_file.name,
            "best_epoch": best_epoch, "best_val_auc": best_auc(history), "monitor": s.monitor,
            f"best_{s.monitor}": best,
            "oof_auc": auc(val[TARGET], oof["pred"]), "oof_auc_no_tta": auc(val[TARGET], oof["pred_plain"]),
            "sampled_positive_share": imb.sampled_share, "loss_positive_share": imb.loss_share,
            "extra_images": extra_images, "external_images": extra_images.get("external", 0)}
    if is_writer():
        write_json(fold_dir / DONE, info)
        shutil.rmtree(fold_dir / "backup", ignore_errors=True)
    barrier(f"fold {fold}: done")
    log.info("fold %d: OOF AUC %s (no TTA %s), %d images, %.0f s", fold, fmt_auc(info["oof_auc"]),
             fmt_auc(info["oof_auc_no_tta"]), len(val), time.perf_counter() - start)
    return True


def _fit_fold(s: Session, fold: int, imb: Imbalance, n_val: int, budget: Budget) -> bool:
    """fit() the fold's epochs (resumed from its backup) while the time budget allows; True when all ran."""
    tcfg, fold_dir = s.cfg.train, s.out_dir / f"fold{fold}"
    fold_log = FoldLog(fold_dir, s.schedule, s.steps, ema=tcfg.checkpoints.ema > 0, monitor=s.monitor)
    epoch_images = s.steps * s.global_batch
    predicted = len(prediction_views(tcfg)) * (n_val + len(s.test_names))

    def predict_seconds(epoch: float) -> float:
        return budget.predict_estimate(epoch, predicted, epoch_images)

    first = budget.epoch_estimate(epoch_seconds(s.out_dir))
    if not budget.allows(None if first is None else first + predict_seconds(first)):
        log.info("fold %d: not started: its next epoch (about %.0f s) and predictions would end after the time "
                 "budget", fold, first or 0)
        return False
    ds = train_dataset(s.shardset.train(exclude=[fold]), tcfg, s.shardset.image_size, s.host_batch,
                       imb.sampled_share if abs(imb.oversample - 1) > 1e-9 else None, s.cfg.seed + fold,
                       augment=not s.in_model, extras=for_fold(s.extras, fold), base_images=imb.epoch_images,
                       labels=s.labels, class_weight=imb.weights if tcfg.imbalance.class_weight != "none" else None,
                       host=s.host)
    log.info("fold %d: %s", fold, describe(s.extras, fold, imb.epoch_images) or "no extra training data")
    val_ds = validation_dataset(s.shardset.validation([fold]), tcfg.size, s.shardset.image_size, s.host_batch,
                                meta=tcfg.meta.enabled, pad=s.replicas > 1, labels=s.labels, host=s.host)
    reset(s.model, s.initial_weights)
    # BackupAndRestore sets the model's starting epoch when it restores a fold, and Keras keeps it for later
    # fit calls: without this, the fold after a resumed one would start at the resumed fold's epoch.
    s.model._initial_epoch = None
    stop = BudgetStop(budget, tcfg.epochs, fold_log.seconds, predict_seconds)
    # JAX with DataParallel: batch n+1 goes to the devices while step n runs (Keras does not look ahead there).
    ahead = DevicePrefetch(ds) if prefetch_wanted(s.backend) else None
    try:
        s.model.fit(ahead.batches() if ahead else ds, epochs=tcfg.epochs, steps_per_epoch=s.steps,
                    validation_data=val_ds,
                    callbacks=_callbacks(s.tensorboard, fold_dir, fold_log, tcfg.checkpoints.ema > 0) + [stop],
                    verbose=tcfg.verbose if is_writer() else 0,  # one progress line per job, process 0's
                    shuffle=False)  # shuffled in tf.data; class weights as sample weights
    finally:
        if ahead is not None:
            ahead.close()
    if stop.stopped_after is not None:
        log.info("fold %d: stopped after epoch %d of %d: the next epoch and the predictions would end after the "
                 "time budget; its backup is kept", fold, stop.stopped_after + 1, tcfg.epochs)
        return False
    return True


def _callbacks(tensorboard: bool, fold_dir: Path, fold_log: FoldLog, ema: bool = False) -> list:
    # With train.checkpoints.ema, validation sees the averaged weights (swapped in around each evaluation only, so the
    # epoch backup keeps the raw weights and their average apart); the end of fit leaves the average in place.
    callbacks = [keras.callbacks.SwapEMAWeights()] if ema else []
    callbacks += [fold_log,
                 # Model and optimizer state at each epoch end: a re-run continues from there.
                 backup_callback(fold_dir / "backup")]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(fold_dir / "tensorboard"), write_graph=False))
    return callbacks


def _final_weights(model: keras.Model, tcfg: TrainConfig, fold_dir: Path) -> Path:
    """The fold's weights to predict with: the best epoch's (already saved by FoldLog), or the last."""
    weights_file = fold_dir / BEST
    if tcfg.checkpoints.keep == "last" or not weights_file.is_file():
        weights_file = fold_dir / LAST
        save_weights_atomic(model, weights_file)
    else:
        load_model_weights(model, weights_file)
    return weights_file


def _predict_fold(s: Session, fold: int, val: pd.DataFrame, val_shards: list, fold_dir: Path) -> pd.DataFrame:
    """foldK/oof.csv (TTA mean and the plain pass) and foldK/test_pred.csv."""
    tcfg, pad = s.cfg.train, s.replicas > 1
    batch = views_batch(tcfg.batch_size, s.replicas, len(prediction_views(tcfg))) // s.host.count  # this host's
    val_views = predict(s.predictor, val_shards, val[ID].to_numpy(), tcfg, s.shardset.image_size, batch, pad)
    oof = val.assign(pred=mean_views(val_views), pred_plain=val_views["plain"], fold=fold)
    if is_writer():  # every host has every prediction (gathered); one writes them
        write_csv(fold_dir / "oof.csv", oof)
    if len(s.test_names):
        test_views = predict(s.predictor, s.shardset.test(), s.test_names, tcfg, s.shardset.image_size, batch, pad)
        if is_writer():
            write_csv(fold_dir / "test_pred.csv", pd.DataFrame({ID: s.test_names, TARGET: mean_views(test_views)}))
    return oof


def reset(model: keras.Model, weights: list[np.ndarray]) -> None:
    """Back to the initial weights with a fresh optimizer state (moments and step count zeroed)."""
    model.set_weights(weights)
    for var in model.optimizer.variables:
        var.assign(keras.ops.zeros(var.shape, var.dtype))
