"""A train run folder: per-epoch history and best weights, the resume fingerprint, and the run-level outputs.

Re-running `train` into the same folder resumes it: finished folds (foldK/done.json) are kept and an
interrupted fold continues from its epoch backup; other settings or data are refused unless told to restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from melanoma.config import Config
from melanoma.config.aliases import flat_train
from melanoma.data.competition import SIIM2020, Competition
from melanoma.data.schema import ID, TARGET
from melanoma.errors import ConfigError
from melanoma.files import read_json, write_csv, write_json
from melanoma.runtime import budget
from melanoma.runtime.hosts import is_writer
from melanoma.data.manifest import Manifest
from melanoma.image.tta import prediction_views
from melanoma.data.runs import write_run
from melanoma.scoring import auc, fmt_auc

log = logging.getLogger("melanoma.image.train")  # the stage's one logger


class FoldLog(keras.callbacks.Callback):
    """After each epoch: rewrite history.csv (atomically, with the epoch's seconds: train.checkpoints.time_budget's
    projections) and save the weights when the monitored validation metric improves (val_auc; val_pauc for ISIC 2024).

    Each row records the optimizer's own step count at the epoch's end (`step`) and the learning rate of its
    last step, schedule(step - 1): what was used, not what was planned. Listed before BackupAndRestore, so an
    epoch is in the history and the best weights before the backup says it is done; a resumed epoch replaces
    its own row.
    """

    def __init__(self, fold_dir: Path, schedule, steps_per_epoch: int, ema: bool = False, monitor: str = "val_auc"):
        super().__init__()
        self.fold_dir, self.schedule, self.steps, self.ema = fold_dir, schedule, steps_per_epoch, ema
        self.monitor = monitor  # val_auc, or val_pauc where the competition is scored by partial AUC
        self.history = read_history(fold_dir)
        self.best = best_auc(self.history, monitor)
        self.started = budget.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = budget.clock()

    def seconds(self, epoch: int) -> float | None:
        """The measured seconds of an epoch (this session's, or an earlier one's from history.csv)."""
        rows = self.history[self.history["epoch"] == epoch] if "seconds" in self.history.columns else []
        return float(rows["seconds"].iloc[-1]) if len(rows) and pd.notna(rows["seconds"].iloc[-1]) else None


    def on_epoch_end(self, epoch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}, "step": step,
               "learning_rate": float(self.schedule(max(step, 1) - 1)),
               "seconds": round(budget.clock() - self.started, 3)}
        self.history = pd.concat([self.history[self.history["epoch"] < epoch], pd.DataFrame([row])],
                                 ignore_index=True) if len(self.history) else pd.DataFrame([row])
        if is_writer():  # process 0 of several hosts (every host computes the same row)
            write_csv(self.fold_dir / "history.csv", self.history)
        current = row.get(self.monitor)
        if current is not None and np.isfinite(current) and (self.best is None or current > self.best):
            self.best = current
            with ema_weights(self.model, self.ema):  # the weights that were validated
                save_weights_atomic(self.model, self.fold_dir / BEST, optimizer=False)


BEST, LAST, DONE = "best.weights.h5", "last.weights.h5", "done.json"


@contextlib.contextmanager
def ema_weights(model: keras.Model, on: bool = True):
    """The optimizer's moving average of the weights (train.checkpoints.ema) in the model for the block, then the raw
    weights back. Keras keeps the average in the optimizer (`use_ema`); this is its SwapEMAWeights swap."""
    if not on:
        yield
        return
    opt = model.optimizer
    pairs = list(zip(opt._trainable_variables, opt._model_variables_moving_average))

    def swap():
        for var, avg in pairs:
            raw = keras.ops.convert_to_numpy(var)
            var.assign(avg)
            avg.assign(raw)

    swap()
    try:
        yield
    finally:
        swap()


def read_history(fold_dir: Path) -> pd.DataFrame:
    path = fold_dir / "history.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame({"epoch": []})


def epoch_seconds(out_dir: Path) -> list[float]:
    """The measured seconds of every epoch in the run folder's fold histories (earlier sessions included)."""
    histories = [read_history(p.parent) for p in sorted(out_dir.glob("fold*/history.csv"))]
    return [float(x) for h in histories if "seconds" in h.columns for x in h["seconds"].dropna()]


def best_auc(history: pd.DataFrame, monitor: str = "val_auc") -> float | None:
    """The best value of the monitored validation metric so far (None before any epoch)."""
    if monitor not in history.columns or history[monitor].isna().all():
        return None
    return float(history[monitor].max())


def save_weights_atomic(model: keras.Model, path: Path, optimizer: bool = True) -> None:
    """Write the weights under a temporary name, then rename: a kill never leaves a torn file under `path`.
    `optimizer` False leaves the optimizer's state out (the best weights: 1/3 of the size with AdamW).

    On several hosts Keras gathers each variable from all of them (a collective), so every host saves; the
    others into a scratch folder of their own, deleted at once: process 0's file is the run's."""
    if not is_writer():
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / path.name
            _save_weights(model, path.with_name(f".tmp-{path.name}"), optimizer)
        return
    path.parent.mkdir(parents=True, exist_ok=True)  # the epoch backup's folder, on its first write
    tmp = path.with_name(f".tmp-{path.name}")  # Keras wants the .weights.h5 suffix
    _save_weights(model, tmp, optimizer)
    os.replace(tmp, path)


def _save_weights(model: keras.Model, tmp: Path, optimizer: bool) -> None:
    if optimizer or model.optimizer is None or not _can_skip_objects():
        model.save_weights(tmp)
    else:
        from keras.src.saving import saving_lib

        saving_lib.save_weights_only(model, tmp, objects_to_skip=[model.optimizer])


# Settings that change how or how long a session runs, never what a fold learns: sessions may differ in them.
NOT_FINGERPRINTED = ("verbose", "folds", "resume", "tensorboard", "backend", "allow_cpu_fallback", "time_budget",
                     "hosts")


def load_model_weights(model: keras.Model, path: Path) -> None:
    """Load weights saved with or without the optimizer's state, leaving the optimizer as it is."""
    if model.optimizer is None or not _can_skip_objects():
        model.load_weights(path)
        return
    from keras.src.saving import saving_lib

    saving_lib.load_weights_only(model, path, objects_to_skip=[model.optimizer])


def _can_skip_objects() -> bool:
    """Whether this Keras saves and loads weights without chosen objects (`objects_to_skip`); where it cannot,
    the optimizer state is simply saved too."""
    import inspect

    try:
        from keras.src.saving import saving_lib

        return "objects_to_skip" in inspect.signature(saving_lib.save_weights_only).parameters
    except (ImportError, AttributeError, ValueError):
        return False


def fingerprint(cfg: Config, shardset: Manifest) -> str:
    """What a resumed run must share with the folds already in its folder: the training settings and data."""
    # The flat layout of before issue 25 (its keys in NOT_FINGERPRINTED too): folders written before still resume.
    settings = {k: v for k, v in flat_train(cfg.train).items() if k not in NOT_FINGERPRINTED}
    data = [shardset.image_size] + [(Path(s.path).name, s.split, s.fold, s.count) for s in shardset.shards]
    blob = json.dumps({"train": settings, "seed": cfg.seed, "n_folds": cfg.n_folds, "data": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


RUN_OUTPUTS = ("oof.csv", "test_pred.csv", "metrics.json")


def fold_progress(out_dir: Path) -> tuple[list[str], list[str]]:
    """(finished folds, interrupted folds) in a run folder."""
    done = sorted(p.parent.name for p in out_dir.glob(f"fold*/{DONE}"))
    backups = sorted(p.parent.name for p in out_dir.glob("fold*/backup") if p.parent.name not in done)
    return done, backups


def check_run_folder(out_dir: Path, cfg: Config, shardset: Manifest, backend: str) -> bool:
    """Whether the run resumes the folder's work; raises before anything is trained or moved when it cannot.

    A folder written with the same settings keeps its finished folds and epoch backups. One with other settings
    is refused unless train.checkpoints.resume is false (--restart). A folder whose earlier try made no progress (it
    failed before an epoch ended) holds nothing to keep, so it never blocks a corrected re-run.
    """
    state_path = out_dir / "resume.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, not a run folder: choose another --out")
    if not (cfg.train.checkpoints.resume and state_path.is_file()):
        return False
    done, backups = fold_progress(out_dir)
    state = read_json(state_path)
    same = state.get("fingerprint") == fingerprint(cfg, shardset)
    if not (done or backups):
        # Killed before an epoch ended: with the same settings the folder is simply continued (nothing to keep is
        # moved aside); with others, the failed try never blocks the corrected run.
        return same
    if not same:
        raise ConfigError(f"{out_dir} holds a training run with other settings or data: use another --out, or "
                          "--restart (train.checkpoints.resume=false) to start it over (the old folds are kept aside)")
    previous = state.get("backend", "tensorflow")
    if backups and previous != backend:
        # Finished folds are plain files; an interrupted fold's optimizer backup is only resumed where it began.
        raise ConfigError(f"{out_dir}: {backups[0]} was interrupted on the {previous} backend: resume it with "
                          f"--set train.devices.backend={previous}, or use another --out")
    log.info("train: resuming %s (finished: %s; interrupted: %s)", out_dir, ", ".join(done) or "none",
             ", ".join(backups) or "none")
    return True


def start_run_folder(out_dir: Path, cfg: Config, shardset: Manifest, backend: str, resume: bool) -> None:
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


def collect(out_dir: Path, cfg: Config, replicas: int, precision: str, competition: Competition = SIIM2020
            ) -> dict:
    """Run-level oof.csv, test_pred.csv and metrics.json from every finished fold in the folder (so folds
    trained in different sessions, e.g. Kaggle's 9-hour limit, add up), keyed by the competition's id column
    and scored by its metric as well as AUC."""
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
        "folds": info}, competition)
    also = f"{competition.metric_name} {fmt_auc(metrics[f'oof_{competition.metric}'])}, " \
        if competition.metric != "auc" else ""
    log.info("train: OOF %sAUC %s (no TTA %s) over folds %s -> %s", also, fmt_auc(metrics["oof_auc"]),
             fmt_auc(metrics["oof_auc_no_tta"]), done, out_dir)
    return metrics


def backup_callback(folder: Path) -> keras.callbacks.Callback:
    """BackupAndRestore that survives a kill during the fold's first backup write: Keras falls back to the
    previous backup when the newest is unreadable, but the first has none, so the fold would never resume.
    Then the unreadable backup is moved aside (kept, named in the log) and the fold starts over."""

    class Backup(keras.callbacks.BackupAndRestore):
        def on_train_begin(self, logs=None):
            try:
                super().on_train_begin(logs)
            except OSError as e:
                aside = folder.with_name(f"backup.unreadable-{int(time.time())}")
                folder.rename(aside)
                folder.mkdir()
                log.warning("%s: the epoch backup cannot be read (%s), a write cut short by a kill; moved to %s, "
                            "the fold starts over", folder.parent.name, e, aside.name)

        def _save_model(self):
            """One write per epoch, atomic (temporary name, then rename), with the optimizer state. Keras' own
            copies the previous backup aside first (a second write of the whole file) to survive a torn write,
            which a rename never leaves. Process 0 alone keeps it (every host holds the same state)."""
            folder.mkdir(parents=True, exist_ok=True)
            save_weights_atomic(self.model, Path(self._weights_path))
            if not is_writer():
                return
            write_json(Path(self._training_metadata_path), {"epoch": self._current_epoch,
                                                            "batch": self._last_batch_seen})

    return Backup(str(folder), double_checkpoint=True, delete_checkpoint=False)


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
